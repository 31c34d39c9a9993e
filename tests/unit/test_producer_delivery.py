"""The in-flight window: every future settled in order; resume point = end of the acknowledged prefix.

Uses kafka-python's own Future type, completed by the test (the outcome a broker would give).
"""

from __future__ import annotations

import threading

import pytest
from kafka.errors import KafkaTimeoutError
from kafka.future import Future

from ipsp.producer.delivery import DeliveryWindow, Unacknowledged


class RecordFuture(Future):
    """kafka's Future plus ``get`` (what FutureRecordMetadata adds)."""

    def get(self, timeout=None):
        done = threading.Event()
        if not self.is_done:
            self.add_both(lambda _: done.set())
            if not done.wait(timeout):
                raise KafkaTimeoutError(f"not done after {timeout} s")
        if self.exception is not None:
            raise self.exception
        return self.value


def test_all_acknowledged():
    window = DeliveryWindow(limit=10)
    futures = [RecordFuture() for _ in range(5)]
    for flat, future in enumerate(futures, start=100):
        window.add(flat, future)
    for future in futures:
        future.success("ok")
    assert window.poll() == 5
    assert (window.acked, window.failed, window.prefix_end, len(window)) == (5, 0, 104, 0)


def test_poll_stops_at_the_oldest_unfinished_send():
    window = DeliveryWindow(limit=10)
    futures = [RecordFuture() for _ in range(3)]
    for flat, future in enumerate(futures):
        window.add(flat, future)
    futures[1].success("ok")
    futures[2].success("ok")
    assert window.poll() == 0  # settle in order: the oldest is still open
    futures[0].success("ok")
    assert window.poll() == 3 and window.prefix_end == 2


def test_failure_fixes_the_resume_point_and_counts_later_acks_apart():
    window = DeliveryWindow(limit=10)
    futures = [RecordFuture() for _ in range(6)]
    for flat, future in enumerate(futures):
        window.add(flat, future)
    outcomes = ["ok", "ok", KafkaTimeoutError("expired"), "ok", KafkaTimeoutError("expired"), "ok"]
    for future, outcome in zip(futures, outcomes, strict=True):
        if isinstance(outcome, Exception):
            future.failure(outcome)
        else:
            future.success(outcome)
    window.drain()
    assert window.acked == 4  # only acknowledged records count as sent
    assert window.failed == 2
    assert window.prefix_end == 1  # resume after flat 1: flats 2.. are sent again
    assert window.acked_after_failure == 2  # flats 3 and 5 will repeat on resume
    assert window.first_failed == 2 and isinstance(window.first_error, KafkaTimeoutError)


class Clock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_full_window_and_wait_oldest():
    window = DeliveryWindow(limit=2, timeout_s=30)
    first, second = RecordFuture(), RecordFuture()
    window.add(0, first)
    window.add(1, second)
    assert window.full
    threading.Timer(0.05, first.success, args=("ok",)).start()
    window.wait_oldest()
    assert not window.full and window.acked == 1 and window.prefix_end == 0


def test_a_send_undecided_at_its_deadline_counts_as_failed_not_sent():
    clock = Clock()
    window = DeliveryWindow(limit=10, timeout_s=5, clock=clock)
    stuck, later = RecordFuture(), RecordFuture()
    window.add(0, stuck)
    clock.now += 1
    window.add(1, later)
    clock.now += 3.9
    assert window.poll() == 0  # 4.9 s: still within the deadline
    clock.now += 0.2
    assert window.poll() == 1  # the oldest is overdue; the next one is not yet
    assert (window.acked, window.failed, window.prefix_end, window.first_failed) == (0, 1, None, 0)
    assert isinstance(window.first_error, Unacknowledged)
    assert window.time_left() == pytest.approx(0.9)


def test_wait_oldest_returns_at_the_deadline():
    window = DeliveryWindow(limit=1, timeout_s=0.05)
    window.add(0, RecordFuture())
    window.wait_oldest()
    assert (window.acked, window.failed, window.prefix_end, len(window)) == (0, 1, None, 0)


def test_drain_is_bounded_by_the_newest_deadline():
    clock = Clock()

    class NeverDecided(RecordFuture):
        """A send the client holds forever; waiting on it only passes (simulated) time."""

        def get(self, timeout=None):
            clock.now += timeout
            raise KafkaTimeoutError("still waiting")

    window = DeliveryWindow(limit=100, timeout_s=10, clock=clock)
    for flat in range(50):
        window.add(flat, NeverDecided())
        clock.now += 0.01
    started = clock.now
    window.drain()
    assert clock.now - started == pytest.approx(10 - 0.01)  # up to the newest deadline, not 50 x 10 s
    assert window.failed == 50 and window.acked == 0


def test_unsent_failure():
    window = DeliveryWindow(limit=4)
    window.fail_unsent(7, KafkaTimeoutError("no metadata"))
    assert window.failed == 1 and window.first_failed == 7 and window.prefix_end is None


def test_window_needs_room():
    with pytest.raises(ValueError):
        DeliveryWindow(limit=0)
