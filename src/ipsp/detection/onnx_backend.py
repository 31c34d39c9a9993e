"""ONNX Runtime backend (the default): one session per process, threads pinned.

Handles graphs with a dynamic batch axis (one run per batch) and graphs fixed to a
batch size (the batch is cut into chunks of that size, the last one padded).
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ipsp.detection.errors import ModelError
from ipsp.detection.postprocess import Boxes, decode
from ipsp.detection.spec import ModelSpec, spec_from_onnx_metadata

log = logging.getLogger(__name__)


def available_cores() -> int:
    """Cores this process may run on (the task's share under Spark or a cgroup-pinned pod)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def session_options(threads: int, spinning: bool = False) -> Any:
    """ONNX Runtime options: ``threads`` intra-op threads (0: every available core), one inter-op."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or available_cores()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning worker threads burn a core while waiting; where cores are shared (Spark tasks, the JVM,
    # other pods) a descheduled spinner stalls the whole op, so it is off unless asked for.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    opts.log_severity_level = 3
    return opts


def pick_providers(device: str) -> list[str]:
    """Execution providers for ``device`` (``cpu``, ``cuda`` or ``auto``), CPU always last."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    if device in ("cuda", "auto") and "CUDAExecutionProvider" in have:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise ModelError("device 'cuda' asked, but this onnxruntime build has no CUDA provider")
    return ["CPUExecutionProvider"]


class OnnxBackend:
    """Runs an ONNX detector; ``spec`` comes from the file's metadata_props."""

    name = "onnx"

    def __init__(self, path: Path, threads: int = 0, device: str = "cpu", spinning: bool = False) -> None:
        import onnxruntime as ort

        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=session_options(threads, spinning), providers=pick_providers(device)
            )
        except ModelError:
            raise
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            raise ModelError(f"{path}: not a loadable ONNX model ({exc})") from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        inp = self.session.get_inputs()[0]
        outputs = self.session.get_outputs()
        output = self._pick_output(path, meta, outputs)
        self.spec: ModelSpec = spec_from_onnx_metadata(path, meta, inp.name, list(inp.shape), output)
        self.threads = threads or available_cores()
        # On the CPU a free-batch graph runs one frame per call: a stacked batch makes every activation
        # batch-times larger than the caches (the traffic model at 768x448, batch 8 against 1: the
        # detector's CPU per frame in bench-pipeline 0.186 s against 0.097 s); accelerators take the batch.
        cpu_only = self.session.get_providers() == ["CPUExecutionProvider"]
        self.free_batch_chunk: int | None = 1 if cpu_only else None
        shape = {o.name: o.shape for o in outputs}[output]
        if not all(isinstance(d, int) for d in shape[1:]):
            # symbolic axes (dynamic exports): one blank frame tells the real layout, and warms the session up
            shape = [*shape[:1], *np.asarray(self._run(self._blank())).shape[1:]]
        self._check_output_shape(path, shape)

    @staticmethod
    def _pick_output(path: Path, meta: dict[str, str], outputs: list[Any]) -> str:
        """The output carrying detections: the named one for CenterNet, else the first."""
        if meta.get("ipsp.decoder") == "centernet":
            for out in outputs:
                if out.name.endswith("detections"):
                    return str(out.name)
            raise ModelError(f"{path}: CenterNet model without a '.../detections' output")
        return str(outputs[0].name)

    def _check_output_shape(self, path: Path, shape: list[Any]) -> None:
        """Refuse a model whose output layout cannot match its decoder (before any frame runs)."""
        nc = len(self.spec.names)
        fixed = [d if isinstance(d, int) else None for d in shape]
        if len(fixed) != 3:
            raise ModelError(f"{path}: output has {len(fixed)} axes {shape}, expected 3")
        if self.spec.decoder == "yolov8" and fixed[1] not in (None, 4 + nc):
            raise ModelError(
                f"{path}: unknown outputs: YOLO head gives {fixed[1]} channels but the model has {nc} classes "
                f"(expected {4 + nc})"
            )
        if self.spec.decoder in ("centernet", "end2end") and fixed[2] not in (None, 6):
            raise ModelError(f"{path}: unknown outputs: rows of {fixed[2]} values, expected 6")
        if self.spec.decoder == "nanodet" and fixed[2] not in (None, nc + 44):
            raise ModelError(f"{path}: unknown outputs: NanoDet rows of {fixed[2]} values, expected {nc} + 44")

    def set_input_size(self, size: tuple[int, int]) -> None:
        """Run at another ``(height, width)`` when the graph leaves its spatial axes free.

        A graph with a fixed size keeps it (the setting is for models that can change
        size, so one deployment-wide ``IPSP_INPUT_SIZE`` never breaks a fixed model).
        """
        shape = self.session.get_inputs()[0].shape
        spatial = shape[1:3] if self.spec.layout == "NHWC" else shape[2:4]
        if any(isinstance(d, int) for d in spatial):
            log.info("%s: fixed input %s, IPSP_INPUT_SIZE %sx%s not applied", self.spec.path.name, spatial, *size[::-1])
            return
        if size[0] % 32 or size[1] % 32:
            raise ModelError(f"input size {size[1]}x{size[0]}: width and height must be multiples of 32")
        self.spec = replace(self.spec, input_size=(int(size[0]), int(size[1])))

    def _blank(self) -> np.ndarray:
        """One all-zero input frame in the model's layout."""
        h, w = self.spec.input_size
        shape = (self.spec.batch or 1, h, w, 3) if self.spec.layout == "NHWC" else (self.spec.batch or 1, 3, h, w)
        return np.zeros(shape, np.float32)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run the graph on a prepared batch; returns the raw detection output, batch first."""
        chunk = self.spec.batch or self.free_batch_chunk
        if chunk is None or chunk == len(batch):
            return np.asarray(self._run(batch))
        parts = []
        for start in range(0, len(batch), chunk):
            part = batch[start : start + chunk]
            real = len(part)
            if real < chunk:  # pad the last chunk: a fixed-batch graph accepts no other size
                part = np.concatenate([part, np.zeros((chunk - real, *part.shape[1:]), part.dtype)])
            parts.append(np.asarray(self._run(part))[:real])
        return np.concatenate(parts)

    def _run(self, batch: np.ndarray) -> Any:
        return self.session.run([self.spec.output_name], {self.spec.input_name: batch})[0]

    def postprocess(self, raw: np.ndarray, conf: float, iou: float, max_det: int) -> list[Boxes]:
        """Decode + NMS in NumPy; boxes in model-input pixels."""
        return decode(raw, self.spec.decoder, conf, iou, max_det, len(self.spec.names))
