"""MongoDB side of the stream job: idempotent writes by ``_id``, window reads, progress.

Every write puts a whole document under a deterministic ``_id`` (never ``$inc``),
so a micro-batch that runs twice (a task retry, a crash before Spark committed
the batch) leaves the same documents as one run: exactly once *in effect*.

Writes are *insert first, replace on conflict*: one unordered ``insert_many``,
then a ``replace_one`` for each ``_id`` that already existed. The effect is an
upsert by ``_id``; the path matters for FerretDB's SQLite backend, where an
insert costs the same at any collection size but an update scans the collection.
A conflict on a frame also says whether the stored frame had another event time
(a replay with a new clock), so its old window can be corrected.

A server that is down is retried with a bounded exponential backoff; past the
deadline :class:`SinkUnavailable` is raised so the batch, and the query, fail
loudly instead of skipping data. Spark has not committed the batch then, so a
restart replays it from the checkpoint.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from ipsp.contracts import AnalysisResult, Contract, Counts, DeadLetter, PipelineProgress, TrafficWindow
from ipsp.errors import ServiceUnavailable
from ipsp.streaming.process import FrameFigures

log = logging.getLogger(__name__)

T = TypeVar("T")

RESULTS = "analysis_results"
WINDOWS = "traffic_windows"
DEAD_LETTERS = "dead_letters"
PROGRESS = "pipeline_progress"

#: indexes of CONTRACTS.md section 3, created (idempotently) when the job starts
INDEXES: dict[str, list[list[tuple[str, int]]]] = {
    RESULTS: [[("camera_id", 1), ("event_time", 1)], [("event_time", 1)]],
    WINDOWS: [[("camera_id", 1), ("window_start", 1)]],
    DEAD_LETTERS: [[("created_at", 1)], [("stage", 1)]],
    PROGRESS: [[("query", 1), ("batch_id", 1)]],
}

#: default time a write keeps retrying a server that does not answer
DEFAULT_RETRY_SECONDS = 60.0
MAX_BACKOFF_SECONDS = 8.0


class SinkUnavailable(ServiceUnavailable):
    """MongoDB did not accept a write within the retry deadline."""


def _transient_errors() -> tuple[type[BaseException], ...]:
    from pymongo import errors

    return (errors.AutoReconnect, errors.ConnectionFailure, errors.NetworkTimeout, errors.ServerSelectionTimeoutError)


def _only_duplicate_keys(exc: BaseException) -> bool:
    # two upserts of one _id can race to insert; the loser gets 11000 and simply retries
    from pymongo.errors import BulkWriteError, DuplicateKeyError

    if isinstance(exc, DuplicateKeyError):
        return True
    if isinstance(exc, BulkWriteError):
        errors = exc.details.get("writeErrors", [])
        return bool(errors) and all(e.get("code") == 11000 for e in errors)
    return False


def with_retries(action: Callable[[], T], what: str, retry_seconds: float = DEFAULT_RETRY_SECONDS) -> T:
    """Run ``action``; on a transient MongoDB error retry with backoff until ``retry_seconds`` passed."""
    deadline = time.monotonic() + retry_seconds
    delay = 0.5
    attempt = 1
    while True:
        try:
            return action()
        except Exception as exc:
            if not (isinstance(exc, _transient_errors()) or _only_duplicate_keys(exc)):
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                raise SinkUnavailable(
                    f"MongoDB did not accept {what} after {attempt} attempts over {retry_seconds:.0f}s: "
                    f"{_one_line(exc)}"
                ) from exc
            log.warning("MongoDB %s failed (attempt %d, retrying in %.1fs): %s", what, attempt, delay, _one_line(exc))
            time.sleep(min(delay, left))
            delay = min(delay * 2, MAX_BACKOFF_SECONDS)
            attempt += 1


def _one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:300]


def connect(uri: str, timeout_ms: int = 5000) -> Any:
    """A pymongo client that fails fast on an absent server (the retry loop does the waiting)."""
    from pymongo import MongoClient

    return MongoClient(
        uri,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=max(timeout_ms * 6, 30000),
        tz_aware=True,
        retryWrites=False,
    )


class MongoSink:
    """The four collections of one database, written idempotently by ``_id``."""

    def __init__(self, client: Any, database: str, retry_seconds: float = DEFAULT_RETRY_SECONDS) -> None:
        self.client = client
        self.db = client[database]
        self.retry_seconds = retry_seconds

    # --- setup ------------------------------------------------------------------------

    def ensure_indexes(self) -> None:
        """Create the contract's indexes (a no-op when they exist)."""
        for collection, indexes in INDEXES.items():
            for keys in indexes:

                def create(c: str = collection, k: list[tuple[str, int]] = keys) -> str:
                    return str(self.db[c].create_index(k))

                with_retries(create, f"create_index on {collection}", self.retry_seconds)

    def ping(self) -> None:
        """Check the server answers (within the retry deadline)."""
        with_retries(lambda: self.client.admin.command("ping"), "ping", self.retry_seconds)

    # --- writes ----------------------------------------------------------------------------

    def insert_or_replace(self, collection: str, documents: Sequence[Mapping[str, Any]]) -> list[int]:
        """Insert every document; those whose ``_id`` exists are returned (indexes) for the caller to replace."""
        if not documents:
            return []
        from pymongo.errors import BulkWriteError

        conflicts: list[int] = []

        def insert() -> None:
            conflicts.clear()
            try:
                self.db[collection].insert_many([dict(d) for d in documents], ordered=False)
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                other = [e for e in errors if e.get("code") != 11000]
                if other:
                    raise
                conflicts.extend(int(e["index"]) for e in errors)

        with_retries(insert, f"insert of {len(documents)} into {collection}", self.retry_seconds)
        return conflicts

    def replace(self, collection: str, document: Mapping[str, Any]) -> None:
        """Replace (or insert) the document with its ``_id``."""
        with_retries(
            lambda: self.db[collection].replace_one({"_id": document["_id"]}, dict(document), upsert=True),
            f"replace of {document['_id']} in {collection}",
            self.retry_seconds,
        )

    def put(self, collection: str, documents: Sequence[Mapping[str, Any]]) -> int:
        """Insert or replace each document by ``_id``; returns how many were written."""
        conflicts = self.insert_or_replace(collection, documents)
        if conflicts:
            from pymongo import ReplaceOne

            ops = [ReplaceOne({"_id": documents[i]["_id"]}, dict(documents[i]), upsert=True) for i in conflicts]
            with_retries(
                lambda: self.db[collection].bulk_write(ops, ordered=False),
                f"replace of {len(ops)} in {collection}",
                self.retry_seconds,
            )
        return len(documents)

    def put_models(self, collection: str, models: Iterable[Contract]) -> int:
        """Insert or replace contract models (serialized with ``to_document``)."""
        return self.put(collection, [m.to_document() for m in models])

    def write_results(self, results: Sequence[AnalysisResult]) -> dict[str, tuple[str, datetime]]:
        """Write per-frame results; returns ``record_key -> (camera_id, event_time)`` of re-timed frames.

        A frame already stored with the same camera and event time (a replayed
        batch, a re-run of the same feed) is simply replaced; one stored with
        another event time is replaced too, and where it was is returned so its
        old window can be corrected.
        """
        docs = [r.to_document() for r in results]
        moved: dict[str, tuple[str, datetime]] = {}
        for index in self.insert_or_replace(RESULTS, docs):
            doc = docs[index]
            # a lookup and a replace by _id alone: FerretDB answers both from its _id index
            before = with_retries(
                lambda d=doc: self.db[RESULTS].find_one({"_id": d["_id"]}, {"camera_id": 1, "event_time": 1}),  # type: ignore[misc]
                f"lookup of {doc['_id']}",
                self.retry_seconds,
            )
            self.replace(RESULTS, doc)
            if before is not None and (before["camera_id"], before["event_time"]) != (
                doc["camera_id"],
                doc["event_time"],
            ):
                moved[doc["_id"]] = (before["camera_id"], before["event_time"])
        return moved

    def write_dead_letters(self, letters: Sequence[DeadLetter]) -> int:
        """Write dead letters (one per Kafka record) into ``dead_letters``."""
        return self.put_models(DEAD_LETTERS, letters)

    # --- window reads (driver, only to seed or correct a window) ------------------------------

    def existing_windows(self, ids: Sequence[str]) -> set[str]:
        """Which of these window ``_id`` values already have a document."""
        if not ids:
            return set()
        docs = with_retries(
            lambda: list(self.db[WINDOWS].find({"_id": {"$in": list(ids)}}, {"_id": 1})),
            f"lookup of {len(ids)} windows",
            self.retry_seconds,
        )
        return {d["_id"] for d in docs}

    def frames_of_windows(
        self, windows: Iterable[tuple[str, datetime]], window_seconds: int
    ) -> dict[tuple[str, datetime], dict[str, FrameFigures]]:
        """Stored figures of the frames of each ``(camera_id, window_start)``, keyed by record_key.

        Windows are merged into spans of consecutive windows and each span is
        read with one query; the bucketing is done here because FerretDB's
        aggregation has no date arithmetic.
        """
        from ipsp.streaming.process import window_start

        wanted = set(windows)
        grouped: dict[tuple[str, datetime], dict[str, FrameFigures]] = {key: {} for key in wanted}
        fields = {"camera_id": 1, "event_time": 1, "counts": 1, "density_percent": 1}
        for low, high, cameras in window_spans(wanted, window_seconds):
            query = {"camera_id": {"$in": sorted(cameras)}, "event_time": {"$gte": low, "$lt": high}}
            docs = with_retries(
                lambda q=query: list(self.db[RESULTS].find(q, fields)),  # type: ignore[misc]
                f"read of the frames of {len(cameras)} camera(s) from {low:%H:%M:%S} to {high:%H:%M:%S}",
                self.retry_seconds,
            )
            for doc in docs:
                key = (doc["camera_id"], window_start(doc["event_time"], window_seconds))
                if key in grouped:
                    counts = Counts.model_validate(doc["counts"])
                    grouped[key][doc["_id"]] = FrameFigures(counts=counts, density_percent=doc["density_percent"])
        return grouped

    # --- per-batch writes (driver) ------------------------------------------------------------

    def write_windows(self, windows: Sequence[TrafficWindow], empty: Sequence[str]) -> None:
        """Write windows with their full values; delete windows left with no frame."""
        self.put_models(WINDOWS, windows)
        if empty:
            with_retries(
                lambda: self.db[WINDOWS].delete_many({"_id": {"$in": list(empty)}}),
                f"delete of {len(empty)} empty windows",
                self.retry_seconds,
            )

    def write_progress(self, progress: PipelineProgress) -> None:
        """Write the batch's progress document (``_id`` = ``<query>:<batch_id>``)."""
        self.put_models(PROGRESS, [progress])


def window_spans(
    windows: Iterable[tuple[str, datetime]], window_seconds: int
) -> list[tuple[datetime, datetime, set[str]]]:
    """Merge windows into ``(low, high, cameras)`` time spans of adjacent windows, one query each."""
    size = timedelta(seconds=window_seconds)
    spans: list[tuple[datetime, datetime, set[str]]] = []
    for camera_id, start in sorted(windows, key=lambda w: (w[1], w[0])):
        if spans and start <= spans[-1][1]:
            low, high, cameras = spans[-1]
            cameras.add(camera_id)
            spans[-1] = (low, max(high, start + size), cameras)
        else:
            spans.append((start, start + size, {camera_id}))
    return spans
