"""Pure per-record logic of the stream job: no Spark, no network, no model.

Each step is a small function so the rules are unit-tested on their own:

- parse and validate a Kafka value into a :class:`FrameMessage`, or a
  :class:`DeadLetter` saying why not (stage ``parse`` or ``validate``);
- group a micro-batch's messages by LMDB shard, so each shard is opened once;
- check fetched bytes against what the packer recorded (size and sha256);
- build the per-frame :class:`AnalysisResult`;
- tumbling-window arithmetic and the per-camera watermark;
- latency percentiles for the progress document.

The code that wires these to the shard reader, the detector and MongoDB lives
in :mod:`ipsp.streaming.worker` (executors) and :mod:`ipsp.streaming.sinks`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pydantic import ValidationError

from ipsp.contracts import (
    SCHEMA_VERSION,
    AnalysisResult,
    Counts,
    DeadLetter,
    DeadLetterStage,
    Detection,
    FrameMessage,
    KafkaCoordinates,
    LatencyStats,
    ModelRef,
    PipelineInfo,
    TrafficStatus,
    TrafficWindow,
    dead_letter_id,
    event_id,
    truncate_raw,
    window_id,
)

T = TypeVar("T")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- parse and validate ----------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One valid Kafka record: the message, where it came from and its raw value."""

    message: FrameMessage
    kafka: KafkaCoordinates
    raw: bytes


def dead_letter(
    stage: DeadLetterStage,
    reason: str,
    raw: bytes | str | None,
    kafka: KafkaCoordinates,
    now: datetime,
    record_key: str | None = None,
    camera_id: str | None = None,
) -> DeadLetter:
    """A dead letter for one Kafka record; its ``_id`` is the record's coordinates."""
    return DeadLetter(
        id=dead_letter_id(kafka),
        stage=stage,
        reason=reason[:1000] or stage,
        raw=truncate_raw(raw),
        kafka=kafka,
        record_key=record_key,
        camera_id=camera_id,
        created_at=now,
    )


def _ids_of(obj: Any) -> tuple[str | None, str | None]:
    # a dead letter keeps record_key / camera_id when the JSON had usable ones, to help find the frame
    if not isinstance(obj, dict):
        return None, None

    def usable(value: Any) -> str | None:
        return value if isinstance(value, str) and 0 < len(value) <= 128 else None

    return usable(obj.get("record_key")), usable(obj.get("camera_id"))


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming each field that breaks the contract and why."""
    parts = []
    for err in exc.errors()[:8]:
        where = ".".join(str(p) for p in err["loc"]) or "message"
        if err["type"] == "missing":
            parts.append(f"{where}: missing")
        elif err["type"] == "extra_forbidden":
            parts.append(f"{where}: unknown field")
        else:
            parts.append(f"{where}: {err['msg']}")
    more = len(exc.errors()) - 8
    if more > 0:
        parts.append(f"... and {more} more")
    return "; ".join(parts)


def parse_record(value: bytes | None, kafka: KafkaCoordinates, now: datetime) -> Record | DeadLetter:
    """Parse one Kafka value into a valid record, or a dead letter (stage parse / validate)."""
    if value is None:
        return dead_letter("parse", "empty Kafka value (tombstone)", None, kafka, now)
    try:
        obj = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return dead_letter("parse", f"value is not JSON: {exc}", value, kafka, now)
    record_key, camera_id = _ids_of(obj)
    if not isinstance(obj, dict):
        return dead_letter("validate", f"value is JSON {type(obj).__name__}, not an object", value, kafka, now)
    version = obj.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        reason = f"unknown schema_version {version!r}: this job reads {SCHEMA_VERSION!r}"
        return dead_letter("validate", reason, value, kafka, now, record_key, camera_id)
    try:
        message = FrameMessage.model_validate(obj)
    except ValidationError as exc:
        reason = f"breaks the FrameMessage contract: {describe_validation_error(exc)}"
        return dead_letter("validate", reason, value, kafka, now, record_key, camera_id)
    return Record(message=message, kafka=kafka, raw=value)


def split_records(
    rows: Iterable[tuple[bytes | None, str, int, int]], now: datetime
) -> tuple[list[Record], list[DeadLetter]]:
    """Parse ``(value, topic, partition, offset)`` rows into valid records and dead letters.

    A frame that Kafka holds twice (a feed replayed into the same topic) stays
    twice: both copies upsert the same ``_id``, so the effect is one document,
    and every Kafka record keeps exactly one outcome (``rows = results + dead_letters``).
    """
    records: list[Record] = []
    dead: list[DeadLetter] = []
    for value, topic, partition, offset in rows:
        coords = KafkaCoordinates(topic=topic, partition=partition, offset=offset)
        parsed = parse_record(value, coords, now)
        if isinstance(parsed, DeadLetter):
            dead.append(parsed)
        else:
            records.append(parsed)
    return records, dead


# --- fetch -----------------------------------------------------------------------


def group_by_shard(records: Iterable[Record]) -> dict[str, list[Record]]:
    """Records grouped by shard URI (first-seen order), each group in frame order."""
    groups: dict[str, list[Record]] = {}
    for record in records:
        groups.setdefault(record.message.lmdb.uri, []).append(record)
    for group in groups.values():
        group.sort(key=lambda r: (r.message.camera_id, r.message.frame_index, r.message.record_key))
    return groups


def chunked(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most ``size`` items."""
    if size < 1:
        raise ValueError("chunk size must be >= 1")
    for start in range(0, len(items), size):
        yield items[start : start + size]


