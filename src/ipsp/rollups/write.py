"""The stream job's writer of the serving documents (contracts v1.1, see :mod:`ipsp.rollups`).

Called once per micro-batch, after the batch's windows and progress are stored:
the camera-hour documents of the windows the batch wrote, the
camera-day and camera documents above them, the pipeline-hour entry of the
batch and the serving state. Each document is read, changed where the batch
touched it, and written back whole under its ``_id``: a batch that runs again
after a crash writes the same values again.

Reads are ``_id`` equality lookups only (the one query FerretDB 1.x answers from
an index). The documents this writer wrote are kept in memory, so a running job
reads each document from the store once; the job is the only writer of its
database's serving documents (like its windows).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from ipsp import mongo, rollups
from ipsp.contracts import utc_now
from ipsp.mongo import with_retries


class DocumentStore(Protocol):
    """What the writer needs from the job's Mongo sink (``ipsp.streaming.sinks.MongoSink``)."""

    db: Any
    retry_seconds: float

    def put(self, collection: str, documents: Sequence[Mapping[str, Any]]) -> int:
        """Insert or replace each document by ``_id``."""
        ...

    def replace_many(self, collection: str, documents: Sequence[Mapping[str, Any]]) -> None:
        """Replace each document by ``_id`` (one statement each; no insert tried first)."""
        ...


class ServingWriter:
    """Keeps the serving documents of one database in step with the batches written."""

    def __init__(self, store: DocumentStore, window_seconds: int) -> None:
        self.store = store
        self.window_seconds = window_seconds
        self._held: dict[tuple[str, str], dict[str, Any] | None] = {}

    # --- reads by _id, remembered -------------------------------------------------------

    def _get(self, collection: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for doc_id in sorted(set(ids)):
            key = (collection, doc_id)
            if key not in self._held:
                self._held[key] = with_retries(
                    lambda c=collection, i=doc_id: self.store.db[c].find_one({"_id": i}),  # type: ignore[misc]
                    f"lookup of {doc_id} in {collection}",
                    self.store.retry_seconds,
                )
            held = self._held[key]
            if held is not None:
                found[doc_id] = held
        return found

    def _put(self, collection: str, docs: Mapping[str, dict[str, Any]]) -> None:
        keep = {k: v for k, v in docs.items() if not _is_empty(collection, v)}
        gone = sorted(set(docs) - set(keep))
        # a document read or written before is replaced at once; an insert is tried only for the others
        stored = [keep[k] for k in sorted(keep) if self._held.get((collection, k)) is not None]
        fresh = [keep[k] for k in sorted(keep) if self._held.get((collection, k)) is None]
        self.store.replace_many(collection, stored)
        self.store.put(collection, fresh)
        for doc_id in gone:
            with_retries(
                lambda c=collection, i=doc_id: self.store.db[c].delete_one({"_id": i}),  # type: ignore[misc]
                f"delete of {doc_id} in {collection}",
                self.store.retry_seconds,
            )
        for doc_id, doc in docs.items():
            self._held[(collection, doc_id)] = None if doc_id in gone else doc

    # --- one batch -----------------------------------------------------------------------------

    def write_batch(
        self,
        windows: Sequence[Mapping[str, Any]],
        progress: Mapping[str, Any] | None,
        letters: Sequence[Mapping[str, Any]] = (),
        now: datetime | None = None,
    ) -> dict[str, int]:
        """Fold one batch's window documents, progress and dead letters into the serving documents.

        ``windows`` are ``traffic_windows`` documents (``to_document()``),
        ``progress`` the batch's ``pipeline_progress`` document, ``letters`` its
        ``dead_letters`` documents (counted per stage, the newest listed). Returns
        how many documents of each collection were written.
        """
        now = now or utc_now()
        hour_ids = {rollups.camera_hour_id(w["camera_id"], w["window_start"]) for w in windows}
        hours = rollups.fold_hours(self._get(mongo.CAMERA_HOURS, hour_ids), windows, self.window_seconds, now)
        day_ids = {rollups.camera_day_id(h["camera_id"], h["hour_start"]) for h in hours.values()}
        days = rollups.fold_days(self._get(mongo.CAMERA_DAYS, day_ids), hours.values(), now)
        camera_ids = {h["camera_id"] for h in hours.values()}
        cameras = rollups.fold_cameras(self._get(mongo.CAMERAS, camera_ids), days.values(), hours.values(), now)
        written = {mongo.CAMERA_HOURS: len(hours), mongo.CAMERA_DAYS: len(days), mongo.CAMERAS: len(cameras)}
        self._put(mongo.CAMERA_HOURS, hours)
        self._put(mongo.CAMERA_DAYS, days)
        self._put(mongo.CAMERAS, cameras)
        if progress is not None:
            figures = rollups.batch_figures(progress, Counter(str(letter["stage"]) for letter in letters), letters)
            # the hour before too: a replayed batch may finish an hour after its first run
            finished = figures["finished_at"]
            near = {rollups.hour_key(finished), rollups.hour_key(finished - rollups.HOUR)}
            pipeline = rollups.fold_pipeline(
                self._get(mongo.PIPELINE_HOURS, near), [(str(progress["_id"]), figures)], now
            )
            self._put(mongo.PIPELINE_HOURS, pipeline)
            written[mongo.PIPELINE_HOURS] = len(pipeline)
            stored = self._get(mongo.STATE, [rollups.STATE_ID]).get(rollups.STATE_ID)
            active = [h["hour_start"] for h in hours.values() if h["windows"]]
            touched = [h["hour_start"] for h in hours.values()]
            state = rollups.state_document(stored, progress, active, now, touched)
            self._put(mongo.STATE, {rollups.STATE_ID: state})
            written[mongo.STATE] = 1
        return written


def _is_empty(collection: str, doc: Mapping[str, Any]) -> bool:
    if collection == mongo.CAMERA_HOURS:
        return not doc["windows"]
    if collection == mongo.CAMERA_DAYS:
        return not doc["hours"]
    if collection == mongo.PIPELINE_HOURS:
        return not doc["batches"]
    return False


def write_serving(
    sink: DocumentStore,
    window_seconds: int,
    windows: Sequence[Any],
    progress: Any,
    letters: Sequence[Mapping[str, Any]],
) -> dict[str, int]:
    """The stream job's one call per batch: the writer kept on its Mongo ``sink``, fed contract models.

    ``letters``: the batch's dead letters as ``dead_letters`` documents (the raw value may be left out).
    """
    writer = getattr(sink, "serving_writer", None)
    if writer is None or writer.window_seconds != window_seconds:
        writer = ServingWriter(sink, window_seconds)
        sink.serving_writer = writer  # type: ignore[attr-defined]
    return writer.write_batch([w.to_document() for w in windows], progress.to_document(), letters)
