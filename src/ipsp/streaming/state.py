"""Windows of the stream query: per-event contributions in the window documents, closing by watermark.

Each ``traffic_windows`` document keeps the contribution of every event it
counts (``events``: ms after ``window_start`` -> six class counts and the
density), so a window is rebuilt from its own document, read by ``_id``: no
range read of ``analysis_results`` on the write path, and folding an event a
second time (a replayed batch, a resend, a stream replay into the same
database) replaces its own contribution instead of adding to it.

What the query keeps besides the documents is small and versioned per
micro-batch in the checkpoint (``<checkpoint>/ipsp/state/<N>.json``; batch
``N`` starts from the state after ``N-1``, so a replayed batch sees what its
first run saw):

- each camera's max event time: its watermark (minus ``watermark_seconds``)
  closes the camera's windows whose end is at or before it;
- each camera's last-seen wall time: a camera silent for ``idle_seconds`` has
  its open windows closed (else a camera that stops would never close them);
- the open windows this query wrote.

A *closed* window (``closed: true``) is final. An event that arrives for a
closed window and is not already among its events is *late*: stored in
``analysis_results``, counted in the window's ``late_frames`` (its offset in
``late_events``, so a replay does not count it twice) and in the batch's
progress, but not in ``frames`` or ``counts``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ipsp.contracts import TrafficWindow, window_id
from ipsp.streaming.task.outcome import FrameOutcome
from ipsp.streaming.windows import FrameFigures, StatusOf, from_ms, start_ms, summarize_window, to_ms

STATE_PREFIX = "ipsp/state/"
#: state versions kept besides the newest (a replay needs the one before it)
KEEP_VERSIONS = 2
WindowKey = tuple[str, int]  # (camera_id, window start in epoch ms)


def latest_per_event(frames: Iterable[FrameOutcome]) -> list[FrameOutcome]:
    """One frame per event: the copy with the highest Kafka (partition, offset), as the results sink keeps."""
    chosen: dict[str, FrameOutcome] = {}
    for frame in frames:
        old = chosen.get(frame.event_id)
        if old is None or (frame.partition, frame.offset) >= (old.partition, old.offset):
            chosen[frame.event_id] = frame
    return [chosen[k] for k in sorted(chosen)]


def group_by_window(frames: Iterable[FrameOutcome], window_seconds: int) -> dict[WindowKey, list[FrameOutcome]]:
    """Frames grouped by their window (camera, start ms)."""
    groups: dict[WindowKey, list[FrameOutcome]] = {}
    for frame in frames:
        groups.setdefault((frame.camera_id, start_ms(frame.event_ms, window_seconds)), []).append(frame)
    return groups


@dataclass
class Window:
    """One window's contributions, as its document holds them."""

    camera_id: str
    start_ms: int
    events: dict[str, tuple[float, ...]] = field(default_factory=dict)
    late: set[int] = field(default_factory=set)
    closed: bool = False

    @property
    def id(self) -> str:
        """The window document's ``_id``."""
        return window_id(self.camera_id, from_ms(self.start_ms))

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> Window:
        """The window as its stored document says (a document without ``events`` predates v1.1)."""
        start: datetime = doc["window_start"]
        return cls(
            camera_id=doc["camera_id"],
            start_ms=to_ms(start),
            events={k: tuple(float(x) for x in v) for k, v in (doc.get("events") or {}).items()},
            late={int(x) for x in doc.get("late_events") or []},
            closed=bool(doc.get("closed", False)),
        )

    def fold(self, frames: Iterable[FrameOutcome]) -> int:
        """Add (or replace) the frames' contributions; returns how many of them are late."""
        late = 0
        for frame in frames:
            offset = frame.event_ms - self.start_ms
            key = str(offset)
            if self.closed and key not in self.events:
                self.late.add(offset)
                late += 1
            else:
                self.events[key] = frame.figures
        return late

    def document(self, window_seconds: int, status_of: StatusOf, now: datetime) -> TrafficWindow | None:
        """The full window document; None while it holds no event (only late ones or none)."""
        if not self.events:
            return None
        figures = [FrameFigures.of(self.events[k]) for k in sorted(self.events, key=int)]
        window = summarize_window(self.camera_id, from_ms(self.start_ms), window_seconds, figures, status_of, now)
        return window.model_copy(
            update={
                "late_frames": len(self.late),
                "closed": self.closed,
                "events": {k: list(v) for k, v in sorted(self.events.items(), key=lambda kv: int(kv[0]))},
                "late_events": sorted(self.late),
            }
        )


