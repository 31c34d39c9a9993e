"""Detections: construction, clipping, contract records, selection."""

from __future__ import annotations

import numpy as np
import pytest

from ipsp.contracts import Detection
from ipsp.detection.types import Detections, StepTimings

NAMES = {0: "person", 1: "bicycle", 2: "car", 3: "motorcycle"}


def make(boxes: list[list[float]], conf: list[float], cls: list[int], size: tuple[int, int] = (100, 50)) -> Detections:
    return Detections.from_arrays(np.array(boxes, np.float32), conf, cls, NAMES, size)


def test_from_arrays_clips_to_frame_and_fixes_dtypes() -> None:
    det = make([[-5, -5, 20, 10], [90, 40, 130, 70]], [0.9, 0.5], [2, 3])
    assert det.xyxy.dtype == np.float32 and det.class_id.dtype == np.int64
    np.testing.assert_allclose(det.xyxy, [[0, 0, 20, 10], [90, 40, 100, 50]])
    np.testing.assert_allclose(det.box_xywh, [[0, 0, 20, 10], [90, 40, 10, 10]])
    np.testing.assert_allclose(det.area, [200, 100])


def test_records_follow_the_contract_and_map_traffic_names() -> None:
    det = make([[10, 10, 30, 40]], [0.87654], [3])
    records = det.to_records({"motorcycle": "motorbike"})
    assert records == [{"cls": "motorbike", "conf": 0.8765, "box_xywh": [10.0, 10.0, 20.0, 30.0]}]
    Detection.model_validate(records[0])  # the contract accepts it as is
    assert det.to_records()[0]["cls"] == "motorcycle"  # unmapped: the model's own name


def test_unknown_class_id_gets_a_readable_name() -> None:
    assert make([[0, 0, 1, 1]], [0.5], [42]).class_names == ["class_42"]


def test_select_and_empty() -> None:
    det = make([[0, 0, 1, 1], [1, 1, 2, 2]], [0.2, 0.8], [0, 2])
    high = det.select(det.confidence > 0.5)
    assert len(high) == 1 and high.class_names == ["car"]
    empty = Detections.empty(NAMES, (640, 480))
    assert len(empty) == 0 and empty.to_records() == [] and empty.box_xywh.shape == (0, 4)


def test_inconsistent_arrays_are_refused() -> None:
    with pytest.raises(ValueError, match="inconsistent"):
        Detections(np.zeros((2, 4), np.float32), np.zeros(1, np.float32), np.zeros(2, np.int64), NAMES, (1, 1))


def test_step_timings_accumulate_and_average() -> None:
    total = StepTimings()
    total.add(StepTimings(frames=2, batches=1, pre_ms=4, infer_ms=10, post_ms=2))
    total.add(StepTimings(frames=2, batches=1, pre_ms=4, infer_ms=10, post_ms=2))
    assert total.per_frame() == {"pre_ms": 2.0, "infer_ms": 5.0, "post_ms": 1.0, "total_ms": 8.0}
    assert StepTimings().per_frame()["total_ms"] == 0.0
