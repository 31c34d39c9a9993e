"""Training augmentations for traffic-camera frames (NumPy and OpenCV only).

The labelled frames are daylight; the cameras the model serves also film dusk, night
and rain. Besides the usual scale, crop and flip, a share of the frames goes through
a *weather* step drawn from what changes on such a camera:

- ``dusk``: less light (gamma > 1, lower gain), a warm or blue cast, lifted blacks,
  sensor noise;
- ``rain``: thin bright slanted streaks, a veil of lower contrast, slight blur;
- ``wet road``: the scene mirrored onto the road, blurred and faint, the way a wet
  surface reflects lights and vehicles;
- ``blur``: defocus or horizontal motion blur.

Every step takes a ``numpy.random.Generator`` so a run is reproducible from its seed.
Boxes are xyxy in pixels of the image they come with.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    """How strongly to augment; ``weather`` is the share of frames that get a weather step."""

    scale: tuple[float, float] = (0.85, 1.25)
    flip: float = 0.5
    weather: float = 0.6
    colour: float = 0.8


def adjust_light(image: np.ndarray, gain: float, gamma: float, tint: tuple[float, float, float]) -> np.ndarray:
    """Scale brightness, bend the tone curve and cast a colour (RGB multipliers)."""
    x = image.astype(np.float32) / 255.0
    x = np.power(np.clip(x * gain, 0.0, 1.0), gamma) * np.asarray(tint, np.float32)
    return np.clip(x * 255.0, 0, 255).astype(np.uint8)


def dusk(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Evening light: darker, warm or blue, lifted blacks and noise."""
    tint = (1.0, 0.92, 0.8) if rng.random() < 0.5 else (0.8, 0.9, 1.05)
    out = adjust_light(image, float(rng.uniform(0.45, 0.8)), float(rng.uniform(1.2, 1.9)), tint).astype(np.float32)
    out = out * 0.9 + 255 * rng.uniform(0.0, 0.06)
    out += rng.normal(0.0, rng.uniform(2, 7), out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def rain(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rain streaks, a grey veil and slight blur."""
    h, w = image.shape[:2]
    streaks = np.zeros((h, w), np.float32)
    n = int(rng.uniform(0.0004, 0.0015) * h * w)
    length = rng.uniform(0.02, 0.06) * h
    angle = rng.uniform(-0.35, 0.35)
    xs, ys = rng.uniform(0, w, n), rng.uniform(0, h, n)
    dx, dy = np.sin(angle) * length, np.cos(angle) * length
    for x, y in zip(xs, ys, strict=True):
        cv2.line(streaks, (int(x), int(y)), (int(x + dx), int(y + dy)), float(rng.uniform(0.3, 0.8)), 1)
    soft = cv2.GaussianBlur(streaks, (3, 3), 0)[:, :, None]
    veil = float(rng.uniform(0.05, 0.25))
    out = image.astype(np.float32) * (1 - veil) + 180.0 * veil
    out = out * (1 - soft * 0.6) + 230.0 * soft * 0.6
    out = cv2.GaussianBlur(out, (3, 3), 0)
    return np.clip(out, 0, 255).astype(np.uint8)


def wet_road(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A faint, blurred mirror image on the lower part of the frame, as on a wet road."""
    h = image.shape[0]
    mirror = cv2.GaussianBlur(image[::-1], (0, 0), float(rng.uniform(3, 8))).astype(np.float32)
    ramp = np.clip((np.arange(h, dtype=np.float32) / h - 0.35) / 0.65, 0, 1)[:, None, None]
    alpha = ramp * float(rng.uniform(0.12, 0.3))
    out = image.astype(np.float32) * (1 - alpha) + mirror * alpha
    return np.clip(out, 0, 255).astype(np.uint8)


def blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Defocus or horizontal motion blur."""
    if rng.random() < 0.5:
        return cv2.GaussianBlur(image, (0, 0), float(rng.uniform(0.6, 1.6)))
    size = int(rng.integers(3, 8))
    kernel = np.zeros((size, size), np.float32)
    kernel[size // 2, :] = 1.0 / size
    return cv2.filter2D(image, -1, kernel)


def weather(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One to three weather steps in a plausible order (the scene first, the lens last)."""
    if rng.random() < 0.5:
        image = wet_road(image, rng)
    if rng.random() < 0.6:
        image = dusk(image, rng)
    if rng.random() < 0.5:
        image = rain(image, rng)
    if rng.random() < 0.3:
        image = blur(image, rng)
    return image


def colour_jitter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation changes of everyday light."""
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[:, :, 1] *= rng.uniform(0.6, 1.4)
    hsv[:, :, 2] = (hsv[:, :, 2] - 128) * rng.uniform(0.7, 1.3) + 128 + rng.uniform(-25, 25)
    hsv = np.clip(hsv, 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def scale_crop(
    image: np.ndarray, boxes: np.ndarray, out_hw: tuple[int, int], scale: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resize the whole frame to ``scale`` x the output size and cut a random window of the output size.

    Returns the window, its boxes (clipped) and which input boxes kept at least half
    their area (the others are dropped: a vehicle mostly outside the frame is not one
    the model should be sure of).
    """
    oh, ow = out_hw
    h, w = image.shape[:2]
    sh, sw = max(oh, round(oh * scale)), max(ow, round(ow * scale))
    resized = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA if sw < w else cv2.INTER_LINEAR)
    x0 = int(rng.integers(0, sw - ow + 1))
    y0 = int(rng.integers(0, sh - oh + 1))
    window = resized[y0 : y0 + oh, x0 : x0 + ow]
    scaled = boxes * np.asarray([sw / w, sh / h, sw / w, sh / h], np.float32) - np.asarray([x0, y0, x0, y0])
    clipped = scaled.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, ow)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, oh)
    area = (scaled[:, 2] - scaled[:, 0]) * (scaled[:, 3] - scaled[:, 1])
    kept_area = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = kept_area >= 0.5 * np.maximum(area, 1e-6)
    return np.ascontiguousarray(window), clipped[keep], keep


def augment(
    image: np.ndarray, boxes: np.ndarray, out_hw: tuple[int, int], cfg: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One training view of an RGB frame: window of ``out_hw``, its boxes, and the mask of kept input boxes."""
    window, kept_boxes, keep = scale_crop(image, boxes, out_hw, float(rng.uniform(*cfg.scale)), rng)
    if rng.random() < cfg.flip:
        window = np.ascontiguousarray(window[:, ::-1])
        w = out_hw[1]
        kept_boxes = np.stack([w - kept_boxes[:, 2], kept_boxes[:, 1], w - kept_boxes[:, 0], kept_boxes[:, 3]], 1)
    if rng.random() < cfg.colour:
        window = colour_jitter(window, rng)
    if rng.random() < cfg.weather:
        window = weather(window, rng)
    return window, kept_boxes.reshape(-1, 4).astype(np.float32), keep


def rain_at_dusk(image: np.ndarray, seed: int) -> np.ndarray:
    """A fixed, seeded dusk + rain + wet-road rendering of a frame (the robustness check on held-out frames)."""
    rng = np.random.default_rng(seed)
    return rain(dusk(wet_road(image, rng), rng), rng)
