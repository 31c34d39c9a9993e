"""Shapes of the serving documents (contracts v1.1) and their constants."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field

from ipsp.contracts import (
    OTHER_CLASSES,
    VEHICLE_CLASSES,
    Contract,
    Counts,
    LatencyStats,
    TrafficStatus,
    UtcDatetime,
)

SERVING_VERSION: Literal["1.1"] = "1.1"

#: ``_id`` of the one ``serving_state`` document (collection names: :mod:`ipsp.mongo`)
STATE_ID = "state"

CLASS_NAMES: tuple[str, ...] = (*VEHICLE_CLASSES, *OTHER_CLASSES)
#: dead letters listed in a batch entry, newest first (its counts stay exact): the "latest dead
#: letters" panel reads them from the pipeline hours instead of range-scanning ``dead_letters``
LETTERS_PER_BATCH = 20
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


# --- document shapes ---------------------------------------------------------------------


class WindowFigures(Contract):
    """One window inside a camera-hour document (key: ``MM:SS`` of its start within the hour)."""

    frames: int = Field(ge=1)
    counts: Counts
    density_mean: float = Field(ge=0.0, le=100.0)
    density_max: float = Field(ge=0.0, le=100.0)
    traffic_status: TrafficStatus


class CameraHour(Contract):
    """``serving_camera_hours``: a camera's windows in one UTC hour."""

    id: str = Field(alias="_id", description="<camera_id>|YYYY-MM-DDTHH")
    camera_id: str
    hour_start: UtcDatetime
    window_seconds: int = Field(ge=1)
    windows: dict[str, WindowFigures]
    updated_at: UtcDatetime
    schema_version: Literal["1.1"] = SERVING_VERSION


class HourFigures(Contract):
    """One hour inside a camera-day document (key: ``HH``): its windows summed."""

    frames: int = Field(ge=1)
    windows: int = Field(ge=1)
    counts: Counts
    density_mean: float = Field(ge=0.0, le=100.0, description="frame-weighted mean of the windows' means")
    density_max: float = Field(ge=0.0, le=100.0)
    traffic_status: TrafficStatus = Field(description="the status most of the hour's windows had")


class CameraDay(Contract):
    """``serving_camera_days``: a camera's hours in one UTC day."""

    id: str = Field(alias="_id", description="<camera_id>|YYYY-MM-DD")
    camera_id: str
    day_start: UtcDatetime
    hours: dict[str, HourFigures]
    updated_at: UtcDatetime
    schema_version: Literal["1.1"] = SERVING_VERSION


class LatestWindow(WindowFigures):
    """A camera's newest window, with its bounds."""

    window_start: UtcDatetime
    window_end: UtcDatetime


class DayTotals(Contract):
    """Frames and windows of one camera-day (kept when the frames under them are pruned)."""

    frames: int = Field(ge=0)
    windows: int = Field(ge=0)


class CameraServing(Contract):
    """``serving_cameras``: a camera's latest window and its totals per UTC day."""

    id: str = Field(alias="_id", description="the camera id")
    latest: LatestWindow
    days: dict[str, DayTotals]
    updated_at: UtcDatetime
    schema_version: Literal["1.1"] = SERVING_VERSION


class LetterFigures(Contract):
    """One dead letter as a batch entry lists it (the ``dead_letters`` document less its raw value)."""

    id: str = Field(description="the dead letter's _id: <topic>:<partition>:<offset>")
    time: UtcDatetime = Field(description="its created_at")
    stage: str
    reason: str
    record_key: str | None = None
    camera_id: str | None = None


class BatchFigures(Contract):
    """One micro-batch inside a pipeline-hour document (key: its progress ``_id``)."""

    query: str
    batch_id: int = Field(ge=0)
    rows: int = Field(ge=0)
    results: int = Field(ge=0)
    dead_letters: int = Field(ge=0)
    dead_letters_by_stage: dict[str, int]
    input_rows_per_s: float = Field(ge=0.0)
    processed_rows_per_s: float = Field(ge=0.0)
    latency: LatencyStats | None = None
    started_at: UtcDatetime
    finished_at: UtcDatetime
    latest_dead_letters: list[LetterFigures] = Field(
        default_factory=list, description=f"the batch's newest {LETTERS_PER_BATCH} dead letters, newest first"
    )


class PipelineHour(Contract):
    """``serving_pipeline_hours``: the micro-batches that finished in one UTC hour."""

    id: str = Field(alias="_id", description="YYYY-MM-DDTHH")
    hour_start: UtcDatetime
    batches: dict[str, BatchFigures]
    updated_at: UtcDatetime
    schema_version: Literal["1.1"] = SERVING_VERSION


class ServingState(Contract):
    """``serving_state``: the one document saying which batch the serving documents reflect."""

    id: Literal["state"] = Field(alias="_id")
    last_batch: str = Field(description="progress _id of the latest batch written")
    batch_id: int = Field(ge=0)
    first_hour: UtcDatetime | None = Field(None, description="earliest camera-hour with windows")
    last_hour: UtcDatetime | None = Field(None, description="latest camera-hour with windows")
    first_batch_at: UtcDatetime = Field(description="start of the earliest batch written (the pipeline's extent)")
    last_batch_at: UtcDatetime = Field(description="finish of the latest batch written")
    touched_hours: list[str] = Field(
        default_factory=list,
        description="YYYY-MM-DDTHH of the camera-hours the latest batch wrote (readers keep the rest)",
    )
    written_at: UtcDatetime
    schema_version: Literal["1.1"] = SERVING_VERSION
