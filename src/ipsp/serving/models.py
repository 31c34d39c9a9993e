"""Typed response rows of the traffic API.

Every data route answers a flat JSON array of these rows (one object per row,
scalar fields, times in RFC 3339 UTC with milliseconds) because that is what
Grafana's Infinity datasource turns into a table without any parsing setup.
The ``time`` field of a row is the instant the row stands for.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ipsp.contracts import Detection, TrafficStatus, UtcDatetime


class Row(BaseModel):
    """Base of all response rows: closed field set, so the OpenAPI spec is exact."""

    model_config = ConfigDict(extra="forbid")


class ClassCounts(Row):
    """Objects per traffic class, flattened into the row (``total`` = vehicles only)."""

    motorbike: int = 0
    car: int = 0
    bus: int = 0
    truck: int = 0
    bicycle: int = 0
    person: int = 0
    total: int = 0


class CameraStatus(ClassCounts):
    """A camera and its latest window: what the 'current status' panel shows.

    Counts, density and status are those of the camera's latest one-minute window
    (a smoother "current" than a single frame); ``frames`` counts the frames in
    all of the camera's windows.
    """

    camera_id: str
    frames: int = Field(description="frames in all windows of this camera")
    time: UtcDatetime = Field(description="start of the camera's latest window")
    window_end: UtcDatetime
    traffic_status: TrafficStatus
    density_mean: float
    density_max: float
    vehicles_per_frame: float


class FrameRow(ClassCounts):
    """One frame's result (``analysis_results``), counts flattened."""

    time: UtcDatetime = Field(description="event time of the frame")
    camera_id: str
    record_key: str
    frame_index: int
    replay_id: str
    density_percent: float
    traffic_status: TrafficStatus
    model_name: str
    model_version: str
    batch_id: int
    inference_ms: float
    latency_ms: float
    processed_at: UtcDatetime
    detections: list[Detection] | None = Field(None, description="only with include_detections=true")


class WindowRow(ClassCounts):
    """One per-camera tumbling window (``traffic_windows``), counts flattened."""

    time: UtcDatetime = Field(description="window start")
    window_end: UtcDatetime
    camera_id: str
    frames: int
    vehicles_per_frame: float = Field(description="total / frames: comparable across window sizes")
    density_mean: float
    density_max: float
    traffic_status: TrafficStatus


class HeatCell(Row):
    """One cell of the density heatmap: a camera over one time bucket (frame-weighted mean)."""

    time: UtcDatetime = Field(description="bucket start")
    camera_id: str
    density_mean: float
    density_max: float
    frames: int


class ClassShare(Row):
    """Objects of one class over the range, and its share of all counted objects."""

    class_name: str
    count: int
    share_percent: float


class CameraClassMix(ClassCounts):
    """Objects per class for one camera over the range."""

    camera_id: str
    frames: int


class BatchRow(Row):
    """One micro-batch of the streaming job (``pipeline_progress``)."""

    time: UtcDatetime = Field(description="batch finished_at")
    started_at: UtcDatetime
    query: str
    batch_id: int
    rows: int
    results: int
    dead_letters: int
    input_rows_per_s: float
    processed_rows_per_s: float
    duration_ms: float = Field(description="finished_at - started_at")
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_max_ms: float | None


class PipelineHealth(Row):
    """The streaming job over the range: totals, rates, latency, dead letters."""

    batches: int
    rows: int
    results: int
    dead_letters: int = Field(description="dead letters counted by the batches")
    dead_letters_stored: int = Field(description="documents in dead_letters created in the range")
    first_started_at: UtcDatetime | None
    last_finished_at: UtcDatetime | None
    last_batch_id: int | None
    throughput_rows_per_s: float = Field(description="results / (last finished_at - first started_at)")
    last_input_rows_per_s: float | None
    last_processed_rows_per_s: float | None
    last_latency_p50_ms: float | None
    last_latency_p95_ms: float | None
    worst_latency_p95_ms: float | None


class DeadLetterRow(Row):
    """One dead letter, Kafka coordinates flattened (the raw value is left out)."""

    time: UtcDatetime = Field(description="created_at")
    id: str
    stage: str
    reason: str
    record_key: str | None
    camera_id: str | None
    topic: str
    partition: int
    offset: int


class StageCount(Row):
    """Dead letters of one pipeline stage over the range."""

    stage: str
    count: int


class Summary(Row):
    """What the database holds: the extent of a run."""

    frames: int = Field(description="frames counted in windows")
    cameras: int
    first_window_start: UtcDatetime | None
    last_window_end: UtcDatetime | None
    windows: int
    batches: int
    dead_letters: int


class Health(Row):
    """Answer of ``/healthz``."""

    status: Literal["ok", "unavailable"]
    mongo: Literal["up", "down"]
    detail: str = ""


class ErrorBody(Row):
    """Every error answer: one clear line."""

    detail: str
