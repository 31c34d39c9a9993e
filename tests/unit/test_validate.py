"""Name parsing and image checks on in-memory bytes: every reject reason, the limits, re-encoding."""

from __future__ import annotations

import hashlib
import io
import zlib

import pytest
from PIL import Image

from ipsp.preprocessing.synth.feed import jpeg_with_size
from ipsp.preprocessing.validate import (
    DEFAULT_NAME_PATTERN,
    REASONS,
    Checks,
    InvalidInput,
    check_image,
    compile_pattern,
    parse_fit,
    parse_name,
    sniff_format,
)


def _image(fmt: str = "JPEG", size: tuple[int, int] = (64, 48), **save: object) -> bytes:
    image = Image.new("RGB", size)
    for x in range(size[0]):  # a gradient, so the stream has real content
        for y in range(0, size[1], 4):
            image.putpixel((x, y), (x * 4 % 256, y * 5 % 256, 128))
    out = io.BytesIO()
    image.save(out, format=fmt, **save)
    return out.getvalue()


JPEG = _image("JPEG", quality=90)
PNG = _image("PNG")


def _png_with_size(data: bytes, width: int, height: int) -> bytes:
    """Patch the IHDR of a PNG to claim another size (with a correct CRC)."""
    start = data.index(b"IHDR")
    body = bytearray(data[start : start + 4 + 13])
    body[4:8] = width.to_bytes(4, "big")
    body[8:12] = height.to_bytes(4, "big")
    crc = zlib.crc32(bytes(body)).to_bytes(4, "big")
    return data[:start] + bytes(body) + crc + data[start + 17 + 4 :]


# --- names -------------------------------------------------------------------------

PATTERN = compile_pattern(DEFAULT_NAME_PATTERN)


@pytest.mark.parametrize(
    ("name", "camera_id", "frame_index", "record_key"),
    [
        ("cam_01_00544.jpg", "cam_01", 544, "cam_01_00544"),
        ("cam_20_00000.jpeg", "cam_20", 0, "cam_20_00000"),
        ("cam_7_12.png", "cam_7", 12, "cam_7_12"),
        ("CAM_01_00544.JPG", "CAM_01", 544, "CAM_01_00544"),
    ],
)
def test_parse_name_good(name: str, camera_id: str, frame_index: int, record_key: str) -> None:
    parsed = parse_name(name, PATTERN)
    assert (parsed.camera_id, parsed.frame_index, parsed.record_key) == (camera_id, frame_index, record_key)


