"""Traffic metrics of one frame: counts per traffic class, density and status.

The steps, in order (``traffic_summary``):

1. Model classes map to traffic classes by name (COCO ``motorcycle`` -> ``motorbike``,
   ``car``, ``bus``, ``truck``; ``bicycle`` and ``person`` are counted apart and not
   in ``total``). A model trained on the traffic classes maps onto itself.
2. **One object, one count**: boxes of the vehicle classes are suppressed across
   classes (class-agnostic NMS at ``suppress_iou``): when a detector scores one
   object as both a car and a truck, only the higher-scoring box (and its label) stays.
3. **A rider is part of the motorbike**: a ``person`` whose footprint lies inside a
   motorbike or bicycle box is its rider and is not counted (``drop_riders``).
4. **Counting on the road**: an object counts only when its footprint (the middle
   of its box's bottom edge, where it touches the road) lies in the camera's region
   of interest. Without a configured ROI the default one is the frame below its top
   ``DEFAULT_ROI_TOP`` (sky, facades and far vehicles too small to judge).
5. ``density_percent`` = share of the ROI covered by the counted vehicles' boxes
   (their union, so overlaps do not add up), 0..100.
6. ``traffic_status`` from per-camera thresholds: fewer than ``min_vehicles``
   vehicles is always ``Free`` (one or two vehicles are not a jam, however close to
   the lens); otherwise ``Congested`` from ``congested`` % on, ``Normal`` from
   ``normal`` %, else ``Free`` (optional vehicle-count thresholds as well).

Per-camera settings live in a YAML file (``IPSP_CAMERAS_CONFIG``)::

    defaults:
      roi: [[0, 0.25], [1, 0.25], [1, 1], [0, 1]]
      roi_units: fraction
      thresholds: {normal: 15, congested: 40, min_vehicles: 3}
    class_map: {van: car}            # extra model-class -> traffic-class names
    suppress_iou: 0.6
    cameras:
      cam_01:
        roi: [[0, 300], [1280, 300], [1280, 720], [0, 720]]   # pixels (or roi_units: fraction)
        thresholds: {normal: 10, congested: 30, congested_vehicles: 40}

Without a file every camera uses the default ROI and thresholds.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ipsp.contracts import OTHER_CLASSES, VEHICLE_CLASSES, Counts, TrafficStatus
from ipsp.detection.types import Detections
from ipsp.errors import UserError

#: model class name (lower case) -> traffic class; names not listed are not counted
DEFAULT_CLASS_MAP: dict[str, str] = {
    "motorbike": "motorbike",
    "motorcycle": "motorbike",
    "motor": "motorbike",
    "scooter": "motorbike",
    "car": "car",
    "bus": "bus",
    "truck": "truck",
    "bicycle": "bicycle",
    "bike": "bicycle",
    "person": "person",
    "pedestrian": "person",
}
TRAFFIC_CLASSES: tuple[str, ...] = (*VEHICLE_CLASSES, *OTHER_CLASSES)
#: default ROI (fractions of the frame): all but the top quarter
DEFAULT_ROI_TOP = 0.25
DEFAULT_ROI: list[tuple[float, float]] = [(0.0, DEFAULT_ROI_TOP), (1.0, DEFAULT_ROI_TOP), (1.0, 1.0), (0.0, 1.0)]
#: IoU above which two vehicle boxes of different classes are one object
DEFAULT_SUPPRESS_IOU = 0.6


class Thresholds(BaseModel):
    """Status thresholds: density percent (and optionally vehicle counts) where a status starts."""

    model_config = ConfigDict(extra="forbid")

    normal: float = Field(15.0, ge=0.0, le=100.0, description="density % from which traffic is Normal")
    congested: float = Field(40.0, ge=0.0, le=100.0, description="density % from which it is Congested")
    min_vehicles: int = Field(3, ge=0, description="fewer vehicles than this is always Free")
    normal_vehicles: int | None = Field(None, ge=0, description="vehicle count from which it is Normal")
    congested_vehicles: int | None = Field(None, ge=0, description="vehicle count from which it is Congested")

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.congested < self.normal:
            raise ValueError(f"congested ({self.congested}) must be >= normal ({self.normal})")
        low, high = self.normal_vehicles, self.congested_vehicles
        if low is not None and high is not None and high < low:
            raise ValueError(f"congested_vehicles ({high}) must be >= normal_vehicles ({low})")
        return self


class CameraConfig(BaseModel):
    """One camera's region of interest and thresholds (``None``: inherit the defaults)."""

    model_config = ConfigDict(extra="forbid")

    roi: list[tuple[float, float]] | None = Field(None, description="polygon vertices; None = inherit / default")
    roi_units: Literal["pixels", "fraction"] = "pixels"
    thresholds: Thresholds | None = None

    @field_validator("roi")
    @classmethod
    def _polygon(cls, value: list[tuple[float, float]] | None) -> list[tuple[float, float]] | None:
        if value is not None and len(value) < 3:
            raise ValueError("a region of interest needs at least 3 vertices")
        return value


