"""What both feeds share: the sources, a camera's fixed scene, and the view and colour maths."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MARGIN = 8  # rendered border used for camera shake


Box = tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of the photo


@dataclass(frozen=True)
class Source:
    """A real photo a package ships (``scene``: where a camera may look, ``sprite``: what may move),
    or a real video clip (``clip``: its path; the whole frame is the scene)."""

    name: str
    scene: Box | None
    sprite: Box | None
    clip: str | None = None


@dataclass
class Sprite:
    """A vehicle cut from a photo, moving along a lane."""

    image: np.ndarray
    alpha: np.ndarray
    y: int
    speed: float
    phase: float


@dataclass
class Scene:
    """Everything about one camera that does not change from frame to frame."""

    camera_no: int
    base: np.ndarray  # (H + 2 margin, W + 2 margin, 3) BGR
    noise_pos: np.ndarray
    noise_neg: np.ndarray
    sprites: list[Sprite]
    light_amp: float
    light_period: float
    light_phase: float
    label: str
    clip: str | None = None  # footage feed: the clip this camera plays
    matrix: np.ndarray | None = None  # footage feed: output pixel -> clip pixel
    luts: np.ndarray | None = None  # footage feed: (3, 256) colour curves
    start: int = 0  # footage feed: the clip frame this camera starts at


def view_matrix(
    src_w: int, src_h: int, rng: np.random.Generator, out_w: int, out_h: int, max_zoom: float = 1.5,
    max_tilt: float = 3.0, max_drop: float = 1.0,
) -> np.ndarray:  # fmt: skip
    """Inverse affine map (output pixel -> source pixel) of a random 16:9 view of the source.

    ``max_drop`` limits how far below the top the view may start, as a share of the
    room there is (the road clips have their traffic in the upper part).
    """
    aspect = out_w / out_h
    crop_w = min(src_w, src_h * aspect) / rng.uniform(1.0, max_zoom)
    crop_h = crop_w / aspect
    cx = rng.uniform(crop_w / 2, src_w - crop_w / 2)
    cy = rng.uniform(crop_h / 2, crop_h / 2 + max_drop * (src_h - crop_h))
    angle = np.deg2rad(rng.uniform(-max_tilt, max_tilt))
    scale = crop_w / out_w
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
    flip = -1.0 if rng.random() < 0.5 else 1.0
    # output pixel (u, v) -> source (x, y): centre + R * S * (u - out centre)
    return np.array(
        [
            [flip * cos, -sin, cx - flip * cos * out_w / 2 + sin * out_h / 2],
            [flip * sin, cos, cy - flip * sin * out_w / 2 - cos * out_h / 2],
        ]
    )


def apply_luts(image: np.ndarray, luts: np.ndarray) -> np.ndarray:
    """``image`` through one camera's ``(3, 256)`` colour curves."""
    import cv2

    return cv2.merge([cv2.LUT(image[:, :, c], luts[c]) for c in range(3)])


def colour_luts(rng: np.random.Generator) -> np.ndarray:
    """``(3, 256)`` uint8 curves: white balance, gamma and haze of one camera."""
    gains = rng.uniform(0.86, 1.14, 3)
    gamma = rng.uniform(0.8, 1.25)
    haze = rng.uniform(0.0, 0.18)
    haze_level = rng.uniform(150, 220)
    ramp = np.arange(256) / 255.0
    curves = []
    for c in range(3):
        curve = (ramp**gamma) * 255.0 * gains[c]
        curve = curve * (1 - haze) + haze_level * haze
        curves.append(np.clip(curve, 0, 255).astype(np.uint8))
    return np.stack(curves)
