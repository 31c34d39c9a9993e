"""The fetch stage: each shard's frames read once, checked against their messages, decoded into batches.

It runs on the prefetch thread (:class:`ipsp.streaming.prefetch.Prefetcher`),
up to ``prefetch_batches`` batches ahead of inference. A frame that is missing
or whose bytes do not match its message is the frame's own fault: a dead
letter. A store that does not answer is transient: waited out, then raised, so
the task fails and Spark retries it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from ipsp.contracts import DeadLetter, FrameMessage, utc_now
from ipsp.streaming.task.outcome import TaskReport
from ipsp.streaming.task.parse import Record, letter_for
from ipsp.streaming.task.protocols import FrameDetector, ShardSource

if TYPE_CHECKING:
    from ipsp.detection.detector import PreparedBatch

log = logging.getLogger(__name__)

T = TypeVar("T")

#: keys read from one shard per read transaction (bounds the bytes held at once)
FETCH_CHUNK = 64


def group_by_shard(records: Iterable[Record]) -> dict[str, list[Record]]:
    """Records grouped by shard URI (first-seen order), each group in frame order."""
    groups: dict[str, list[Record]] = {}
    for record in records:
        groups.setdefault(record.message.lmdb.uri, []).append(record)
    for group in groups.values():
        group.sort(key=lambda r: (r.message.camera_id, r.message.frame_index, r.message.record_key))
    return groups


def chunked(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most ``size`` items."""
    if size < 1:
        raise ValueError("chunk size must be >= 1")
    for start in range(0, len(items), size):
        yield items[start : start + size]


def check_bytes(message: FrameMessage, data: bytes) -> str | None:
    """Why the fetched bytes are not the frame the message describes, or None if they are."""
    if len(data) != message.frame.bytes:
        return f"frame has {len(data)} bytes, the message says {message.frame.bytes}"
    digest = hashlib.sha256(data).hexdigest()
    if digest != message.frame.sha256:
        return f"frame sha256 {digest[:12]}... differs from the message's {message.frame.sha256[:12]}..."
    return None


def fetch_with_retries(
    reader: ShardSource, shard_uri: str, keys: list[str], retry_seconds: float, stop: threading.Event | None = None
) -> dict[str, bytes | Exception]:
    """``reader.get_many`` that waits out an object-store outage (backoff, up to ``retry_seconds``).

    A missing shard or key is the frame's own fault and comes back per key (a
    dead letter); a store that does not answer is transient: retried here, and
    past the deadline raised, so the task fails (and is retried by Spark).
    ``stop`` (the prefetch stage's) ends the waiting early: the task is already failing.
    """
    from ipsp.errors import ServiceUnavailable
    from ipsp.storage import IntegrityError, StorageError

    deadline = time.monotonic() + retry_seconds
    delay = 0.5
    while True:
        try:
            return dict(reader.get_many(shard_uri, keys))
        except (StorageError, ServiceUnavailable) as exc:
            if isinstance(exc, IntegrityError):
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            log.warning("object store: %s (retrying in %.1fs)", str(exc).splitlines()[0][:200], min(delay, left))
            pause = min(delay, left)
            if stop is None:
                time.sleep(pause)
            elif stop.wait(pause):
                raise
            delay = min(delay * 2, 8.0)


@dataclass
class Ready:
    """What the fetch stage hands to inference: dead letters found so far, then one prepared batch.

    ``prepared`` is ``None`` only for the last item of a task whose trailing frames were all dead letters.
    """

    letters: list[DeadLetter]
    records: list[Record]
    prepared: PreparedBatch | None


def prepare_batches(
    records: list[Record],
    detector: FrameDetector,
    reader: ShardSource,
    batch_size: int,
    retry_seconds: float,
    report: TaskReport,
    stop: threading.Event | None = None,
) -> Iterator[Ready]:
    """Fetch each shard's frames, check them and decode full batches, in record order."""
    from ipsp.storage.shards import ShardError

    pending: list[tuple[Record, bytes]] = []
    letters: list[DeadLetter] = []

    def ready(batch: list[tuple[Record, bytes]]) -> Ready:
        nonlocal letters
        prepared = detector.prepare_bytes([data for _, data in batch], [r.message.record_key for r, _ in batch])
        item, letters = Ready(letters, [r for r, _ in batch], prepared), []
        return item

    for shard_uri, group in group_by_shard(records).items():
        for part in chunked(group, FETCH_CHUNK):
            started = time.perf_counter()
            keys = [r.message.lmdb.key for r in part]
            fetched = fetch_with_retries(reader, shard_uri, keys, retry_seconds, stop)
            report.fetch_ms += (time.perf_counter() - started) * 1000
            started = time.perf_counter()
            now = utc_now()
            for record in part:
                data = fetched.get(record.message.lmdb.key)
                if isinstance(data, ShardError) or data is None:
                    letters.append(letter_for("fetch", str(data or "frame not returned by the reader"), record, now))
                    continue
                if isinstance(data, Exception):
                    raise data  # a storage outage: transient, fail the task so it is retried
                reason = check_bytes(record.message, data)
                if reason is not None:
                    letters.append(letter_for("decode", reason, record, now))
                    continue
                pending.append((record, data))
            report.check_ms += (time.perf_counter() - started) * 1000
            while len(pending) >= batch_size:
                batch, pending = pending[:batch_size], pending[batch_size:]
                yield ready(batch)
    if pending:
        yield ready(pending)
    if letters:
        yield Ready(letters, [], None)
