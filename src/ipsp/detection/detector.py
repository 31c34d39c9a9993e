"""The ``Detector``: preprocess -> infer (whole batch) -> postprocess, with per-step timings.

One detector is built per process (the streaming job keeps one per Python worker)
and then fed batches of encoded frames. A frame that cannot be decoded fails alone:
its slot in the result list holds a ``FrameError`` and the rest of the batch runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ipsp.detection.errors import FrameError, ModelError
from ipsp.detection.postprocess import Boxes
from ipsp.detection.preprocess import DEFAULT_MAX_PIXELS, Transform, decode, prepare, to_input
from ipsp.detection.spec import DEFAULT_IOU, ModelSpec, file_kind
from ipsp.detection.types import Detections, DetectResult, StepTimings


class Backend(Protocol):
    """What the detector needs from an inference engine."""

    name: str
    spec: ModelSpec
    threads: int

    def infer(self, batch: np.ndarray) -> Any:
        """Run the model on a prepared batch."""

    def postprocess(self, raw: Any, conf: float, iou: float, max_det: int) -> list[Boxes]:
        """Decode raw output to per-image boxes, scores and classes in input pixels."""


@dataclass(frozen=True)
class ModelInfo:
    """Identity of the loaded model, as the contract's ``model`` field records it."""

    name: str
    version: str
    sha256: str
    path: Path


def open_backend(path: Path, backend: str = "auto", threads: int = 0, device: str = "auto") -> Backend:
    """Open ``path`` with the backend its content calls for (or the one named).

    ``device``: ``cpu``, ``cuda`` or ``auto`` (a GPU when the backend can use one).
    """
    kind = file_kind(path) if backend == "auto" else backend
    if kind == "onnx":
        from ipsp.detection.onnx_backend import OnnxBackend

        return OnnxBackend(path, threads=threads, device=device)
    if kind == "ultralytics":
        from ipsp.detection.ultralytics_backend import UltralyticsBackend

        return UltralyticsBackend(path, threads=threads, device=device)
    raise ModelError(f"unknown backend {backend!r} (known: auto, onnx, ultralytics)")


class Detector:
    """Fixed-step detector over any backend.

    ``score_threshold`` drops weak detections, ``iou_threshold`` is the same-class NMS
    IoU (default: what the model's decoder needs), ``batch_size`` bounds how many
    frames go through the model at once.
    """

    def __init__(
        self,
        backend: Backend,
        score_threshold: float = 0.3,
        iou_threshold: float | None = None,
        max_det: int = 300,
        batch_size: int = 8,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        model_info: ModelInfo | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.backend = backend
        self.spec = backend.spec
        self.score_threshold = score_threshold
        self.iou_threshold = DEFAULT_IOU[self.spec.decoder] if iou_threshold is None else iou_threshold
        self.max_det = max_det
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.model_info = model_info or ModelInfo(self.spec.path.stem, "local", "", self.spec.path)
        self.last_timings = StepTimings()
        self.total_timings = StepTimings()

    @property
    def names(self) -> dict[int, str]:
        """The model's class names, from its own metadata."""
        return dict(self.spec.names)

    def detect_bytes(self, frames: Sequence[bytes], labels: Sequence[str] | None = None) -> list[DetectResult]:
        """Detect objects in encoded frames (JPEG/PNG bytes), one result per frame, in order.

        A frame that cannot be used gives a ``FrameError`` in its slot (``labels``, when
        given, name the frames in messages). An empty list gives an empty list.
        ``last_timings`` holds this call's per-step milliseconds.
        """
        timings = StepTimings()
        results: list[DetectResult] = []
        for start in range(0, len(frames), self.batch_size):
            chunk = frames[start : start + self.batch_size]
            names = labels[start : start + self.batch_size] if labels is not None else None
            results.extend(self._detect_chunk(chunk, start, names, timings))
        self.last_timings = timings
        self.total_timings.add(timings)
        return results

    def detect_images(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Detect objects in already-decoded BGR uint8 images (no decode step)."""
        results: list[Detections] = []
        timings = StepTimings()
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            t0 = time.perf_counter()
            prepared = [prepare(img, self.spec, img.shape[1], img.shape[0]) for img in chunk]
            t1 = time.perf_counter()
            results.extend(self._run([p[0] for p in prepared], [p[1] for p in prepared], timings, t1 - t0))
        self.last_timings = timings
        self.total_timings.add(timings)
        return results

    def detect_files(self, paths: Iterable[Path], batch_size: int | None = None) -> Iterator[tuple[Path, DetectResult]]:
        """Read and detect files in batches; yields ``(path, result)`` in input order."""
        size = batch_size or self.batch_size
        batch: list[Path] = []
        for path in paths:
            batch.append(path)
            if len(batch) == size:
                yield from self._detect_paths(batch)
                batch = []
        if batch:
            yield from self._detect_paths(batch)

    def _detect_paths(self, paths: list[Path]) -> Iterator[tuple[Path, DetectResult]]:
        data: list[bytes] = []
        unreadable: dict[int, FrameError] = {}
        for i, path in enumerate(paths):
            try:
                data.append(path.read_bytes())
            except OSError as exc:
                unreadable[i] = FrameError(i, "unreadable", f"cannot read ({exc.strerror})", str(path))
                data.append(b"")
        results = self.detect_bytes(data, [str(p) for p in paths])
        for i, (path, result) in enumerate(zip(paths, results, strict=True)):
            yield path, unreadable.get(i, result)

    def _detect_chunk(
        self, frames: Sequence[bytes], offset: int, labels: Sequence[str] | None, timings: StepTimings
    ) -> list[DetectResult]:
        t0 = time.perf_counter()
        slots: list[DetectResult | None] = [None] * len(frames)
        images: list[np.ndarray] = []
        transforms: list[Transform] = []
        where: list[int] = []
        for i, data in enumerate(frames):
            label = labels[i] if labels is not None else None
            try:
                image, width, height = decode(
                    bytes(data), offset + i, self.spec.input_size, self.spec.resize, self.max_pixels, label
                )
                prepared, transform = prepare(image, self.spec, width, height)
            except FrameError as exc:
                slots[i] = exc
                continue
            images.append(prepared)
            transforms.append(transform)
            where.append(i)
        pre_s = time.perf_counter() - t0
        if images:
            for i, det in zip(where, self._run(images, transforms, timings, pre_s), strict=True):
                slots[i] = det
        else:
            timings.pre_ms += pre_s * 1000
        timings.frames += len(frames) - len(images)  # failed frames count, they cost decode time
        return [s for s in slots if s is not None]

    def _run(
        self, images: list[np.ndarray], transforms: list[Transform], timings: StepTimings, pre_s: float
    ) -> list[Detections]:
        t0 = time.perf_counter()
        batch = to_input(images, self.spec)
        t1 = time.perf_counter()
        raw = self.backend.infer(batch)
        t2 = time.perf_counter()
        decoded = self.backend.postprocess(raw, self.score_threshold, self.iou_threshold, self.max_det)
        out = []
        for (boxes, scores, classes), tf in zip(decoded, transforms, strict=True):
            out.append(
                Detections.from_arrays(tf.to_original(boxes), scores, classes, self.spec.names, (tf.width, tf.height))
            )
        t3 = time.perf_counter()
        timings.pre_ms += (pre_s + t1 - t0) * 1000
        timings.infer_ms += (t2 - t1) * 1000
        timings.post_ms += (t3 - t2) * 1000
        timings.frames += len(images)
        timings.batches += 1
        return out
