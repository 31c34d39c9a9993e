"""Window arithmetic of the stream job, in one place: epoch milliseconds, window starts, a window's figures.

Tumbling windows are aligned to the epoch; a window's document holds the sums,
mean and max density and status of its frames. The state that folds frames
into windows and closes them lives in :mod:`ipsp.streaming.state`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ipsp.contracts import Counts, TrafficWindow, window_id

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: the six counted classes in the order a window's ``events`` store them (then the density)
COUNT_FIELDS = ("motorbike", "car", "bus", "truck", "bicycle", "person")

#: ``status_of(camera_id, mean density, mean vehicles per frame)``: the camera's traffic status
StatusOf = Callable[[str, float, int], str]


def status_function(cameras_config: Any) -> StatusOf:
    """Window status with each camera's thresholds (the job's windows and ``ipsp rollups rebuild`` alike).

    ``cameras_config``: a loaded :class:`~ipsp.detection.metrics.CamerasConfig`, or
    what :func:`~ipsp.detection.load_cameras_config` reads (a path, or None for the defaults).
    """
    from ipsp.detection import load_cameras_config, traffic_status
    from ipsp.detection.metrics import CamerasConfig

    cameras = cameras_config if isinstance(cameras_config, CamerasConfig) else load_cameras_config(cameras_config)

    def status_of(camera_id: str, density: float, vehicles: int) -> str:
        _roi, _units, thresholds = cameras.camera(camera_id)
        return str(traffic_status(density, vehicles, thresholds))

    return status_of


def to_ms(value: datetime) -> int:
    """Epoch milliseconds of an aware datetime."""
    return round((value - EPOCH).total_seconds() * 1000)


def from_ms(value: int) -> datetime:
    """Aware UTC datetime of epoch milliseconds."""
    return EPOCH + timedelta(milliseconds=value)


def window_start(event_time: datetime, window_seconds: int) -> datetime:
    """Start of the tumbling window holding ``event_time`` (windows aligned to the epoch)."""
    return from_ms(start_ms(to_ms(event_time), window_seconds))


def start_ms(event_ms: int, window_seconds: int) -> int:
    """Start (epoch ms) of the tumbling window holding ``event_ms``."""
    size = window_seconds * 1000
    return event_ms - event_ms % size


@dataclass(frozen=True)
class FrameFigures:
    """What a window needs from one stored frame."""

    counts: Counts
    density_percent: float

    @classmethod
    def of(cls, figures: Sequence[float]) -> FrameFigures:
        """The figures a window's ``events`` entry holds: six class counts, then the density."""
        counts = Counts.of(dict(zip(COUNT_FIELDS, (int(x) for x in figures[:6]), strict=True)))
        return cls(counts, float(figures[6]))


def summarize_window(
    camera_id: str,
    start: datetime,
    window_seconds: int,
    frames: Sequence[FrameFigures],
    status_of: StatusOf,
    now: datetime,
) -> TrafficWindow:
    """Full values of one window from all its frames: sums, mean and max density, status.

    ``status_of(camera_id, density_percent, vehicles)`` maps the mean density and
    the mean vehicles per frame to a traffic status with the camera's thresholds.
    """
    if not frames:
        raise ValueError("a window needs at least one frame")
    total = Counts()
    for frame in frames:
        total = total + frame.counts
    densities = [f.density_percent for f in frames]
    mean = math.fsum(densities) / len(densities)
    peak = max(densities)
    # fsum keeps the mean from drifting above the max by a rounding error
    mean = min(mean, peak)
    return TrafficWindow(
        id=window_id(camera_id, start),
        camera_id=camera_id,
        window_start=start,
        window_end=start + timedelta(seconds=window_seconds),
        frames=len(frames),
        counts=total,
        density_mean=round(mean, 4),
        density_max=round(peak, 4),
        traffic_status=status_of(camera_id, mean, round(total.total / len(frames))),
        updated_at=now,
    )
