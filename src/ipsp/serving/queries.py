"""Reads behind the API and the report, plus the pure helpers that shape them.

Every MongoDB call here stays within what both MongoDB and FerretDB 1.x run:
``find`` with filter/sort/projection/skip/limit, ``count_documents`` and
``aggregate`` with ``$group`` counting documents by a key (``{"$sum": 1}``).
Sums of fields, bucketing and weighted means are done in Python (FerretDB 1.24
gets ``$sum`` over field paths wrong), so the tests on the local FerretDB stack
exercise exactly the code production runs on MongoDB.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, MongoClient
from pymongo.database import Database

from ipsp.config import Settings
from ipsp.contracts import DEAD_LETTER_STAGES, OTHER_CLASSES, VEHICLE_CLASSES
from ipsp.serving.models import (
    BatchRow,
    CameraClassMix,
    CameraStatus,
    ClassShare,
    DeadLetterRow,
    FrameRow,
    HeatCell,
    PipelineHealth,
    StageCount,
    Summary,
    WindowRow,
)
from ipsp.serving.params import BadParameter, TimeRange

RESULTS = "analysis_results"
WINDOWS = "traffic_windows"
DEAD_LETTERS = "dead_letters"
PROGRESS = "pipeline_progress"

CLASSES: tuple[str, ...] = (*VEHICLE_CLASSES, *OTHER_CLASSES)
#: most frames one page may hold
MAX_PAGE_SIZE = 1000
#: deepest offset a page may start at (deeper paging should narrow the time range instead)
MAX_OFFSET = 100_000
#: most windows one request may return (20 cameras x 2 days of 1-minute windows fits)
MAX_WINDOW_ROWS = 60_000
#: most time buckets per camera in one heatmap
MAX_BUCKETS = 2_000
#: most batches / dead letters one request may return
MAX_LIST_ROWS = 5_000

#: indexes the serving queries rely on; the writers (streaming sinks, seeders) create them
INDEXES: dict[str, list[list[tuple[str, int]]]] = {
    RESULTS: [[("camera_id", ASCENDING), ("event_time", ASCENDING)], [("event_time", ASCENDING)]],
    WINDOWS: [[("camera_id", ASCENDING), ("window_start", ASCENDING)], [("window_start", ASCENDING)]],
    DEAD_LETTERS: [[("created_at", ASCENDING)]],
    PROGRESS: [[("finished_at", ASCENDING)]],
}


class UnknownCamera(LookupError):
    """A camera id that has no frames in the database."""


def connect(settings: Settings, timeout_ms: int = 2000, query_timeout_ms: int = 30_000) -> MongoClient[dict[str, Any]]:
    """A client that gives up quickly when MongoDB is down, so routes answer 503 instead of hanging.

    ``timeout_ms`` bounds finding and connecting to the server; ``query_timeout_ms``
    bounds waiting for one answer (seeding a large run on FerretDB needs more).
    """
    return MongoClient(
        settings.mongo_uri.get_secret_value(),
        tz_aware=True,
        tzinfo=UTC,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=query_timeout_ms,
        appname="ipsp-serve",
    )


def ensure_indexes(db: Database[dict[str, Any]]) -> None:
    """Create the indexes of :data:`INDEXES` (idempotent); called by writers, never by the API."""
    for collection, specs in INDEXES.items():
        for keys in specs:
            db[collection].create_index(keys)


# --- cameras -------------------------------------------------------------------------


class CameraDirectory:
    """Known cameras and the frames counted in their windows, cached for a few seconds.

    Every route that takes a camera checks it against this list, so it is cached.
    A camera missing from the cache triggers one refresh, and then a look for any
    frame of it (a camera can have frames before its first window is written),
    before it is called unknown.
    """

    def __init__(self, ttl_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._frames: dict[str, int] = {}
        self._loaded_at: float | None = None

    def frames_per_camera(self, db: Database[dict[str, Any]], refresh: bool = False) -> dict[str, int]:
        """Camera id -> frames in its windows, from cache unless stale or ``refresh``."""
        with self._lock:
            stale = self._loaded_at is None or self._clock() - self._loaded_at > self._ttl_s
            if refresh or stale:
                self._frames = count_frames_per_camera(db)
                self._loaded_at = self._clock()
            return dict(self._frames)

    def require(self, db: Database[dict[str, Any]], cameras: list[str]) -> list[str]:
        """The cameras asked for (all known ones when none), or UnknownCamera naming the missing ones."""
        known = self.frames_per_camera(db)
        if not cameras:
            return sorted(known)
        if any(camera not in known for camera in cameras):
            known = self.frames_per_camera(db, refresh=True)
        # only on this rare path: a frame without a window yet still makes a camera known
        missing = [c for c in cameras if c not in known and db[RESULTS].find_one({"camera_id": c}, {"_id": 1}) is None]
        if missing:
            listed = ", ".join(sorted(known)[:25]) or "none yet"
            raise UnknownCamera(f"unknown camera(s): {', '.join(missing)}; known cameras: {listed}")
        return cameras


def count_frames_per_camera(db: Database[dict[str, Any]]) -> dict[str, int]:
    """Frames per camera, summed over ``traffic_windows`` (one small ``$group``).

    The windows collection is small (one document per camera-minute) where
    ``analysis_results`` holds a document per frame; on FerretDB, which scans a
    whole collection for every query, that difference is the difference between
    milliseconds and seconds. The ``$group`` holds a single field-path ``$sum``:
    FerretDB 1.24 gets a field-path sum wrong next to a ``{"$sum": 1}``.
    """
    pipeline = [{"$group": {"_id": "$camera_id", "frames": {"$sum": "$frames"}}}]
    return {str(doc["_id"]): int(doc["frames"]) for doc in db[WINDOWS].aggregate(pipeline) if doc["_id"]}


#: how far before the newest window to look for each camera's latest window in one query
STATUS_LOOKBACK = timedelta(hours=1)


def camera_statuses(db: Database[dict[str, Any]], frames: Mapping[str, int]) -> list[CameraStatus]:
    """Each camera's latest window, from one range query near the newest window.

    Cameras silent for longer than :data:`STATUS_LOOKBACK` fall back to one
    sorted ``find_one`` each (indexed on MongoDB).
    """
    newest = db[WINDOWS].find_one({}, projection={"window_start": 1}, sort=[("window_start", DESCENDING)])
    latest: dict[str, Mapping[str, Any]] = {}
    if newest is not None:
        recent = db[WINDOWS].find(
            {**_camera_filter(sorted(frames)), "window_start": {"$gte": newest["window_start"] - STATUS_LOOKBACK}}
        )
        for doc in recent:
            held = latest.get(doc["camera_id"])
            if held is None or doc["window_start"] > held["window_start"]:
                latest[doc["camera_id"]] = doc
    for camera in sorted(set(frames) - set(latest)):
        found = db[WINDOWS].find_one({"camera_id": camera}, sort=[("window_start", DESCENDING)])
        if found is not None:
            latest[camera] = found
    return [camera_status(latest[camera], frames.get(camera, 0)) for camera in sorted(latest)]


def camera_status(window: Mapping[str, Any], frames: int) -> CameraStatus:
    """A camera's status row from its latest window document."""
    row = window_row(window)
    return CameraStatus(
        camera_id=row.camera_id,
        frames=frames,
        time=row.time,
        window_end=row.window_end,
        traffic_status=row.traffic_status,
        density_mean=row.density_mean,
        density_max=row.density_max,
        vehicles_per_frame=row.vehicles_per_frame,
        **flat_counts(window.get("counts")),
    )


