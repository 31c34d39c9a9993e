"""Window state of the stream query: folding, duplicates, moves, watermark, late frames, versions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ipsp.config import Settings
from ipsp.contracts import Counts
from ipsp.streaming.process import FrameFigures, to_ms
from ipsp.streaming.state import Frame, StateStore, WindowState

T0 = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 28, 7, 30, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def frame(key: str, camera: str, seconds: float, cars: int = 1, density: float = 10.0) -> Frame:
    return Frame(key, camera, at(seconds), FrameFigures(Counts.of({"car": cars}), density))


def status(camera_id: str, density: float, vehicles: int) -> str:
    return "Normal" if density >= 15 else "Free"


def win(camera: str, seconds: float) -> tuple[str, int]:
    return camera, to_ms(at(seconds))


def fresh() -> WindowState:
    return WindowState(window_seconds=60, delay_ms=120_000)


def test_frames_fold_into_their_windows() -> None:
    state = fresh()
    changes = state.apply([frame("a", "cam_01", 5, cars=2), frame("b", "cam_01", 30, cars=3), frame("c", "cam_01", 65)])
    assert changes.touched == {win("cam_01", 0), win("cam_01", 60)}
    docs, empty = state.documents(changes.touched, status, NOW)
    assert empty == []
    first = next(d for d in docs if d.window_start == at(0))
    assert (first.frames, first.counts.car, first.counts.total) == (2, 5, 5)
    assert first.id == "cam_01|2026-01-01T08:00:00Z"


def test_a_frame_seen_twice_replaces_its_own_contribution() -> None:
    state = fresh()
    state.apply([frame("a", "cam_01", 5, cars=2)])
    state.apply([frame("a", "cam_01", 5, cars=2), frame("b", "cam_01", 6, cars=1)])
    docs, _ = state.documents({win("cam_01", 0)}, status, NOW)
    assert (docs[0].frames, docs[0].counts.car) == (2, 3)


def test_a_retimed_frame_leaves_its_old_window() -> None:
    state = fresh()
    state.apply([frame("a", "cam_01", 5), frame("b", "cam_01", 6)])
    changes = state.apply([frame("a", "cam_01", 70)])
    assert changes.touched == {win("cam_01", 0), win("cam_01", 60)}
    docs, empty = state.documents(changes.touched, status, NOW)
    assert {d.window_start: d.frames for d in docs} == {at(0): 1, at(60): 1}
    # and a window whose only frame left is deleted, not kept stale
    changes = state.apply([frame("b", "cam_01", 75)])
    docs, empty = state.documents(changes.touched, status, NOW)
    assert empty == ["cam_01|2026-01-01T08:00:00Z"]


def test_a_frame_moved_out_of_a_window_outside_the_state_is_reported() -> None:
    state = fresh()
    changes = state.apply([frame("a", "cam_01", 400)], moved_from=[("a", "cam_01", at(10))])
    assert changes.outside == {win("cam_01", 0)}


def test_watermark_closes_windows_and_late_frames_are_not_folded() -> None:
    state = fresh()
    state.apply([frame("a", "cam_01", 5), frame("x", "cam_02", 5)])
    state.apply([frame("b", "cam_01", 200)])  # cam_01 watermark: 200 - 120 = 80 s
    assert state.close_windows() == 1  # cam_01's 08:00 window; cam_02 has its own clock
    assert win("cam_02", 0) in state.windows
    changes = state.apply([frame("late", "cam_01", 10), frame("c", "cam_01", 150)])
    assert changes.late == 1
    assert changes.touched == {win("cam_01", 120)}
    assert win("cam_01", 0) not in state.windows


def test_new_windows_are_the_open_ones_not_in_the_state() -> None:
    state = fresh()
    state.apply([frame("a", "cam_01", 5), frame("b", "cam_01", 300)])
    state.close_windows()
    new = state.new_windows([frame("c", "cam_01", 10), frame("d", "cam_01", 250), frame("e", "cam_01", 310)])
    assert new == {win("cam_01", 240)}


def test_seeded_records_are_replaced_not_added() -> None:
    state = fresh()
    stored = {"a": FrameFigures(Counts.of({"car": 2}), 10.0), "z": FrameFigures(Counts.of({"bus": 1}), 30.0)}
    state.seed(win("cam_01", 0), stored)
    changes = state.apply([frame("a", "cam_01", 5, cars=2)])
    docs, _ = state.documents(changes.touched, status, NOW)
    assert (docs[0].frames, docs[0].counts.car, docs[0].counts.bus) == (2, 2, 1)
    assert docs[0].density_mean == pytest.approx(20.0)
    assert docs[0].traffic_status == "Normal"


def test_json_round_trip() -> None:
    state = fresh()
    state.apply([frame("a", "cam_01", 5, cars=2, density=12.5), frame("b", "cam_02", 65)])
    again = WindowState.from_json(state.to_json(3), 60, 120_000)
    assert again.windows == state.windows
    assert again.max_event_ms == state.max_event_ms
    # another window length: the windows restart, the watermark stays
    other = WindowState.from_json(state.to_json(3), 300, 120_000)
    assert other.windows == {}
    assert other.max_event_ms == state.max_event_ms


def test_a_replayed_batch_starts_from_the_state_before_it(tmp_path: Path) -> None:
    store = StateStore((tmp_path / "cp").as_uri(), 60, 120, Settings(home=tmp_path))  # type: ignore[call-arg]
    assert store.before(0).windows == {}
    for batch in range(5):
        state = store.before(batch)
        state.apply([frame(f"f{batch}", "cam_01", batch)])
        store.save(batch, state)
    # batch 4 again (a crash before Spark committed it): it sees batches 0..3 only
    again = store.before(4)
    assert sorted(again.windows[win("cam_01", 0)]) == ["f0", "f1", "f2", "f3"]
    state = store.before(5)
    assert sorted(state.windows[win("cam_01", 0)]) == ["f0", "f1", "f2", "f3", "f4"]
    assert store.versions() == [2, 3, 4]  # old versions are pruned
