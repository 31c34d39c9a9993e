"""Ultralytics backend: a YOLO ``.pt`` checkpoint run by PyTorch (CUDA when present).

This is the only module of ``ipsp.detection`` that imports torch, and only inside
functions, so the rest of the project stays free of it. Post-processing uses
Ultralytics' own NMS, which also makes this backend an independent check of the
NumPy decoder the ONNX backend uses.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ipsp.detection.errors import ModelError
from ipsp.detection.postprocess import Boxes
from ipsp.detection.spec import ModelSpec, parse_imgsz, parse_names


def offline_environment(config_dir: Path | None = None, verbose: bool = False) -> None:
    """Keep Ultralytics from touching the network or the user's home (call before importing it).

    ``YOLO_OFFLINE`` turns off its online checks and downloads; its settings file goes
    under ``config_dir`` (default: ``$IPSP_HOME/ultralytics``) instead of ``~/.config``;
    ``verbose`` keeps its logs and progress bars (the training CLI wants them).
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    if "YOLO_CONFIG_DIR" not in os.environ:
        from ipsp.config import default_home

        folder = config_dir or default_home() / "ultralytics"
        folder.mkdir(parents=True, exist_ok=True)
        os.environ["YOLO_CONFIG_DIR"] = str(folder)
    os.environ.setdefault("YOLO_VERBOSE", str(verbose))


def _restore_pil_open() -> None:
    """Undo ultralytics' process-wide patch of ``PIL.Image.open``.

    On import it replaces PIL's open with one that, on an unidentified image,
    tries to pip-install a HEIF plugin: offline that turns every corrupt frame
    anywhere in the process (the packer's validation included) into an import
    error instead of PIL's ``UnidentifiedImageError``.
    """
    from PIL import Image

    try:
        from ultralytics.utils import patches
    except ImportError:
        return
    original = getattr(patches, "_image_open", None)
    if original is not None and Image.open is not original:
        Image.open = original


def import_ultralytics() -> Any:
    """Import ultralytics offline, with a clear message when the ``train`` extra is missing."""
    offline_environment()
    try:
        import ultralytics
    except ImportError as exc:
        raise ModelError("the ultralytics backend needs the 'train' extra: pip install -e '.[train]'") from exc
    from ultralytics.utils import SETTINGS

    _restore_pil_open()
    # no analytics, no syncing with hub services
    if SETTINGS.get("sync", False):
        SETTINGS.update({"sync": False})
    return ultralytics


def pick_device(device: str) -> str:
    """``cuda:0`` when asked or when ``auto`` finds a GPU, else ``cpu``."""
    import torch

    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} asked, but torch sees no CUDA GPU")
    return "cuda:0" if device == "cuda" else device


def load_torch_model(path: Path) -> Any:
    """The ``DetectionModel`` inside an Ultralytics checkpoint (refuses other tasks)."""
    ultralytics = import_ultralytics()
    try:
        yolo = ultralytics.YOLO(str(path), task="detect")
    except Exception as exc:  # torch/ultralytics raise many types for a bad checkpoint
        raise ModelError(f"{path}: not a loadable Ultralytics checkpoint ({exc})") from exc
    if yolo.task != "detect":
        raise ModelError(f"{path}: task {yolo.task!r} is not supported, only 'detect' models")
    return yolo.model


def spec_from_checkpoint(path: Path, model: Any) -> ModelSpec:
    """Spec of a checkpoint: names and training image size come from the checkpoint itself."""
    args = getattr(model, "args", {}) or {}
    head = model.model[-1]
    return ModelSpec(
        path=path,
        backend="ultralytics",
        decoder="end2end" if getattr(head, "end2end", False) else "yolov8",
        names=parse_names(model.names, str(path)),
        input_size=parse_imgsz(args.get("imgsz", 640), str(path)),
        input_name="images",
        output_name="output0",
    )


def inspect_checkpoint(path: Path) -> ModelSpec:
    """Read a checkpoint's spec without keeping the model (used when pushing to the registry)."""
    return spec_from_checkpoint(path, load_torch_model(path))


class UltralyticsBackend:
    """Runs a YOLO checkpoint with PyTorch; fp32 unless ``half`` (CUDA only)."""

    name = "ultralytics"

    def __init__(self, path: Path, threads: int = 0, device: str = "auto", half: bool = False) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()
        model = load_torch_model(path)
        self.spec: ModelSpec = spec_from_checkpoint(path, model)
        self.device = pick_device(device)
        self.half = half and self.device.startswith("cuda")
        model = model.fuse() if hasattr(model, "fuse") else model
        model = model.to(self.device).eval()
        for param in model.parameters():
            param.requires_grad_(False)
        self.model = model.half() if self.half else model.float()

    def set_input_size(self, size: tuple[int, int]) -> None:
        """Run at another ``(height, width)`` (YOLO takes any multiple of its 32-px stride)."""
        if size[0] % 32 or size[1] % 32:
            raise ModelError(f"input size {size[1]}x{size[0]}: width and height must be multiples of 32")
        self.spec = replace(self.spec, input_size=(int(size[0]), int(size[1])))

    def infer(self, batch: np.ndarray) -> Any:
        """Forward pass on a prepared NCHW batch; returns the head's decoded tensor (stays on device)."""
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device, non_blocking=True)
            x = x.half() if self.half else x
            y = self.model(x)
        return y[0] if isinstance(y, list | tuple) else y

    def postprocess(self, raw: Any, conf: float, iou: float, max_det: int) -> list[Boxes]:
        """Ultralytics' own NMS (torchvision), then NumPy arrays in model-input pixels."""
        import importlib

        try:
            nms_module = importlib.import_module("ultralytics.utils.nms")
        except ImportError:  # older releases kept it in ops
            nms_module = importlib.import_module("ultralytics.utils.ops")
        non_max_suppression = nms_module.non_max_suppression
        dets = non_max_suppression(
            raw.float(), conf_thres=conf, iou_thres=iou, max_det=max_det, nc=len(self.spec.names)
        )
        results = []
        for det in dets:
            arr = det.detach().cpu().numpy()
            results.append((arr[:, :4].astype(np.float32), arr[:, 4].astype(np.float32), arr[:, 5].astype(np.int64)))
        return results
