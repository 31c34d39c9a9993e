"""How true the counts are: predicted vehicles scored against reference boxes, the way the pipeline counts.

Both sides are what ``traffic_summary`` would count (cross-class suppression, the
footprint in the camera's ROI). Per frame, predictions are matched one to one to
reference boxes by IoU >= 0.5, highest overlap first, vehicle against vehicle (the
class is not compared for precision and recall, so a van called a car still counts
right). A prediction that matches only an *uncertain* reference box (one the
reference itself was unsure of) is neither right nor wrong. ``count error`` is the
mean absolute difference of the vehicle counts per frame; per class it is the same
for that class's counts, and per-class recall is the share of that class's
reference boxes some prediction matched. The training run and ``bench-fidelity``
both score with this module, so their numbers mean the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ipsp.contracts import VEHICLE_CLASSES
from ipsp.detection.metrics import CamerasConfig, in_roi, suppress_across_classes, traffic_classes, traffic_summary
from ipsp.detection.postprocess import iou_one_to_many
from ipsp.detection.types import Detections

IOU_MATCH = 0.5


def match(
    pred: np.ndarray, sure: np.ndarray, unsure: np.ndarray | None = None, iou: float = IOU_MATCH
) -> tuple[int, int, np.ndarray]:
    """True and false positives of one frame, and which reference boxes were matched (greedy by score order)."""
    used = np.zeros(len(sure), bool)
    tp = fp = 0
    for box in pred:
        if len(sure):
            ious = iou_one_to_many(box, sure)
            ious[used] = -1.0
            best = int(ious.argmax())
            if ious[best] >= iou:
                used[best] = True
                tp += 1
                continue
        if unsure is not None and len(unsure) and iou_one_to_many(box, unsure).max() >= iou:
            continue  # the reference itself was unsure here: neither right nor wrong
        fp += 1
    return tp, fp, used


def counted_vehicles(det: Detections, camera: str, cfg: CamerasConfig) -> tuple[np.ndarray, list[str]]:
    """The vehicle boxes ``traffic_summary`` counts for a frame, and their traffic classes."""
    summary = traffic_summary(det, camera, cameras_cfg=cfg)
    kept = summary.detections
    boxes, names = vehicles_of(kept.select(in_roi(kept, *cfg.camera(camera)[:2])), cfg)
    if len(boxes) != summary.counts.total:  # the boxes scored must be the ones counted
        raise AssertionError(f"{len(boxes)} boxes scored but {summary.counts.total} counted")
    return boxes, names


def reference_vehicles(ref: Detections, camera: str, cfg: CamerasConfig) -> tuple[np.ndarray, list[str]]:
    """Reference boxes through the same counting steps (suppression across classes, footprint in the ROI)."""
    kept = suppress_across_classes(ref, cfg.suppress_iou, cfg.full_class_map())
    return vehicles_of(kept.select(in_roi(kept, *cfg.camera(camera)[:2])), cfg)


def vehicles_of(det: Detections, cfg: CamerasConfig) -> tuple[np.ndarray, list[str]]:
    """The vehicle boxes among ``det`` and their traffic classes."""
    classes = traffic_classes(det, cfg.full_class_map())
    vehicle = np.asarray([c in VEHICLE_CLASSES for c in classes], bool)
    boxes = det.xyxy[vehicle] if len(det) else np.zeros((0, 4), np.float32)
    return boxes, [c for c, v in zip(classes, vehicle, strict=True) if v and c is not None]


@dataclass
class Score:
    """Running totals over frames; ``result()`` gives the table's figures."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    frames: int = 0
    abs_error: float = 0.0
    reference: int = 0
    class_found: dict[str, int] = field(default_factory=dict)
    class_total: dict[str, int] = field(default_factory=dict)
    class_abs_error: dict[str, float] = field(default_factory=dict)

    def add(
        self,
        pred: np.ndarray,
        pred_classes: Sequence[str],
        sure: np.ndarray,
        sure_classes: Sequence[str],
        unsure: np.ndarray | None = None,
    ) -> None:
        """Score one frame: predicted and reference vehicle boxes (xyxy) with their traffic classes."""
        tp, fp, used = match(pred, sure, unsure)
        self.tp += tp
        self.fp += fp
        self.fn += int(len(sure) - used.sum())
        self.frames += 1
        self.reference += len(sure)
        self.abs_error += abs(len(pred) - len(sure))
        for cls in VEHICLE_CLASSES:
            mine = np.asarray([c == cls for c in sure_classes], bool)
            self.class_total[cls] = self.class_total.get(cls, 0) + int(mine.sum())
            self.class_found[cls] = self.class_found.get(cls, 0) + int((used & mine).sum())
            predicted = sum(c == cls for c in pred_classes)
            self.class_abs_error[cls] = self.class_abs_error.get(cls, 0.0) + abs(predicted - int(mine.sum()))

    def result(self) -> dict[str, Any]:
        """Precision, recall, F1, count error per frame (overall and per class), reference vehicles per frame."""
        precision = self.tp / max(self.tp + self.fp, 1)
        recall = self.tp / max(self.tp + self.fn, 1)
        frames = max(self.frames, 1)
        return {
            "precision": round(precision, 3),
            "recall": round(recall, 3),
            "f1": round(2 * precision * recall / max(precision + recall, 1e-9), 3),
            "count_mae": round(self.abs_error / frames, 3),
            "reference_per_frame": round(self.reference / frames, 2),
            "frames": self.frames,
            "tp_fp_fn": [self.tp, self.fp, self.fn],
            "per_class": {
                cls: {
                    "reference": self.class_total.get(cls, 0),
                    "recall": round(self.class_found.get(cls, 0) / self.class_total[cls], 3)
                    if self.class_total.get(cls)
                    else None,
                    "count_mae": round(self.class_abs_error.get(cls, 0.0) / frames, 3),
                }
                for cls in VEHICLE_CLASSES
            },
        }
