"""Pure shaping helpers of the serving queries, and the synthetic run they are tested on."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from ipsp.contracts import COLLECTIONS, Counts
from ipsp.serving import queries
from ipsp.serving.params import BadParameter, TimeRange
from ipsp.serving.synthetic import build_run, status_for, windows_of

T0 = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def run():  # a small run keeps the unit tests fast
    return build_run(frames=240, cameras=4, frames_per_second=1.0, batch_rows=64, dead_letter_every=50)


def test_synthetic_run_is_contract_valid(run) -> None:
    for name, models in run.collections().items():
        model = COLLECTIONS[name]
        assert models, name
        for item in models:
            # round trip through the Mongo document form re-validates every field
            assert model.model_validate(item.to_document()) == item


def test_synthetic_run_shape(run) -> None:
    assert len(run.results) == 240
    assert Counter(r.camera_id for r in run.results) == {f"cam_0{i}": 60 for i in range(1, 5)}
    assert len({r.id for r in run.results}) == 240
    assert len(run.dead_letters) == 4
    assert sum(p.results for p in run.progress) == 240
    assert sum(p.dead_letters for p in run.progress) == 4
    assert [p.batch_id for p in run.progress] == list(range(4))


def test_windows_sum_to_frames(run) -> None:
    assert sum(w.frames for w in run.windows) == len(run.results)
    total = Counts()
    for window in run.windows:
        total = total + window.counts
    frames_total = Counts()
    for result in run.results:
        frames_total = frames_total + result.counts
    assert total == frames_total


def test_build_run_is_deterministic() -> None:
    first = build_run(frames=40, cameras=2)
    second = build_run(frames=40, cameras=2)
    assert [r.to_json() for r in first.results] == [r.to_json() for r in second.results]


@pytest.mark.parametrize(("density", "status"), [(0.0, "Free"), (14.9, "Free"), (15.0, "Normal"), (35.0, "Congested")])
def test_status_thresholds(density: float, status: str) -> None:
    assert status_for(density) == status


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


def test_rows_from_contract_documents(run) -> None:
    frame = queries.frame_row(run.results[0].to_document())
    assert frame.record_key == run.results[0].record_key and frame.total == run.results[0].counts.total
    assert frame.detections is None
    assert queries.frame_row(run.results[0].to_document(), include_detections=True).detections
    window = queries.window_row(run.windows[0].to_document())
    assert window.vehicles_per_frame == round(run.windows[0].counts.total / run.windows[0].frames, 3)
    batch = queries.batch_row(run.progress[0].to_document())
    assert batch.duration_ms > 0 and batch.latency_p95_ms is not None
    letter = queries.dead_letter_row(run.dead_letters[0].to_document())
    assert letter.topic == "traffic-metadata" and letter.id == run.dead_letters[0].id


def test_health_from_computes_throughput_and_latency(run) -> None:
    first, last = run.progress[0].to_document(), run.progress[-1].to_document()
    sums = {"batches": 4, "rows": 244, "results": 240, "dead_letters": 4}
    health = queries.health_from(sums, first, last, last, 4)
    seconds = (last["finished_at"] - first["started_at"]).total_seconds()
    assert health.throughput_rows_per_s == round(240 / seconds, 3)
    assert health.last_batch_id == 3 and health.dead_letters_stored == 4
    assert health.worst_latency_p95_ms == last["latency"]["p95_ms"]


def test_health_from_empty_range() -> None:
    health = queries.health_from({}, None, None, None, 0)
    assert health.batches == 0 and health.throughput_rows_per_s == 0.0 and health.last_finished_at is None


def test_windows_of_uses_tumbling_minutes(run) -> None:
    windows = list(windows_of(run.results[:8], window_seconds=60))
    assert all(w.window_start.second == 0 and w.window_end - w.window_start == timedelta(minutes=1) for w in windows)


class CountingLoader:
    """Stands in for the window read so the cache's sharing rules can be checked on their own."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.calls = 0
        self.delay_s = delay_s
        self.lock = threading.Lock()

    def __call__(self, db, cameras, span):
        with self.lock:
            self.calls += 1
        time.sleep(self.delay_s)
        return [{"camera_id": c} for c in cameras]


def test_window_cache_shares_reads_within_ttl() -> None:
    now = [0.0]
    loader = CountingLoader()
    cache = queries.WindowCache(5.0, clock=lambda: now[0], loader=loader)
    span = TimeRange(T0, T0 + timedelta(hours=1))
    first = cache.get(None, ["b", "a"], span)  # type: ignore[arg-type]
    assert cache.get(None, ["a", "b"], span) is first and loader.calls == 1  # type: ignore[arg-type]
    cache.get(None, ["a"], span)  # type: ignore[arg-type]
    assert loader.calls == 2
    now[0] = 6.0
    cache.get(None, ["a", "b"], span)  # type: ignore[arg-type]
    assert loader.calls == 3


def test_window_cache_concurrent_callers_wait_for_one_read() -> None:
    loader = CountingLoader(delay_s=0.2)
    cache = queries.WindowCache(5.0, loader=loader)
    span = TimeRange(T0, T0 + timedelta(hours=1))
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda _: cache.get(None, ["a"], span), range(6)))  # type: ignore[arg-type]
    assert loader.calls == 1 and all(answer is answers[0] for answer in answers)


def test_window_cache_off_and_bounded() -> None:
    loader = CountingLoader()
    off = queries.WindowCache(0.0, loader=loader)
    span = TimeRange(T0, T0 + timedelta(hours=1))
    off.get(None, ["a"], span)  # type: ignore[arg-type]
    off.get(None, ["a"], span)  # type: ignore[arg-type]
    assert loader.calls == 2
    small = queries.WindowCache(5.0, max_entries=2, loader=loader)
    for camera in ("a", "b", "c", "a"):
        small.get(None, [camera], span)  # type: ignore[arg-type]
    assert loader.calls == 2 + 4  # "a" was evicted by "c", so it is read again


def test_window_cache_retries_after_a_failed_read() -> None:
    calls = []

    def failing_once(db, cameras, span):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("mongo hiccup")
        return []

    cache = queries.WindowCache(5.0, loader=failing_once)
    span = TimeRange(T0, T0 + timedelta(hours=1))
    with pytest.raises(RuntimeError):
        cache.get(None, ["a"], span)  # type: ignore[arg-type]
    assert cache.get(None, ["a"], span) == [] and len(calls) == 2  # type: ignore[arg-type]


def test_pure_class_mix_of_window_documents(run) -> None:
    docs = [w.to_document() for w in run.windows]
    shares = {row.class_name: row.count for row in queries.class_mix_of(docs)}
    assert shares["car"] == sum(r.counts.car for r in run.results)
    per_camera = queries.class_mix_by_camera_of(docs)
    assert [row.camera_id for row in per_camera] == ["cam_01", "cam_02", "cam_03", "cam_04"]
    assert sum(row.frames for row in per_camera) == len(run.results)