@pytest.mark.parametrize(
    "name",
    ["IMG_20240101_0001.jpg", "cam01-544.jpg", "cam_01_00544.jpg.bak", "cam_01_00544.gif", "cam_01_.jpg", "notes.txt"],
)
def test_parse_name_bad(name: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_name(name, PATTERN)
    assert info.value.reason == "bad_name"


def test_custom_pattern_and_its_requirements() -> None:
    pattern = compile_pattern(r"(?P<camera_id>[a-z]+)-(?P<frame_index>\d+)\.jpg")
    parsed = parse_name("north-0042.jpg", pattern)
    assert (parsed.camera_id, parsed.frame_index, parsed.record_key) == ("north", 42, "north-0042")
    with pytest.raises(ValueError, match="frame_index"):
        compile_pattern(r"(?P<camera_id>\w+)\.jpg")
    with pytest.raises(ValueError, match="not a valid regular expression"):
        compile_pattern(r"(?P<camera_id>")


def test_record_key_must_fit_the_contract() -> None:
    pattern = compile_pattern(r"(?P<camera_id>cam \d+)_(?P<frame_index>\d+)\.jpg")
    with pytest.raises(InvalidInput) as info:
        parse_name("cam 1_2.jpg", pattern)
    assert info.value.reason == "bad_name"


# --- bytes --------------------------------------------------------------------------


def test_good_jpeg_and_png_pass_unchanged() -> None:
    for data, fmt in ((JPEG, "jpeg"), (PNG, "png")):
        checked = check_image(data)
        assert (checked.width, checked.height, checked.format) == (64, 48, fmt)
        assert checked.data == data
        assert checked.sha256 == hashlib.sha256(data).hexdigest()


BAD = [
    ("empty", b""),
    ("not_image", b"<html><body>404 Not Found</body></html>"),
    ("not_image", b"\x00" * 100),
    ("unsupported_format", _image("GIF")),
    ("unsupported_format", _image("BMP")),
    ("unsupported_format", b"RIFF\x00\x00\x00\x00WEBPVP8 "),
    ("truncated", JPEG[: len(JPEG) // 2]),
    ("truncated", JPEG[:-2]),
    ("truncated", PNG[: len(PNG) - 20]),
    ("corrupt", JPEG[:20] + bytes(200) + JPEG[220:]),
    ("corrupt", PNG[:16] + b"\xff" * 30 + PNG[46:]),
    ("too_large", jpeg_with_size(JPEG, 60000, 60000)),
    ("too_large", jpeg_with_size(JPEG, 20000, 10)),
    ("too_large", _png_with_size(PNG, 100_000, 100_000)),
]


@pytest.mark.parametrize(("reason", "data"), BAD, ids=[f"{r}-{i}" for i, (r, _) in enumerate(BAD)])
def test_bad_bytes_are_rejected_with_their_reason(reason: str, data: bytes) -> None:
    with pytest.raises(InvalidInput) as info:
        check_image(data)
    assert info.value.reason == reason
    assert reason in REASONS


def test_corrupt_entropy_data_is_caught_by_the_reduced_decode() -> None:
    """The 1/8-scale decode still Huffman-decodes every block, so damage mid-stream shows."""
    big = _image("JPEG", size=(640, 480), quality=95)
    middle = len(big) // 2
    damaged = big[:middle] + bytes(range(256)) * 8 + big[middle + 2048 :]
    with pytest.raises(InvalidInput) as info:
        check_image(damaged)
    assert info.value.reason in ("corrupt", "truncated")


def test_limits_are_checked_from_the_header() -> None:
    with pytest.raises(InvalidInput) as info:
        check_image(JPEG, Checks(max_side=32))
    assert info.value.reason == "too_large"
    with pytest.raises(InvalidInput):
        check_image(JPEG, Checks(max_pixels=64 * 48 - 1))
    assert check_image(JPEG, Checks(max_pixels=64 * 48)).width == 64


def test_details_never_carry_object_addresses() -> None:
    with pytest.raises(InvalidInput) as info:
        check_image(JPEG[:20] + bytes(200) + JPEG[220:])
    assert "0x" not in info.value.detail


def test_reencode_fits_and_is_deterministic() -> None:
    big = _image("PNG", size=(200, 100))
    first = check_image(big, Checks(fit=(50, 50), quality=80))
    again = check_image(big, Checks(fit=(50, 50), quality=80))
    assert (first.width, first.height, first.format) == (50, 25, "jpeg")
    assert first.data == again.data and first.data.startswith(b"\xff\xd8")
    never_enlarged = check_image(JPEG, Checks(fit=(1000, 1000)))
    assert (never_enlarged.width, never_enlarged.height) == (64, 48)


def test_sniff_and_fit_parsing() -> None:
    assert sniff_format(JPEG) == "jpeg" and sniff_format(PNG) == "png"
    assert parse_fit("1280x720") == (1280, 720) and parse_fit(" 640 X 480 ") == (640, 480)
    for text in ("1280", "0x10", "axb"):
        with pytest.raises(ValueError):
            parse_fit(text)


def test_unknown_reason_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        InvalidInput("because")


@pytest.mark.parametrize("pillow_limit", [Image.MAX_IMAGE_PIXELS, None])
def test_bomb_reason_does_not_depend_on_pillows_global_limit(monkeypatch: pytest.MonkeyPatch, pillow_limit) -> None:
    # a Spark worker may or may not have imported code that changed Pillow's process-wide limit
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pillow_limit)
    with pytest.raises(InvalidInput) as info:
        check_image(jpeg_with_size(JPEG, 60000, 60000))
    assert (info.value.reason, str(info.value)) == (
        "too_large",
        "too_large: 60000x60000 exceeds the limits (side 16384, 50000000 pixels)",
    )
