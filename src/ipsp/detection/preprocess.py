"""Step 1 of detection: bytes -> checked, decoded, resized input tensors.

Each frame is checked on its own (empty, not an image, truncated JPEG, absurd size)
so a bad frame fails alone with a ``FrameError`` naming it. The size check reads
only the image header, before any pixel is decoded, so a decompression bomb never
allocates its pixels.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from ipsp.detection.errors import FrameError
from ipsp.detection.spec import ModelSpec

#: largest frame accepted (pixels); 1280x720 is 0.9 MP, a 8K frame 33 MP
DEFAULT_MAX_PIXELS = 40_000_000
#: letterbox padding value, the one YOLO models are trained with
PAD_VALUE = 114
JPEG_SOI = b"\xff\xd8"
JPEG_EOI = b"\xff\xd9"


@dataclass(frozen=True)
class Transform:
    """How a frame was mapped into the model input: ``input = original * gain + pad``."""

    width: int
    height: int
    gain_x: float
    gain_y: float
    pad_x: float
    pad_y: float

    def to_original(self, xyxy: np.ndarray) -> np.ndarray:
        """Map boxes from model-input pixels back to original frame pixels (clipped)."""
        out = np.asarray(xyxy, np.float32).reshape(-1, 4).copy()
        out[:, [0, 2]] = ((out[:, [0, 2]] - self.pad_x) / self.gain_x).clip(0, self.width)
        out[:, [1, 3]] = ((out[:, [1, 3]] - self.pad_y) / self.gain_y).clip(0, self.height)
        return out


# Start-of-frame markers carry the image size (baseline, progressive, lossless, arithmetic).
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a JPEG's frame header, or ``None`` when the markers are broken."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if 0xD0 <= marker <= 0xD8 or marker == 0x01:  # markers without a length
            i += 2
            continue
        if marker in _SOF_MARKERS:
            if i + 9 > n:
                return None
            return int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(data[i + 5 : i + 7], "big")
        if marker == 0xDA:  # scan data before any frame header
            return None
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def header_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` of a JPEG or PNG read from its header alone (``None`` for other data).

    The packer's validation uses it to word a bomb the same way whatever Pillow's
    process-wide limit is (nothing in this package changes that limit).
    """
    if data[:2] == JPEG_SOI:
        return jpeg_size(data)
    if data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return None


def _pil_size(data: bytes) -> tuple[int, int] | None:
    """Size of other formats from PIL's header parser (``None`` when PIL cannot identify it)."""
    # Ultralytics replaces PIL.Image.open with a wrapper that tries to install a HEIF plugin
    # on unknown data; use the original when it is loaded.
    patches = sys.modules.get("ultralytics.utils.patches")
    opener = getattr(patches, "_image_open", Image.open)
    try:
        with opener(io.BytesIO(data)) as img:
            return img.size  # type: ignore[no-any-return]
    except Exception:  # PIL raises many types for junk input; all mean "not an image"
        return None


def probe(data: bytes, index: int, max_pixels: int = DEFAULT_MAX_PIXELS, label: str | None = None) -> tuple[int, int]:
    """Check one frame's bytes from its header only; return ``(width, height)`` or raise FrameError."""
    if not data:
        raise FrameError(index, "empty", "empty frame (0 bytes)", label)
    if data[:2] == JPEG_SOI:
        size = jpeg_size(data)
        # A JPEG cut short still decodes (grey bottom rows); its missing end marker gives it away.
        # 0xFFD9 cannot occur inside entropy-coded data, so finding it near the end is reliable.
        if size is not None and JPEG_EOI not in data[-256:]:
            raise FrameError(index, "corrupt", f"truncated JPEG ({len(data)} bytes, no end-of-image marker)", label)
    elif data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR" and len(data) >= 24:
        size = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        if b"IEND" not in data[-16:]:
            raise FrameError(index, "corrupt", f"truncated PNG ({len(data)} bytes, no IEND chunk)", label)
    else:
        size = _pil_size(data)
    if size is None:
        raise FrameError(index, "corrupt", f"not a decodable image ({len(data)} bytes)", label)
    width, height = size
    if width <= 0 or height <= 0:
        raise FrameError(index, "bad_dimensions", f"image has size {width}x{height}", label)
    if width * height > max_pixels:
        raise FrameError(
            index, "too_large", f"image is {width}x{height} ({width * height / 1e6:.0f} MP), the limit is "
            f"{max_pixels / 1e6:.0f} MP", label
        )  # fmt: skip
    return width, height