class CamerasConfig(BaseModel):
    """All cameras' settings: defaults, per-camera overrides, extra class names."""

    model_config = ConfigDict(extra="forbid")

    defaults: CameraConfig = Field(default_factory=CameraConfig)
    cameras: dict[str, CameraConfig] = Field(default_factory=dict)
    class_map: dict[str, str] = Field(default_factory=dict)
    suppress_iou: float = Field(DEFAULT_SUPPRESS_IOU, gt=0.0, le=1.0, description="cross-class NMS IoU")

    @field_validator("class_map")
    @classmethod
    def _known_targets(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted(set(value.values()) - set(TRAFFIC_CLASSES))
        if bad:
            raise ValueError(f"class_map targets {bad} are not traffic classes {list(TRAFFIC_CLASSES)}")
        return {k.lower(): v for k, v in value.items()}

    def camera(self, camera_id: str) -> tuple[list[tuple[float, float]] | None, str, Thresholds]:
        """ROI polygon, its units and thresholds for one camera, defaults filled in."""
        own = self.cameras.get(camera_id, CameraConfig())
        roi = own.roi if own.roi is not None else self.defaults.roi
        units = own.roi_units if own.roi is not None else self.defaults.roi_units
        if roi is None:
            roi, units = DEFAULT_ROI, "fraction"
        thresholds = own.thresholds or self.defaults.thresholds or Thresholds()
        return roi, units, thresholds

    def full_class_map(self) -> dict[str, str]:
        """Default mapping with this config's additions on top."""
        return {**DEFAULT_CLASS_MAP, **self.class_map}


class TrafficSummary(NamedTuple):
    """What one frame contributes to the traffic picture (``detections``: what was kept and counted)."""

    counts: Counts
    density_percent: float
    status: TrafficStatus
    detections: Detections


def load_cameras_config(path: Path | str | None) -> CamerasConfig:
    """Read the per-camera YAML (``None``: whole frame and default thresholds everywhere)."""
    if path is None or str(path) == "":
        return CamerasConfig()
    import yaml

    file = Path(path)
    try:
        raw = yaml.safe_load(file.read_text()) or {}
    except OSError as exc:
        raise UserError(f"cameras config {file}: cannot read ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"cameras config {file}: not valid YAML{where} ({problem})") from exc
    try:
        return CamerasConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UserError(f"cameras config {file}: {where}: {first['msg']}") from exc


def traffic_classes(det: Detections, class_map: Mapping[str, str] = DEFAULT_CLASS_MAP) -> list[str | None]:
    """Traffic class of each detection (``None`` for classes that are not traffic)."""
    return [class_map.get(name.lower()) for name in det.class_names]


def count_traffic(det: Detections, class_map: Mapping[str, str] = DEFAULT_CLASS_MAP) -> Counts:
    """Objects per traffic class in one frame; ``total`` counts vehicles only."""
    per_class = dict.fromkeys(TRAFFIC_CLASSES, 0)
    for cls in traffic_classes(det, class_map):
        if cls is not None:
            per_class[cls] += 1
    return Counts.of(per_class)


def polygon_mask(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixels whose centre lies inside the polygon (even-odd rule), as a ``(height, width)`` uint8 mask.

    Vertices are continuous coordinates (pixel ``i`` spans ``[i, i + 1)``), so a
    rectangle from 0 to 100 covers exactly 100 pixels; OpenCV's ``fillPoly`` also
    paints the boundary pixels, which would inflate small regions.
    """
    mask = np.zeros((height, width), np.uint8)
    x0, y0 = points[:, 0], points[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    for row in range(height):
        yc = row + 0.5
        crossing = ((y0 <= yc) & (y1 > yc)) | ((y1 <= yc) & (y0 > yc))
        if not crossing.any():
            continue
        a0, b0, a1, b1 = x0[crossing], y0[crossing], x1[crossing], y1[crossing]
        xs = np.sort(a0 + (yc - b0) * (a1 - a0) / (b1 - b0))
        for left, right in zip(xs[0::2], xs[1::2], strict=False):
            # pixel i is inside when its centre i + 0.5 lies in [left, right)
            start, stop = max(int(np.ceil(left - 0.5)), 0), min(int(np.ceil(right - 0.5)), width)
            mask[row, start:stop] = 1
    return mask


@lru_cache(maxsize=64)
def roi_mask(roi: tuple[tuple[float, float], ...], units: str, width: int, height: int) -> np.ndarray:
    """The ROI as a read-only ``(height, width)`` bool mask (cached: one per camera and frame size)."""
    pts = np.asarray(roi, np.float64)
    if units == "fraction":
        pts = pts * np.array([width, height])
    mask = polygon_mask(pts, width, height).astype(bool)
    mask.flags.writeable = False
    return mask


def _mask_for(roi: list[tuple[float, float]] | None, units: str, width: int, height: int) -> np.ndarray:
    if roi is None:
        return np.ones((height, width), bool)
    return roi_mask(tuple(tuple(map(float, p)) for p in roi), units, width, height)  # type: ignore[arg-type]


def vehicle_mask(det: Detections, class_map: Mapping[str, str] = DEFAULT_CLASS_MAP) -> np.ndarray:
    """Which detections are vehicles (motorbike, car, bus, truck)."""
    return np.array([c in VEHICLE_CLASSES for c in traffic_classes(det, class_map)], bool)


def suppress_across_classes(
    det: Detections, iou: float = DEFAULT_SUPPRESS_IOU, class_map: Mapping[str, str] = DEFAULT_CLASS_MAP
) -> Detections:
    """Class-agnostic NMS among vehicle boxes: one object scored as car and truck counts once.

    Boxes are visited by falling score; a vehicle box overlapping an already kept
    vehicle box by IoU >= ``iou`` is dropped, so the label kept is the best-scoring
    one. Non-vehicle detections pass untouched.
    """
    from ipsp.detection.postprocess import nms

    vehicles = vehicle_mask(det, class_map)
    if vehicles.sum() < 2:
        return det
    index = np.flatnonzero(vehicles)
    kept = index[nms(det.xyxy[index], det.confidence[index], iou)]
    keep = ~vehicles
    keep[kept] = True
    return det.select(keep)


def drop_riders(det: Detections, class_map: Mapping[str, str] = DEFAULT_CLASS_MAP) -> Detections:
    """Drop each ``person`` who rides a two-wheeler: one whose footprint lies inside a motorbike or bicycle box.

    A motorbike's count includes its rider (the labels' convention on this traffic), so
    a general model's separate rider box must not add a person; the motorbike box
    itself always stays.
    """
    classes = traffic_classes(det, class_map)
    persons = np.asarray([c == "person" for c in classes], bool)
    wheels = np.asarray([c in ("motorbike", "bicycle") for c in classes], bool)
    if not persons.any() or not wheels.any():
        return det
    feet = footprints(det)[persons]
    boxes = det.xyxy[wheels]
    inside = (
        (feet[:, None, 0] >= boxes[None, :, 0])
        & (feet[:, None, 0] <= boxes[None, :, 2])
        & (feet[:, None, 1] >= boxes[None, :, 1])
        & (feet[:, None, 1] <= boxes[None, :, 3])
    ).any(axis=1)
    keep = np.ones(len(det), bool)
    keep[np.flatnonzero(persons)[inside]] = False
    return det.select(keep)


def footprints(det: Detections) -> np.ndarray:
    """``(N, 2)`` footprint of each box: the middle of its bottom edge, inside the frame."""
    width, height = det.image_size
    x = ((det.xyxy[:, 0] + det.xyxy[:, 2]) / 2).clip(0, max(width - 1e-3, 0))
    y = det.xyxy[:, 3].clip(0, max(height - 1e-3, 0))
    return np.stack([x, y], axis=1) if len(det) else np.zeros((0, 2))


def in_roi(det: Detections, roi: list[tuple[float, float]] | None, units: str = "pixels") -> np.ndarray:
    """Which detections stand in the ROI (their footprint pixel is in it); all of them without an ROI."""
    width, height = det.image_size
    if roi is None or len(det) == 0 or width <= 0 or height <= 0:
        return np.ones(len(det), bool)
    mask = _mask_for(roi, units, width, height)
    pts = footprints(det).astype(np.int64)
    return np.asarray(mask[pts[:, 1], pts[:, 0]], bool)


def density_percent(
    det: Detections,
    roi: list[tuple[float, float]] | None = None,
    units: str = "pixels",
    class_map: Mapping[str, str] = DEFAULT_CLASS_MAP,
) -> float:
    """Share of the ROI (whole frame without one) covered by the union of vehicle boxes, in percent."""
    width, height = det.image_size
    vehicles = vehicle_mask(det, class_map)
    if width <= 0 or height <= 0 or not vehicles.any():
        return 0.0
    area_mask = _mask_for(roi, units, width, height)
    roi_area = int(area_mask.sum())
    if roi_area == 0:
        return 0.0
    covered = np.zeros((height, width), bool)
    for x1, y1, x2, y2 in det.xyxy[vehicles]:
        # pixel i spans [i, i + 1): it is covered when its centre lies in the box
        c0, r0 = max(int(np.ceil(x1 - 0.5)), 0), max(int(np.ceil(y1 - 0.5)), 0)
        c1, r1 = min(int(np.ceil(x2 - 0.5)), width), min(int(np.ceil(y2 - 0.5)), height)
        if c1 > c0 and r1 > r0:
            covered[r0:r1, c0:c1] = True
    inside = int(np.count_nonzero(covered & area_mask))
    return float(min(max(100.0 * inside / roi_area, 0.0), 100.0))


def traffic_status(density: float, vehicles: int, thresholds: Thresholds) -> TrafficStatus:
    """``Free`` / ``Normal`` / ``Congested`` from density and vehicle count (see the module docstring)."""
    if vehicles < thresholds.min_vehicles:
        return "Free"
    congested = density >= thresholds.congested or (
        thresholds.congested_vehicles is not None and vehicles >= thresholds.congested_vehicles
    )
    if congested:
        return "Congested"
    normal = density >= thresholds.normal or (
        thresholds.normal_vehicles is not None and vehicles >= thresholds.normal_vehicles
    )
    return "Normal" if normal else "Free"


def traffic_summary(
    det: Detections,
    camera_id: str,
    width: int | None = None,
    height: int | None = None,
    cameras_cfg: CamerasConfig | None = None,
) -> TrafficSummary:
    """Counts, density and status of one frame for one camera (the streaming job calls this).

    Suppression across vehicle classes first, then only objects standing in the
    camera's ROI are counted and cover it. The returned ``detections`` are the
    suppressed set (objects outside the ROI included, so they can still be shown).
    ``width``/``height`` default to the frame size the detections carry; pass them
    to override (they must describe the frame the boxes are in).
    """
    cfg = cameras_cfg or CamerasConfig()
    if width is not None and height is not None and (width, height) != det.image_size:
        det = Detections(det.xyxy, det.confidence, det.class_id, det.names, (int(width), int(height)))
    class_map = cfg.full_class_map()
    roi, units, thresholds = cfg.camera(camera_id)
    kept = drop_riders(suppress_across_classes(det, cfg.suppress_iou, class_map), class_map)
    counted = kept.select(in_roi(kept, roi, units))
    counts = count_traffic(counted, class_map)
    density = round(density_percent(counted, roi, units, class_map), 3)
    return TrafficSummary(counts, density, traffic_status(density, counts.total, thresholds), kept)
