"""Pure logic of the stream task's stages: parse/validate -> dead letters, grouping, results, windows, latency."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from ipsp.contracts import RAW_VALUE_LIMIT, Counts, DeadLetter, KafkaCoordinates
from ipsp.streaming.progress import latency_stats, percentile
from ipsp.streaming.task.analyze import build_result
from ipsp.streaming.task.fetch import check_bytes, chunked, group_by_shard
from ipsp.streaming.task.parse import Record, parse_record, split_records
from ipsp.streaming.windows import FrameFigures, summarize_window, to_ms, window_start

NOW = datetime(2026, 11, 28, 7, 30, 12, 345000, tzinfo=UTC)
DATA = b"\xff\xd8 not really a jpeg \xff\xd9"


def message(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "schema_version": "1.0",
        "record_key": "cam_01_00001",
        "camera_id": "cam_01",
        "frame_index": 1,
        "event_time": "2026-01-01T08:00:01.000Z",
        "lmdb": {"uri": "s3://ipsp/datasets/d/shards/cam_01/cam_01-0000.lmdb", "key": "cam_01_00001"},
        "frame": {
            "width": 1280,
            "height": 720,
            "format": "jpeg",
            "bytes": len(DATA),
            "sha256": hashlib.sha256(DATA).hexdigest(),
        },
        "replay_id": "r1",
        "produced_at": "2026-11-28T07:30:12.000Z",
    }
    base.update(changes)
    return base


def encode(obj: object) -> bytes:
    return json.dumps(obj).encode()


def coords(offset: int = 7, partition: int = 2) -> KafkaCoordinates:
    return KafkaCoordinates(topic="t1", partition=partition, offset=offset)


def record(key: str, camera: str, index: int, shard: str) -> Record:
    msg = message(record_key=key, camera_id=camera, frame_index=index, lmdb={"uri": shard, "key": key})
    parsed = parse_record(encode(msg), coords(index), NOW)
    assert isinstance(parsed, Record)
    return parsed


# --- parse and validate ----------------------------------------------------------------------


def test_valid_message_parses_with_its_coordinates() -> None:
    parsed = parse_record(encode(message()), coords(), NOW)
    assert isinstance(parsed, Record)
    assert parsed.message.record_key == "cam_01_00001"
    assert (parsed.kafka.partition, parsed.kafka.offset) == (2, 7)


@pytest.mark.parametrize(
    ("value", "stage", "words"),
    [
        (b"{not json", "parse", "not JSON"),
        (b"\xff\xfe\x00garbage", "parse", "not JSON"),
        (None, "parse", "tombstone"),
        (b"[1, 2, 3]", "validate", "not an object"),
        (encode(message(schema_version="2.0")), "validate", "unknown schema_version '2.0'"),
        (encode({k: v for k, v in message().items() if k != "lmdb"}), "validate", "lmdb: missing"),
        (encode(message(frame_index=-3)), "validate", "frame_index"),
        (encode(message(extra_field=1)), "validate", "extra_field: unknown field"),
        (encode(message(event_time="2026-01-01T08:00:00")), "validate", "event_time"),
    ],
)
def test_bad_values_become_dead_letters_with_stage_and_reason(value: bytes | None, stage: str, words: str) -> None:
    parsed = parse_record(value, coords(), NOW)
    assert isinstance(parsed, DeadLetter)
    assert parsed.stage == stage
    assert words in parsed.reason
    assert parsed.id == "t1:2:7"
    assert parsed.kafka == coords()
    assert parsed.created_at == NOW


def test_dead_letter_keeps_ids_and_truncates_raw() -> None:
    huge = message(schema_version="9.9", padding="x" * 10_000)
    parsed = parse_record(encode(huge), coords(), NOW)
    assert isinstance(parsed, DeadLetter)
    assert parsed.record_key == "cam_01_00001"
    assert parsed.camera_id == "cam_01"
    assert len(parsed.raw) == RAW_VALUE_LIMIT
    assert parsed.raw == encode(huge).decode()[:RAW_VALUE_LIMIT]


def test_dead_letter_ignores_unusable_ids() -> None:
    parsed = parse_record(encode(message(record_key=12, camera_id="c" * 500)), coords(), NOW)
    assert isinstance(parsed, DeadLetter)
    assert (parsed.record_key, parsed.camera_id) == (None, None)


def test_split_records_gives_each_row_one_outcome() -> None:
    rows = [
        (encode(message()), "t1", 0, 0),
        (b"oops", "t1", 0, 1),
        (encode(message()), "t1", 1, 5),  # the same frame twice: both kept, both upsert one _id
        (encode(message(schema_version="2.0")), "t1", 1, 6),
    ]
    records, dead = split_records(rows, NOW)
    assert [(r.kafka.partition, r.kafka.offset) for r in records] == [(0, 0), (1, 5)]
    assert [(d.stage, d.id) for d in dead] == [("parse", "t1:0:1"), ("validate", "t1:1:6")]
    assert len(records) + len(dead) == len(rows)


# --- grouping and fetch checks ----------------------------------------------------------------------


def test_group_by_shard_reads_each_shard_once_in_frame_order() -> None:
    a, b = "s3://x/a.lmdb", "s3://x/b.lmdb"
    recs = [record("cam_01_00003", "cam_01", 3, a), record("cam_02_00001", "cam_02", 1, b),
            record("cam_01_00001", "cam_01", 1, a), record("cam_02_00000", "cam_02", 0, b)]  # fmt: skip
    groups = group_by_shard(recs)
    assert list(groups) == [a, b]
    assert [r.message.frame_index for r in groups[a]] == [1, 3]
    assert [r.message.frame_index for r in groups[b]] == [0, 1]
    assert sum(len(g) for g in groups.values()) == len(recs)


def test_chunked_slices_without_loss() -> None:
    assert [list(c) for c in chunked(list(range(7)), 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(chunked([], 4)) == []
    with pytest.raises(ValueError):
        list(chunked([1], 0))


def test_check_bytes_compares_size_and_sha256() -> None:
    rec = parse_record(encode(message()), coords(), NOW)
    assert isinstance(rec, Record)
    assert check_bytes(rec.message, DATA) is None
    assert "bytes" in (check_bytes(rec.message, DATA + b"x") or "")
    flipped = bytes([DATA[0] ^ 1]) + DATA[1:]
    assert "sha256" in (check_bytes(rec.message, flipped) or "")


def test_build_result_carries_provenance_and_latency() -> None:
    from ipsp.contracts import ModelRef

    rec = parse_record(encode(message()), coords(), NOW)
    assert isinstance(rec, Record)
    result = build_result(
        rec, counts=Counts.of({"car": 2, "person": 1}), density_percent=120.0, traffic_status="Congested",
        detections=[], model=ModelRef(name="m", version="1", sha256="a" * 64), batch_id=3, inference_ms=12.5, now=NOW,
    )  # fmt: skip
    assert result.id == "cam_01|2026-01-01T08:00:01.000Z"  # the event: camera and event time
    assert result.record_key == "cam_01_00001"
    assert result.counts.total == 2
    assert result.density_percent == 100.0  # clipped
    assert (result.pipeline.batch_id, result.pipeline.kafka_partition, result.pipeline.kafka_offset) == (3, 2, 7)
    assert result.pipeline.latency_ms == pytest.approx(345.0)
    early = NOW - timedelta(seconds=5)  # a producer clock ahead of ours never gives a negative latency
    again = build_result(rec, counts=Counts(), density_percent=0, traffic_status="Free", detections=[],
                         model=result.model, batch_id=0, inference_ms=0, now=early)  # fmt: skip
    assert again.pipeline.latency_ms == 0.0


# --- windows and watermark ----------------------------------------------------------------------


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.parametrize(
    ("event", "seconds", "start"),
    [
        ("2026-01-01T08:09:04.000Z", 60, "2026-01-01T08:09:00Z"),
        ("2026-01-01T08:09:00.000Z", 60, "2026-01-01T08:09:00Z"),  # a window includes its start
        ("2026-01-01T08:09:59.999Z", 60, "2026-01-01T08:09:00Z"),  # and excludes its end
        ("2026-01-01T08:09:04.000Z", 300, "2026-01-01T08:05:00Z"),
        ("2026-01-01T08:09:04.500Z", 1, "2026-01-01T08:09:04Z"),
    ],
)
def test_window_start_is_aligned(event: str, seconds: int, start: str) -> None:
    assert window_start(at(event), seconds) == at(start)


def status_by_density(camera_id: str, density: float, vehicles: int) -> str:
    if density >= 35 or vehicles >= 40:
        return "Congested"
    return "Normal" if density >= 15 else "Free"


def test_summarize_window_sums_counts_and_averages_density() -> None:
    frames = [
        FrameFigures(Counts.of({"car": 2, "motorbike": 1}), 10.0),
        FrameFigures(Counts.of({"bus": 1, "person": 3}), 30.0),
        FrameFigures(Counts.of({"truck": 4}), 20.0),
    ]
    window = summarize_window("cam_07", at("2026-01-01T08:09:00Z"), 60, frames, status_by_density, NOW)
    assert window.id == "cam_07|2026-01-01T08:09:00Z"
    assert window.window_end == at("2026-01-01T08:10:00Z")
    assert window.frames == 3
    assert window.counts == Counts(motorbike=1, car=2, bus=1, truck=4, bicycle=0, person=3, total=8)
    assert window.density_mean == pytest.approx(20.0)
    assert window.density_max == 30.0
    assert window.traffic_status == "Normal"
    crowded = [FrameFigures(Counts.of({"motorbike": 50}), 5.0)] * 2
    assert summarize_window("c", at("2026-01-01T08:00:00Z"), 60, crowded, status_by_density, NOW).traffic_status == (
        "Congested"
    )
    with pytest.raises(ValueError):
        summarize_window("cam_07", at("2026-01-01T08:09:00Z"), 60, [], status_by_density, NOW)


def test_recomputing_a_window_twice_gives_the_same_values() -> None:
    # the exactly-once argument for windows: full values from the frames, no increments
    frames = [FrameFigures(Counts.of({"car": i}), float(i)) for i in range(5)]
    first = summarize_window("c", at("2026-01-01T08:00:00Z"), 60, frames, status_by_density, NOW)
    again = summarize_window("c", at("2026-01-01T08:00:00Z"), 60, frames, status_by_density, NOW)
    assert first == again
    assert first.counts.car == sum(range(5))


@pytest.mark.parametrize("values", [[5.0], [1.0, 2.0], [3.0, 1.0, 2.0, 10.0], list(np.arange(0, 1000, 7.3))])
def test_percentile_matches_linear_interpolation(values: list[float]) -> None:
    ordered = sorted(values)
    for q in (0, 50, 95, 100):
        assert percentile(ordered, q) == pytest.approx(float(np.percentile(values, q)))


def test_latency_stats() -> None:
    stats = latency_stats([100.0, 300.0, 200.0, 400.0, -5.0])
    assert stats is not None
    assert stats.p50_ms == 200.0
    assert stats.max_ms == 400.0
    assert stats.p95_ms == pytest.approx(380.0)
    assert latency_stats([]) is None


# --- what a task hands back -------------------------------------------------------------


def test_outcomes_cross_arrow_as_typed_columns_and_come_back_equal() -> None:
    import pyarrow as pa

    from ipsp.contracts import ModelRef
    from ipsp.streaming.task.outcome import FrameOutcome, TaskReport, from_table, schema_ddl, to_record_batch

    record = split_records([(json.dumps(message()).encode(), "t", 2, 7)], NOW)[0][0]
    counts = Counts.of({"motorbike": 3, "car": 2, "person": 1})
    result = build_result(
        record, counts=counts, density_percent=12.5, traffic_status="Normal", detections=[],
        model=ModelRef(name="m", version="1", sha256="0" * 64), batch_id=4, inference_ms=3.0, now=NOW,
    )  # fmt: skip
    (letter,) = split_records([(b"{not json", "t", 2, 8)], NOW)[1]
    outcomes = [FrameOutcome.of_result(result, 41.5), FrameOutcome.of_letter(letter)]
    report = TaskReport(fetch_ms=1.5, infer_ms=20.0, kept=1, cache="h:/c", fetched="s3://b/x\ns3://b/y", cache_bytes=9)
    batch = to_record_batch(outcomes, report)

    # the schema follows the two records' fields: counts are integer columns, never text
    assert batch.schema.field("motorbike").type == pa.int64() and batch.schema.field("density").type == pa.float64()
    assert "motorbike long" in schema_ddl() and "kept long" in schema_ddl()
    back, reports = from_table(pa.Table.from_batches([batch]))
    assert back == outcomes and reports == [report]
    assert reports[0].fetched_shards == ["s3://b/x", "s3://b/y"] and TaskReport().fetched_shards == []
    assert back[0].figures == (3.0, 2.0, 0.0, 0.0, 0.0, 1.0, 12.5)
    assert (back[0].event_id, back[0].partition, back[0].offset) == (result.id, 2, 7)
    assert back[1].kind == "dead" and back[1].stage == "parse" and back[1].letter_id == "t:2:8"
    assert back[1].record_key == "" and back[1].created_ms == to_ms(NOW)


def test_the_class_fields_of_every_shape_are_the_one_class_list() -> None:
    from ipsp.serving.models import ClassCounts
    from ipsp.streaming.task.outcome import FrameOutcome
    from ipsp.streaming.windows import COUNT_FIELDS

    # the per-class fields are written out (for mypy and the API schema), so this keeps them in step
    assert tuple(f for f in Counts.model_fields if f != "total") == COUNT_FIELDS
    assert tuple(f for f in ClassCounts.model_fields if f != "total") == COUNT_FIELDS
    outcome = [f.name for f in dataclasses.fields(FrameOutcome)]
    assert tuple(f for f in outcome if f in COUNT_FIELDS) == COUNT_FIELDS
    assert outcome.index("person") - outcome.index("motorbike") == len(COUNT_FIELDS) - 1  # one block, in order


def test_a_worker_freezes_its_long_lived_objects_once() -> None:
    import gc
    import weakref

    from ipsp.streaming import resources

    class Node:
        """A cycle only the cyclic collector can free."""

        def __init__(self) -> None:
            self.me = self

    gc.unfreeze()
    resources._frozen = False
    try:
        resources.freeze_long_lived()
        # the loaded modules' objects are out of the collector's walk
        assert gc.get_freeze_count() > 0
        # a later task's call freezes nothing more: the cycle it holds stays collectable.
        # (The freeze count itself is no measure: it drops whenever a frozen object dies.)
        task_garbage = Node()
        alive = weakref.ref(task_garbage)
        resources.freeze_long_lived()
        del task_garbage
        gc.collect()
        assert alive() is None
    finally:
        gc.unfreeze()
        resources._frozen = False
