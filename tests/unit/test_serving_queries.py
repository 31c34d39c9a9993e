"""Pure shaping helpers of the serving queries and the reader's caches, on documents the sink code folds."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from ipsp import mongo, rollups
from ipsp.contracts import Counts, DeadLetter, KafkaCoordinates, PipelineProgress, TrafficWindow, window_id
from ipsp.serving import queries
from ipsp.serving.params import BadParameter, TimeRange
from ipsp.serving.reader import ServingReader, round_range

T0 = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)


def test_bucket_start_is_epoch_aligned() -> None:
    moment = datetime(2026, 1, 5, 7, 7, 31, tzinfo=UTC)
    assert queries.bucket_start(moment, timedelta(minutes=5)) == datetime(2026, 1, 5, 7, 5, tzinfo=UTC)
    assert queries.bucket_start(moment, timedelta(hours=1)) == datetime(2026, 1, 5, 7, 0, tzinfo=UTC)


def test_heat_cells_weight_density_by_frames() -> None:
    def doc(camera: str, minute: int, frames: int, mean: float, peak: float) -> dict:
        return {"camera_id": camera, "window_start": T0 + timedelta(minutes=minute), "frames": frames,
                "density_mean": mean, "density_max": peak}  # fmt: skip

    docs = [doc("a", 0, 1, 10.0, 10.0), doc("a", 1, 3, 30.0, 50.0), doc("b", 0, 2, 5.0, 6.0), doc("a", 5, 2, 1.0, 2.0)]
    cells = queries.heat_cells(docs, timedelta(minutes=5))
    assert [(c.time, c.camera_id) for c in cells] == [(T0, "a"), (T0, "b"), (T0 + timedelta(minutes=5), "a")]
    assert cells[0].density_mean == 25.0  # (10*1 + 30*3) / 4
    assert cells[0].density_max == 50.0 and cells[0].frames == 4


def test_partials_of_parts_add_up_to_the_whole() -> None:
    """Per-hour partials (class sums, heat cells) merged give what the rows of the whole range give."""

    def row(camera: str, minute: int, cars: int, frames: int, mean: float) -> dict:
        return {"camera_id": camera, "window_start": T0 + timedelta(minutes=minute), "frames": frames,
                "density_mean": mean, "density_max": mean + 1, "counts": {"car": cars, "total": cars}}  # fmt: skip

    rows = [row("a", 0, 2, 3, 10.0), row("b", 30, 1, 2, 4.0), row("a", 59, 5, 4, 20.0), row("a", 61, 7, 1, 8.0)]
    first_hour, second_hour = rows[:3], rows[3:]
    whole = queries.sum_counts(rows)
    assert queries.add_sums([queries.sum_counts(first_hour), queries.sum_counts(second_hour)]) == whole
    assert whole["a"]["car"] == 14 and whole["a"]["frames"] == 8 and whole["b"]["car"] == 1
    assert queries.class_mix_from(whole) == queries.class_mix_of(rows)
    for bucket in (timedelta(minutes=5), timedelta(hours=2)):  # a 2-hour bucket spans both parts
        parts = [queries.heat_sums(first_hour, bucket), queries.heat_sums(second_hour, bucket)]
        assert queries.heat_cells_of(queries.add_heat(parts)) == queries.heat_cells(rows, bucket)


def test_merge_windows_sums_counts_and_weights_density_per_camera_bucket() -> None:
    def row(camera: str, minute: int, frames: int, cars: int, mean: float, status: str) -> dict:
        return {"camera_id": camera, "window_start": T0 + timedelta(minutes=minute), "frames": frames,
                "counts": rollups.counts_dict({"car": cars}), "density_mean": mean, "density_max": mean,
                "traffic_status": status}  # fmt: skip

    rows = [row("a", 0, 1, 2, 10.0, "Free"), row("a", 4, 3, 9, 30.0, "Congested"), row("a", 5, 2, 1, 1.0, "Free"),
            row("b", 1, 2, 4, 5.0, "Free"), row("a", 3, 2, 2, 20.0, "Congested")]  # fmt: skip
    merged = queries.merge_windows(rows, timedelta(minutes=5))

    assert [(m["window_start"], m["camera_id"]) for m in merged] == [
        (T0, "a"), (T0, "b"), (T0 + timedelta(minutes=5), "a")
    ]  # fmt: skip
    first = queries.window_row(merged[0])
    assert (first.frames, first.car, first.vehicles_per_frame) == (6, 13, round(13 / 6, 3))
    assert first.density_mean == round((10 * 1 + 30 * 3 + 20 * 2) / 6, 4) and first.density_max == 30.0
    assert first.traffic_status == "Congested" and first.window_end == T0 + timedelta(minutes=5)


def test_check_buckets_bounds_the_cell_count() -> None:
    span = TimeRange(T0, T0 + timedelta(days=2))
    assert queries.check_buckets(span, timedelta(hours=1)) == 48
    with pytest.raises(BadParameter, match="at least 87s"):
        queries.check_buckets(span, timedelta(seconds=30))


def test_class_shares_list_every_class() -> None:
    rows = queries.class_shares({"motorbike": 6, "car": 2, "person": 2, "total": 8})
    assert [r.class_name for r in rows] == ["motorbike", "car", "bus", "truck", "bicycle", "person"]
    assert {r.class_name: r.share_percent for r in rows}["motorbike"] == 60.0
    assert all(r.share_percent == 0.0 for r in queries.class_shares({}))


def test_flat_counts_fills_missing_classes() -> None:
    assert queries.flat_counts({"car": 2, "total": 2}) == {
        "motorbike": 0, "car": 2, "bus": 0, "truck": 0, "bicycle": 0, "person": 0, "total": 2,
    }  # fmt: skip
    assert queries.flat_counts(None)["total"] == 0


def test_health_from_empty_range() -> None:
    health = queries.health_from({}, None, None, None, 0)
    assert health.batches == 0 and health.throughput_rows_per_s == 0.0 and health.last_finished_at is None


def _window(camera: str, minute: int, cars: int, frames: int = 10) -> dict:
    start = T0 + timedelta(minutes=minute)
    return TrafficWindow(
        id=window_id(camera, start), camera_id=camera, window_start=start, window_end=start + timedelta(minutes=1),
        frames=frames, counts=Counts.of({"car": cars, "person": 1}), density_mean=10.0, density_max=12.0,
        traffic_status="Normal", updated_at=T0,
    ).to_document()  # fmt: skip


def _progress(batch_id: int, finished: datetime, dead: int = 0) -> dict:
    return PipelineProgress(
        id=f"q:{batch_id}", query="q", batch_id=batch_id, rows=10 + dead, results=10, dead_letters=dead,
        input_rows_per_s=5.0, processed_rows_per_s=6.0, durations_ms={},
        latency={"p50_ms": 1.0, "p95_ms": 2.0 + batch_id, "max_ms": 9.0},
        started_at=finished - timedelta(seconds=2), finished_at=finished,
    ).to_document()  # fmt: skip


def test_rows_from_serving_documents() -> None:
    windows = [_window("cam_01", m, cars=m + 1) for m in range(3)] + [_window("cam_02", 0, cars=4)]
    hours = rollups.fold_hours({}, windows, 60, T0)
    rows = rollups.windows_of_hours(hours.values(), T0, T0 + timedelta(hours=1))
    row = queries.window_row(rows[0])
    assert (row.camera_id, row.total, row.vehicles_per_frame) == ("cam_01", 1, 0.1)
    shares = {share.class_name: share.count for share in queries.class_mix_of(rows)}
    assert shares["car"] == 1 + 2 + 3 + 4 and shares["person"] == 4
    per_camera = queries.class_mix_by_camera_of(rows)
    assert [(c.camera_id, c.frames) for c in per_camera] == [("cam_01", 30), ("cam_02", 10)]
    days = rollups.fold_days({}, hours.values(), T0)
    cameras = rollups.fold_cameras({}, days.values(), hours.values(), T0)
    status = queries.camera_status_of(cameras["cam_01"])
    assert (status.frames, status.time, status.car) == (30, T0 + timedelta(minutes=2), 3)


def test_health_and_stages_from_batch_entries() -> None:
    entries = [
        {
            **rollups.batch_figures(_progress(i, T0 + timedelta(minutes=i), dead=i % 2), {"parse": i % 2}),
            "_id": f"q:{i}",
        }
        for i in range(4)
    ]
    health = queries.health_of(entries)
    assert (health.batches, health.results, health.dead_letters, health.last_batch_id) == (4, 40, 2, 3)
    assert health.worst_latency_p95_ms == 5.0 and health.dead_letters_stored == 2
    stages = {row.stage: row.count for row in queries.stages_of(entries)}
    assert stages["parse"] == 2 and stages["sink"] == 0
    batch = queries.batch_row(entries[0])
    assert batch.duration_ms == 2000.0 and batch.latency_p95_ms == 2.0


def test_latest_dead_letters_are_the_newest_each_batch_lists() -> None:
    def letter(offset: int, stage: str) -> dict:
        coords = KafkaCoordinates(topic="traffic-metadata", partition=1, offset=offset)
        moment = T0 + timedelta(seconds=offset)
        doc = DeadLetter(id=f"traffic-metadata:1:{offset}", stage=stage, reason=f"bad {offset}", raw="x",
                         created_at=moment, kafka=coords)  # fmt: skip
        return doc.to_document()

    many = [letter(i, "parse" if i % 2 else "fetch") for i in range(30)]
    first = rollups.batch_figures(_progress(1, T0 + timedelta(minutes=1)), {"parse": 15, "fetch": 15}, many)
    second = rollups.batch_figures(_progress(2, T0 + timedelta(minutes=2)), {}, [letter(40, "sink")])
    batches = [{**first, "_id": "q:1"}, {**second, "_id": "q:2"}]
    span = TimeRange(T0, T0 + timedelta(hours=1))

    assert len(batches[0]["latest_dead_letters"]) == rollups.LETTERS_PER_BATCH  # the newest 20 of 30 listed
    rows = queries.latest_dead_letters(batches, span, 4)
    assert [(r.offset, r.stage) for r in rows] == [(40, "sink"), (29, "parse"), (28, "fetch"), (27, "parse")]
    assert (rows[0].topic, rows[0].partition, rows[0].id, rows[0].reason) == (
        "traffic-metadata",
        1,
        "traffic-metadata:1:40",
        "bad 40",
    )
    parse_only = queries.latest_dead_letters(batches, span, 100, ["parse"])
    assert [r.offset for r in parse_only] == [29, 27, 25, 23, 21, 19, 17, 15, 13, 11]
    assert (
        queries.latest_dead_letters(batches, TimeRange(T0 + timedelta(seconds=35), T0 + timedelta(hours=1)), 9)
        == rows[:1]
    )


def test_page_keys_round_trip_and_reject_garbage() -> None:
    moment, key = queries.parse_page_key("1767596400123,cam_01_000001")
    assert key == "cam_01_000001" and int(moment.timestamp() * 1000) == 1767596400123
    with pytest.raises(BadParameter, match="page key"):
        queries.parse_page_key("12")


@pytest.mark.parametrize(
    ("start", "end", "bucket", "low", "high"),
    [
        ((7, 0, 31), (13, 0, 31), 60, (7, 0, 0), (13, 1, 0)),
        ((7, 0, 0), (13, 0, 0), 60, (7, 0, 0), (13, 0, 0)),
        ((7, 12, 0), (8, 5, 0), 3600, (7, 0, 0), (9, 0, 0)),
    ],
)
def test_round_range_widens_to_whole_buckets(start, end, bucket, low, high) -> None:
    def at(h: int, m: int, s: int) -> datetime:
        return datetime(2026, 1, 5, h, m, s, tzinfo=UTC)

    rounded = round_range(TimeRange(at(*start), at(*end)), timedelta(seconds=bucket))
    assert (rounded.start, rounded.end) == (at(*low), at(*high))


class StateOnly:
    """Stands in for the database so the cache rules can be checked on their own: only the state lookup."""

    def __init__(self) -> None:
        self.batch = "q:1"
        self.reads = 0

    def __getitem__(self, name: str) -> StateOnly:
        return self

    def find_one(self, query: dict) -> dict:
        self.reads += 1
        return {"_id": "state", "last_batch": self.batch, "written_at": T0}


def test_answers_are_shared_until_the_next_batch() -> None:
    db = StateOnly()
    now = [0.0]
    reader = ServingReader(db, state_ttl_s=1.0, clock=lambda: now[0])  # type: ignore[arg-type]
    calls = Counter()

    def compute(key: str) -> str:
        calls[key] += 1
        return key

    assert reader.cached("a", lambda: compute("a")) == "a"
    assert reader.cached("a", lambda: compute("a")) == "a" and calls["a"] == 1 and db.reads == 1
    now[0] = 5.0  # the state is read again; same batch: the answer stays
    reader.cached("a", lambda: compute("a"))
    assert calls["a"] == 1 and db.reads == 2
    db.batch = "q:2"
    now[0] = 10.0
    reader.cached("a", lambda: compute("a"))
    assert calls["a"] == 2
    reader.close()


def test_concurrent_callers_wait_for_one_computation_and_a_failure_is_retried() -> None:
    reader = ServingReader(StateOnly(), state_ttl_s=60.0)  # type: ignore[arg-type]
    lock = threading.Lock()
    calls = [0]

    def slow() -> int:
        with lock:
            calls[0] += 1
        time.sleep(0.2)
        return 7

    with ThreadPoolExecutor(max_workers=6) as pool:
        assert list(pool.map(lambda _: reader.cached("k", slow), range(6))) == [7] * 6
    assert calls[0] == 1

    def failing() -> int:
        raise RuntimeError("mongo hiccup")

    with pytest.raises(RuntimeError):
        reader.cached("f", failing)
    assert reader.cached("f", lambda: 3) == 3
    reader.close()


class Store:
    """Stands in for the database: documents by collection and ``_id``, counting lookups (cache rules only)."""

    def __init__(self, docs: dict) -> None:
        self.docs = docs
        self.lookups: Counter = Counter()

    def __getitem__(self, name: str) -> Store:
        self.current = name
        return self

    def find_one(self, query: dict) -> dict | None:
        self.lookups[(self.current, query["_id"])] += 1
        return self.docs.get(self.current, {}).get(query["_id"])


def _state(batch_id: int, touched: list[str], query: str = "q") -> dict:
    return {"_id": "state", "last_batch": f"{query}:{batch_id}", "batch_id": batch_id, "written_at": T0,
            "last_batch_at": T0 + timedelta(minutes=batch_id), "touched_hours": touched}  # fmt: skip


def test_the_next_batch_forgets_only_the_hours_it_wrote() -> None:
    ids = ["a|2026-01-05T06", "a|2026-01-05T07"]
    store = Store({mongo.STATE: {"state": _state(1, ["2026-01-05T07"])}})
    now = [0.0]
    reader = ServingReader(store, state_ttl_s=1.0, clock=lambda: now[0])  # type: ignore[arg-type]
    reader.state()
    reader.documents(mongo.CAMERA_HOURS, ids)
    store.docs[mongo.STATE]["state"] = _state(2, ["2026-01-05T07"])
    now[0] = 2.0
    reader.state()
    reader.documents(mongo.CAMERA_HOURS, ids)
    assert store.lookups[(mongo.CAMERA_HOURS, ids[0])] == 1  # a closed hour stays cached
    assert store.lookups[(mongo.CAMERA_HOURS, ids[1])] == 2  # the hour the batch wrote is read again
    store.docs[mongo.STATE]["state"] = _state(5, ["2026-01-05T07"])  # batches were missed: forget everything
    now[0] = 4.0
    reader.state()
    reader.documents(mongo.CAMERA_HOURS, ids)
    assert store.lookups[(mongo.CAMERA_HOURS, ids[0])] == 2
    reader.close()


def test_warm_reads_the_latest_hours_once() -> None:
    class Cameras(Store):
        def find(self, query: dict) -> list[dict]:
            return list(self.docs.get(self.current, {}).values())

    state = {**_state(3, ["2026-01-05T07"]), "last_hour": T0}
    store = Cameras({mongo.STATE: {"state": state}, mongo.CAMERAS: {"a": {"_id": "a"}, "b": {"_id": "b"}}})
    reader = ServingReader(store, state_ttl_s=60.0)  # type: ignore[arg-type]

    reader.warm(2)
    hours = ["a|2026-01-05T06", "a|2026-01-05T07", "b|2026-01-05T06", "b|2026-01-05T07"]
    assert sorted(key for collection, key in store.lookups if collection == mongo.CAMERA_HOURS) == hours
    assert sorted(key for collection, key in store.lookups if collection == mongo.PIPELINE_HOURS) == [
        "2026-01-05T06",
        "2026-01-05T07",
    ]
    reader.documents(mongo.CAMERA_HOURS, hours)  # the first dashboard load finds them cached
    assert max(store.lookups.values()) == 1
    reader.close()
