"""Windows of the stream query: per-event contributions, duplicates, watermark, idle timeout, late frames."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ipsp.config import Settings
from ipsp.contracts import TrafficWindow, event_id
from ipsp.streaming.state import BatchWindows, StateStore, StreamState, fold_batch, latest_per_event
from ipsp.streaming.task.outcome import FrameOutcome
from ipsp.streaming.windows import to_ms

T0 = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 28, 7, 30, tzinfo=UTC)
WINDOW_S, DELAY_S, IDLE_S = 60, 120, 300.0


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def frame(camera: str, seconds: float, cars: int = 1, density: float = 10.0, offset: int = 0) -> FrameOutcome:
    return FrameOutcome(
        "result", camera_id=camera, event_id=event_id(camera, at(seconds)), event_ms=to_ms(at(seconds)), car=cars,
        density=density, partition=0, offset=offset,
    )  # fmt: skip


def status(camera_id: str, density: float, vehicles: int) -> str:
    return "Normal" if density >= 15 else "Free"


class Store:
    """The window documents as the sink would keep them (written back after each batch)."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.state = StreamState()

    def batch(self, frames: list[FrameOutcome], now: datetime = NOW) -> BatchWindows:
        out = fold_batch(self.state, self.docs, frames, WINDOW_S, DELAY_S, IDLE_S, now, status)
        for doc in out.documents:
            self.docs[doc.id] = doc.to_document()
        for closed in out.close_ids:
            self.docs[closed]["closed"] = True
        return out

    def window(self, camera: str, seconds: float) -> TrafficWindow:
        doc = self.docs[f"{camera}|{at(seconds):%Y-%m-%dT%H:%M:%SZ}"]
        return TrafficWindow.model_validate(doc)


def test_frames_fold_into_their_windows_with_their_contributions() -> None:
    store = Store()
    store.batch([frame("cam_01", 5, cars=2), frame("cam_01", 30, cars=3), frame("cam_01", 65)])
    first = store.window("cam_01", 0)
    assert (first.frames, first.counts.car, first.counts.total) == (2, 5, 5)
    assert first.events == {"5000": [0, 2, 0, 0, 0, 0, 10.0], "30000": [0, 3, 0, 0, 0, 0, 10.0]}
    assert store.window("cam_01", 60).frames == 1


def test_an_event_folded_again_replaces_its_own_contribution() -> None:
    store = Store()
    store.batch([frame("cam_01", 5, cars=2)])
    before = store.window("cam_01", 0)
    store.batch([frame("cam_01", 5, cars=2), frame("cam_01", 6, cars=1)])
    assert (store.window("cam_01", 0).frames, store.window("cam_01", 0).counts.car) == (2, 3)
    # the same batch a third time (a replay into the same database) changes nothing
    again = Store()
    again.docs = dict(store.docs)
    again.batch([frame("cam_01", 5, cars=2), frame("cam_01", 6, cars=1)])
    assert again.window("cam_01", 0).counts == store.window("cam_01", 0).counts
    assert before.frames == 1


def test_copies_of_one_event_resolve_to_the_latest_kafka_record() -> None:
    copies = [frame("cam_01", 5, cars=1, offset=9), frame("cam_01", 5, cars=7, offset=12), frame("cam_01", 5, offset=3)]
    (kept,) = latest_per_event(copies)
    assert kept.offset == 12
    other_partition = replace(kept, partition=1, offset=0)
    assert latest_per_event([kept, other_partition]) == [other_partition]


