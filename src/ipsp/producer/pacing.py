"""When each message is due: an absolute schedule, so pacing never drifts.

Message ``k`` of a run is due at ``t0 + offset(k, tick)``; the producer sleeps
until that instant, never "a period after the previous send", so sleep
overshoot and send time do not accumulate. A late message (the broker stalled,
the machine was busy) goes out at once and the schedule catches up.

Modes:
- ``rate``: ``k / rate`` - a fixed number of messages per second overall.
- ``tick``: ``(tick - first_tick) * period`` - per-camera cadence: every
  camera sends one frame per period (``--per-camera-fps F``: period 1/F;
  ``--speedup S`` with ``--frame-interval I``: period I/S).
- ``none``: as fast as possible.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ipsp.errors import UserError

Mode = Literal["rate", "tick", "none"]
#: a sleep is cut into slices this long so a stop request or a full window is seen quickly
SLEEP_SLICE_S = 0.05


@dataclass(frozen=True)
class Pacing:
    """How a run is paced: the mode and its period in seconds (0 for ``none``)."""

    mode: Mode
    period_s: float = 0.0

    def offset(self, k: int, tick: int, first_tick: int) -> float:
        """Seconds after the run's start when message ``k`` (carrying ``tick``) is due."""
        if self.mode == "rate":
            return k * self.period_s
        if self.mode == "tick":
            return (tick - first_tick) * self.period_s
        return 0.0

    def describe(self, cameras: int) -> str:
        """Human summary, e.g. ``200.0 msg/s`` or ``5.0 frames/s per camera (100.0 msg/s)``."""
        if self.mode == "rate":
            return f"{1.0 / self.period_s:g} msg/s"
        if self.mode == "tick":
            fps = 1.0 / self.period_s
            return f"{fps:g} frames/s per camera (~{fps * cameras:g} msg/s)"
        return "as fast as possible"


def resolve_pacing(
    rate: float | None = None,
    per_camera_fps: float | None = None,
    speedup: float | None = None,
    frame_interval_s: float = 1.0,
    as_fast_as_possible: bool = False,
) -> Pacing:
    """Turn the replay flags into one pacing; at most one may be given (default: speedup 1)."""
    chosen = [
        name
        for name, value in (
            ("--rate", rate),
            ("--per-camera-fps", per_camera_fps),
            ("--speedup", speedup),
            ("--as-fast-as-possible", as_fast_as_possible or None),
        )
        if value is not None
    ]
    if len(chosen) > 1:
        raise UserError(f"choose one of {', '.join(chosen)} (they all set the replay speed)")
    if frame_interval_s <= 0:
        raise UserError("--frame-interval must be > 0 seconds")
    for name, value in (("--rate", rate), ("--per-camera-fps", per_camera_fps), ("--speedup", speedup)):
        if value is not None and value <= 0:
            raise UserError(f"{name} must be > 0")
    if as_fast_as_possible:
        return Pacing("none")
    if rate is not None:
        return Pacing("rate", 1.0 / rate)
    if per_camera_fps is not None:
        return Pacing("tick", 1.0 / per_camera_fps)
    return Pacing("tick", frame_interval_s / (speedup or 1.0))


class Pacer:
    """Sleeps until each message's due instant (clock and sleep injectable for tests)."""

    def __init__(
        self,
        pacing: Pacing,
        first_tick: int = 0,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.pacing = pacing
        self.first_tick = first_tick
        self.clock = clock
        self.sleep = sleep
        self.t0: float | None = None

    def start(self) -> float:
        """Fix the schedule's origin (the first message is due now)."""
        self.t0 = self.clock()
        return self.t0

    def due(self, k: int, tick: int) -> float:
        """Absolute clock reading when message ``k`` is due."""
        if self.t0 is None:
            self.start()
        assert self.t0 is not None
        return self.t0 + self.pacing.offset(k, tick, self.first_tick)

    def wait(self, k: int, tick: int, idle: Callable[[], bool] | None = None) -> bool:
        """Sleep until message ``k`` is due; ``idle()`` runs between slices and returning True stops.

        Returns False when ``idle`` asked to stop before the message was due.
        """
        if self.pacing.mode == "none":
            return True
        target = self.due(k, tick)
        while True:
            left = target - self.clock()
            if left <= 0:
                return True
            if idle is not None and left > SLEEP_SLICE_S and idle():
                return False
            self.sleep(min(left, SLEEP_SLICE_S))
