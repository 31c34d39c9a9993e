"""Frame checks, decoding and resizing: every bad frame is named, boxes map back exactly."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from ipsp.detection.errors import FrameError
from ipsp.detection.preprocess import (
    decode,
    jpeg_size,
    letterbox,
    probe,
    reduction_for,
    stretch,
    to_input,
)
from ipsp.detection.spec import ModelSpec


def jpeg(width: int, height: int, progressive: bool = False) -> bytes:
    img = np.random.default_rng(0).integers(0, 255, (height, width, 3), np.uint8)
    params = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if progressive else []
    ok, buf = cv2.imencode(".jpg", img, params)
    assert ok
    return buf.tobytes()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG claiming a size, with an IEND chunk but no pixel data (what a bomb looks like up front)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_size_reads_the_frame_header(progressive: bool) -> None:
    assert jpeg_size(jpeg(64, 48, progressive)) == (64, 48)
    assert probe(jpeg(64, 48, progressive), 0) == (64, 48)


@pytest.mark.parametrize(
    ("data", "reason", "words"),
    [
        (b"", "empty", "empty frame"),
        (b"definitely not an image", "corrupt", "not a decodable image"),
        (b"\xff\xd8\xff\xe0garbage", "corrupt", "not a decodable image"),
        (jpeg(64, 48)[:-300], "corrupt", "truncated JPEG"),
        (png_header_only(100_000, 100_000), "too_large", "100000x100000"),
        (png_header_only(0, 10), "bad_dimensions", "0x10"),
    ],
)
def test_bad_frames_fail_with_their_name_and_reason(data: bytes, reason: str, words: str) -> None:
    with pytest.raises(FrameError) as info:
        probe(data, 7, label="cam_01_00007")
    assert info.value.reason == reason and info.value.index == 7
    assert str(info.value).startswith("cam_01_00007: ") and words in str(info.value)


def test_truncated_png_is_refused() -> None:
    _, buf = cv2.imencode(".png", np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(FrameError, match="truncated PNG"):
        probe(buf.tobytes()[:-20], 0)


def test_reduced_jpeg_decode_only_when_the_model_shrinks_the_frame() -> None:
    assert reduction_for(1280, 720, (640, 640), "letterbox") == 2
    assert reduction_for(1280, 720, (320, 320), "letterbox") == 4
    assert reduction_for(1280, 720, (512, 512), "stretch") == 1  # 720/2 < 512 rows
    image, w, h = decode(jpeg(1280, 720), 0, (640, 640), "letterbox")
    assert (w, h) == (1280, 720) and image.shape == (360, 640, 3)


def test_letterbox_centres_pads_and_maps_boxes_back() -> None:
    img = np.zeros((720, 1280, 3), np.uint8)
    out, tf = letterbox(img, (640, 640), 1280, 720)
    assert out.shape == (640, 640, 3) and (tf.pad_x, tf.pad_y) == (0.0, 140.0) and tf.gain_x == 0.5
    assert out[0, 0, 0] == 114 and out[320, 320, 0] == 0
    np.testing.assert_allclose(tf.to_original(np.array([[0, 140, 640, 500]])), [[0, 0, 1280, 720]])
    # a reduced decode (640x360) maps back to the original pixels all the same
    _, tf2 = letterbox(np.zeros((360, 640, 3), np.uint8), (640, 640), 1280, 720)
    assert tf2 == tf


def test_stretch_scales_each_axis() -> None:
    out, tf = stretch(np.zeros((720, 1280, 3), np.uint8), (512, 512), 1280, 720)
    assert out.shape == (512, 512, 3)
    np.testing.assert_allclose(tf.to_original(np.array([[256, 256, 512, 512]])), [[640, 360, 1280, 720]])


def test_to_input_layouts_channels_and_scale() -> None:
    bgr = np.zeros((2, 2, 3), np.uint8)
    bgr[..., 0] = 255  # blue
    nchw = ModelSpec(path=None, backend="onnx", decoder="yolov8", names={0: "a"}, input_size=(2, 2))  # type: ignore[arg-type]
    x = to_input([bgr, bgr], nchw)
    assert x.shape == (2, 3, 2, 2) and x.dtype == np.float32
    assert x[0, 2].max() == 1.0 and x[0, 0].max() == 0.0  # RGB order: blue is the last channel
    nhwc = ModelSpec(
        path=None,
        backend="onnx",
        decoder="centernet",
        names={0: "a"},
        input_size=(2, 2),  # type: ignore[arg-type]
        layout="NHWC",
        scale=1.0,
    )
    y = to_input([bgr], nhwc)
    assert y.shape == (1, 2, 2, 3) and y[0, 0, 0].tolist() == [0.0, 0.0, 255.0]
