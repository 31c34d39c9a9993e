"""Replay planning, pure logic: order, camera filter, loops, resume point, event-time clock.

One pass ("loop") over the manifest sends every selected frame once. Within a
camera, frames go in ``frame_index`` order; cameras are interleaved round-robin
by their position inside the camera (every camera's 1st frame, then every 2nd
...), so all cameras advance together.

Every frame of a run has a *flat index* ``loop * frames_per_loop + i`` and a
*tick* ``loop * loop_ticks + position``: the tick drives the event-time clock
and per-camera pacing, so event time advances at the original cadence whatever
the replay speed, and each loop continues the clock where the previous ended.

Resume: a resume point ``<loop>:<record_key>`` names the last frame a run had
acknowledged (with everything before it in the plan); ``--start-after`` that
point sends exactly the frames after it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from ipsp.errors import UserError
from ipsp.producer.manifest import Frame


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """The last frame a run delivered (in plan order): loop number and record key."""

    loop: int
    record_key: str

    def __str__(self) -> str:
        return f"{self.loop}:{self.record_key}"

    @classmethod
    def parse(cls, text: str) -> ResumePoint:
        """Parse ``<loop>:<record_key>`` or a bare ``<record_key>`` (loop 0).

        Record keys never contain ``:`` (contract pattern), so the split is unambiguous.
        """
        head, sep, tail = text.strip().partition(":")
        if not sep:
            loop_text, key = "0", head
        else:
            loop_text, key = head, tail
        if not key or not loop_text.isdigit():
            raise UserError(f"--start-after {text!r}: expected <loop>:<record_key>, e.g. 0:cam_01_00042")
        return cls(int(loop_text), key)


class PlannedSend(NamedTuple):
    """One message of the run: where it sits in the plan and which frame it carries.

    A NamedTuple: one is made per message, and tuples are the cheapest to make.
    """

    flat: int
    loop: int
    tick: int
    frame: int  # index into ReplayPlan.frames


@dataclass(frozen=True)
class ReplayPlan:
    """The frames of one loop in send order, and which part of the loops this run covers."""

    frames: tuple[Frame, ...]
    positions: tuple[int, ...]  # position of each frame inside its camera
    loop_ticks: int  # ticks per loop: frames of the longest selected camera
    loops: int  # passes over the manifest; 0 = until interrupted
    start: int  # first flat index this run sends
    total: int | None  # messages this run sends; None = endless

    @property
    def cameras(self) -> tuple[str, ...]:
        """Selected cameras, sorted."""
        return tuple(sorted({f.camera_id for f in self.frames}))

    def first_tick(self) -> int:
        """Tick of the first frame this run sends (0 for a fresh run)."""
        return self.tick_of(self.start)

    def tick_of(self, flat: int) -> int:
        """Event-clock tick of a flat index."""
        loop, i = divmod(flat, len(self.frames))
        return loop * self.loop_ticks + self.positions[i]

    def resume_point(self, flat: int) -> ResumePoint:
        """The resume point naming a flat index."""
        loop, i = divmod(flat, len(self.frames))
        return ResumePoint(loop, self.frames[i].record_key)

    def sends(self) -> Iterator[PlannedSend]:
        """The messages of this run, in order."""
        per_loop = len(self.frames)
        end = None if self.total is None else self.start + self.total
        flat = self.start
        loop, i = divmod(flat, per_loop)
        positions = self.positions
        ticks = self.loop_ticks
        while end is None or flat < end:
            yield PlannedSend(flat, loop, loop * ticks + positions[i], i)
            flat += 1
            i += 1
            if i == per_loop:
                i = 0
                loop += 1


def order_frames(frames: Iterable[Frame]) -> tuple[list[Frame], list[int]]:
    """Frames in send order (round-robin across cameras by position) and each one's position."""
    by_camera: dict[str, list[Frame]] = {}
    for frame in frames:
        by_camera.setdefault(frame.camera_id, []).append(frame)
    for camera_frames in by_camera.values():
        camera_frames.sort(key=lambda f: (f.frame_index, f.record_key))
    keyed = [
        (position, camera, frame)
        for camera, camera_frames in by_camera.items()
        for position, frame in enumerate(camera_frames)
    ]
    keyed.sort(key=lambda item: (item[0], item[1]))
    return [frame for _, _, frame in keyed], [position for position, _, _ in keyed]


