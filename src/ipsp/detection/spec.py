"""What a model expects and returns, read from the model's own metadata.

The backend and the decoder are chosen from what the file says about itself:
ONNX ``metadata_props`` (our ``ipsp.decoder`` key, or the keys every Ultralytics
export writes: ``task``, ``names``, ``imgsz``, ``stride``, ``end2end``) and, for
PyTorch checkpoints, the checkpoint's model. A file that says nothing usable is
refused with a message naming it, instead of being decoded by guesswork.
"""

from __future__ import annotations

import ast
import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from ipsp.detection.errors import ModelError

Backend = Literal["onnx", "ultralytics"]
Decoder = Literal["yolov8", "end2end", "centernet", "nanodet"]
DECODERS: tuple[str, ...] = ("yolov8", "end2end", "centernet", "nanodet")

#: IoU of the same-class NMS each decoder needs (end2end heads need none)
DEFAULT_IOU: dict[str, float] = {"yolov8": 0.7, "centernet": 0.5, "end2end": 1.0, "nanodet": 0.5}


@dataclass(frozen=True)
class ModelSpec:
    """How to feed a model and read its output.

    ``input_size`` is ``(height, width)``; ``batch`` is the fixed batch size of the
    graph or ``None`` when the batch axis is dynamic.
    """

    path: Path
    backend: Backend
    decoder: Decoder
    names: Mapping[int, str]
    input_size: tuple[int, int]
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    channel_order: Literal["RGB", "BGR"] = "RGB"
    scale: float = 1.0 / 255.0
    resize: Literal["letterbox", "stretch"] = "letterbox"
    batch: int | None = None
    input_name: str = "images"
    output_name: str = "output0"

    def with_batch(self, batch: int | None) -> ModelSpec:
        """The same spec with another fixed batch size."""
        return replace(self, batch=batch)


def parse_literal(value: str | None) -> Any:
    """Parse a metadata value written as JSON or as a Python literal (Ultralytics uses ``str(dict)``)."""
    if value is None:
        return None
    try:
        return json.loads(value)
    except (ValueError, TypeError):
        pass
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def parse_names(value: Any, source: str) -> dict[int, str]:
    """Class names as ``{id: name}`` from a dict (any key type) or a list."""
    if isinstance(value, str):
        value = parse_literal(value)
    if isinstance(value, list | tuple):
        value = dict(enumerate(value))
    if not isinstance(value, dict) or not value:
        raise ModelError(f"{source}: class names missing or unreadable in the model metadata")
    try:
        return {int(k): str(v) for k, v in value.items()}
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{source}: class ids in the names metadata must be integers ({exc})") from exc


def parse_imgsz(value: Any, source: str) -> tuple[int, int]:
    """Input size as ``(height, width)`` from ``640``, ``[640, 640]`` or their string forms."""
    if isinstance(value, str):
        value = parse_literal(value)
    if isinstance(value, int):
        return value, value
    if isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    raise ModelError(f"{source}: input size {value!r} in the model metadata is not [height, width]")


def decoder_from_metadata(meta: Mapping[str, str], source: str) -> Decoder:
    """Pick the output decoder from metadata: our explicit key, else the Ultralytics export keys."""
    explicit = meta.get("ipsp.decoder")
    if explicit:
        if explicit not in DECODERS:
            raise ModelError(f"{source}: unknown decoder {explicit!r} (known: {', '.join(DECODERS)})")
        return explicit  # type: ignore[return-value]
    task = parse_literal(meta.get("task"))
    if task is None or "names" not in meta:
        raise ModelError(
            f"{source}: the model carries no detector metadata (need 'ipsp.decoder' or an Ultralytics "
            "export's 'task'/'names'/'imgsz'); re-export it or push it with a model card"
        )
    if task != "detect":
        raise ModelError(f"{source}: task {task!r} is not supported, only 'detect' models")
    return "end2end" if parse_literal(meta.get("end2end")) is True else "yolov8"


def spec_from_onnx_metadata(
    path: Path, meta: Mapping[str, str], input_name: str, input_shape: list[Any], output_name: str
) -> ModelSpec:
    """Build the spec of an ONNX model from its metadata_props and input signature."""
    source = str(path)
    decoder = decoder_from_metadata(meta, source)
    names = parse_names(meta.get("names"), source)
    if len(input_shape) != 4:
        raise ModelError(f"{source}: input {input_name!r} has shape {input_shape}, expected 4 axes")
    layout = meta.get("ipsp.input_layout") or ("NHWC" if input_shape[3] in (1, 3) else "NCHW")
    if layout not in ("NCHW", "NHWC"):
        raise ModelError(f"{source}: unknown input layout {layout!r}")
    if "imgsz" in meta:
        size = parse_imgsz(meta["imgsz"], source)
    else:
        hw = input_shape[1:3] if layout == "NHWC" else input_shape[2:4]
        if not all(isinstance(v, int) for v in hw):
            raise ModelError(f"{source}: dynamic input size and no 'imgsz' metadata")
        size = (int(hw[0]), int(hw[1]))
    batch = input_shape[0] if isinstance(input_shape[0], int) and input_shape[0] > 0 else None
    value_range = meta.get("ipsp.input_range", "0-1")
    return ModelSpec(
        path=path,
        backend="onnx",
        decoder=decoder,
        names=names,
        input_size=size,
        layout=layout,  # type: ignore[arg-type]
        channel_order="BGR" if meta.get("ipsp.channel_order") == "BGR" else "RGB",
        scale=1.0 if value_range == "0-255" else 1.0 / 255.0,
        resize="stretch" if meta.get("ipsp.resize") == "stretch" else "letterbox",
        batch=batch,
        input_name=input_name,
        output_name=output_name,
    )


def file_kind(path: Path) -> Backend:
    """Which backend a model file needs, from its content (PyTorch checkpoints are zip archives)."""
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    if zipfile.is_zipfile(path):
        return "ultralytics"
    with path.open("rb") as fh:
        head = fh.read(16)
    # ONNX files are protobuf ModelProto: the first field is ir_version (tag 0x08)
    if head[:1] == b"\x08":
        return "onnx"
    raise ModelError(f"{path}: neither an ONNX model nor a PyTorch checkpoint")