@dataclass
class StreamState:
    """Per-camera watermark and last-seen time, and the open windows of one query."""

    max_event_ms: dict[str, int] = field(default_factory=dict)
    last_seen_ms: dict[str, int] = field(default_factory=dict)
    open: set[WindowKey] = field(default_factory=set)

    def advance(self, frames: Iterable[FrameOutcome], now_ms: int) -> None:
        """Move each camera's max event time forward (never back) and mark it seen now."""
        for frame in frames:
            if frame.event_ms > self.max_event_ms.get(frame.camera_id, frame.event_ms - 1):
                self.max_event_ms[frame.camera_id] = frame.event_ms
            self.last_seen_ms[frame.camera_id] = now_ms

    def to_close(
        self, candidates: Iterable[WindowKey], window_seconds: int, delay_seconds: int, idle_seconds: float, now_ms: int
    ) -> set[WindowKey]:
        """Windows among ``candidates`` that the camera's watermark or its idle timeout closes."""
        closing = set()
        for camera_id, begins_ms in candidates:
            seen = self.max_event_ms.get(camera_id)
            if seen is not None and begins_ms + window_seconds * 1000 <= seen - delay_seconds * 1000:
                closing.add((camera_id, begins_ms))
                continue
            last = self.last_seen_ms.get(camera_id)
            if last is not None and now_ms - last >= idle_seconds * 1000:
                closing.add((camera_id, begins_ms))
        return closing

    def to_json(self, batch_id: int) -> bytes:
        """The state after ``batch_id`` as compact JSON."""
        body = {
            "batch_id": batch_id,
            "max_event_ms": self.max_event_ms,
            "last_seen_ms": self.last_seen_ms,
            "open": sorted([c, s] for c, s in self.open),
        }
        return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> StreamState:
        """Load a saved state (a state of the pre-1.1 layout keeps only its watermark)."""
        body = json.loads(data)
        return cls(
            max_event_ms={k: int(v) for k, v in body.get("max_event_ms", {}).items()},
            last_seen_ms={k: int(v) for k, v in body.get("last_seen_ms", {}).items()},
            open={(str(c), int(s)) for c, s in body.get("open", [])},
        )


@dataclass
class BatchWindows:
    """What one batch does to the windows: documents to write, windows to mark closed, counts."""

    documents: list[TrafficWindow] = field(default_factory=list)
    close_ids: list[str] = field(default_factory=list)  # closed windows this batch did not touch
    late: int = 0
    closed: int = 0
    open: int = 0


def fold_batch(
    state: StreamState,
    stored: dict[str, dict[str, Any]],
    frames: Iterable[FrameOutcome],
    window_seconds: int,
    delay_seconds: int,
    idle_seconds: float,
    now: datetime,
    status_of: StatusOf,
) -> BatchWindows:
    """Fold a batch's events into their windows and close what the watermark or idle timeout closes.

    ``stored`` holds the window documents (by ``_id``) the batch's events fall
    in, as read before the batch; ``state`` is the state before the batch and
    is advanced in place. Events fold before windows close, so a window closed
    by this very batch still counts the batch's own events.
    """
    frames = latest_per_event(frames)
    out = BatchWindows()
    touched: dict[WindowKey, Window] = {}
    for key, members in sorted(group_by_window(frames, window_seconds).items()):
        doc = stored.get(window_id(key[0], from_ms(key[1])))
        window = Window.from_document(doc) if doc is not None else Window(key[0], key[1])
        out.late += window.fold(members)
        touched[key] = window
    now_ms = to_ms(now)
    state.advance(frames, now_ms)
    candidates = state.open | {k for k, w in touched.items() if not w.closed}
    closing = state.to_close(candidates, window_seconds, delay_seconds, idle_seconds, now_ms)
    for key in closing & set(touched):
        touched[key].closed = True
    out.documents = [d for w in touched.values() if (d := w.document(window_seconds, status_of, now)) is not None]
    out.close_ids = [window_id(c, from_ms(ms)) for c, ms in sorted(closing - set(touched))]
    state.open = candidates - closing
    out.closed = len(closing)
    out.open = len(state.open)
    return out


class StateStore:
    """Versions of the query state in the checkpoint folder (file:// or s3://)."""

    def __init__(self, checkpoint_uri: str, settings: Any) -> None:
        from ipsp.storage import open_store

        self.store = open_store(checkpoint_uri, settings)

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

    def before(self, batch_id: int) -> StreamState:
        """The state batch ``batch_id`` starts from: the newest saved before it (empty if none)."""
        from ipsp.storage import ObjectNotFound

        for version in reversed([v for v in self.versions() if v < batch_id]):
            try:
                return StreamState.from_json(self.store.get(self.key(version)))
            except ObjectNotFound:
                continue
        return StreamState()

    def latest(self) -> tuple[int, StreamState] | None:
        """The newest saved state and its batch id (None before the first batch)."""
        versions = self.versions()
        if not versions:
            return None
        return versions[-1], StreamState.from_json(self.store.get(self.key(versions[-1])))

    def save(self, batch_id: int, state: StreamState) -> None:
        """Save the state after ``batch_id``; drop versions older than the few a replay may need."""
        self.store.put(self.key(batch_id), state.to_json(batch_id))
        for version in self.versions():
            if version < batch_id - KEEP_VERSIONS or version > batch_id:
                # newer versions belong to batches that will run again (after a restart from an older commit)
                self.store.delete(self.key(version))

    def epoch(self) -> str:
        """The run epoch of this checkpoint: made on first use, kept across restarts, gone with a reset."""
        from ipsp.storage import ObjectNotFound

        try:
            return self.store.get(EPOCH_KEY).decode().strip()
        except ObjectNotFound:
            import secrets

            from ipsp.contracts import utc_now

            epoch = utc_now().strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)
            self.store.put(EPOCH_KEY, epoch.encode())
            return epoch


EPOCH_KEY = "ipsp/epoch"