def select_cameras(frames: Sequence[Frame], cameras: Sequence[str] | None) -> list[Frame]:
    """Keep the named cameras' frames; an unknown camera is an error that lists the known ones."""
    if not cameras:
        return list(frames)
    known = sorted({f.camera_id for f in frames})
    unknown = [c for c in cameras if c not in set(known)]
    if unknown:
        raise UserError(f"unknown camera(s) {', '.join(unknown)}; the manifest has {len(known)}: {', '.join(known)}")
    wanted = set(cameras)
    return [f for f in frames if f.camera_id in wanted]


def parse_cameras(text: str | None) -> list[str] | None:
    """``cam_01,cam_02`` -> ['cam_01', 'cam_02'] (blanks dropped); None or empty -> all cameras."""
    if not text:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    return names or None


def start_index(frames: Sequence[Frame], loops: int, after: ResumePoint | None) -> int:
    """First flat index to send: just after the resume point (0 without one)."""
    if after is None:
        return 0
    if loops and after.loop >= loops:
        raise UserError(f"--start-after {after}: loop {after.loop} is past the last loop ({loops - 1})")
    for i, frame in enumerate(frames):
        if frame.record_key == after.record_key:
            return after.loop * len(frames) + i + 1
    raise UserError(f"--start-after {after}: record {after.record_key!r} is not among the frames selected for replay")


def make_plan(
    frames: Sequence[Frame],
    cameras: Sequence[str] | None = None,
    loops: int = 1,
    start_after: ResumePoint | None = None,
    limit: int | None = None,
) -> ReplayPlan:
    """Plan a replay: select, order, place the resume point, apply the limit."""
    if loops < 0:
        raise UserError("--loop must be >= 0 (0 = until interrupted)")
    if limit is not None and limit < 0:
        raise UserError("--limit must be >= 0")
    ordered, positions = order_frames(select_cameras(frames, cameras))
    if not ordered:
        raise UserError("no frames to replay")
    start = start_index(ordered, loops, start_after)
    remaining = None if loops == 0 else max(0, loops * len(ordered) - start)
    if limit is not None:
        remaining = limit if remaining is None else min(remaining, limit)
    return ReplayPlan(
        frames=tuple(ordered),
        positions=tuple(positions),
        loop_ticks=max(positions) + 1,
        loops=loops,
        start=start,
        total=remaining,
    )


@dataclass(frozen=True)
class EventClock:
    """Event time of a tick: ``start + tick * interval``, in epoch milliseconds (contract precision)."""

    start_ms: int
    interval_s: float

    def ms(self, tick: int) -> int:
        """Epoch milliseconds of a tick."""
        return self.start_ms + round(tick * self.interval_s * 1000.0)

    def at(self, tick: int) -> datetime:
        """Event time of a tick as an aware UTC datetime."""
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=self.ms(tick))

    @classmethod
    def anchored(cls, start: datetime | None, interval_s: float, first_tick: int, now: datetime) -> EventClock:
        """The clock of a run: from ``start`` (tick 0) when given, else so the first tick sent is ``now``."""
        if interval_s <= 0:
            raise UserError("--frame-interval must be > 0 seconds")
        if start is None:
            start = now - timedelta(seconds=first_tick * interval_s)
        return cls(to_ms(start), interval_s)


def to_ms(value: datetime) -> int:
    """Epoch milliseconds of an aware datetime."""
    if value.tzinfo is None:
        raise UserError("event start must carry a time zone, e.g. 2026-01-01T08:00:00Z")
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def parse_time(text: str) -> datetime:
    """RFC 3339 with a time zone (``...Z`` or ``+07:00``) -> aware datetime."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UserError(f"{text!r} is not an RFC 3339 time, e.g. 2026-01-01T08:00:00Z") from None
    if value.tzinfo is None:
        raise UserError(f"{text!r} has no time zone; add Z (UTC) or an offset like +07:00")
    return value
