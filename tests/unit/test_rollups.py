"""Serving documents: ids of a time range, and windows folded into hours, days, cameras, pipeline hours."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ipsp import rollups
from ipsp.contracts import Counts, TrafficWindow, window_id

T0 = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
NOW = datetime(2026, 1, 2, tzinfo=UTC)


def window(
    camera: str,
    start: datetime,
    frames: int = 60,
    cars: int = 120,
    mean: float = 10.0,
    peak: float = 20.0,
    status: str = "Normal",
) -> dict:
    """A window document as the stream job writes it (through the contract model)."""
    return TrafficWindow(
        id=window_id(camera, start),
        camera_id=camera,
        window_start=start,
        window_end=start + timedelta(minutes=1),
        frames=frames,
        counts=Counts.of({"car": cars}),
        density_mean=mean,
        density_max=peak,
        traffic_status=status,
        updated_at=NOW,  # type: ignore[arg-type]
    ).to_document()


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (T0, T0 + timedelta(hours=1), ["cam-a|2026-01-01T08", "cam-b|2026-01-01T08"]),
        (
            T0 + timedelta(minutes=59),
            T0 + timedelta(hours=1, seconds=1),
            ["cam-a|2026-01-01T08", "cam-a|2026-01-01T09", "cam-b|2026-01-01T08", "cam-b|2026-01-01T09"],
        ),
        (T0, T0, []),
    ],
)
def test_camera_hour_ids_cover_the_range(start: datetime, end: datetime, expected: list[str]) -> None:
    assert rollups.camera_hour_ids(["cam-b", "cam-a"], start, end) == expected


def test_six_hours_of_twenty_cameras_is_at_most_140_documents() -> None:
    ids = rollups.camera_hour_ids(
        [f"cam-{i:02d}" for i in range(20)], T0 + timedelta(minutes=17), T0 + timedelta(hours=6, minutes=17)
    )
    assert len(ids) == 140


def test_day_and_pipeline_ids() -> None:
    assert rollups.camera_day_ids(["c"], T0, T0 + timedelta(days=1)) == ["c|2026-01-01", "c|2026-01-02"]
    assert rollups.pipeline_hour_ids(T0, T0 + timedelta(minutes=90)) == ["2026-01-01T08", "2026-01-01T09"]


def _fold_all(existing: dict, windows: list[dict]) -> tuple[dict, dict, dict]:
    hours = rollups.fold_hours(existing.get("hours", {}), windows, 60, NOW)
    days = rollups.fold_days(existing.get("days", {}), hours.values(), NOW)
    cameras = rollups.fold_cameras(existing.get("cameras", {}), days.values(), hours.values(), NOW)
    return hours, days, cameras


def test_folding_the_same_windows_twice_changes_nothing() -> None:
    batch = [window("cam-a", T0 + timedelta(minutes=m)) for m in range(3)]
    hours, days, cameras = _fold_all({}, batch)
    again = _fold_all({"hours": hours, "days": days, "cameras": cameras}, batch)
    assert again == (hours, days, cameras)
    hour = hours["cam-a|2026-01-01T08"]
    assert sorted(hour["windows"]) == ["00:00", "01:00", "02:00"]
    rollups.CameraHour.model_validate(hour)
    rollups.CameraDay.model_validate(days["cam-a|2026-01-01"])
    rollups.CameraServing.model_validate(cameras["cam-a"])
    assert cameras["cam-a"]["days"] == {"2026-01-01": {"frames": 180, "windows": 3}}
    assert cameras["cam-a"]["latest"]["window_start"] == T0 + timedelta(minutes=2)


def test_a_corrected_window_replaces_its_entry_and_the_day_follows() -> None:
    hours, days, cameras = _fold_all({}, [window("cam-a", T0), window("cam-a", T0 + timedelta(minutes=1))])
    fixed = window("cam-a", T0, frames=30, cars=30, mean=40.0, peak=50.0, status="Congested")
    hours2, days2, _ = _fold_all({"hours": hours, "days": days, "cameras": cameras}, [fixed])
    entry = hours2["cam-a|2026-01-01T08"]["windows"]["00:00"]
    assert (entry["frames"], entry["counts"]["car"], entry["traffic_status"]) == (30, 30, "Congested")
    hour = days2["cam-a|2026-01-01"]["hours"]["08"]
    assert (hour["frames"], hour["windows"], hour["counts"]["total"], hour["density_max"]) == (90, 2, 150, 50.0)
    assert hour["density_mean"] == pytest.approx((40.0 * 30 + 10.0 * 60) / 90, abs=1e-4)


def test_latest_window_only_moves_forward() -> None:
    hours, days, cameras = _fold_all({}, [window("cam-a", T0 + timedelta(hours=2))])
    _, _, cameras2 = _fold_all({"hours": hours, "days": days, "cameras": cameras}, [window("cam-a", T0)])
    assert cameras2["cam-a"]["latest"]["window_start"] == T0 + timedelta(hours=2)
    assert cameras2["cam-a"]["days"]["2026-01-01"] == {"frames": 120, "windows": 2}


def test_windows_of_hours_keeps_the_range_and_orders_by_time_then_camera() -> None:
    hours, _, _ = _fold_all({}, [window(c, T0 + timedelta(minutes=m)) for c in ("b", "a") for m in range(5)])
    rows = rollups.windows_of_hours(hours.values(), T0 + timedelta(minutes=1), T0 + timedelta(minutes=3))
    assert [(r["window_start"].minute, r["camera_id"]) for r in rows] == [(1, "a"), (1, "b"), (2, "a"), (2, "b")]
    assert rows[0]["window_end"] == T0 + timedelta(minutes=2)


def _progress(batch_id: int, finished: datetime) -> dict:
    return {
        "_id": f"q:{batch_id}",
        "query": "q",
        "batch_id": batch_id,
        "rows": 10,
        "results": 9,
        "dead_letters": 1,
        "input_rows_per_s": 5.0,
        "processed_rows_per_s": 6.0,
        "latency": {"p50_ms": 1.0, "p95_ms": 2.0, "max_ms": 3.0},
        "started_at": finished - timedelta(seconds=2),
        "finished_at": finished,
    }


def test_a_replayed_batch_that_finishes_an_hour_later_is_counted_once() -> None:
    first = rollups.fold_pipeline(
        {}, [("q:7", rollups.batch_figures(_progress(7, T0 + timedelta(minutes=59)), {"parse": 1}))], NOW
    )
    replay = rollups.batch_figures(_progress(7, T0 + timedelta(minutes=61)), {"parse": 1})
    second = rollups.fold_pipeline(first, [("q:7", replay)], NOW)
    assert second["2026-01-01T08"]["batches"] == {}
    assert list(second["2026-01-01T09"]["batches"]) == ["q:7"]
    rollups.PipelineHour.model_validate(second["2026-01-01T09"])


def test_state_widens_its_hour_extent() -> None:
    state = rollups.state_document(None, _progress(1, T0), [T0], NOW)
    later = rollups.state_document(state, _progress(2, T0), [T0 + timedelta(hours=3)], NOW)
    assert (later["first_hour"], later["last_hour"], later["last_batch"]) == (T0, T0 + timedelta(hours=3), "q:2")
    rollups.ServingState.model_validate(later)


def test_majority_status_breaks_ties_towards_congestion() -> None:
    assert rollups.majority_status(["Free", "Congested"]) == "Congested"
    assert rollups.majority_status(["Free", "Free", "Normal"]) == "Free"
