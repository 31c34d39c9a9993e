"""The one result type of detection: ``Detections`` (boxes, scores, class ids and names).

Boxes are kept as ``xyxy`` float32 in original frame pixels; the contract's
``box_xywh`` (top-left x, y, width, height) is derived on output. Everything else in
the project consumes this type, never a framework's own result objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ipsp.detection.errors import FrameError


@dataclass(frozen=True)
class Detections:
    """Objects found in one frame.

    ``xyxy`` is ``(N, 4)`` float32 in original pixels, ``confidence`` ``(N,)`` float32,
    ``class_id`` ``(N,)`` int64, ``names`` maps the model's class ids to names, and
    ``image_size`` is the frame's ``(width, height)``.
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    names: Mapping[int, str]
    image_size: tuple[int, int]

    def __post_init__(self) -> None:
        n = len(self.xyxy)
        if self.xyxy.shape != (n, 4) or self.confidence.shape != (n,) or self.class_id.shape != (n,):
            raise ValueError(
                f"inconsistent detection arrays: xyxy {self.xyxy.shape}, "
                f"confidence {self.confidence.shape}, class_id {self.class_id.shape}"
            )

    @classmethod
    def empty(cls, names: Mapping[int, str], image_size: tuple[int, int]) -> Detections:
        """No objects in a frame of the given ``(width, height)``."""
        return cls(
            xyxy=np.zeros((0, 4), np.float32),
            confidence=np.zeros((0,), np.float32),
            class_id=np.zeros((0,), np.int64),
            names=names,
            image_size=image_size,
        )

    @classmethod
    def from_arrays(
        cls,
        xyxy: np.ndarray,
        confidence: np.ndarray,
        class_id: np.ndarray,
        names: Mapping[int, str],
        image_size: tuple[int, int],
    ) -> Detections:
        """Build from any array-likes, clipping boxes to the frame and fixing dtypes."""
        width, height = image_size
        boxes = np.asarray(xyxy, np.float32).reshape(-1, 4).copy()
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        return cls(
            xyxy=boxes,
            confidence=np.asarray(confidence, np.float32).reshape(-1),
            class_id=np.asarray(class_id, np.int64).reshape(-1),
            names=names,
            image_size=(int(width), int(height)),
        )

    def __len__(self) -> int:
        return len(self.xyxy)

    @property
    def class_names(self) -> list[str]:
        """Model class name of each detection (``class_<id>`` when the model has no name for it)."""
        return [self.names.get(int(c), f"class_{int(c)}") for c in self.class_id]

    @property
    def box_xywh(self) -> np.ndarray:
        """Boxes as ``(N, 4)`` top-left x, y, width, height (the contract's layout)."""
        out = self.xyxy.copy()
        out[:, 2:] = self.xyxy[:, 2:] - self.xyxy[:, :2]
        return out

    @property
    def area(self) -> np.ndarray:
        """Box areas in square pixels."""
        wh = (self.xyxy[:, 2:] - self.xyxy[:, :2]).clip(min=0)
        return wh[:, 0] * wh[:, 1]

    def select(self, mask: np.ndarray) -> Detections:
        """The detections where ``mask`` (boolean or index array) selects."""
        return Detections(
            xyxy=self.xyxy[mask],
            confidence=self.confidence[mask],
            class_id=self.class_id[mask],
            names=self.names,
            image_size=self.image_size,
        )

    def to_records(self, class_map: Mapping[str, str] | None = None, digits: int = 2) -> list[dict[str, Any]]:
        """Contract records ``{"cls", "conf", "box_xywh"}`` in original frame pixels.

        ``class_map`` (model class name -> traffic class) renames mapped classes, e.g.
        ``motorcycle`` -> ``motorbike``; unmapped classes keep the model's name.
        """
        mapping = class_map or {}
        records = []
        for name, conf, box in zip(self.class_names, self.confidence, self.box_xywh, strict=True):
            records.append(
                {
                    "cls": mapping.get(name.lower(), name),
                    "conf": round(float(conf), 4),
                    "box_xywh": [round(float(v), digits) for v in box],
                }
            )
        return records


@dataclass
class StepTimings:
    """Milliseconds spent in each fixed step over the frames of one or more batches."""

    frames: int = 0
    batches: int = 0
    pre_ms: float = 0.0
    infer_ms: float = 0.0
    post_ms: float = 0.0

    def add(self, other: StepTimings) -> None:
        """Accumulate another batch's timings into this one."""
        self.frames += other.frames
        self.batches += other.batches
        self.pre_ms += other.pre_ms
        self.infer_ms += other.infer_ms
        self.post_ms += other.post_ms

    @property
    def total_ms(self) -> float:
        """Preprocess + infer + postprocess."""
        return self.pre_ms + self.infer_ms + self.post_ms

    def per_frame(self) -> dict[str, float]:
        """Mean milliseconds per frame for each step (zeros when no frame ran)."""
        n = max(self.frames, 1)
        return {
            "pre_ms": self.pre_ms / n,
            "infer_ms": self.infer_ms / n,
            "post_ms": self.post_ms / n,
            "total_ms": self.total_ms / n,
        }


DetectResult = Detections | FrameError
