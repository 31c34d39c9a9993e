"""The API's reads: serving documents by ``_id`` only, a response cache keyed by the latest batch.

Every read here is a ``find_one({"_id": ...})`` of a document whose ``_id``
follows from the time range (see ``ipsp.rollups``), the one query FerretDB 1.x
answers from an index; so a panel's cost depends on its range, not on how much
history is stored. Lookups run in a small thread pool (one round trip each).

Two caches sit in front of MongoDB, both keyed by the serving state's latest
batch (read at most once per ``state_ttl_s``), so nothing stale outlives the
next micro-batch:

- documents by ``_id``: a dashboard's panels share one read of each camera-hour;
- answers by route and parameters, with the time range rounded outward to the
  route's bucket (a window's length, an hour ...): Grafana's ``now-6h`` moves at
  every refresh, and every refresh in the same bucket is the same answer.

Behind the answers, the window routes keep per-hour partial results
(:meth:`ServingReader.hourly`: the class sums, heat cells or rows of one UTC hour
for one camera set), computed once per version of that hour's documents, so a
range that moves into a new minute costs its two edge hours, not all of them.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pymongo.database import Database

from ipsp import mongo, rollups
from ipsp.serving.params import TimeRange

T = TypeVar("T")

#: ranges up to this long read camera-hour documents (window rows); longer ones camera-day documents (hour rows)
HOURS_UP_TO = timedelta(hours=36)
#: most camera-hour or camera-day documents one request may read
MAX_DOCUMENTS = 5_000
#: the cache key of :meth:`ServingReader.cameras`
CAMERAS_KEY = ("cameras",)


class ServingReader:
    """Reads of the serving documents of one database, shared by every route."""

    def __init__(
        self,
        db: Database[dict[str, Any]],
        state_ttl_s: float = 1.0,
        max_answers: int = 512,
        max_documents: int = 20_000,
        workers: int = 8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.state_ttl_s = state_ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state: dict[str, Any] | None = None
        self._state_at: float | None = None
        self._token: str = ""
        self._docs: OrderedDict[tuple[str, str], dict[str, Any] | None] = OrderedDict()
        self._answers: OrderedDict[Hashable, _Answer] = OrderedDict()
        self._max_answers = max_answers
        # per-hour partials: key -> (the documents they were computed from, the partial)
        self._partials: OrderedDict[Hashable, tuple[tuple[dict[str, Any], ...], Any]] = OrderedDict()
        self._max_partials = max_answers * 16
        self._max_documents = max_documents
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ipsp-read")

    def close(self) -> None:
        """Stop the lookup threads."""
        self._pool.shutdown(wait=False)

    # --- state and caches ---------------------------------------------------------------

    def state(self) -> dict[str, Any] | None:
        """The serving state document (cached ``state_ttl_s``); a new batch clears both caches."""
        with self._lock:
            if self._fresh():
                return self._state
        doc = self.db[mongo.STATE].find_one({"_id": rollups.STATE_ID})
        token = f"{doc['last_batch']}@{doc['written_at'].isoformat()}" if doc else ""
        with self._lock:
            if token != self._token:
                self._forget(self._state, doc)
                self._answers.clear()
                self._token = token
            self._state, self._state_at = doc, self._clock()
            return doc

    def _fresh(self) -> bool:
        """Whether the state read last is young enough to answer from (call with the lock held)."""
        return self._state_at is not None and self._clock() - self._state_at <= self.state_ttl_s

    def _forget(self, before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
        """Drop the cached documents a new batch may have changed (all of them unless it is the next one).

        When the state moved by exactly one batch of the same query, only the
        camera-hours it names in ``touched_hours``, their days, the cameras and the
        pipeline hours near its finish can differ; closed hours stay cached, so a
        refresh after a batch reads a few documents, not the whole range again.
        """
        if before is None or after is None or "touched_hours" not in after:
            self._docs.clear()
            return
        same_query = str(before["last_batch"]).rpartition(":")[0] == str(after["last_batch"]).rpartition(":")[0]
        if not same_query or int(after["batch_id"]) != int(before["batch_id"]) + 1:
            self._docs.clear()
            return
        hours = set(after["touched_hours"])
        days = {hour[:10] for hour in hours}
        finished = after["last_batch_at"]
        pipeline = {rollups.hour_key(finished), rollups.hour_key(finished - rollups.HOUR)}
        for collection, doc_id in list(self._docs):
            stale = (
                collection in (mongo.CAMERAS, mongo.STATE)
                or (collection == mongo.CAMERA_HOURS and doc_id.rpartition("|")[2] in hours)
                or (collection == mongo.CAMERA_DAYS and doc_id.rpartition("|")[2] in days)
                or (collection == mongo.PIPELINE_HOURS and doc_id in pipeline)
            )
            if stale:
                del self._docs[(collection, doc_id)]

    def cached(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The answer for ``key`` under the current batch, computed once (concurrent callers wait)."""
        self.state()
        with self._lock:
            full_key = (self._token, key)
            entry = self._answers.get(full_key)
            if entry is None:
                entry = self._answers[full_key] = _Answer()
                while len(self._answers) > self._max_answers:
                    self._answers.popitem(last=False)
            else:
                self._answers.move_to_end(full_key)
        with entry.lock:
            if not entry.done:
                entry.value = compute()
                entry.done = True
            return entry.value  # type: ignore[no-any-return]

    def ready(self, key: Hashable) -> Any | None:
        """The answer :meth:`cached` would give for ``key`` if it needs no I/O (state fresh, answer made), else None.

        Lets the async routes serve a cached answer on the event loop, without a hop
        to a worker thread; everything else goes through :meth:`cached` in a thread.
        Never blocks: the lock is only ever held for dictionary operations.
        """
        with self._lock:
            if not self._fresh():
                return None
            full_key = (self._token, key)
            entry = self._answers.get(full_key)
            if entry is None or not entry.done:
                return None
            self._answers.move_to_end(full_key)
            return entry.value

    def documents(self, collection: str, ids: list[str]) -> list[dict[str, Any]]:
        """The documents with these ``_id`` values that exist, in ``ids`` order (one lookup each, cached)."""
        with self._lock:
            missing = [i for i in ids if (collection, i) not in self._docs]
        if missing:
            found = list(self._pool.map(lambda i: self.db[collection].find_one({"_id": i}), missing))
            with self._lock:
                for doc_id, doc in zip(missing, found, strict=True):
                    self._docs[(collection, doc_id)] = doc
                while len(self._docs) > self._max_documents:
                    self._docs.popitem(last=False)
            fetched = dict(zip(missing, found, strict=True))
        else:
            fetched = {}
        out: list[dict[str, Any]] = []
        with self._lock:
            for doc_id in ids:
                doc = fetched[doc_id] if doc_id in fetched else self._docs.get((collection, doc_id))
                if doc is not None:
                    out.append(doc)
        return out

    def warm(self, hours: int) -> int:
        """Read the camera-hours and pipeline hours of the latest ``hours`` hours into the cache; returns how many."""
        state = self.state()
        if state is None:
            return 0
        names = sorted(self.cameras())
        read = 0
        if state.get("last_hour") is not None:
            end = rollups.hour_floor(state["last_hour"]) + rollups.HOUR
            read += len(
                self.documents(mongo.CAMERA_HOURS, rollups.camera_hour_ids(names, end - hours * rollups.HOUR, end))
            )
        end = rollups.hour_floor(state["last_batch_at"]) + rollups.HOUR
        read += len(self.documents(mongo.PIPELINE_HOURS, rollups.pipeline_hour_ids(end - hours * rollups.HOUR, end)))
        return read

    # --- what the routes read -------------------------------------------------------------

    def cameras(self) -> dict[str, dict[str, Any]]:
        """Every camera's serving document by camera id (one small collection: one document per camera)."""

        def load() -> dict[str, dict[str, Any]]:
            return {str(doc["_id"]): doc for doc in self.db[mongo.CAMERAS].find({})}

        return self.cached(CAMERAS_KEY, load)

    def window_rows(self, cameras: list[str], span: TimeRange) -> list[dict[str, Any]]:
        """Window rows of the cameras starting in the range; hour rows for ranges over :data:`HOURS_UP_TO`."""
        names = cameras or sorted(self.cameras())
        if span.span <= HOURS_UP_TO:
            ids = rollups.camera_hour_ids(names, span.start, span.end)
            _check_size(ids)
            return rollups.windows_of_hours(self.documents(mongo.CAMERA_HOURS, ids), span.start, span.end)
        ids = rollups.camera_day_ids(names, span.start, span.end)
        _check_size(ids)
        return rollups.hours_of_days(self.documents(mongo.CAMERA_DAYS, ids), span.start, span.end)

    def hourly(
        self, kind: Hashable, cameras: list[str], span: TimeRange, build: Callable[[list[dict[str, Any]]], T]
    ) -> list[T]:
        """``build`` applied to the window rows of each UTC hour of ``span`` (at most :data:`HOURS_UP_TO`).

        An hour wholly inside the range is computed once per version of its
        camera-hour documents and kept (``kind`` names what ``build`` makes);
        the edge hours, clipped to the range, are computed for this call.
        """
        names = sorted(cameras or self.cameras())
        ids = rollups.camera_hour_ids(names, span.start, span.end)
        _check_size(ids)
        by_hour: dict[datetime, list[dict[str, Any]]] = {}
        for doc in self.documents(mongo.CAMERA_HOURS, ids):
            by_hour.setdefault(rollups.hour_floor(doc["hour_start"]), []).append(doc)
        out: list[T] = []
        for hour, docs in sorted(by_hour.items()):
            low, high = max(span.start, hour), min(span.end, hour + rollups.HOUR)
            if (low, high) != (hour, hour + rollups.HOUR):
                out.append(build(rollups.windows_of_hours(docs, low, high)))
                continue
            out.append(self._partial((kind, tuple(names), hour), tuple(docs), build))
        return out

    def _partial(
        self, key: Hashable, docs: tuple[dict[str, Any], ...], build: Callable[[list[dict[str, Any]]], T]
    ) -> T:
        """The partial of one whole hour, reused while its documents are the very objects it was made from."""
        with self._lock:
            held = self._partials.get(key)
            if held is not None and _same(held[0], docs):
                self._partials.move_to_end(key)
                return held[1]  # type: ignore[no-any-return]
        start = rollups.hour_floor(docs[0]["hour_start"])
        value = build(rollups.windows_of_hours(docs, start, start + rollups.HOUR))
        with self._lock:
            # holding the documents keeps their identity unique: a re-read document is a new object
            self._partials[key] = (docs, value)
            while len(self._partials) > self._max_partials:
                self._partials.popitem(last=False)
        return value

    def first_window_start(self) -> datetime | None:
        """Start of the earliest window: the earliest camera-hour's first slot (one lookup per camera)."""
        state = self.state()
        if state is None or state.get("first_hour") is None:
            return None
        first_hour = state["first_hour"]
        ids = [rollups.camera_hour_id(camera, first_hour) for camera in sorted(self.cameras())]
        starts = [
            rollups.slot_start(doc["hour_start"], min(doc["windows"]))
            for doc in self.documents(mongo.CAMERA_HOURS, ids)
            if doc["windows"]
        ]
        return min(starts, default=first_hour)

    def batch_rows(self, span: TimeRange) -> list[dict[str, Any]]:
        """Batch entries that finished in the range, oldest first."""
        ids = rollups.pipeline_hour_ids(span.start, span.end)
        _check_size(ids)
        return rollups.batches_of_hours(self.documents(mongo.PIPELINE_HOURS, ids), span.start, span.end)


