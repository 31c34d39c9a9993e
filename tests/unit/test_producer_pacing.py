"""Pacing: flag resolution and the absolute schedule (with a simulated clock, no real sleeping)."""

from __future__ import annotations

import pytest

from ipsp.errors import UserError
from ipsp.producer.pacing import Pacer, Pacing, resolve_pacing


class SimClock:
    """A clock that only moves when slept on (plus a fixed cost per send, to model work)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds * 1.01 + 0.0001  # sleeps overshoot, like real ones


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"rate": 200.0}, Pacing("rate", 1 / 200)),
        ({"per_camera_fps": 5.0}, Pacing("tick", 0.2)),
        ({"speedup": 4.0, "frame_interval_s": 2.0}, Pacing("tick", 0.5)),
        ({"as_fast_as_possible": True}, Pacing("none")),
        ({}, Pacing("tick", 1.0)),
        ({"frame_interval_s": 0.5}, Pacing("tick", 0.5)),
    ],
)
def test_resolve_pacing(kwargs, expected):
    assert resolve_pacing(**kwargs) == expected


def test_pacing_flags_are_exclusive():
    with pytest.raises(UserError, match="choose one of --rate, --speedup"):
        resolve_pacing(rate=10, speedup=2)


@pytest.mark.parametrize("kwargs", [{"rate": 0}, {"per_camera_fps": -1}, {"speedup": 0}, {"frame_interval_s": 0}])
def test_pacing_values_must_be_positive(kwargs):
    with pytest.raises(UserError, match="must be > 0"):
        resolve_pacing(**kwargs)


def test_rate_schedule_is_absolute_so_overshoot_does_not_accumulate():
    clock = SimClock()
    pacer = Pacer(Pacing("rate", 0.01), clock=clock, sleep=clock.sleep)
    t0 = pacer.start()
    sent_at = []
    for k in range(1000):
        pacer.wait(k, tick=0)
        sent_at.append(clock.now)
        clock.now += 0.002  # time spent sending
    # message k never goes before its slot and is never more than one overshoot late
    for k, t in enumerate(sent_at):
        assert t >= t0 + k * 0.01 - 1e-9
        assert t - (t0 + k * 0.01) < 0.002
    achieved = (len(sent_at) - 1) / (sent_at[-1] - sent_at[0])
    assert abs(achieved - 100.0) / 100.0 < 0.001


def test_late_messages_go_at_once_and_the_schedule_catches_up():
    clock = SimClock()
    pacer = Pacer(Pacing("rate", 0.01), clock=clock, sleep=clock.sleep)
    pacer.start()
    pacer.wait(0, 0)
    clock.now += 0.5  # a stall worth 50 messages
    sleeps_before = len(clock.sleeps)
    for k in range(1, 50):
        pacer.wait(k, 0)
    assert len(clock.sleeps) == sleeps_before  # behind schedule: no sleeping
    assert pacer.due(60, 0) == pytest.approx(pacer.t0 + 0.6)


def test_tick_schedule_sends_a_whole_tick_together():
    clock = SimClock()
    pacer = Pacer(Pacing("tick", 0.5), first_tick=10, clock=clock, sleep=clock.sleep)
    t0 = pacer.start()
    assert pacer.due(0, 10) == t0
    assert pacer.due(1, 10) == t0  # other cameras of the same tick: no wait
    assert pacer.due(5, 12) == pytest.approx(t0 + 1.0)


def test_none_mode_never_sleeps():
    clock = SimClock()
    pacer = Pacer(Pacing("none"), clock=clock, sleep=clock.sleep)
    pacer.start()
    assert all(pacer.wait(k, k) for k in range(100))
    assert clock.sleeps == []


def test_wait_checks_idle_between_slices_and_can_stop():
    clock = SimClock()
    pacer = Pacer(Pacing("rate", 1.0), clock=clock, sleep=clock.sleep)
    pacer.start()
    calls = []

    def idle() -> bool:
        calls.append(clock.now)
        return len(calls) >= 3

    assert pacer.wait(0, 0, idle) is True  # due at once
    assert pacer.wait(1, 0, idle) is False  # stopped while waiting a second
    assert len(calls) == 3
    assert max(clock.sleeps) <= 0.05


def test_describe():
    assert Pacing("rate", 0.005).describe(3) == "200 msg/s"
    assert Pacing("tick", 0.2).describe(4) == "5 frames/s per camera (~20 msg/s)"
    assert Pacing("none").describe(4) == "as fast as possible"
