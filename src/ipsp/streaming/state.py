"""Per-camera window state of one stream query, versioned per micro-batch in the checkpoint.

Like Spark's own state store, the state after batch ``N`` is a file
(``<checkpoint>/ipsp/state/<N>.json``) and batch ``N`` always starts from the
state of batch ``N-1``. A batch that runs again after a crash (Spark had not
committed it) therefore starts from exactly the state its first run saw, so it
cannot count a frame twice; and every window is written with its full values.

What the state holds:

- the *open* windows: for each ``(camera_id, window_start)``, every frame's
  figures keyed by ``record_key`` (a frame seen again replaces its own
  contribution, so Kafka duplicates and replays never add up);
- each camera's max event time, whose watermark (minus ``watermark_seconds``)
  closes windows: a closed window is final and leaves the state; a *late*
  frame (its window closed when its batch starts) is stored in
  ``analysis_results`` but not folded into the closed window.

The state makes reading ``analysis_results`` back unnecessary in the normal
path (FerretDB's SQLite backend answers such queries with a full scan). The
store is read only to *seed* a window this query has not seen but that already
has a document (another replay of the same frames wrote it), and to recompute a
window, outside the state, that a re-timed frame left.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ipsp.contracts import Counts, TrafficWindow, window_id
from ipsp.streaming.process import FrameFigures, Watermark, from_ms, summarize_window, to_ms, window_start

STATE_PREFIX = "ipsp/state/"
#: state versions kept besides the newest (a replay needs the one before it)
KEEP_VERSIONS = 2
COUNT_FIELDS = ("motorbike", "car", "bus", "truck", "bicycle", "person")

WindowKey = tuple[str, int]  # (camera_id, window start in epoch ms)


@dataclass(frozen=True)
class Frame:
    """One processed frame as the window state needs it."""

    record_key: str
    camera_id: str
    event_time: datetime
    figures: FrameFigures


@dataclass
class BatchChanges:
    """What applying one batch did to the state."""

    touched: set[WindowKey] = field(default_factory=set)
    late: int = 0
    outside: set[WindowKey] = field(default_factory=set)  # windows not in the state that a frame left
    closed: int = 0


@dataclass
class WindowState:
    """Open windows (per-record figures) and per-camera max event times."""

    window_seconds: int
    delay_ms: int
    max_event_ms: dict[str, int] = field(default_factory=dict)
    windows: dict[WindowKey, dict[str, FrameFigures]] = field(default_factory=dict)

    # --- queries ----------------------------------------------------------------------

    def watermark(self) -> Watermark:
        """The per-camera watermark of this state."""
        return Watermark(self.delay_ms, dict(self.max_event_ms))

    def key_of(self, camera_id: str, event_time: datetime) -> WindowKey:
        """The window key holding an event."""
        return camera_id, to_ms(window_start(event_time, self.window_seconds))

    def is_closed(self, key: WindowKey) -> bool:
        """Whether a window is closed by its camera's watermark."""
        return self.watermark().is_closed(key[0], from_ms(key[1]), self.window_seconds)

    def new_windows(self, frames: Iterable[Frame]) -> set[WindowKey]:
        """Windows of these frames that are open but not yet in the state (candidates for seeding)."""
        keys = {self.key_of(f.camera_id, f.event_time) for f in frames}
        return {k for k in keys if k not in self.windows and not self.is_closed(k)}

    # --- updates ------------------------------------------------------------------------

    def seed(self, key: WindowKey, stored: dict[str, FrameFigures]) -> None:
        """Start a window from the frames the store already holds for it."""
        self.windows[key] = dict(stored)

    def apply(self, frames: Iterable[Frame], moved_from: Iterable[tuple[str, str, datetime]] = ()) -> BatchChanges:
        """Fold a batch's frames into the open windows, then advance the watermark and close windows.

        ``moved_from`` lists ``(record_key, camera_id, event_time)`` of stored
        frames this batch overwrote with another event time: they leave their
        old window.
        """
        frames = list(frames)
        changes = BatchChanges()
        where = {rk: key for key, records in self.windows.items() for rk in records}
        for _record_key, camera_id, event_time in moved_from:
            left = self.key_of(camera_id, event_time)
            if left not in self.windows and not self.is_closed(left):
                changes.outside.add(left)
        for frame in frames:
            key = self.key_of(frame.camera_id, frame.event_time)
            old = where.get(frame.record_key)
            if old is not None and old != key:
                # the frame was counted elsewhere by this query: it moves
                self.windows[old].pop(frame.record_key, None)
                changes.touched.add(old)
            if self.is_closed(key):
                changes.late += 1
                continue
            self.windows.setdefault(key, {})[frame.record_key] = frame.figures
            where[frame.record_key] = key
            changes.touched.add(key)
        for frame in frames:
            ms = to_ms(frame.event_time)
            if ms > self.max_event_ms.get(frame.camera_id, ms - 1):
                self.max_event_ms[frame.camera_id] = ms
        return changes

    def close_windows(self) -> int:
        """Drop windows the watermark has closed (their documents are final); returns how many."""
        closed = [key for key in self.windows if self.is_closed(key)]
        for key in closed:
            del self.windows[key]
        return len(closed)

    def documents(
        self, keys: Iterable[WindowKey], status_of: Any, now: datetime
    ) -> tuple[list[TrafficWindow], list[str]]:
        """Full window documents for ``keys``, and the ids of windows left with no frame."""
        docs: list[TrafficWindow] = []
        empty: list[str] = []
        for key in sorted(keys):
            camera_id, start_ms = key
            records = self.windows.get(key, {})
            start = from_ms(start_ms)
            if records:
                frames = [records[rk] for rk in sorted(records)]
                docs.append(summarize_window(camera_id, start, self.window_seconds, frames, status_of, now))
            else:
                empty.append(window_id(camera_id, start))
                self.windows.pop(key, None)
        return docs, empty

    # --- serialization -----------------------------------------------------------------------

    def to_json(self, batch_id: int) -> bytes:
        """The state after ``batch_id`` as compact JSON."""
        windows = [
            {
                "camera_id": camera_id,
                "start_ms": start_ms,
                "frames": {
                    rk: [*(getattr(f.counts, c) for c in COUNT_FIELDS), f.density_percent] for rk, f in recs.items()
                },
            }
            for (camera_id, start_ms), recs in sorted(self.windows.items())
        ]
        body = {
            "batch_id": batch_id,
            "window_seconds": self.window_seconds,
            "delay_ms": self.delay_ms,
            "max_event_ms": self.max_event_ms,
            "windows": windows,
        }
        return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, window_seconds: int, delay_ms: int) -> WindowState:
        """Load a saved state (the window length and delay come from the current settings)."""
        body = json.loads(data)
        if int(body["window_seconds"]) != window_seconds:
            # windows of another length cannot continue: keep the watermark, restart the windows
            return cls(window_seconds, delay_ms, {k: int(v) for k, v in body["max_event_ms"].items()})
        windows: dict[WindowKey, dict[str, FrameFigures]] = {}
        for w in body["windows"]:
            records = {}
            for rk, values in w["frames"].items():
                counts = Counts.of(dict(zip(COUNT_FIELDS, values[:6], strict=True)))
                records[rk] = FrameFigures(counts=counts, density_percent=float(values[6]))
            windows[(w["camera_id"], int(w["start_ms"]))] = records
        return cls(window_seconds, delay_ms, {k: int(v) for k, v in body["max_event_ms"].items()}, windows)


