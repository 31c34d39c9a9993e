"""Model specs come from the model's own metadata; unusable metadata is refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipsp.detection.errors import ModelError
from ipsp.detection.spec import (
    decoder_from_metadata,
    file_kind,
    parse_imgsz,
    parse_names,
    spec_from_onnx_metadata,
)

ULTRALYTICS_META = {
    "author": "Ultralytics",
    "task": "detect",
    "stride": "32",
    "names": "{0: 'motorbike', 1: 'car', 2: 'bus', 3: 'truck'}",
    "imgsz": "[128, 128]",
    "end2end": "False",
}


def test_ultralytics_export_metadata_is_understood() -> None:
    spec = spec_from_onnx_metadata(Path("m.onnx"), ULTRALYTICS_META, "images", ["batch", 3, "h", "w"], "output0")
    assert spec.decoder == "yolov8" and spec.layout == "NCHW" and spec.resize == "letterbox"
    assert spec.names == {0: "motorbike", 1: "car", 2: "bus", 3: "truck"}
    assert spec.input_size == (128, 128) and spec.batch is None and spec.scale == pytest.approx(1 / 255)


def test_explicit_decoder_and_layout_keys_win() -> None:
    meta = {
        "ipsp.decoder": "centernet", "names": '{"0": "person"}', "imgsz": "[512, 512]",
        "ipsp.input_layout": "NHWC", "ipsp.input_range": "0-255", "ipsp.resize": "stretch",
    }  # fmt: skip
    spec = spec_from_onnx_metadata(Path("c.onnx"), meta, "x", [1, 512, 512, 3], "tower_0/detections")
    assert (spec.decoder, spec.layout, spec.scale, spec.resize, spec.batch) == ("centernet", "NHWC", 1.0, "stretch", 1)


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({**ULTRALYTICS_META, "end2end": "True"}, "end2end"),
        (ULTRALYTICS_META, "yolov8"),
        ({"ipsp.decoder": "yolov8"}, "yolov8"),
    ],
)
def test_decoder_choice(meta: dict[str, str], expected: str) -> None:
    assert decoder_from_metadata(meta, "m.onnx") == expected


@pytest.mark.parametrize(
    ("meta", "words"),
    [
        ({}, "no detector metadata"),
        ({"producer": "tf2onnx"}, "no detector metadata"),
        ({**ULTRALYTICS_META, "task": "segment"}, "task 'segment' is not supported"),
        ({"ipsp.decoder": "ssd"}, "unknown decoder 'ssd'"),
    ],
)
def test_models_without_usable_metadata_are_refused(meta: dict[str, str], words: str) -> None:
    with pytest.raises(ModelError, match=words) as info:
        decoder_from_metadata(meta, "/models/x.onnx")
    assert "/models/x.onnx" in str(info.value)


def test_names_and_sizes_in_every_written_form() -> None:
    assert parse_names(["a", "b"], "m") == {0: "a", 1: "b"}
    assert parse_names('{"1": "b", "0": "a"}', "m") == {0: "a", 1: "b"}
    assert parse_imgsz("640", "m") == (640, 640)
    assert parse_imgsz([384, 640], "m") == (384, 640)
    with pytest.raises(ModelError, match="class names"):
        parse_names("", "m")
    with pytest.raises(ModelError, match="not \\[height, width\\]"):
        parse_imgsz("[1, 2, 3]", "m")


def test_file_kind_reads_content_not_the_name(tmp_path: Path) -> None:
    onnx_like = tmp_path / "model.bin"
    onnx_like.write_bytes(b"\x08\x08\x12\x07tf2onnx")
    assert file_kind(onnx_like) == "onnx"
    import zipfile

    with zipfile.ZipFile(tmp_path / "weights.onnx", "w") as zf:  # a checkpoint whatever its name
        zf.writestr("archive/data.pkl", b"x")
    assert file_kind(tmp_path / "weights.onnx") == "ultralytics"
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"hello")
    with pytest.raises(ModelError, match="neither an ONNX model nor a PyTorch checkpoint"):
        file_kind(junk)
    with pytest.raises(ModelError, match="does not exist"):
        file_kind(tmp_path / "missing.onnx")
