"""Data contracts v1.1 as typed models: every stage serializes through these.

CONTRACTS.md is the prose; this module is the code. The JSON examples in
CONTRACTS.md are parsed and re-serialized by the unit tests, so the two cannot
drift apart silently.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, model_validator

from ipsp import mongo

SCHEMA_VERSION: Literal["1.0"] = "1.0"
TOPIC = "traffic-metadata"
DATABASE = "traffic_db"

#: vehicle classes of the user's dataset; `total` counts only these
VEHICLE_CLASSES: tuple[str, ...] = ("motorbike", "car", "bus", "truck")
#: road users counted apart from the vehicle total
OTHER_CLASSES: tuple[str, ...] = ("bicycle", "person")
TRAFFIC_STATUSES: tuple[str, ...] = ("Free", "Normal", "Congested")
DEAD_LETTER_STAGES: tuple[str, ...] = ("parse", "validate", "fetch", "decode", "infer", "sink")

TrafficStatus = Literal["Free", "Normal", "Congested"]
DeadLetterStage = Literal["parse", "validate", "fetch", "decode", "infer", "sink"]

SHA256_PATTERN = r"^[0-9a-f]{64}$"
RECORD_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
#: the raw Kafka value kept in a dead letter is cut to this many characters
RAW_VALUE_LIMIT = 2048


def _utc(value: datetime) -> datetime:
    # MongoDB keeps milliseconds; cutting here makes every round trip exact
    if value.tzinfo is None:
        raise ValueError("timestamp must carry a time zone (RFC 3339, e.g. ...Z)")
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def format_time(value: datetime) -> str:
    """RFC 3339, UTC, always with milliseconds: ``2026-01-01T08:00:00.000Z``."""
    value = _utc(value)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


UtcDatetime = Annotated[datetime, AfterValidator(_utc), PlainSerializer(format_time, return_type=str, when_used="json")]


def utc_now() -> datetime:
    """Current time, UTC, millisecond precision (what MongoDB stores)."""
    return _utc(datetime.now(UTC))


class Contract(BaseModel):
    """Base for all contract models: unknown fields are rejected, aliases allowed."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def to_json(self) -> str:
        """Serialize as the JSON the wire and the docs use (aliases, RFC 3339 times)."""
        return self.model_dump_json(by_alias=True)

    def to_document(self) -> dict[str, Any]:
        """Serialize for MongoDB: aliases (``_id``) and native datetimes."""
        return self.model_dump(by_alias=True, mode="python")

    @classmethod
    def from_json(cls, raw: str | bytes) -> Any:
        """Parse and validate one JSON document."""
        return cls.model_validate_json(raw)


# --- Kafka -----------------------------------------------------------------


class LmdbRef(Contract):
    """Where a frame's bytes live: one LMDB shard object and the key inside it."""

    uri: str = Field(min_length=6, description="shard object URI (file:// or s3://)")
    key: str = Field(min_length=1, max_length=511)


class FrameInfo(Contract):
    """What the packer recorded about the frame's bytes."""

    width: int = Field(gt=0, le=16384)
    height: int = Field(gt=0, le=16384)
    format: Literal["jpeg", "png"]
    bytes: int = Field(gt=0)
    sha256: str = Field(pattern=SHA256_PATTERN)


class FrameMessage(Contract):
    """One Kafka message on ``traffic-metadata``: metadata of one frame, never its pixels."""

    schema_version: Literal["1.0"] = SCHEMA_VERSION
    record_key: str = Field(pattern=RECORD_KEY_PATTERN)
    camera_id: str = Field(pattern=RECORD_KEY_PATTERN)
    frame_index: int = Field(ge=0)
    event_time: UtcDatetime
    lmdb: LmdbRef
    frame: FrameInfo
    replay_id: str = Field(min_length=1, max_length=128)
    produced_at: UtcDatetime

    def kafka_key(self) -> bytes:
        """Partitioning key: the camera, so one camera's frames stay in order."""
        return self.camera_id.encode()


# --- manifest ----------------------------------------------------------------


class ManifestRow(Contract):
    """One row of ``manifest.parquet``: a packed frame and where it is."""

    record_key: str = Field(pattern=RECORD_KEY_PATTERN)
    camera_id: str = Field(pattern=RECORD_KEY_PATTERN)
    frame_index: int = Field(ge=0)
    shard_uri: str
    key: str
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    format: Literal["jpeg", "png"]
    bytes: int = Field(gt=0)
    sha256: str = Field(pattern=SHA256_PATTERN)

    PARQUET_COLUMNS: ClassVar[tuple[str, ...]] = (
        "record_key", "camera_id", "frame_index", "shard_uri", "key",
        "width", "height", "format", "bytes", "sha256",
    )  # fmt: skip


