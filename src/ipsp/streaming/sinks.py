"""MongoDB side of the stream job: idempotent writes by ``_id``, window reads, progress.

Every write puts a whole document under a deterministic ``_id`` (never ``$inc``),
so a micro-batch that runs twice (a task retry, a crash before Spark committed
the batch) leaves the same documents as one run: exactly once *in effect*.

Writes of documents the writer has not seen are *insert first*: one unordered
``insert_many``, then, for each ``_id`` that already existed, a replace by
``_id``. Window documents the job wrote are held in memory (the job is the only
writer of its database's windows), so the next batch that touches one reads
nothing and replaces it at once: on the local FerretDB every statement costs
about as much as a lookup (measured: 3-5 ms per ``_id`` lookup or replace, at
20 and at 20,000 documents alike), so the statements a window costs per batch
are what the driver pays per window.

Results (one per event) are ordered by their Kafka (partition, offset): a
stored copy from a later record is never overwritten, whichever task writes
last, because the replace is one conditional upsert (see :meth:`MongoSink.write_results`).

A server that is down is retried with a bounded exponential backoff
(:func:`ipsp.mongo.with_retries`); past the deadline
:class:`~ipsp.mongo.SinkUnavailable` is raised so the batch, and the query, fail
loudly instead of skipping data. Spark has not committed the batch then, so a
restart replays it from the checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from ipsp import mongo
from ipsp.contracts import AnalysisResult, Contract, DeadLetter, PipelineProgress, TrafficWindow
from ipsp.mongo import DEAD_LETTERS, DEFAULT_RETRY_SECONDS, PROGRESS, RESULTS, WINDOWS, with_retries


def kafka_position(doc: Mapping[str, Any]) -> tuple[int, int]:
    """(partition, offset) of the Kafka record a stored result came from."""
    pipeline = doc.get("pipeline") or {}
    return int(pipeline.get("kafka_partition", -1)), int(pipeline.get("kafka_offset", -1))


def supersedes(new: Mapping[str, Any], stored: Mapping[str, Any]) -> bool:
    """Whether ``new`` must replace ``stored``: a later Kafka record, or the same one by another model.

    The same record by the same model is the result already stored (an earlier
    attempt or run wrote it): rewriting it would change nothing but timings.
    """
    if kafka_position(new) != kafka_position(stored):
        return kafka_position(new) > kafka_position(stored)
    return bool((new.get("model") or {}).get("sha256") != (stored.get("model") or {}).get("sha256"))


class MongoSink:
    """The four collections of one database, written idempotently by ``_id``."""

    def __init__(self, client: Any, database: str, retry_seconds: float = DEFAULT_RETRY_SECONDS) -> None:
        self.client = client
        self.db = client[database]
        self.retry_seconds = retry_seconds
        # the open windows as this sink last wrote or read them
        self._windows: dict[str, dict[str, Any]] = {}

    # --- setup ------------------------------------------------------------------------

    def ensure_indexes(self) -> None:
        """Create the indexes of :data:`ipsp.mongo.INDEXES` (a no-op when they exist)."""
        mongo.ensure_indexes(self.db, self.retry_seconds)

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
        self.replace_many(collection, [documents[i] for i in conflicts])
        return len(documents)

    def replace_many(self, collection: str, documents: Sequence[Mapping[str, Any]]) -> None:
        """Replace (or insert) each document by ``_id`` in one unordered bulk write."""
        if not documents:
            return
        from pymongo import ReplaceOne

        ops = [ReplaceOne({"_id": d["_id"]}, dict(d), upsert=True) for d in documents]
        with_retries(
            lambda: self.db[collection].bulk_write(ops, ordered=False),
            f"replace of {len(ops)} in {collection}",
            self.retry_seconds,
        )

    def put_models(self, collection: str, models: Iterable[Contract]) -> int:
        """Insert or replace contract models (serialized with ``to_document``)."""
        return self.put(collection, [m.to_document() for m in models])

    def write_results(self, results: Sequence[AnalysisResult]) -> int:
        """Write per-event results; returns how many were kept (the rest: the store holds a later copy).

        New events take the insert path. An event already stored is replaced
        by one conditional upsert: only when the stored copy's Kafka
        (partition, offset) is not after this one's. Two copies of one event in
        a batch (a resend, split over concurrent tasks) therefore end as the
        later Kafka record, whatever order the tasks write in. A refused
        upsert surfaces as a duplicate key on ``_id`` (the filter did not
        match, the insert collides) and is the "keep the stored one" answer.
        """
        docs = [r.to_document() for r in results]
        kept = len(docs)
        for index in self.insert_or_replace(RESULTS, docs):
            doc = docs[index]
            # a read by _id is cheap on FerretDB, an update scans the collection: skip writes that cannot win
            stored = with_retries(
                lambda d=doc: self.db[RESULTS].find_one({"_id": d["_id"]}, {"pipeline": 1, "model": 1}),  # type: ignore[misc]
                f"lookup of {doc['_id']}",
                self.retry_seconds,
            )
            wins = stored is None or supersedes(doc, stored)
            if not (wins and self.replace_if_not_older(doc)):
                kept -= 1
        return kept

    def replace_if_not_older(self, doc: Mapping[str, Any]) -> bool:
        """Replace the stored result unless it comes from a later Kafka record; True when written."""
        from pymongo.errors import DuplicateKeyError

        partition, offset = doc["pipeline"]["kafka_partition"], doc["pipeline"]["kafka_offset"]
        query = {
            "_id": doc["_id"],
            "$or": [
                {"pipeline.kafka_partition": {"$lt": partition}},
                {"pipeline.kafka_partition": partition, "pipeline.kafka_offset": {"$lte": offset}},
            ],
        }

        def upsert() -> bool:
            try:
                self.db[RESULTS].replace_one(query, dict(doc), upsert=True)
            except DuplicateKeyError:
                return False  # the stored copy is from a later record: it stays
            return True

        return with_retries(upsert, f"conditional replace of {doc['_id']}", self.retry_seconds)

    def write_dead_letters(self, letters: Sequence[DeadLetter]) -> int:
        """Write dead letters (one per Kafka record) into ``dead_letters``."""
        return self.put_models(DEAD_LETTERS, letters)

    def delete_dead_letters(self, ids: Sequence[str]) -> int:
        """Delete the dead letters of records that ended with a result (left by an earlier attempt)."""
        if not ids:
            return 0
        result = with_retries(
            lambda: self.db[DEAD_LETTERS].delete_many({"_id": {"$in": list(ids)}}),
            f"delete of up to {len(ids)} stale dead letters",
            self.retry_seconds,
        )
        return int(result.deleted_count)

    # --- windows (driver): each read and written by _id ------------------------------------------

    def read_windows(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The stored window documents with these ``_id`` values; only those this sink does not hold are read."""
        found: dict[str, dict[str, Any]] = {}
        for window in ids:
            doc = self._windows.get(window)
            if doc is None:
                # one equality lookup per id: FerretDB answers it from its _id index ($in would scan)
                doc = with_retries(
                    lambda w=window: self.db[WINDOWS].find_one({"_id": w}),  # type: ignore[misc]
                    f"read of window {window}",
                    self.retry_seconds,
                )
                self._hold(window, doc)
            if doc is not None:
                found[window] = doc
        return found

    def _hold(self, window: str, doc: dict[str, Any] | None) -> None:
        # only open windows are held: a closed one takes no more events (a late one reads it again)
        if doc is None or doc.get("closed"):
            self._windows.pop(window, None)
        else:
            self._windows[window] = doc

    def close_windows(self, ids: Sequence[str], now: datetime) -> None:
        """Mark windows closed (final) by ``_id``; a closed window is no longer held."""
        for window in ids:
            with_retries(
                lambda w=window: self.db[WINDOWS].update_one(  # type: ignore[misc]
                    {"_id": w}, {"$set": {"closed": True, "updated_at": now}}
                ),
                f"close of window {window}",
                self.retry_seconds,
            )
            self._windows.pop(window, None)

    # --- per-batch writes (driver) ------------------------------------------------------------

    def write_windows(self, windows: Sequence[TrafficWindow]) -> None:
        """Write windows with their full values and contributions: a replace where the window is held.

        The open ones are held as written, for the next batch's reads; after a
        failed write nothing is held, so the next batch reads what the store has.
        """
        docs = [w.to_document() for w in windows]
        held = [d for d in docs if d["_id"] in self._windows]
        fresh = [d for d in docs if d["_id"] not in self._windows]
        try:
            self.replace_many(WINDOWS, held)
            self.put(WINDOWS, fresh)
        except BaseException:
            self._windows.clear()
            raise
        for doc in docs:
            self._hold(doc["_id"], doc)

    def write_progress(self, progress: PipelineProgress) -> None:
        """Write the batch's progress document (``_id`` = ``<run>:<batch_id>``)."""
        self.put_models(PROGRESS, [progress])