def reduction_for(width: int, height: int, target: tuple[int, int], resize: str) -> int:
    """Largest JPEG DCT reduction (1, 2, 4, 8) that still leaves at least the pixels the model input uses."""
    th, tw = target
    if resize == "stretch":
        need_w, need_h = tw, th
    else:
        gain = min(th / height, tw / width)
        need_w, need_h = round(width * gain), round(height * gain)
    factor = 1
    for f in (2, 4, 8):
        if width // f >= need_w and height // f >= need_h:
            factor = f
    return factor


_REDUCED = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


def decode(
    data: bytes,
    index: int,
    target: tuple[int, int] | None = None,
    resize: str = "letterbox",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    label: str | None = None,
) -> tuple[np.ndarray, int, int]:
    """Decode one frame to a BGR uint8 array; return ``(image, original_width, original_height)``.

    When ``target`` (model input ``(h, w)``) is given, JPEGs are decoded at a reduced
    scale if the model would shrink them anyway: libjpeg's DCT scaling is cheaper
    than a full decode and a resize, and it averages instead of aliasing.
    """
    width, height = probe(data, index, max_pixels, label)
    factor = reduction_for(width, height, target, resize) if target else 1
    flag = _REDUCED[factor] if data[:2] == JPEG_SOI else cv2.IMREAD_COLOR
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if image is None:
        raise FrameError(index, "corrupt", f"image data could not be decoded ({len(data)} bytes)", label)
    return image, width, height


def letterbox(image: np.ndarray, size: tuple[int, int], width: int, height: int) -> tuple[np.ndarray, Transform]:
    """Resize keeping the aspect ratio and pad to ``size`` (h, w) with grey, centred.

    ``width``/``height`` are the original frame's, so the transform maps back to the
    original pixels even when the image was decoded at a reduced scale.
    """
    th, tw = size
    gain = min(th / height, tw / width)
    new_w, new_h = round(width * gain), round(height * gain)
    if image.shape[1] != new_w or image.shape[0] != new_h:
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    dw, dh = (tw - new_w) / 2, (th - new_h) / 2
    # the +-0.1 splits an odd padding the same way on every frame (one pixel more at bottom/right)
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    if top or bottom or left or right:
        image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return image, Transform(width, height, gain, gain, float(left), float(top))


def stretch(image: np.ndarray, size: tuple[int, int], width: int, height: int) -> tuple[np.ndarray, Transform]:
    """Plain bilinear resize to ``size`` (h, w), aspect ratio not kept."""
    th, tw = size
    if image.shape[:2] != (th, tw):
        image = cv2.resize(image, (tw, th), interpolation=cv2.INTER_LINEAR)
    return image, Transform(width, height, tw / width, th / height, 0.0, 0.0)


def to_input(images: list[np.ndarray], spec: ModelSpec) -> np.ndarray:
    """Stack resized BGR images into the model's float32 tensor (layout, channels, scale)."""
    batch = np.stack(images)
    if spec.channel_order == "RGB":
        batch = batch[..., ::-1]
    if spec.layout == "NCHW":
        batch = batch.transpose(0, 3, 1, 2)
    out = np.ascontiguousarray(batch, dtype=np.float32)
    if spec.scale != 1.0:
        out *= np.float32(spec.scale)
    return out


def prepare(image: np.ndarray, spec: ModelSpec, width: int, height: int) -> tuple[np.ndarray, Transform]:
    """Resize one decoded image the way its model expects."""
    fit = stretch if spec.resize == "stretch" else letterbox
    return fit(image, spec.input_size, width, height)
