"""CenterNet training targets of one image (NumPy only, so they are testable without torch).

Each object puts a Gaussian peak on the output cell nearest its box centre (stride
4); the box loss covers the cells of the box's central third, weighted so that a
small object counts as much as a large one; a cell two objects claim keeps the
smaller (the one the larger would hide).
"""

from __future__ import annotations

import math

import numpy as np

#: input pixels per output cell of the CenterNet head
STRIDE = 4


def gaussian_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """CenterNet's radius: the largest centre shift that still leaves IoU >= ``min_overlap`` (output cells)."""
    a1, b1 = 1.0, height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1**2 - 4 * a1 * c1)) / 2
    a2, b2 = 4.0, 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2**2 - 4 * a2 * c2)) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return max(0.0, min(r1, r2, r3))


def make_targets(
    boxes: np.ndarray, classes: np.ndarray, nc: int, out_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heatmap ``(nc, h, w)``, box target ``(4, h, w)`` (xyxy input pixels) and weight ``(h, w)`` for one image.

    ``boxes`` are xyxy in input pixels, ``out_hw`` the output grid (input size / ``STRIDE``).
    """
    h, w = out_hw
    heat = np.zeros((nc, h, w), np.float32)
    box_t = np.zeros((4, h, w), np.float32)
    weight = np.zeros((h, w), np.float32)
    area_at = np.full((h, w), np.inf, np.float32)
    ys, xs = np.mgrid[0:h, 0:w]
    for box, cls in zip(boxes, classes, strict=True):
        x1, y1, x2, y2 = box / STRIDE
        bw, bh = x2 - x1, y2 - y1
        if bw <= 0.5 or bh <= 0.5:
            continue
        cx, cy = min(max((x1 + x2) / 2, 0), w - 1), min(max((y1 + y2) / 2, 0), h - 1)
        radius = max(0.0, gaussian_radius(bh, bw))
        sigma = max((2 * int(radius) + 1) / 6, 0.5)
        peak = np.exp(-((xs - round(cx)) ** 2 + (ys - round(cy)) ** 2) / (2 * sigma**2))
        heat[cls] = np.maximum(heat[cls], peak)
        inner = (np.abs(xs - cx) <= max(bw / 6, 0.5)) & (np.abs(ys - cy) <= max(bh / 6, 0.5))
        area = bw * bh
        claim = inner & (area < area_at)
        area_at[claim] = area
        box_t[:, claim] = np.asarray(box, np.float32)[:, None]
        weight[claim] = 1.0 / max(claim.sum(), 1)
    return heat, box_t, weight