def _same(held: tuple[dict[str, Any], ...], docs: tuple[dict[str, Any], ...]) -> bool:
    """Whether ``docs`` are the very document objects a partial was computed from."""
    return len(held) == len(docs) and all(a is b for a, b in zip(held, docs, strict=True))


class _Answer:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done = False
        self.value: Any = None


def _check_size(ids: list[str]) -> None:
    from ipsp.serving.params import BadParameter

    if len(ids) > MAX_DOCUMENTS:
        raise BadParameter(
            f"this range and camera set spans {len(ids)} serving documents (at most {MAX_DOCUMENTS}); "
            "narrow the range or name fewer cameras"
        )


#: steps a range is widened to (at least its route's own bucket): about 1/72 of the range
ROUNDING_STEPS = (timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=15), timedelta(hours=1))


def rounding_for(span: TimeRange, bucket: timedelta) -> timedelta:
    """The step a request's range is widened to: the route's bucket, or about 1/72 of the range if larger.

    A 6-hour dashboard is answered for whole 5 minutes: Grafana's moving
    ``now-6h`` asks the same question for 5 minutes (the widened edges hold at most
    one step of data just outside the visible range, which the panel clips).
    """
    wanted = span.span / 72
    step = next((s for s in ROUNDING_STEPS if s >= wanted), ROUNDING_STEPS[-1])
    return max(step, bucket)


def round_range(span: TimeRange, bucket: timedelta) -> TimeRange:
    """The range widened to whole buckets (epoch-aligned): refreshes inside one bucket share an answer."""
    size = bucket.total_seconds()
    start = span.start.timestamp()
    end = span.end.timestamp()
    low = start - start % size
    high = end if end % size == 0 else end - end % size + size
    return TimeRange(datetime.fromtimestamp(low, tz=UTC), datetime.fromtimestamp(high, tz=UTC))