class Reject(Contract):
    """One line of ``rejects.jsonl``: an input file that was not packed, and why."""

    file: str
    reason: str
    detail: str = ""
    duplicate_of: str | None = None


# --- MongoDB -------------------------------------------------------------------


class Detection(Contract):
    """One detected object in original frame pixels; x, y is the top-left corner."""

    cls: str = Field(min_length=1)
    conf: float = Field(ge=0.0, le=1.0)
    box_xywh: tuple[float, float, float, float]


class Counts(Contract):
    """Objects per traffic class in one frame or window; ``total`` = vehicles only."""

    motorbike: int = Field(0, ge=0)
    car: int = Field(0, ge=0)
    bus: int = Field(0, ge=0)
    truck: int = Field(0, ge=0)
    bicycle: int = Field(0, ge=0)
    person: int = Field(0, ge=0)
    total: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _total_is_vehicles(self) -> Counts:
        vehicles = self.motorbike + self.car + self.bus + self.truck
        if self.total != vehicles:
            raise ValueError(f"total must equal motorbike+car+bus+truck ({vehicles}), got {self.total}")
        return self

    @classmethod
    def of(cls, per_class: dict[str, int]) -> Counts:
        """Build from a class->count mapping, ignoring classes outside the contract."""
        known = {k: int(per_class.get(k, 0)) for k in (*VEHICLE_CLASSES, *OTHER_CLASSES)}
        return cls(**known, total=sum(known[k] for k in VEHICLE_CLASSES))

    def __add__(self, other: Counts) -> Counts:
        return Counts.of({k: getattr(self, k) + getattr(other, k) for k in (*VEHICLE_CLASSES, *OTHER_CLASSES)})


class ModelRef(Contract):
    """Which model produced a result."""

    name: str
    version: str
    sha256: str = Field(pattern=SHA256_PATTERN)


class PipelineInfo(Contract):
    """Provenance of a result inside the streaming job."""

    batch_id: int = Field(ge=0)
    kafka_partition: int = Field(ge=0)
    kafka_offset: int = Field(ge=0)
    inference_ms: float = Field(ge=0.0)
    latency_ms: float = Field(ge=0.0, description="produced_at -> document built")


class AnalysisResult(Contract):
    """``analysis_results``: one document per event, ``_id`` = :func:`event_id` (camera, event time).

    A new replay loop is new events (new event times), so it adds documents; a
    resend or a stream replay of the same event rewrites the same document.
    """

    id: str = Field(alias="_id", description="<camera_id>|<event_time as YYYY-MM-DDTHH:MM:SS.mmmZ>")
    record_key: str = Field(pattern=RECORD_KEY_PATTERN, description="the frame (the same in every loop)")
    camera_id: str
    frame_index: int = Field(ge=0)
    event_time: UtcDatetime
    replay_id: str
    counts: Counts
    density_percent: float = Field(ge=0.0, le=100.0)
    traffic_status: TrafficStatus
    detections: list[Detection]
    model: ModelRef
    pipeline: PipelineInfo
    processed_at: UtcDatetime
    schema_version: Literal["1.0"] = SCHEMA_VERSION

    @model_validator(mode="after")
    def _id_is_event(self) -> AnalysisResult:
        if self.id != event_id(self.camera_id, self.event_time):
            raise ValueError("_id must be '<camera_id>|<event_time as YYYY-MM-DDTHH:MM:SS.mmmZ>' (event_id)")
        return self


def event_id(camera_id: str, event_time: datetime) -> str:
    """Deterministic ``_id`` of one event (camera, event time): a resend rewrites it, a new loop does not.

    Sorts by time within a camera, so a camera's events over a time range are one ``_id`` range.
    """
    return f"{camera_id}|{format_time(event_time)}"


def window_id(camera_id: str, window_start: datetime) -> str:
    """Deterministic ``_id`` of a window so a replayed batch overwrites, never duplicates."""
    return f"{camera_id}|{_utc(window_start).strftime('%Y-%m-%dT%H:%M:%SZ')}"


