"""The ``Detector``: preprocess -> infer (whole batch) -> postprocess, with per-step timings.

One detector is built per process (the streaming job keeps one per Python worker)
and then fed batches of encoded frames. A frame that cannot be decoded fails alone:
its slot in the result list holds a ``FrameError`` and the rest of the batch runs.

The two halves can also run apart: :meth:`Detector.prepare_bytes` decodes one batch
into the model's input tensor (a :class:`PreparedBatch`, safe to build on another
thread), :meth:`Detector.detect_prepared` infers and postprocesses it.
``detect_bytes`` is exactly these two calls per batch.
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

    def set_input_size(self, size: tuple[int, int]) -> None:
        """Run the model at another ``(height, width)``; refused when its graph fixes the size."""

    def postprocess(self, raw: Any, conf: float, iou: float, max_det: int) -> list[Boxes]:
        """Decode raw output to per-image boxes, scores and classes in input pixels."""


@dataclass(frozen=True)
class PreparedBatch:
    """One batch of frames decoded and laid out as the model's input, ready to infer.

    ``failed`` holds the slots whose frame could not be used; ``tensor`` holds the
    other frames in slot order (``None`` when none decoded), ``transforms`` map their
    boxes back to the original frames, ``pre_ms`` is what building it cost.
    """

    size: int
    failed: dict[int, FrameError]
    transforms: list[Transform]
    tensor: np.ndarray | None
    pre_ms: float


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
            results.extend(self._infer(self.prepare_bytes(chunk, names, start), timings))
        self._record(timings)
        return results

    def prepare_bytes(
        self, frames: Sequence[bytes], labels: Sequence[str] | None = None, offset: int = 0
    ) -> PreparedBatch:
        """Decode and preprocess one batch (at most ``batch_size`` frames) into the model's input.

        A frame that cannot be used keeps its slot as a ``FrameError`` (numbered from
        ``offset``, named by ``labels``). Reads only the model spec, so it may run on
        another thread while :meth:`detect_prepared` infers the previous batch.
        """
        if len(frames) > self.batch_size:
            raise ValueError(f"prepare_bytes takes one batch: {len(frames)} frames > batch_size {self.batch_size}")
        t0 = time.perf_counter()
        failed: dict[int, FrameError] = {}
        images: list[np.ndarray] = []
        transforms: list[Transform] = []
        for i, data in enumerate(frames):
            label = labels[i] if labels is not None else None
            try:
                image, width, height = decode(
                    bytes(data), offset + i, self.spec.input_size, self.spec.resize, self.max_pixels, label
                )
                prepared, transform = prepare(image, self.spec, width, height)
            except FrameError as exc:
                failed[i] = exc
                continue
            images.append(prepared)
            transforms.append(transform)
        tensor = to_input(images, self.spec) if images else None
        return PreparedBatch(len(frames), failed, transforms, tensor, (time.perf_counter() - t0) * 1000)

    def detect_prepared(self, prepared: PreparedBatch) -> list[DetectResult]:
        """Infer and postprocess a batch from :meth:`prepare_bytes`: one result per slot, in order.

        ``last_timings`` holds this batch's steps (its ``pre_ms`` is the preparation's cost).
        """
        timings = StepTimings()
        results = self._infer(prepared, timings)
        self._record(timings)
        return results

    def detect_images(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Detect objects in already-decoded BGR uint8 images (no decode step)."""
        results: list[Detections] = []
        timings = StepTimings()
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            t0 = time.perf_counter()
            prepared = [prepare(img, self.spec, img.shape[1], img.shape[0]) for img in chunk]
            tensor = to_input([p[0] for p in prepared], self.spec) if prepared else None
            batch = PreparedBatch(len(chunk), {}, [p[1] for p in prepared], tensor, (time.perf_counter() - t0) * 1000)
            results.extend(r for r in self._infer(batch, timings) if isinstance(r, Detections))
        self._record(timings)
        return results

    def _record(self, timings: StepTimings) -> None:
        self.last_timings = timings
        self.total_timings.add(timings)

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

    def _infer(self, prepared: PreparedBatch, timings: StepTimings) -> list[DetectResult]:
        timings.pre_ms += prepared.pre_ms
        timings.frames += prepared.size  # failed frames count, they cost decode time
        if prepared.tensor is None:
            return [prepared.failed[i] for i in range(prepared.size)]
        t1 = time.perf_counter()
        raw = self.backend.infer(prepared.tensor)
        t2 = time.perf_counter()
        decoded = self.backend.postprocess(raw, self.score_threshold, self.iou_threshold, self.max_det)
        found = iter(
            [
                Detections.from_arrays(tf.to_original(boxes), scores, classes, self.spec.names, (tf.width, tf.height))
                for (boxes, scores, classes), tf in zip(decoded, prepared.transforms, strict=True)
            ]
        )
        slots: list[DetectResult] = []
        for i in range(prepared.size):
            failure = prepared.failed.get(i)
            slots.append(failure if failure is not None else next(found))
        t3 = time.perf_counter()
        timings.infer_ms += (t2 - t1) * 1000
        timings.post_ms += (t3 - t2) * 1000
        timings.batches += 1
        return slots
