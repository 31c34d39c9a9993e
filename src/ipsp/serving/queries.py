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
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.database import Database

from ipsp import rollups
from ipsp.contracts import DEAD_LETTER_STAGES, OTHER_CLASSES, VEHICLE_CLASSES, event_id
from ipsp.mongo import RESULTS
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

CLASSES: tuple[str, ...] = (*VEHICLE_CLASSES, *OTHER_CLASSES)
#: most frames one page may hold
MAX_PAGE_SIZE = 1000
#: most windows one request may return (20 cameras x 2 days of 1-minute windows fits)
MAX_WINDOW_ROWS = 60_000
#: most time buckets per camera in one heatmap
MAX_BUCKETS = 2_000
#: most batches / dead letters one request may return
MAX_LIST_ROWS = 5_000


class UnknownCamera(LookupError):
    """A camera id that has no frames in the database."""


# --- cameras -------------------------------------------------------------------------


def camera_status(window: Mapping[str, Any], frames: int) -> CameraStatus:
    """A camera's status row: the row of its latest window document, but ``frames`` over all its windows."""
    return CameraStatus(**{**dict(window_row(window)), "frames": frames})


# --- frames and windows --------------------------------------------------------------


def frames_page(
    db: Database[dict[str, Any]],
    camera: str,
    span: TimeRange,
    limit: int,
    after: str | None = None,
    descending: bool = False,
    include_detections: bool = False,
) -> tuple[list[FrameRow], bool]:
    """One page of a camera's frames in the range, keyed by (event time, ``_id``), and whether more follow.

    ``after`` is the previous page's :func:`page_key` of its last row: the page
    continues strictly past it, so no row is skipped or repeated and no offset
    is scanned (on MongoDB the ``camera_id, event_time`` index serves it).
    """
    query: dict[str, Any] = {"camera_id": camera, "event_time": {"$gte": span.start, "$lt": span.end}}
    if after is not None:
        moment, last_id = parse_page_key(after)
        past = "$lt" if descending else "$gt"
        query["$or"] = [{"event_time": {past: moment}}, {"event_time": moment, "_id": {past: last_id}}]
    direction = DESCENDING if descending else ASCENDING
    projection = None if include_detections else {"detections": 0}
    cursor = (
        db[RESULTS]
        .find(query, projection=projection)
        .sort([("event_time", direction), ("_id", direction)])
        .limit(limit + 1)  # one extra row tells whether a next page exists
    )
    docs = list(cursor)
    return [frame_row(doc, include_detections) for doc in docs[:limit]], len(docs) > limit


def page_key(row: FrameRow) -> str:
    """The ``after`` value that continues past ``row``: ``<epoch ms>,<_id>`` (``_id`` is the event's, v1.1)."""
    return f"{int(row.time.timestamp() * 1000)},{event_id(row.camera_id, row.time)}"


def parse_page_key(value: str) -> tuple[datetime, str]:
    """``(event_time, _id)`` of an ``after`` value; BadParameter when it is not one."""
    moment, sep, last_id = value.partition(",")
    if not sep or not moment.isdigit() or not last_id:
        raise BadParameter(f"after={value!r} is not a page key (use the X-Next-After header of the previous page)")
    return datetime.fromtimestamp(int(moment) / 1000, tz=UTC), last_id


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


def window_row(doc: Mapping[str, Any]) -> WindowRow:
    """Flatten a ``traffic_windows`` document into a response row."""
    counts = flat_counts(doc.get("counts"))
    frames = int(doc["frames"])
    # built without validation: the fields come from documents the pipeline validated when it wrote
    # them, and a 6-hour dashboard answers thousands of rows
    values: dict[str, Any] = {
        "time": doc["window_start"],
        "window_end": doc["window_end"],
        "camera_id": doc["camera_id"],
        "frames": frames,
        "vehicles_per_frame": round(counts["total"] / frames, 3) if frames else 0.0,
        "density_mean": float(doc["density_mean"]),
        "density_max": float(doc["density_max"]),
        "traffic_status": doc["traffic_status"],
        **counts,
    }
    return WindowRow.model_construct(**values)


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