# --- frames and windows --------------------------------------------------------------


def _in_range(field: str, span: TimeRange) -> dict[str, Any]:
    return {field: {"$gte": span.start, "$lt": span.end}}


def _camera_filter(cameras: list[str]) -> dict[str, Any]:
    return {"camera_id": {"$in": cameras}} if cameras else {}


def frames_page(
    db: Database[dict[str, Any]],
    camera: str,
    span: TimeRange,
    limit: int,
    offset: int,
    descending: bool = False,
    include_detections: bool = False,
) -> tuple[list[FrameRow], bool]:
    """One page of a camera's frames in the range, and whether another page follows."""
    direction = DESCENDING if descending else ASCENDING
    projection = None if include_detections else {"detections": 0}
    cursor = (
        db[RESULTS]
        .find({"camera_id": camera, **_in_range("event_time", span)}, projection=projection)
        .sort([("event_time", direction), ("_id", direction)])
        .skip(offset)
        .limit(limit + 1)  # one extra row tells whether a next page exists
    )
    docs = list(cursor)
    return [frame_row(doc, include_detections) for doc in docs[:limit]], len(docs) > limit


def frame_row(doc: Mapping[str, Any], include_detections: bool = False) -> FrameRow:
    """Flatten an ``analysis_results`` document into a response row."""
    model = doc.get("model") or {}
    pipeline = doc.get("pipeline") or {}
    return FrameRow(
        time=doc["event_time"],
        camera_id=doc["camera_id"],
        record_key=str(doc.get("record_key") or doc["_id"]),  # v1.0 documents: _id was the record_key
        frame_index=int(doc["frame_index"]),
        replay_id=doc["replay_id"],
        density_percent=float(doc["density_percent"]),
        traffic_status=doc["traffic_status"],
        model_name=model.get("name", ""),
        model_version=model.get("version", ""),
        batch_id=int(pipeline.get("batch_id", 0)),
        inference_ms=float(pipeline.get("inference_ms", 0.0)),
        latency_ms=float(pipeline.get("latency_ms", 0.0)),
        processed_at=doc["processed_at"],
        detections=doc.get("detections") if include_detections else None,
        **flat_counts(doc.get("counts")),
    )