class TrafficWindow(Contract):
    """``traffic_windows``: per-camera event-time tumbling window, full values (no ``$inc``)."""

    id: str = Field(alias="_id")
    camera_id: str
    window_start: UtcDatetime
    window_end: UtcDatetime
    frames: int = Field(ge=1)
    counts: Counts
    density_mean: float = Field(ge=0.0, le=100.0)
    density_max: float = Field(ge=0.0, le=100.0)
    traffic_status: TrafficStatus
    late_frames: int = Field(0, ge=0, description="events that arrived after the window closed (not in counts)")
    closed: bool = Field(False, description="closed by the camera's watermark or idle timeout: final")
    events: dict[str, list[float]] = Field(
        default_factory=dict,
        description="per-event contributions: ms after window_start -> [motorbike, car, bus, truck, bicycle, "
        "person, density_percent]",
    )
    late_events: list[int] = Field(default_factory=list, description="ms after window_start of the late events")
    updated_at: UtcDatetime
    schema_version: Literal["1.0"] = SCHEMA_VERSION

    @model_validator(mode="after")
    def _consistent(self) -> TrafficWindow:
        if self.window_end <= self.window_start:
            raise ValueError("window_end must be after window_start")
        if self.events and len(self.events) != self.frames:
            raise ValueError("frames must equal the number of events")
        if self.late_events and len(self.late_events) != self.late_frames:
            raise ValueError("late_frames must equal the number of late events")
        if self.id != window_id(self.camera_id, self.window_start):
            raise ValueError("_id must be '<camera_id>|<window_start as YYYY-MM-DDTHH:MM:SSZ>'")
        if self.density_max < self.density_mean:
            raise ValueError("density_max must be >= density_mean")
        return self


class KafkaCoordinates(Contract):
    """Where a record came from, so it can be found and replayed."""

    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)


def dead_letter_id(coords: KafkaCoordinates) -> str:
    """One dead letter per Kafka record: replays overwrite instead of piling up."""
    return f"{coords.topic}:{coords.partition}:{coords.offset}"


class DeadLetter(Contract):
    """``dead_letters``: a record the pipeline could not process, with the reason."""

    id: str = Field(alias="_id")
    stage: DeadLetterStage
    reason: str = Field(min_length=1, max_length=1000)
    raw: str = Field(max_length=RAW_VALUE_LIMIT)
    kafka: KafkaCoordinates
    record_key: str | None = None
    camera_id: str | None = None
    created_at: UtcDatetime
    schema_version: Literal["1.0"] = SCHEMA_VERSION


class LatencyStats(Contract):
    """Latency from ``produced_at`` to the Mongo write, over one micro-batch."""

    p50_ms: float = Field(ge=0.0)
    p95_ms: float = Field(ge=0.0)
    max_ms: float = Field(ge=0.0)


class PipelineProgress(Contract):
    """``pipeline_progress``: one document per micro-batch of the streaming query."""

    id: str = Field(alias="_id", description="<run>:<batch_id>")
    query: str
    run: str = Field("", description="<database>/<query>/<epoch>: one checkpoint's life (a reset starts a new run)")
    batch_id: int = Field(ge=0)
    rows: int = Field(ge=0, description="Kafka records in the batch")
    results: int = Field(ge=0, description="frames written to analysis_results")
    dead_letters: int = Field(ge=0)
    late_frames: int = Field(0, ge=0, description="results whose window was already closed")
    input_rows_per_s: float = Field(ge=0.0)
    processed_rows_per_s: float = Field(ge=0.0)
    durations_ms: dict[str, float]
    latency: LatencyStats | None = None
    started_at: UtcDatetime
    finished_at: UtcDatetime
    schema_version: Literal["1.0"] = SCHEMA_VERSION


COLLECTIONS: dict[str, type[Contract]] = {
    mongo.RESULTS: AnalysisResult,
    mongo.WINDOWS: TrafficWindow,
    mongo.DEAD_LETTERS: DeadLetter,
    mongo.PROGRESS: PipelineProgress,
}


def truncate_raw(value: bytes | str | None) -> str:
    """The raw Kafka value as text, cut to the dead-letter limit (binary kept readable)."""
    if value is None:
        return ""
    text = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
    return text[:RAW_VALUE_LIMIT]


def pretty(model: Contract) -> str:
    """Indented JSON of a model, as shown in CONTRACTS.md."""
    return json.dumps(json.loads(model.to_json()), indent=2)