def check_bytes(message: FrameMessage, data: bytes) -> str | None:
    """Why the fetched bytes are not the frame the message describes, or None if they are."""
    if len(data) != message.frame.bytes:
        return f"frame has {len(data)} bytes, the message says {message.frame.bytes}"
    digest = hashlib.sha256(data).hexdigest()
    if digest != message.frame.sha256:
        return f"frame sha256 {digest[:12]}... differs from the message's {message.frame.sha256[:12]}..."
    return None


# --- results ---------------------------------------------------------------------


def elapsed_ms(start: datetime, end: datetime) -> float:
    """Milliseconds from ``start`` to ``end``, never negative (clocks of two hosts may disagree)."""
    return max(0.0, (end - start).total_seconds() * 1000.0)


def build_result(
    record: Record,
    *,
    counts: Counts,
    density_percent: float,
    traffic_status: TrafficStatus,
    detections: list[Detection],
    model: ModelRef,
    batch_id: int,
    inference_ms: float,
    now: datetime,
) -> AnalysisResult:
    """The ``analysis_results`` document of one event (``_id`` = event_id(camera, event time))."""
    msg = record.message
    return AnalysisResult(
        id=event_id(msg.camera_id, msg.event_time),
        record_key=msg.record_key,
        camera_id=msg.camera_id,
        frame_index=msg.frame_index,
        event_time=msg.event_time,
        replay_id=msg.replay_id,
        counts=counts,
        density_percent=min(100.0, max(0.0, density_percent)),
        traffic_status=traffic_status,
        detections=detections,
        model=model,
        pipeline=PipelineInfo(
            batch_id=batch_id,
            kafka_partition=record.kafka.partition,
            kafka_offset=record.kafka.offset,
            inference_ms=max(0.0, inference_ms),
            latency_ms=elapsed_ms(msg.produced_at, now),
        ),
        processed_at=now,
    )


# --- windows and watermark -----------------------------------------------------------


def to_ms(value: datetime) -> int:
    """Epoch milliseconds of an aware datetime."""
    return round((value - EPOCH).total_seconds() * 1000)


def from_ms(value: int) -> datetime:
    """Aware UTC datetime of epoch milliseconds."""
    return EPOCH + timedelta(milliseconds=value)


def window_start(event_time: datetime, window_seconds: int) -> datetime:
    """Start of the tumbling window holding ``event_time`` (windows aligned to the epoch)."""
    size = window_seconds * 1000
    ms = to_ms(event_time)
    return from_ms(ms - ms % size)


@dataclass(frozen=True)
class FrameFigures:
    """What a window needs from one stored frame."""

    counts: Counts
    density_percent: float


def summarize_window(
    camera_id: str,
    start: datetime,
    window_seconds: int,
    frames: Sequence[FrameFigures],
    status_of: Any,
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


@dataclass
class Watermark:
    """Per-camera event-time watermark: max event time seen minus a delay.

    A window is *closed* once its end is at or before its camera's watermark:
    it is final, and a late frame (one whose window is closed when its batch
    starts) is stored in ``analysis_results`` but does not reopen the window.
    The watermark is per camera because the topic is keyed by camera: a lagging
    Kafka partition must not make the frames of its cameras late.
    """

    delay_ms: int
    max_event_ms: dict[str, int]

    def cutoff_ms(self, camera_id: str) -> int | None:
        """Event time (ms) below which the camera's windows are closed; None if nothing seen yet."""
        seen = self.max_event_ms.get(camera_id)
        return None if seen is None else seen - self.delay_ms

    def is_closed(self, camera_id: str, start: datetime, window_seconds: int) -> bool:
        """Whether the camera's window starting at ``start`` is closed."""
        cutoff = self.cutoff_ms(camera_id)
        return cutoff is not None and to_ms(start) + window_seconds * 1000 <= cutoff

    def advanced(self, events: Iterable[tuple[str, datetime]]) -> Watermark:
        """A new watermark after seeing ``(camera_id, event_time)`` pairs (never moves back)."""
        seen = dict(self.max_event_ms)
        for camera_id, event_time in events:
            ms = to_ms(event_time)
            if ms > seen.get(camera_id, ms - 1):
                seen[camera_id] = ms
        return Watermark(delay_ms=self.delay_ms, max_event_ms=seen)


# --- progress ------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks."""
    if not sorted_values:
        raise ValueError("percentile of nothing")
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    rank = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    weight = rank - low
    return float(sorted_values[low] * (1 - weight) + sorted_values[high] * weight)


def latency_stats(latencies_ms: Iterable[float]) -> LatencyStats | None:
    """p50, p95 and max of a batch's latencies; None for a batch with no frames."""
    values = sorted(max(0.0, float(v)) for v in latencies_ms)
    if not values:
        return None
    return LatencyStats(
        p50_ms=round(percentile(values, 50), 3),
        p95_ms=round(percentile(values, 95), 3),
        max_ms=round(values[-1], 3),
    )