def test_watermark_closes_windows_per_camera_and_late_events_are_counted_apart() -> None:
    store = Store()
    store.batch([frame("cam_01", 5), frame("cam_02", 5)])
    out = store.batch([frame("cam_01", 200)])  # cam_01 watermark: 200 - 120 = 80 s
    assert out.closed == 1 and out.close_ids == ["cam_01|2026-01-01T08:00:00Z"]
    assert store.docs["cam_01|2026-01-01T08:00:00Z"]["closed"] is True
    assert store.window("cam_02", 0).closed is False  # cam_02 has its own clock

    out = store.batch([frame("cam_01", 10, cars=5), frame("cam_01", 5), frame("cam_01", 150)])
    assert out.late == 1  # the 10 s event is new in a closed window; the 5 s one is already counted
    closed = store.window("cam_01", 0)
    assert (closed.frames, closed.counts.car, closed.late_frames, closed.late_events) == (1, 1, 1, [10_000])
    # the late event replayed is still one late frame
    store.batch([frame("cam_01", 10, cars=5)])
    assert store.window("cam_01", 0).late_frames == 1


def test_a_first_event_behind_the_watermark_opens_and_closes_its_window() -> None:
    store = Store()
    store.batch([frame("cam_01", 500)])
    out = store.batch([frame("cam_01", 5)])
    assert out.late == 0
    window = store.window("cam_01", 0)
    assert (window.frames, window.closed) == (1, True)


def test_idle_timeout_closes_a_silent_cameras_windows() -> None:
    store = Store()
    store.batch([frame("cam_01", 5), frame("cam_02", 5)], now=NOW)
    out = store.batch([frame("cam_02", 20)], now=NOW + timedelta(seconds=IDLE_S - 1))
    assert out.closed == 0
    out = store.batch([frame("cam_02", 30)], now=NOW + timedelta(seconds=IDLE_S + 1))
    assert out.close_ids == ["cam_01|2026-01-01T08:00:00Z"]
    assert store.state.open == {("cam_02", to_ms(at(0)))}
    # between batches too: nothing but time passes
    closing = store.state.to_close(store.state.open, WINDOW_S, DELAY_S, IDLE_S, to_ms(NOW + timedelta(seconds=700)))
    assert closing == {("cam_02", to_ms(at(0)))}


def test_documents_validate_and_add_up() -> None:
    store = Store()
    store.batch([frame("cam_01", s, cars=s % 3, density=float(s)) for s in range(0, 60, 5)])
    window = store.window("cam_01", 0)
    assert window.frames == 12 == len(window.events)
    assert window.counts.car == sum(s % 3 for s in range(0, 60, 5))
    assert window.density_max == 55.0
    assert window.density_mean == pytest.approx(sum(range(0, 60, 5)) / 12)
    assert window.traffic_status == "Normal"


def test_state_json_round_trip() -> None:
    state = StreamState({"cam_01": 5}, {"cam_01": 7}, {("cam_01", 0), ("cam_02", 60_000)})
    again = StreamState.from_json(state.to_json(3))
    assert again == state
    # a state of the older layout keeps its watermark only
    assert StreamState.from_json(b'{"max_event_ms": {"c": 1}, "windows": []}') == StreamState({"c": 1})


def test_a_replayed_batch_starts_from_the_state_before_it(tmp_path: Path) -> None:
    store = StateStore((tmp_path / "cp").as_uri(), Settings(home=tmp_path))  # type: ignore[call-arg]
    assert store.before(0) == StreamState()
    for batch in range(5):
        state = store.before(batch)
        state.advance([frame("cam_01", batch)], batch)
        store.save(batch, state)
    # batch 4 again (a crash before Spark committed it): it sees batches 0..3 only
    assert store.before(4).max_event_ms == {"cam_01": to_ms(at(3))}
    assert store.before(5).max_event_ms == {"cam_01": to_ms(at(4))}
    assert store.versions() == [2, 3, 4]  # old versions are pruned
    assert store.latest() == (4, store.before(5))


def test_run_epoch_survives_restarts_not_a_reset(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)  # type: ignore[call-arg]
    first = StateStore((tmp_path / "cp").as_uri(), settings).epoch()
    assert StateStore((tmp_path / "cp").as_uri(), settings).epoch() == first
    assert StateStore((tmp_path / "cp2").as_uri(), settings).epoch() != first
