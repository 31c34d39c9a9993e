"""Decoders and NMS on hand-built model outputs (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest

from ipsp.detection.errors import ModelError
from ipsp.detection.postprocess import class_nms, decode, decode_topk, decode_yolov8, nms


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float32)
    scores = np.array([0.8, 0.9, 0.7], np.float32)
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert nms(boxes, scores, 0.9).tolist() == [1, 0, 2]  # IoU 0.68 survives a 0.9 threshold


def test_class_nms_never_merges_different_classes() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    assert class_nms(boxes, scores, np.array([0, 1]), 0.5, 300).tolist() == [0, 1]
    assert class_nms(boxes, scores, np.array([2, 2]), 0.5, 300).tolist() == [0]
    assert class_nms(boxes, scores, np.array([2, 2]), 1.0, 1).tolist() == [0]  # no NMS, max_det


def yolo_output(rows: list[tuple[float, float, float, float, int, float]], nc: int, anchors: int = 10) -> np.ndarray:
    """A (1, 4 + nc, anchors) head output with the given (cx, cy, w, h, cls, score) rows, rest empty."""
    out = np.zeros((1, 4 + nc, anchors), np.float32)
    for i, (cx, cy, w, h, cls, score) in enumerate(rows):
        out[0, :4, i] = (cx, cy, w, h)
        out[0, 4 + cls, i] = score
    return out


def test_decode_yolov8_converts_centres_filters_and_suppresses() -> None:
    out = yolo_output(
        [(50, 50, 20, 10, 1, 0.9), (51, 50, 20, 10, 1, 0.6), (50, 50, 20, 10, 2, 0.5), (10, 10, 4, 4, 0, 0.1)], nc=3
    )
    ((boxes, scores, classes),) = decode_yolov8(out, conf=0.25, iou=0.7, max_det=300, nc=3)
    assert classes.tolist() == [1, 2]  # the 0.6 duplicate is suppressed, the 0.1 filtered
    np.testing.assert_allclose(boxes[0], [40, 45, 60, 55])
    np.testing.assert_allclose(scores, [0.9, 0.5])


def test_decode_yolov8_refuses_a_head_that_does_not_match_the_names() -> None:
    with pytest.raises(ModelError, match="4 \\+ 5 classes"):
        decode_yolov8(yolo_output([], nc=3), 0.25, 0.7, 300, nc=5)


def test_decode_topk_filters_scores_and_runs_same_class_nms() -> None:
    out = np.array(
        [[[0, 0, 10, 10, 0.9, 5], [0, 0, 10, 9, 0.8, 5], [0, 0, 10, 10, 0.7, 0], [5, 5, 6, 6, 0.1, 2]]], np.float32
    )
    ((_, scores, classes),) = decode_topk(out, conf=0.3, iou=0.5, max_det=100)
    assert classes.tolist() == [5, 0]
    np.testing.assert_allclose(scores, [0.9, 0.7])
    with pytest.raises(ModelError, match="expected \\(batch, K, 6\\)"):
        decode_topk(np.zeros((1, 5, 7), np.float32), 0.3, 0.5, 100)


def test_decode_dispatch_and_unknown_decoder() -> None:
    out = np.zeros((2, 3, 6), np.float32)
    assert len(decode(out, "end2end", 0.3, 1.0, 10, nc=80)) == 2
    with pytest.raises(ModelError, match="unknown decoder"):
        decode(out, "ssd", 0.3, 0.5, 10, nc=80)