#: heat accumulators by (bucket start, camera): frame-weighted density sum, max density, frames
HeatSums = dict[tuple[datetime, str], list[float]]


def heat_sums(docs: Iterable[Mapping[str, Any]], bucket: timedelta) -> HeatSums:
    """Window rows accumulated into camera x bucket cells (mergeable: see :func:`add_heat`)."""
    cells: HeatSums = {}
    for doc in docs:
        key = (bucket_start(doc["window_start"], bucket), doc["camera_id"])
        frames = int(doc["frames"])
        acc = cells.setdefault(key, [0.0, 0.0, 0.0])
        acc[0] += float(doc["density_mean"]) * frames
        acc[1] = max(acc[1], float(doc["density_max"]))
        acc[2] += frames
    return cells


def add_heat(parts: Iterable[HeatSums]) -> HeatSums:
    """Heat accumulators of several parts of a range (hours) as one (a bucket may span parts)."""
    out: HeatSums = {}
    for part in parts:
        for key, (weighted, peak, frames) in part.items():
            acc = out.setdefault(key, [0.0, 0.0, 0.0])
            acc[0] += weighted
            acc[1] = max(acc[1], peak)
            acc[2] += frames
    return out


def heat_cells(docs: Iterable[Mapping[str, Any]], bucket: timedelta) -> list[HeatCell]:
    """Aggregate windows into camera x bucket cells: frame-weighted mean density and max density."""
    return heat_cells_of(heat_sums(docs, bucket))


def heat_cells_of(cells: HeatSums) -> list[HeatCell]:
    """The heatmap rows of accumulated cells, in time then camera order."""
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