def window_docs(
    db: Database[dict[str, Any]], cameras: list[str], span: TimeRange, projection: dict[str, int] | None = None
) -> list[dict[str, Any]]:
    """Windows starting in the range, by start then camera; BadParameter past :data:`MAX_WINDOW_ROWS`."""
    cursor = (
        db[WINDOWS]
        .find({**_camera_filter(cameras), **_in_range("window_start", span)}, projection=projection)
        .sort([("window_start", ASCENDING), ("camera_id", ASCENDING)])
        .limit(MAX_WINDOW_ROWS + 1)
    )
    docs = list(cursor)
    if len(docs) > MAX_WINDOW_ROWS:
        raise BadParameter(f"more than {MAX_WINDOW_ROWS} windows in this range; narrow the range or name fewer cameras")
    return docs


def window_row(doc: Mapping[str, Any]) -> WindowRow:
    """Flatten a ``traffic_windows`` document into a response row."""
    counts = flat_counts(doc.get("counts"))
    frames = int(doc["frames"])
    return WindowRow(
        time=doc["window_start"],
        window_end=doc["window_end"],
        camera_id=doc["camera_id"],
        frames=frames,
        vehicles_per_frame=round(counts["total"] / frames, 3) if frames else 0.0,
        density_mean=float(doc["density_mean"]),
        density_max=float(doc["density_max"]),
        traffic_status=doc["traffic_status"],
        **counts,
    )


def windows(db: Database[dict[str, Any]], cameras: list[str], span: TimeRange) -> list[WindowRow]:
    """Windows of the cameras (all when empty) in the range, with counts per class."""
    return [window_row(doc) for doc in window_docs(db, cameras, span)]


class WindowCache:
    """Window documents of one (cameras, range) read, shared for a few seconds.

    The panels of a dashboard load at once with the same cameras and range, and
    four of them (windows, heatmap, class mix, class mix per camera) read the
    same window documents. Sharing one read - concurrent callers wait for the
    first instead of reading again - turns four collection reads into one.
    Entries live ``ttl_s`` seconds (0 disables sharing); at most ``max_entries``
    are kept. Callers must not modify the returned documents.
    """

    def __init__(
        self,
        ttl_s: float,
        max_entries: int = 8,
        clock: Callable[[], float] = time.monotonic,
        loader: Callable[[Database[dict[str, Any]], list[str], TimeRange], list[dict[str, Any]]] | None = None,
    ) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._load = loader or (lambda db, cameras, span: window_docs(db, cameras, span))
        self._lock = threading.Lock()
        self._entries: dict[tuple[Any, ...], _CacheEntry] = {}

    def get(self, db: Database[dict[str, Any]], cameras: list[str], span: TimeRange) -> list[dict[str, Any]]:
        """The window documents of the read, from a fresh shared entry or from MongoDB."""
        if self._ttl_s <= 0:
            return self._load(db, cameras, span)
        key = (tuple(sorted(cameras)), span.start, span.end)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.expired(self._clock(), self._ttl_s):
                entry = self._entries[key] = _CacheEntry()
                while len(self._entries) > self._max_entries:  # dicts keep insertion order: drop the oldest
                    del self._entries[next(iter(self._entries))]
        with entry.lock:  # the first caller reads; concurrent callers with the same key wait for it
            if entry.docs is None:
                entry.docs = self._load(db, cameras, span)
                entry.loaded_at = self._clock()
            return entry.docs


