"""Scoring predicted vehicles against reference boxes, the way the fidelity table and ipsp train do."""

from __future__ import annotations

import numpy as np

from ipsp.detection.fidelity import Score, counted_vehicles, match, reference_vehicles
from ipsp.detection.metrics import CamerasConfig
from ipsp.detection.types import Detections

NAMES = {0: "motorbike", 1: "car", 2: "bus", 3: "truck"}


def boxes(*rows: tuple[float, float, float, float]) -> np.ndarray:
    return np.asarray(rows, np.float32).reshape(-1, 4)


def test_match_is_one_to_one_at_iou_half() -> None:
    ref = boxes((0, 0, 10, 10), (20, 0, 30, 10))
    # two predictions on the first object: one is right, the duplicate is a false positive
    tp, fp, used = match(boxes((0, 0, 10, 10), (1, 0, 11, 10), (50, 50, 60, 60)), ref)
    assert (tp, fp, used.tolist()) == (1, 2, [True, False])


def test_a_match_to_an_uncertain_reference_is_neither_right_nor_wrong() -> None:
    tp, fp, used = match(boxes((0, 0, 10, 10)), boxes(), unsure=boxes((0, 0, 10, 10)))
    assert (tp, fp, used.size) == (0, 0, 0)


def test_score_counts_per_frame_and_per_class() -> None:
    score = Score()
    score.add(boxes((0, 0, 10, 10)), ["car"], boxes((0, 0, 10, 10), (20, 0, 30, 10)), ["car", "motorbike"])
    score.add(boxes((0, 0, 10, 10), (40, 0, 50, 10)), ["truck", "truck"], boxes((0, 0, 10, 10)), ["truck"])
    result = score.result()
    assert result["tp_fp_fn"] == [2, 1, 1]
    assert (result["precision"], result["recall"], result["count_mae"]) == (0.667, 0.667, 1.0)
    assert result["per_class"]["motorbike"] == {"reference": 1, "recall": 0.0, "count_mae": 0.5}
    assert result["per_class"]["truck"] == {"reference": 1, "recall": 1.0, "count_mae": 0.5}
    assert result["per_class"]["bus"]["recall"] is None


def test_counted_and_reference_vehicles_follow_the_roi() -> None:
    frame = (100, 100)
    det = Detections.from_arrays(
        boxes((10, 5, 20, 15), (10, 50, 20, 60), (30, 50, 40, 60)), np.array([0.9, 0.8, 0.7]), [1, 0, 3], NAMES, frame
    )
    cfg = CamerasConfig()
    pred, classes = counted_vehicles(det, "cam", cfg)  # the first stands above the default ROI (top quarter)
    assert classes == ["motorbike", "truck"] and len(pred) == 2
    ref, ref_classes = reference_vehicles(det, "cam", cfg)
    assert ref_classes == classes and np.array_equal(ref, pred)
