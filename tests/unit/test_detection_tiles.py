"""Sliced inference: the tile grid covers the frame with overlap; merged boxes are in frame pixels, once."""

from __future__ import annotations

import numpy as np
import pytest

from ipsp.detection.tiles import merge, tile_boxes
from ipsp.detection.types import Detections

NAMES = {2: "car", 7: "truck"}


@pytest.mark.parametrize(
    ("width", "height", "grid", "overlap"), [(1280, 720, 2, 0.2), (800, 600, 3, 0.25), (64, 64, 1, 0.0)]
)
def test_tiles_cover_the_frame_and_overlap(width: int, height: int, grid: int, overlap: float) -> None:
    tiles = tile_boxes(width, height, grid, overlap)
    assert len(tiles) == grid * grid
    covered = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in tiles:
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    if grid > 1:
        first, second = tiles[0], tiles[1]
        assert second[0] < first[2]  # horizontal neighbours share a strip
        assert (first[2] - second[0]) == pytest.approx(overlap * (first[2] - first[0]), abs=2)


def test_bad_grid_is_refused() -> None:
    with pytest.raises(ValueError, match="grid"):
        tile_boxes(100, 100, 0, 0.2)


def test_merge_shifts_tile_boxes_and_keeps_one_box_per_object() -> None:
    full = Detections.from_arrays(np.array([[600, 300, 700, 360]], np.float32), [0.6], [2], NAMES, (1280, 720))
    # the same car seen in the bottom-right tile (offset 560, 300), a second car only the tile saw
    tile = Detections.from_arrays(
        np.array([[42, 2, 139, 61], [500, 300, 530, 320]], np.float32), [0.8, 0.5], [2, 2], NAMES, (720, 420)
    )
    merged = merge([full, tile], [(0, 0), (560, 300)], (1280, 720), iou=0.5)
    assert merged.image_size == (1280, 720) and len(merged) == 2
    assert merged.xyxy.tolist() == [[602, 302, 699, 361], [1060, 600, 1090, 620]]
    assert merged.confidence.tolist() == pytest.approx([0.8, 0.5])