class _CacheEntry:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.docs: list[dict[str, Any]] | None = None
        self.loaded_at = 0.0

    def expired(self, now: float, ttl_s: float) -> bool:
        return self.docs is not None and now - self.loaded_at > ttl_s


def flat_counts(counts: Mapping[str, Any] | None) -> dict[str, int]:
    """The contract's ``counts`` sub-document as flat int fields (missing classes are 0)."""
    counts = counts or {}
    return {name: int(counts.get(name, 0) or 0) for name in (*CLASSES, "total")}


# --- heatmap -------------------------------------------------------------------------


def check_buckets(span: TimeRange, bucket: timedelta) -> int:
    """Number of buckets the range splits into; BadParameter when there would be too many."""
    count = math.ceil(span.span / bucket)
    if count > MAX_BUCKETS:
        smallest = math.ceil(span.span.total_seconds() / MAX_BUCKETS)
        raise BadParameter(
            f"bucket {bucket.total_seconds():g}s splits the range into {count} buckets (at most "
            f"{MAX_BUCKETS}); use a bucket of at least {smallest}s"
        )
    return count


def bucket_start(moment: datetime, bucket: timedelta) -> datetime:
    """Start of the epoch-aligned bucket holding ``moment`` (same alignment Grafana uses)."""
    size_ms = int(bucket.total_seconds() * 1000)
    epoch_ms = int(moment.timestamp() * 1000)
    return datetime.fromtimestamp((epoch_ms - epoch_ms % size_ms) / 1000, tz=UTC)


def heat_cells(docs: Iterable[Mapping[str, Any]], bucket: timedelta) -> list[HeatCell]:
    """Aggregate windows into camera x bucket cells: frame-weighted mean density and max density."""
    cells: dict[tuple[datetime, str], list[float]] = {}
    for doc in docs:
        key = (bucket_start(doc["window_start"], bucket), doc["camera_id"])
        frames = int(doc["frames"])
        acc = cells.setdefault(key, [0.0, 0.0, 0.0])  # weighted sum, max, frames
        acc[0] += float(doc["density_mean"]) * frames
        acc[1] = max(acc[1], float(doc["density_max"]))
        acc[2] += frames
    return [
        HeatCell(
            time=start,
            camera_id=camera,
            density_mean=round(acc[0] / acc[2], 3) if acc[2] else 0.0,
            density_max=acc[1],
            frames=int(acc[2]),
        )
        for (start, camera), acc in sorted(cells.items())
    ]


def heatmap(db: Database[dict[str, Any]], cameras: list[str], span: TimeRange, bucket: timedelta) -> list[HeatCell]:
    """Density heatmap (camera x time bucket) over the range, from the windows."""
    check_buckets(span, bucket)
    projection = {"camera_id": 1, "window_start": 1, "frames": 1, "density_mean": 1, "density_max": 1}
    return heat_cells(window_docs(db, cameras, span, projection), bucket)


# --- class mix ---------------------------------------------------------------------------
# FerretDB 1.24 sums field paths in $group wrongly (always 0 for dotted paths such as
# "$counts.car", and 0 for any field once a {"$sum": 1} sits in the same $group), so
# sums are taken in Python over a projection; windows are few (one per camera-minute).

_MIX_PROJECTION = {"camera_id": 1, "frames": 1, "counts": 1}