def figures_list(figures: FrameFigures) -> list[float]:
    """A frame's figures as a compact list: the six class counts, then the density."""
    return [*(getattr(figures.counts, c) for c in COUNT_FIELDS), figures.density_percent]


class StateStore:
    """Versions of the window state in the checkpoint folder (file:// or s3://)."""

    def __init__(self, checkpoint_uri: str, window_seconds: int, delay_seconds: int, settings: Any) -> None:
        from ipsp.storage import open_store

        self.store = open_store(checkpoint_uri, settings)
        self.window_seconds = window_seconds
        self.delay_ms = delay_seconds * 1000

    @staticmethod
    def key(batch_id: int) -> str:
        """Object key of the state after ``batch_id``."""
        return f"{STATE_PREFIX}{batch_id:012d}.json"

    def versions(self) -> list[int]:
        """Batch ids with a saved state, ascending."""
        found = []
        for info in self.store.list(STATE_PREFIX):
            name = info.key.rsplit("/", 1)[-1]
            if name.endswith(".json") and name[:-5].isdigit():
                found.append(int(name[:-5]))
        return sorted(found)

    def before(self, batch_id: int) -> WindowState:
        """The state batch ``batch_id`` starts from: the newest saved before it (empty if none)."""
        from ipsp.storage import ObjectNotFound

        candidates = [batch_id - 1] if batch_id > 0 else []
        for version in [*candidates, *reversed([v for v in self.versions() if v < batch_id - 1])]:
            try:
                data = self.store.get(self.key(version))
            except ObjectNotFound:
                continue
            return WindowState.from_json(data, self.window_seconds, self.delay_ms)
        return WindowState(self.window_seconds, self.delay_ms)

    def save(self, batch_id: int, state: WindowState) -> None:
        """Save the state after ``batch_id``; drop versions older than the few a replay may need."""
        self.store.put(self.key(batch_id), state.to_json(batch_id))
        for version in self.versions():
            if version < batch_id - KEEP_VERSIONS or version > batch_id:
                # newer versions belong to batches that will run again (after a restart from an older commit)
                self.store.delete(self.key(version))
