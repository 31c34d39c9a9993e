"""The parse stage: Kafka values into valid records, or dead letters saying why not.

Pure: no Spark, no network. A record that breaks the contract becomes a dead
letter of stage ``parse`` (not JSON) or ``validate`` (not a valid ``FrameMessage``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from ipsp.contracts import (
    SCHEMA_VERSION,
    DeadLetter,
    DeadLetterStage,
    FrameMessage,
    KafkaCoordinates,
    dead_letter_id,
    truncate_raw,
)

#: one Kafka row as the task reads it: value, topic, partition, offset
KafkaRow = tuple[bytes | None, str, int, int]


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


def letter_for(stage: DeadLetterStage, reason: str, record: Record, now: datetime) -> DeadLetter:
    """A dead letter for a valid record that failed a later stage (fetch, decode)."""
    msg = record.message
    return dead_letter(stage, reason, record.raw, record.kafka, now, msg.record_key, msg.camera_id)


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


def split_records(rows: Iterable[KafkaRow], now: datetime) -> tuple[list[Record], list[DeadLetter]]:
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