def _sum_counts(docs: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    per_camera: dict[str, dict[str, int]] = {}
    for doc in docs:
        acc = per_camera.setdefault(str(doc["camera_id"]), dict.fromkeys((*CLASSES, "total", "frames"), 0))
        for name, value in flat_counts(doc.get("counts")).items():
            acc[name] += value
        acc["frames"] += int(doc.get("frames", 0) or 0)
    return per_camera


def class_mix(db: Database[dict[str, Any]], cameras: list[str], span: TimeRange) -> list[ClassShare]:
    """Objects per class over the range (summed windows), with each class's share."""
    return class_mix_of(window_docs(db, cameras, span, _MIX_PROJECTION))


def class_mix_of(docs: Iterable[Mapping[str, Any]]) -> list[ClassShare]:
    """Objects per class summed over window documents, with each class's share."""
    totals: dict[str, int] = dict.fromkeys(CLASSES, 0)
    for acc in _sum_counts(docs).values():
        for name in CLASSES:
            totals[name] += acc[name]
    return class_shares(totals)


def class_shares(sums: Mapping[str, Any]) -> list[ClassShare]:
    """One row per class (always all classes, so a chart keeps its legend) with percent shares."""
    counts = {name: int(sums.get(name, 0) or 0) for name in CLASSES}
    everything = sum(counts.values())
    return [
        ClassShare(
            class_name=name,
            count=count,
            share_percent=round(100.0 * count / everything, 2) if everything else 0.0,
        )
        for name, count in counts.items()
    ]


def class_mix_by_camera(db: Database[dict[str, Any]], cameras: list[str], span: TimeRange) -> list[CameraClassMix]:
    """Objects per class for each camera over the range."""
    return class_mix_by_camera_of(window_docs(db, cameras, span, _MIX_PROJECTION))


def class_mix_by_camera_of(docs: Iterable[Mapping[str, Any]]) -> list[CameraClassMix]:
    """Objects per class for each camera, summed over window documents."""
    return [CameraClassMix(camera_id=camera, **acc) for camera, acc in sorted(_sum_counts(docs).items())]


# --- pipeline health -----------------------------------------------------------------


def batch_row(doc: Mapping[str, Any]) -> BatchRow:
    """Flatten a ``pipeline_progress`` document into a response row."""
    latency = doc.get("latency") or {}
    started, finished = doc["started_at"], doc["finished_at"]
    return BatchRow(
        time=finished,
        started_at=started,
        query=doc["query"],
        batch_id=int(doc["batch_id"]),
        rows=int(doc["rows"]),
        results=int(doc["results"]),
        dead_letters=int(doc["dead_letters"]),
        input_rows_per_s=float(doc["input_rows_per_s"]),
        processed_rows_per_s=float(doc["processed_rows_per_s"]),
        duration_ms=round((finished - started).total_seconds() * 1000.0, 3),
        latency_p50_ms=latency.get("p50_ms"),
        latency_p95_ms=latency.get("p95_ms"),
        latency_max_ms=latency.get("max_ms"),
    )


def batches(db: Database[dict[str, Any]], span: TimeRange, limit: int) -> list[BatchRow]:
    """The latest ``limit`` micro-batches that finished in the range, oldest first."""
    cursor = (
        db[PROGRESS]
        .find(_in_range("finished_at", span), projection={"durations_ms": 0})
        .sort([("finished_at", DESCENDING), ("batch_id", DESCENDING)])
        .limit(limit)
    )
    return [batch_row(doc) for doc in reversed(list(cursor))]


def pipeline_health(db: Database[dict[str, Any]], span: TimeRange) -> PipelineHealth:
    """Totals, rates, latency and dead-letter counts of the streaming job over the range."""
    match = _in_range("finished_at", span)
    # summed in Python (see the FerretDB note above); one small projection per batch
    fields = {"rows": 1, "results": 1, "dead_letters": 1}
    sums = dict.fromkeys(("batches", *fields), 0)
    for doc in db[PROGRESS].find(match, projection=fields):
        sums["batches"] += 1
        for name in fields:
            sums[name] += int(doc.get(name, 0) or 0)
    first = db[PROGRESS].find_one(match, sort=[("started_at", ASCENDING)])
    last = db[PROGRESS].find_one(match, sort=[("finished_at", DESCENDING), ("batch_id", DESCENDING)])
    worst = db[PROGRESS].find_one({**match, "latency.p95_ms": {"$exists": True}}, sort=[("latency.p95_ms", DESCENDING)])
    stored = db[DEAD_LETTERS].count_documents(_in_range("created_at", span))
    return health_from(sums, first, last, worst, stored)


def health_from(
    sums: Mapping[str, Any],
    first: Mapping[str, Any] | None,
    last: Mapping[str, Any] | None,
    worst: Mapping[str, Any] | None,
    dead_letters_stored: int,
) -> PipelineHealth:
    """Assemble the health row from the query results (pure, so it is unit-tested)."""
    results = int(sums.get("results", 0) or 0)
    throughput = 0.0
    if first is not None and last is not None:
        seconds = (last["finished_at"] - first["started_at"]).total_seconds()
        throughput = round(results / seconds, 3) if seconds > 0 else 0.0
    last_latency = (last or {}).get("latency") or {}
    worst_latency = (worst or {}).get("latency") or {}
    return PipelineHealth(
        batches=int(sums.get("batches", 0) or 0),
        rows=int(sums.get("rows", 0) or 0),
        results=results,
        dead_letters=int(sums.get("dead_letters", 0) or 0),
        dead_letters_stored=dead_letters_stored,
        first_started_at=first["started_at"] if first else None,
        last_finished_at=last["finished_at"] if last else None,
        last_batch_id=int(last["batch_id"]) if last else None,
        throughput_rows_per_s=throughput,
        last_input_rows_per_s=float(last["input_rows_per_s"]) if last else None,
        last_processed_rows_per_s=float(last["processed_rows_per_s"]) if last else None,
        last_latency_p50_ms=last_latency.get("p50_ms"),
        last_latency_p95_ms=last_latency.get("p95_ms"),
        worst_latency_p95_ms=worst_latency.get("p95_ms"),
    )


# --- dead letters --------------------------------------------------------------------


def dead_letters(
    db: Database[dict[str, Any]], span: TimeRange, limit: int, stages: list[str] | None = None
) -> list[DeadLetterRow]:
    """The latest dead letters created in the range, newest first (raw values left out)."""
    query: dict[str, Any] = _in_range("created_at", span)
    if stages:
        query["stage"] = {"$in": stages}
    cursor = (
        db[DEAD_LETTERS]
        .find(query, projection={"raw": 0})
        .sort([("created_at", DESCENDING), ("_id", DESCENDING)])
        .limit(limit)
    )
    return [dead_letter_row(doc) for doc in cursor]


def dead_letter_row(doc: Mapping[str, Any]) -> DeadLetterRow:
    """Flatten a ``dead_letters`` document into a response row."""
    kafka = doc.get("kafka") or {}
    return DeadLetterRow(
        time=doc["created_at"],
        id=str(doc["_id"]),
        stage=doc["stage"],
        reason=doc["reason"],
        record_key=doc.get("record_key"),
        camera_id=doc.get("camera_id"),
        topic=kafka.get("topic", ""),
        partition=int(kafka.get("partition", 0)),
        offset=int(kafka.get("offset", 0)),
    )


def dead_letters_by_stage(db: Database[dict[str, Any]], span: TimeRange) -> list[StageCount]:
    """Dead letters per stage over the range; every stage listed, zero included."""
    pipeline = [
        {"$match": _in_range("created_at", span)},
        {"$group": {"_id": "$stage", "count": {"$sum": 1}}},
    ]
    counted = {str(doc["_id"]): int(doc["count"]) for doc in db[DEAD_LETTERS].aggregate(pipeline)}
    stages = list(DEAD_LETTER_STAGES) + sorted(set(counted) - set(DEAD_LETTER_STAGES))
    return [StageCount(stage=stage, count=counted.get(stage, 0)) for stage in stages]


# --- summary -------------------------------------------------------------------------


def summary(db: Database[dict[str, Any]], frames: Mapping[str, int]) -> Summary:
    """What the database holds: frames and cameras (from the windows), extent, other collections."""
    first = db[WINDOWS].find_one({}, projection={"window_start": 1}, sort=[("window_start", ASCENDING)])
    last = db[WINDOWS].find_one({}, projection={"window_end": 1}, sort=[("window_end", DESCENDING)])
    return Summary(
        frames=sum(frames.values()),
        cameras=len(frames),
        first_window_start=first["window_start"] if first else None,
        last_window_end=last["window_end"] if last else None,
        windows=db[WINDOWS].count_documents({}),
        batches=db[PROGRESS].count_documents({}),
        dead_letters=db[DEAD_LETTERS].count_documents({}),
    )
