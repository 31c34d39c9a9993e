"""Pure checks of one input file: its name, then its bytes (no Spark, no I/O).

The packer runs these inside Spark tasks; they are plain functions so the unit
tests can feed them in-memory bad bytes. Every failure is an ``InvalidInput``
carrying one of the reasons in ``REASONS``, which is what ``rejects.jsonl``
records.

Order of the byte checks, cheapest first and never decoding what the header
already condemns: empty -> signature sniff (JPEG / PNG / other image / not an
image) -> header dimensions (decompression bomb) -> full decode (a truncated or
corrupt stream only shows up here) -> optional re-encode.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from dataclasses import dataclass
from pathlib import PurePosixPath

from ipsp.contracts import RECORD_KEY_PATTERN
from ipsp.detection.preprocess import header_size

#: every reason an input file can be rejected for, in the order the checks run
REASONS: dict[str, str] = {
    "bad_name": "the file name does not match the name pattern (no camera id / frame index)",
    "duplicate_key": "another input file already has this record key (e.g. a.jpg and a.png)",
    "unreadable": "the file could not be read (permissions, dangling link, vanished object)",
    "empty": "zero-byte file",
    "not_image": "the bytes are not an image (e.g. HTML or text saved with an image extension)",
    "unsupported_format": "an image, but not JPEG or PNG (GIF, BMP, WebP, TIFF ...)",
    "too_large": "header dimensions over the limits (decompression bomb); never decoded",
    "truncated": "the image stream ends early (partial download or copy)",
    "corrupt": "the image stream does not decode (damaged header or data)",
    "duplicate": "same bytes (sha256) as a frame already packed; see duplicate_of",
}

#: default file-name pattern, matching the user's dataset (``cam_01_00544.jpg``)
DEFAULT_NAME_PATTERN = r"(?P<camera_id>cam_\d+)_(?P<frame_index>\d+)\.(?:jpe?g|png)"
#: formats the contract allows (FrameInfo.format)
FORMATS = ("jpeg", "png")
DEFAULT_MAX_SIDE = 16384  # FrameInfo caps width and height here
DEFAULT_MAX_PIXELS = 50_000_000  # ~8K x 6K; a traffic camera is far below

_RECORD_KEY = re.compile(RECORD_KEY_PATTERN)
_OBJECT_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")
_OTHER_IMAGES: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
)


class InvalidInput(Exception):
    """An input file that cannot be packed; ``reason`` is a key of ``REASONS``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown reject reason {reason!r}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class FrameName:
    """What a file name says about its frame."""

    record_key: str
    camera_id: str
    frame_index: int


@dataclass(frozen=True, slots=True)
class Checks:
    """Limits and the optional re-encode applied to every image."""

    max_side: int = DEFAULT_MAX_SIDE
    max_pixels: int = DEFAULT_MAX_PIXELS
    #: re-encode to fit inside (width, height), keeping the aspect ratio, never enlarging
    fit: tuple[int, int] | None = None
    #: re-encode as JPEG at this quality (also used when only ``fit`` is set)
    quality: int | None = None

    @property
    def reencode(self) -> bool:
        """True when images are re-encoded rather than stored as they came."""
        return self.fit is not None or self.quality is not None


