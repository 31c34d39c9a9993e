"""The bounded window of unacknowledged sends; every future is checked, in send order.

Futures are settled oldest first. A record counts as sent only once its future
succeeded (the broker acknowledged it with acks=all). The *acknowledged prefix*
is the longest run of plan positions, from the run's start, that all succeeded:
its last record is the resume point, so a resumed run leaves no gap. Records
acknowledged after the first failure are counted as sent too and reported
(``acked_after_failure``): a resume re-sends them, the only duplicates possible.

Each send also gets a deadline of its own (send time + ``timeout_s``). The
client is meant to decide every send within its delivery timeout, but while the
broker is unreachable kafka-python's idempotent producer can hold records
indefinitely (it waits for a new producer id before expiring anything), so the
window does not rely on it: a send still undecided at its deadline counts as
failed. Deadlines follow send order, so settling everything never takes longer
than the newest deadline.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Protocol


class SendFuture(Protocol):
    """What the window needs from a kafka-python ``FutureRecordMetadata``."""

    is_done: bool
    exception: BaseException | None

    def get(self, timeout: float | None = None) -> Any:
        """Block until settled; return the record metadata or raise the send's error."""


class Unacknowledged(TimeoutError):
    """A send that got no acknowledgement (nor error) before its deadline."""


@dataclass
class DeliveryWindow:
    """Tracks in-flight sends by plan position (flat index); settles them in order."""

    limit: int
    timeout_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    pending: deque[tuple[int, SendFuture, float]] = field(default_factory=deque)
    acked: int = 0
    failed: int = 0
    prefix_end: int | None = None  # flat index of the last record of the acknowledged prefix
    acked_after_failure: int = 0
    first_error: BaseException | None = None
    first_failed: int | None = None  # flat index of the first failed record

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError("in-flight window must hold at least one send")

    def __len__(self) -> int:
        return len(self.pending)

    @property
    def full(self) -> bool:
        """True when no further send may start before the oldest settles."""
        return len(self.pending) >= self.limit

    def add(self, flat: int, future: SendFuture) -> None:
        """Track a send that kafka-python accepted."""
        self.pending.append((flat, future, self.clock() + self.timeout_s))

    def fail_unsent(self, flat: int, error: BaseException) -> None:
        """Record a send that kafka-python refused before it was in flight."""
        self._settle(flat, error)

    def time_left(self) -> float:
        """Seconds until the newest pending send's deadline (0 when nothing is pending)."""
        return max(0.0, self.pending[-1][2] - self.clock()) if self.pending else 0.0

    def poll(self) -> int:
        """Settle finished or overdue sends at the front of the window, without blocking."""
        settled = 0
        pending = self.pending
        now = None
        while pending:
            flat, future, deadline = pending[0]
            if future.is_done:
                error = future.exception
            else:
                now = self.clock() if now is None else now
                if now < deadline:
                    break
                error = self._overdue()
            pending.popleft()
            self._settle(flat, error)
            settled += 1
        return settled

    def wait_oldest(self) -> None:
        """Block until the oldest send settles or reaches its deadline (its outcome recorded)."""
        if not self.pending:
            return
        flat, future, deadline = self.pending[0]
        with suppress(Exception):  # the outcome is read from the future below
            future.get(timeout=max(0.0, deadline - self.clock()))
        self.pending.popleft()
        self._settle(flat, future.exception if future.is_done else self._overdue())

    def drain(self) -> None:
        """Settle every send still in the window (bounded by the newest deadline)."""
        while self.pending:
            self.poll()
            if self.pending:
                self.wait_oldest()

    def _overdue(self) -> BaseException:
        return Unacknowledged(f"no acknowledgement within {self.timeout_s:g} s (broker unreachable?)")

    def _settle(self, flat: int, error: BaseException | None) -> None:
        if error is None:
            self.acked += 1
            if self.first_failed is None:
                self.prefix_end = flat
            else:
                self.acked_after_failure += 1
            return
        self.failed += 1
        if self.first_failed is None:
            self.first_failed = flat
            self.first_error = error
