"""Sliced (tiled) inference: small, distant vehicles on high-resolution frames.

A detector with a 416-512 px input sees a 1280x720 frame shrunk 2.5-3x, so a car
far down the road becomes a few pixels. Here the frame is also cut into a grid of
overlapping tiles, each run at the model's input size, and the boxes of the whole
frame and of every tile (shifted back into frame pixels) are merged by same-class
NMS. Cost: ``1 + grid**2`` model runs per frame. ``make bench-fidelity`` measures
whether it pays off; it is an option, not the default.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ipsp.detection.postprocess import class_nms
from ipsp.detection.types import Detections

if TYPE_CHECKING:
    from ipsp.detection.detector import Detector


def tile_boxes(width: int, height: int, grid: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """``grid x grid`` tiles ``(x0, y0, x1, y1)`` covering the frame, neighbours overlapping by ``overlap``."""
    if grid < 1 or not 0.0 <= overlap < 1.0:
        raise ValueError("grid must be >= 1 and overlap in [0, 1)")
    tile_w = width / (grid - (grid - 1) * overlap)
    tile_h = height / (grid - (grid - 1) * overlap)
    tiles = []
    for row in range(grid):
        for col in range(grid):
            x0 = round(col * tile_w * (1 - overlap))
            y0 = round(row * tile_h * (1 - overlap))
            tiles.append((x0, y0, min(width, round(x0 + tile_w)), min(height, round(y0 + tile_h))))
    return tiles


def merge(parts: list[Detections], offsets: list[tuple[int, int]], size: tuple[int, int], iou: float) -> Detections:
    """Boxes of every part shifted by its offset, then same-class NMS across parts."""
    names = parts[0].names
    boxes = [p.xyxy + np.array([dx, dy, dx, dy], np.float32) for p, (dx, dy) in zip(parts, offsets, strict=True)]
    xyxy = np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32)
    conf = np.concatenate([p.confidence for p in parts])
    cls = np.concatenate([p.class_id for p in parts])
    keep = class_nms(xyxy, conf, cls, iou, max_det=1000)
    return Detections.from_arrays(xyxy[keep], conf[keep], cls[keep], names, size)


def detect_tiled(detector: Detector, image: np.ndarray, grid: int = 2, overlap: float = 0.2) -> Detections:
    """Detections of one BGR frame: the whole frame plus ``grid x grid`` overlapping tiles, merged."""
    height, width = image.shape[:2]
    tiles = tile_boxes(width, height, grid, overlap)
    crops = [image] + [np.ascontiguousarray(image[y0:y1, x0:x1]) for x0, y0, x1, y1 in tiles]
    parts = detector.detect_images(crops)
    offsets = [(0, 0)] + [(x0, y0) for x0, y0, _, _ in tiles]
    return merge(parts, offsets, (width, height), detector.iou_threshold)