def merge_windows(rows: Iterable[Mapping[str, Any]], bucket: timedelta) -> list[dict[str, Any]]:
    """Window rows merged per camera and epoch-aligned bucket (``rollups.summarize``: sums, weighted mean, status)."""
    groups: dict[tuple[datetime, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((bucket_start(row["window_start"], bucket), row["camera_id"]), []).append(row)
    merged: list[dict[str, Any]] = []
    for (start, camera), members in sorted(groups.items()):
        figures = rollups.summarize(members)
        if figures is not None:
            merged.append({**figures, "camera_id": camera, "window_start": start, "window_end": start + bucket})
    return merged


# --- class mix ---------------------------------------------------------------------------
# FerretDB 1.24 sums field paths in $group wrongly (always 0 for dotted paths such as
# "$counts.car", and 0 for any field once a {"$sum": 1} sits in the same $group), so
# sums are taken in Python over a projection; windows are few (one per camera-minute).


#: per camera: objects per class, ``total`` and ``frames`` summed over window rows
CameraSums = dict[str, dict[str, int]]


def sum_counts(docs: Iterable[Mapping[str, Any]]) -> CameraSums:
    """Objects per class (and frames) per camera, summed over window rows (mergeable: :func:`add_sums`)."""
    per_camera: CameraSums = {}
    for doc in docs:
        acc = per_camera.setdefault(str(doc["camera_id"]), dict.fromkeys((*CLASSES, "total", "frames"), 0))
        for name, value in flat_counts(doc.get("counts")).items():
            acc[name] += value
        acc["frames"] += int(doc.get("frames", 0) or 0)
    return per_camera


def add_sums(parts: Iterable[CameraSums]) -> CameraSums:
    """Per-camera sums of several parts of a range (hours) as one."""
    out: CameraSums = {}
    for part in parts:
        for camera, sums in part.items():
            acc = out.setdefault(camera, dict.fromkeys(sums, 0))
            for name, value in sums.items():
                acc[name] += value
    return out


def class_mix_of(docs: Iterable[Mapping[str, Any]]) -> list[ClassShare]:
    """Objects per class summed over window documents, with each class's share."""
    return class_mix_from(sum_counts(docs))


def class_mix_from(per_camera: CameraSums) -> list[ClassShare]:
    """Objects per class over every camera's sums, with each class's share."""
    totals: dict[str, int] = dict.fromkeys(CLASSES, 0)
    for acc in per_camera.values():
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


def class_mix_by_camera_of(docs: Iterable[Mapping[str, Any]]) -> list[CameraClassMix]:
    """Objects per class for each camera, summed over window documents."""
    return class_mix_by_camera_from(sum_counts(docs))


def class_mix_by_camera_from(per_camera: CameraSums) -> list[CameraClassMix]:
    """One row per camera of its summed objects per class."""
    return [CameraClassMix(camera_id=camera, **acc) for camera, acc in sorted(per_camera.items())]


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


def latest_dead_letters(
    batches: list[dict[str, Any]], span: TimeRange, limit: int, stages: list[str] | None = None
) -> list[DeadLetterRow]:
    """The latest dead letters created in the range, newest first, as the batch entries list them.

    Each batch entry lists its newest ``rollups.LETTERS_PER_BATCH`` dead letters (its
    counts stay exact), so this reads the pipeline hours, never ``dead_letters``.
    """
    letters = rollups.letters_of_batches(batches, span.start, span.end, stages or ())
    return [dead_letter_row(letter) for letter in letters[:limit]]


def dead_letter_row(letter: Mapping[str, Any]) -> DeadLetterRow:
    """A listed dead letter as a response row (Kafka coordinates from its ``<topic>:<partition>:<offset>`` id)."""
    topic, partition, offset = _coordinates(str(letter["id"]))
    return DeadLetterRow(
        time=letter["time"],
        id=str(letter["id"]),
        stage=letter["stage"],
        reason=letter["reason"],
        record_key=letter.get("record_key"),
        camera_id=letter.get("camera_id"),
        topic=topic,
        partition=partition,
        offset=offset,
    )


def _coordinates(letter_id: str) -> tuple[str, int, int]:
    topic, _, rest = letter_id.partition(":")
    partition, _, offset = rest.partition(":")
    try:
        return topic, int(partition), int(offset)
    except ValueError:
        return letter_id, 0, 0


# --- summary -------------------------------------------------------------------------


def health_of(batches: list[dict[str, Any]]) -> PipelineHealth:
    """The health row from the batch entries of the pipeline-hour documents in the range."""
    sums = {name: sum(int(b[name]) for b in batches) for name in ("rows", "results", "dead_letters")}
    sums["batches"] = len(batches)
    first = min(batches, key=lambda b: b["started_at"], default=None)
    last = max(batches, key=lambda b: (b["finished_at"], b["batch_id"]), default=None)
    timed = [b for b in batches if b.get("latency")]
    worst = max(timed, key=lambda b: b["latency"]["p95_ms"], default=None)
    stored = sum(sum(b.get("dead_letters_by_stage", {}).values()) for b in batches)
    return health_from(sums, first, last, worst, stored)


def stages_of(batches: list[dict[str, Any]]) -> list[StageCount]:
    """Dead letters per stage summed over batch entries; every stage listed, zero included."""
    counted: dict[str, int] = {}
    for batch in batches:
        for stage, count in batch.get("dead_letters_by_stage", {}).items():
            counted[stage] = counted.get(stage, 0) + int(count)
    stages = list(DEAD_LETTER_STAGES) + sorted(set(counted) - set(DEAD_LETTER_STAGES))
    return [StageCount(stage=stage, count=counted.get(stage, 0)) for stage in stages]


def camera_status_of(doc: Mapping[str, Any]) -> CameraStatus:
    """A camera's status row from its ``serving_cameras`` document."""
    latest = doc["latest"]
    frames = sum(int(day["frames"]) for day in doc["days"].values())
    return camera_status({**latest, "camera_id": doc["_id"]}, frames)


def summary_of(
    cameras: Mapping[str, Mapping[str, Any]], first_window: datetime | None, batches: int, dead_letters: int
) -> Summary:
    """What the database holds, from the camera documents, the first window and two collection counts."""
    days = [day for doc in cameras.values() for day in doc["days"].values()]
    return Summary(
        frames=sum(int(day["frames"]) for day in days),
        cameras=len(cameras),
        first_window_start=first_window,
        last_window_end=max((doc["latest"]["window_end"] for doc in cameras.values()), default=None),
        windows=sum(int(day["windows"]) for day in days),
        batches=batches,
        dead_letters=dead_letters,
    )