@dataclass(frozen=True, slots=True)
class CheckedImage:
    """An image that passed: the bytes to store and what the manifest records."""

    data: bytes
    width: int
    height: int
    format: str
    sha256: str


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a name pattern; it must have named groups ``camera_id`` and ``frame_index``."""
    try:
        compiled = re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"name pattern {pattern!r} is not a valid regular expression: {exc}") from None
    missing = {"camera_id", "frame_index"} - set(compiled.groupindex)
    if missing:
        raise ValueError(f"name pattern {pattern!r} lacks the named group(s) {', '.join(sorted(missing))}")
    return compiled


def parse_name(name: str, pattern: re.Pattern[str]) -> FrameName:
    """Camera id, frame index and record key (the file's stem) from a base file name.

    The whole name must match (``fullmatch``), so ``cam_01_00544.jpg.bak`` is
    rejected rather than half-parsed.
    """
    match = pattern.fullmatch(name)
    if match is None:
        raise InvalidInput("bad_name", f"{name!r} does not match {pattern.pattern!r}")
    camera_id = match.group("camera_id")
    record_key = PurePosixPath(name).stem
    try:
        frame_index = int(match.group("frame_index"))
    except (TypeError, ValueError):
        raise InvalidInput("bad_name", f"{name!r}: frame index is not a number") from None
    for label, value in (("camera id", camera_id), ("record key", record_key)):
        if not _RECORD_KEY.match(value or ""):
            raise InvalidInput("bad_name", f"{name!r}: {label} {value!r} has characters the contract forbids")
    return FrameName(record_key=record_key, camera_id=camera_id, frame_index=frame_index)


def sniff_format(data: bytes) -> str:
    """``jpeg`` or ``png`` from the magic bytes; InvalidInput for anything else."""
    if not data:
        raise InvalidInput("empty", "zero bytes")
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        raise InvalidInput("unsupported_format", "WebP")
    for magic, name in _OTHER_IMAGES:
        if data.startswith(magic):
            raise InvalidInput("unsupported_format", name)
    head = data[:16].decode("latin-1").encode("unicode_escape").decode()
    raise InvalidInput("not_image", f"starts with {head!r}")


def check_image(data: bytes, checks: Checks | None = None, sha256: str | None = None) -> CheckedImage:
    """Validate one image fully and return the bytes to store (re-encoded when asked).

    The header's dimensions are checked before any pixel is decoded; then the
    whole stream is decoded, since only that reveals a truncated or corrupt one.
    ``sha256``: the digest of ``data`` when the caller already took it while reading.
    """
    from PIL import Image, UnidentifiedImageError

    checks = checks or Checks()
    fmt = sniff_format(data)
    if fmt == "jpeg" and not _jpeg_has_end(data):
        raise InvalidInput("truncated", "no end-of-image marker after the last scan")
    if fmt == "png" and data.rfind(b"IEND") < data.rfind(b"IDAT"):
        # Pillow decodes a PNG that lost its last bytes without complaint
        raise InvalidInput("truncated", "no IEND chunk after the image data")
    with warnings.catch_warnings():
        # Pillow warns (and errors past 2x) on its own bomb limit; ours is lower and explicit
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            # the same reason and detail whether or not Pillow's process-wide limit is on
            size = header_size(data)
            if size is not None:
                _check_size(*size, checks)
            raise InvalidInput("too_large", str(exc)) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise InvalidInput("corrupt", f"header does not parse: {_short(exc)}") from None
        width, height = image.size
        _check_size(width, height, checks)
        if fmt == "jpeg" and not checks.reencode:
            image.draft(image.mode, (-(-width // 8), -(-height // 8)))
        try:
            image.load()
        except OSError as exc:
            reason = "truncated" if "truncated" in str(exc) else "corrupt"
            raise InvalidInput(reason, _short(exc)) from None
        except (SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
            raise InvalidInput("corrupt", _short(exc)) from None
    if checks.reencode:
        data, width, height = _reencode(image, checks)
        fmt = "jpeg"
        sha256 = None
    digest = sha256 or hashlib.sha256(data).hexdigest()
    return CheckedImage(data=data, width=width, height=height, format=fmt, sha256=digest)


def parse_fit(text: str) -> tuple[int, int]:
    """``1280x720`` -> (1280, 720); ValueError with a clear message otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise ValueError(f"size {text!r} must look like WIDTHxHEIGHT, e.g. 1280x720")
    return int(match.group(1)), int(match.group(2))


def _check_size(width: int, height: int, checks: Checks) -> None:
    if width < 1 or height < 1:
        raise InvalidInput("corrupt", f"header says {width}x{height}")
    if width > checks.max_side or height > checks.max_side or width * height > checks.max_pixels:
        raise InvalidInput(
            "too_large",
            f"{width}x{height} exceeds the limits (side {checks.max_side}, {checks.max_pixels} pixels)",
        )


def _jpeg_has_end(data: bytes) -> bool:
    # FF D9 cannot occur inside entropy-coded data (0xFF is byte-stuffed there),
    # so an EOI after the last SOS means the stream reached its end
    end = data.rfind(b"\xff\xd9")
    return end > data.rfind(b"\xff\xda")


def _reencode(image: object, checks: Checks) -> tuple[bytes, int, int]:
    from PIL import Image

    assert isinstance(image, Image.Image)
    rgb = image.convert("RGB")
    if checks.fit is not None:
        box_w, box_h = checks.fit
        scale = min(box_w / rgb.width, box_h / rgb.height, 1.0)
        if scale < 1.0:
            size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
            rgb = rgb.resize(size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    # no EXIF, no optimize pass, fixed subsampling: same pixels in, same bytes out
    rgb.save(out, format="JPEG", quality=checks.quality or 90, subsampling=2, optimize=False)
    return out.getvalue(), rgb.width, rgb.height


def _short(exc: BaseException) -> str:
    # drop object reprs ("<_io.BytesIO object at 0x7f...>"): rejects.jsonl must not vary run to run
    text = _OBJECT_REPR.sub("<bytes>", str(exc)).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
