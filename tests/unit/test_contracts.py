"""Contract models reject what breaks the contract, naming the field."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from ipsp.contracts import (
    AnalysisResult,
    Counts,
    DeadLetter,
    FrameMessage,
    KafkaCoordinates,
    TrafficWindow,
    dead_letter_id,
    format_time,
    truncate_raw,
    window_id,
)


def message(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "schema_version": "1.0",
        "record_key": "cam_01_00001",
        "camera_id": "cam_01",
        "frame_index": 1,
        "event_time": "2026-01-01T08:00:01.000Z",
        "lmdb": {"uri": "file:///data/shards/cam_01-0000.lmdb", "key": "cam_01_00001"},
        "frame": {"width": 1280, "height": 720, "format": "jpeg", "bytes": 1000, "sha256": "0" * 64},
        "replay_id": "r1",
        "produced_at": "2026-01-01T08:00:01.500Z",
    }
    base.update(changes)
    return base


def error_fields(exc: ValidationError) -> set[str]:
    return {".".join(str(p) for p in err["loc"]) for err in exc.errors()}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"schema_version": "2.0"}, "schema_version"),
        ({"record_key": "../etc"}, "record_key"),
        ({"frame_index": -1}, "frame_index"),
        ({"event_time": "2026-01-01T08:00:00"}, "event_time"),
        ({"frame": {"width": 0, "height": 720, "format": "jpeg", "bytes": 1, "sha256": "0" * 64}}, "frame.width"),
        ({"frame": {"width": 1, "height": 1, "format": "gif", "bytes": 1, "sha256": "0" * 64}}, "frame.format"),
        ({"frame": {"width": 1, "height": 1, "format": "jpeg", "bytes": 1, "sha256": "xyz"}}, "frame.sha256"),
        ({"extra": 1}, "extra"),
    ],
)
def test_invalid_message_names_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        FrameMessage.model_validate(message(**changes))
    assert field in error_fields(info.value)


def test_missing_field_is_named() -> None:
    data = message()
    del data["lmdb"]
    with pytest.raises(ValidationError) as info:
        FrameMessage.model_validate(data)
    assert "lmdb" in error_fields(info.value)


def test_times_are_utc_milliseconds() -> None:
    msg = FrameMessage.model_validate(message(event_time="2026-01-01T15:00:01.123456+07:00"))
    assert msg.event_time == datetime(2026, 1, 1, 8, 0, 1, 123000, tzinfo=UTC)
    assert '"event_time":"2026-01-01T08:00:01.123Z"' in msg.to_json()
    assert format_time(msg.event_time) == "2026-01-01T08:00:01.123Z"


def test_kafka_key_is_camera() -> None:
    assert FrameMessage.model_validate(message()).kafka_key() == b"cam_01"


def test_counts_total_is_vehicles_only() -> None:
    counts = Counts.of({"motorbike": 2, "car": 1, "person": 5, "dog": 3})
    assert (counts.total, counts.person) == (3, 5)
    assert (counts + counts).total == 6
    with pytest.raises(ValidationError, match="total"):
        Counts(car=1, total=5)


def test_window_id_and_consistency() -> None:
    start = datetime(2026, 1, 1, 8, 9, tzinfo=UTC)
    assert window_id("cam_01", start) == "cam_01|2026-01-01T08:09:00Z"
    doc = {
        "_id": "cam_01|2026-01-01T08:09:00Z",
        "camera_id": "cam_01",
        "window_start": start,
        "window_end": datetime(2026, 1, 1, 8, 10, tzinfo=UTC),
        "frames": 2,
        "counts": Counts.of({"car": 2}),
        "density_mean": 5.0,
        "density_max": 7.0,
        "traffic_status": "Free",
        "updated_at": start,
    }
    assert TrafficWindow.model_validate(doc).frames == 2
    with pytest.raises(ValidationError, match="_id"):
        TrafficWindow.model_validate({**doc, "_id": "cam_01|other"})
    with pytest.raises(ValidationError, match="window_end"):
        TrafficWindow.model_validate({**doc, "window_end": start})


def test_dead_letter_id_is_kafka_coordinates() -> None:
    coords = KafkaCoordinates(topic="t", partition=2, offset=118)
    letter = DeadLetter(
        id=dead_letter_id(coords), stage="parse", reason="not JSON", raw=truncate_raw(b"\xff" * 5000),
        kafka=coords, created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    assert letter.id == "t:2:118"
    assert len(letter.raw) == 2048


def test_analysis_result_document_uses_id_alias() -> None:
    result = AnalysisResult.model_validate(
        {
            "_id": "cam_01|2026-01-01T08:00:01.000Z",
            "record_key": "cam_01_00001",
            "camera_id": "cam_01",
            "frame_index": 1,
            "event_time": "2026-01-01T08:00:01.000Z",
            "replay_id": "r1",
            "counts": Counts().model_dump(),
            "density_percent": 0.0,
            "traffic_status": "Free",
            "detections": [],
            "model": {"name": "m", "version": "1", "sha256": "0" * 64},
            "pipeline": {"batch_id": 0, "kafka_partition": 0, "kafka_offset": 0, "inference_ms": 1, "latency_ms": 1},
            "processed_at": "2026-01-01T08:00:02.000Z",
        }
    )
    doc = result.to_document()
    assert doc["_id"] == "cam_01|2026-01-01T08:00:01.000Z"
    assert doc["record_key"] == "cam_01_00001"
    assert isinstance(doc["event_time"], datetime)


def test_analysis_result_id_must_be_its_event() -> None:
    doc = AnalysisResult.model_validate(
        {
            "_id": "cam_01|2026-01-01T08:00:01.000Z",
            "record_key": "cam_01_00001",
            "camera_id": "cam_01",
            "frame_index": 1,
            "event_time": "2026-01-01T08:00:01.000Z",
            "replay_id": "r1",
            "counts": Counts().model_dump(),
            "density_percent": 0.0,
            "traffic_status": "Free",
            "detections": [],
            "model": {"name": "m", "version": "1", "sha256": "0" * 64},
            "pipeline": {"batch_id": 0, "kafka_partition": 0, "kafka_offset": 0, "inference_ms": 1, "latency_ms": 1},
            "processed_at": "2026-01-01T08:00:02.000Z",
        }
    ).to_document()
    doc["_id"] = doc["record_key"]  # the v1.0 identity: one document per frame, loops overwrite each other
    with pytest.raises(ValidationError, match="event_id"):
        AnalysisResult.model_validate(doc)
