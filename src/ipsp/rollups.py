"""Serving documents (contracts v1.1): their shapes, their ``_id`` values, and how windows fold into them.

FerretDB 1.x answers only ``_id`` equality from an index; any range filter, sort
or limit reads the whole collection. So everything a dashboard panel reads is
kept, by the stream job, in a few documents whose ``_id`` follows from the time
range asked for:

- ``serving_camera_hours``: one document per camera and UTC hour holding that
  hour's windows (``_id`` = ``<camera_id>|YYYY-MM-DDTHH``);
- ``serving_camera_days``: one per camera and UTC day holding a summary per hour
  (``_id`` = ``<camera_id>|YYYY-MM-DD``), read for long ranges;
- ``serving_cameras``: one per camera, its latest window and frames per day;
- ``serving_pipeline_hours``: one per UTC hour of batch finish time, one entry
  per micro-batch (``_id`` = ``YYYY-MM-DDTHH``);
- ``serving_state``: one document (``_id`` = ``state``), the latest batch.

Every document is written whole under its ``_id`` (read, change the entries the
batch touched, write back): a replayed batch writes the same values again, never
adds them twice. This module is pure (no I/O): the stream job's writer, the
``ipsp rollups rebuild`` command and the API all use it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import Field

from ipsp.contracts import (
    OTHER_CLASSES,
    TRAFFIC_STATUSES,
    VEHICLE_CLASSES,
    Contract,
    Counts,
    LatencyStats,
    TrafficStatus,
    UtcDatetime,
)

SERVING_VERSION: Literal["1.1"] = "1.1"

#: ``_id`` of the one ``serving_state`` document (collection names: :mod:`ipsp.mongo`)
STATE_ID = "state"

CLASS_NAMES: tuple[str, ...] = (*VEHICLE_CLASSES, *OTHER_CLASSES)
#: dead letters listed in a batch entry, newest first (its counts stay exact): the "latest dead
#: letters" panel reads them from the pipeline hours instead of range-scanning ``dead_letters``
LETTERS_PER_BATCH = 20
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


# --- document shapes ---------------------------------------------------------------------


class WindowFigures(Contract):
    """One window inside a camera-hour document (key: ``MM:SS`` of its start within the hour)."""

    frames: int = Field(ge=1)
    counts: Counts
    density_mean: float = Field(ge=0.0, le=100.0)
    density_max: float = Field(ge=0.0, le=100.0)
    traffic_status: TrafficStatus


class CameraHour(Contract):
    """``serving_camera_hours``: a camera's windows in one UTC hour."""

    id: str = Field(alias="_id", description="<camera_id>|YYYY-MM-DDTHH")
    camera_id: str
    hour_start: UtcDatetime
    window_seconds: int = Field(ge=1)
    windows: dict[str, WindowFigures]
    updated_at: UtcDatetime
    schema_version: Literal["1.1"] = SERVING_VERSION


class HourFigures(Contract):
    """One hour inside a camera-day document (key: ``HH``): its windows summed."""

    frames: int = Field(ge=1)
    windows: int = Field(ge=1)
    counts: Counts
    density_mean: float = Field(ge=0.0, le=100.0, description="frame-weighted mean of the windows' means")
    density_max: float = Field(ge=0.0, le=100.0)
    traffic_status: TrafficStatus = Field(description="the status most of the hour's windows had")


class CameraDay(Contract):
    """``serving_camera_days``: a camera's hours in one UTC day."""

    id: str = Field(alias="_id", description="<camera_id>|YYYY-MM-DD")
    camera_id: str
    day_start: UtcDatetime
    hours: dict[str, HourFigures]
    updated_at: UtcDatetime
    schema_version: Literal["1.1"] = SERVING_VERSION


class LatestWindow(WindowFigures):
    """A camera's newest window, with its bounds."""

    window_start: UtcDatetime
    window_end: UtcDatetime


class DayTotals(Contract):
    """Frames and windows of one camera-day (kept when the frames under them are pruned)."""

    frames: int = Field(ge=0)
    windows: int = Field(ge=0)


class CameraServing(Contract):
    """``serving_cameras``: a camera's latest window and its totals per UTC day."""

    id: str = Field(alias="_id", description="the camera id")
    latest: LatestWindow
    days: dict[str, DayTotals]
    updated_at: UtcDatetime
    schema_version: Literal["1.1"] = SERVING_VERSION


class LetterFigures(Contract):
    """One dead letter as a batch entry lists it (the ``dead_letters`` document less its raw value)."""

    id: str = Field(description="the dead letter's _id: <topic>:<partition>:<offset>")
    time: UtcDatetime = Field(description="its created_at")
    stage: str
    reason: str
    record_key: str | None = None
    camera_id: str | None = None


class BatchFigures(Contract):
    """One micro-batch inside a pipeline-hour document (key: its progress ``_id``)."""

    query: str
    batch_id: int = Field(ge=0)
    rows: int = Field(ge=0)
    results: int = Field(ge=0)
    dead_letters: int = Field(ge=0)
    dead_letters_by_stage: dict[str, int]
    input_rows_per_s: float = Field(ge=0.0)
    processed_rows_per_s: float = Field(ge=0.0)
    latency: LatencyStats | None = None
    started_at: UtcDatetime
    finished_at: UtcDatetime
    latest_dead_letters: list[LetterFigures] = Field(
        default_factory=list, description=f"the batch's newest {LETTERS_PER_BATCH} dead letters, newest first"
    )


class PipelineHour(Contract):
    """``serving_pipeline_hours``: the micro-batches that finished in one UTC hour."""

    id: str = Field(alias="_id", description="YYYY-MM-DDTHH")
    hour_start: UtcDatetime
    batches: dict[str, BatchFigures]
    updated_at: UtcDatetime
    schema_version: Literal["1.1"] = SERVING_VERSION


class ServingState(Contract):
    """``serving_state``: the one document saying which batch the serving documents reflect."""

    id: Literal["state"] = Field(alias="_id")
    last_batch: str = Field(description="progress _id of the latest batch written")
    batch_id: int = Field(ge=0)
    first_hour: UtcDatetime | None = Field(None, description="earliest camera-hour with windows")
    last_hour: UtcDatetime | None = Field(None, description="latest camera-hour with windows")
    first_batch_at: UtcDatetime = Field(description="start of the earliest batch written (the pipeline's extent)")
    last_batch_at: UtcDatetime = Field(description="finish of the latest batch written")
    touched_hours: list[str] = Field(
        default_factory=list,
        description="YYYY-MM-DDTHH of the camera-hours the latest batch wrote (readers keep the rest)",
    )
    written_at: UtcDatetime
    schema_version: Literal["1.1"] = SERVING_VERSION


# --- ids ---------------------------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def hour_floor(moment: datetime) -> datetime:
    """Start of the UTC hour holding ``moment``."""
    return _utc(moment).replace(minute=0, second=0, microsecond=0)


def day_floor(moment: datetime) -> datetime:
    """Start of the UTC day holding ``moment``."""
    return _utc(moment).replace(hour=0, minute=0, second=0, microsecond=0)


def hour_key(moment: datetime) -> str:
    """``YYYY-MM-DDTHH`` of the UTC hour holding ``moment``."""
    return _utc(moment).strftime("%Y-%m-%dT%H")


def day_key(moment: datetime) -> str:
    """``YYYY-MM-DD`` of the UTC day holding ``moment``."""
    return _utc(moment).strftime("%Y-%m-%d")


def camera_hour_id(camera_id: str, moment: datetime) -> str:
    """``_id`` of the camera-hour document holding ``moment``."""
    return f"{camera_id}|{hour_key(moment)}"


def camera_day_id(camera_id: str, moment: datetime) -> str:
    """``_id`` of the camera-day document holding ``moment``."""
    return f"{camera_id}|{day_key(moment)}"


def slot_key(window_start: datetime) -> str:
    """Key of a window inside its hour: ``MM:SS`` of its start."""
    return _utc(window_start).strftime("%M:%S")


def slot_start(hour_start: datetime, key: str) -> datetime:
    """The window start a ``MM:SS`` key stands for inside its hour."""
    minutes, seconds = key.split(":")
    return _utc(hour_start) + timedelta(minutes=int(minutes), seconds=int(seconds))


def hours_between(start: datetime, end: datetime) -> list[datetime]:
    """Starts of the UTC hours that overlap ``[start, end)``."""
    hours: list[datetime] = []
    cursor = hour_floor(start)
    while cursor < end:
        hours.append(cursor)
        cursor += HOUR
    return hours


def days_between(start: datetime, end: datetime) -> list[datetime]:
    """Starts of the UTC days that overlap ``[start, end)``."""
    days: list[datetime] = []
    cursor = day_floor(start)
    while cursor < end:
        days.append(cursor)
        cursor += DAY
    return days


def camera_hour_ids(cameras: Iterable[str], start: datetime, end: datetime) -> list[str]:
    """Every camera-hour ``_id`` that may hold a window starting in ``[start, end)``."""
    hours = hours_between(start, end)
    return [camera_hour_id(camera, hour) for camera in sorted(cameras) for hour in hours]


def camera_day_ids(cameras: Iterable[str], start: datetime, end: datetime) -> list[str]:
    """Every camera-day ``_id`` that may hold an hour starting in ``[start, end)``."""
    days = days_between(start, end)
    return [camera_day_id(camera, day) for camera in sorted(cameras) for day in days]


def pipeline_hour_ids(start: datetime, end: datetime) -> list[str]:
    """Every pipeline-hour ``_id`` that may hold a batch finishing in ``[start, end)``."""
    return [hour_key(hour) for hour in hours_between(start, end)]


# --- folding windows into hours, hours into days, days into cameras -------------------------


def window_figures(window: Mapping[str, Any]) -> dict[str, Any]:
    """The entry a ``traffic_windows`` document becomes inside its camera-hour."""
    return {
        "frames": int(window["frames"]),
        "counts": counts_dict(window.get("counts")),
        "density_mean": float(window["density_mean"]),
        "density_max": float(window["density_max"]),
        "traffic_status": window["traffic_status"],
    }


def counts_dict(counts: Mapping[str, Any] | None) -> dict[str, int]:
    """The contract's counts as a plain dict with every class and ``total``."""
    counts = counts or {}
    plain = {name: int(counts.get(name, 0) or 0) for name in CLASS_NAMES}
    plain["total"] = sum(plain[name] for name in VEHICLE_CLASSES)
    return plain


def fold_hours(
    existing: Mapping[str, Mapping[str, Any]],
    windows: Iterable[Mapping[str, Any]],
    window_seconds: int,
    now: datetime,
) -> dict[str, dict[str, Any]]:
    """Camera-hour documents after writing ``windows`` (a window's entry is replaced whole).

    ``existing`` maps ``_id`` to the stored documents (those missing start empty).
    Returns every touched document by ``_id``.
    """
    out: dict[str, dict[str, Any]] = {}

    def doc_for(camera_id: str, start: datetime) -> dict[str, Any]:
        key = camera_hour_id(camera_id, start)
        if key not in out:
            stored = existing.get(key)
            out[key] = {
                "_id": key,
                "camera_id": camera_id,
                "hour_start": hour_floor(start),
                "window_seconds": window_seconds,
                "windows": dict(stored["windows"]) if stored else {},
                "updated_at": now,
                "schema_version": SERVING_VERSION,
            }
        return out[key]

    for window in windows:
        doc = doc_for(window["camera_id"], window["window_start"])
        doc["windows"][slot_key(window["window_start"])] = window_figures(window)
    for doc in out.values():
        doc["windows"] = dict(sorted(doc["windows"].items()))
    return out


def majority_status(statuses: Iterable[str]) -> str:
    """The most frequent status; a tie goes to the more congested one."""
    tally = Counter(statuses)
    if not tally:
        return TRAFFIC_STATUSES[0]
    return max(tally, key=lambda s: (tally[s], TRAFFIC_STATUSES.index(s) if s in TRAFFIC_STATUSES else -1))


def summarize(entries: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Windows (or hours) summed into one figure: frames, windows, counts, weighted mean, max, status.

    ``entries`` are window figures or hour figures; an hour figure's ``windows``
    count and status weight are carried over. ``None`` when there is nothing.
    """
    frames = 0
    windows = 0
    weighted = 0.0
    peak = 0.0
    counts = dict.fromkeys(CLASS_NAMES, 0)
    statuses: list[str] = []
    for entry in entries:
        n = int(entry["frames"])
        frames += n
        windows += int(entry.get("windows", 1))
        weighted += float(entry["density_mean"]) * n
        peak = max(peak, float(entry["density_max"]))
        for name in CLASS_NAMES:
            counts[name] += int(entry["counts"].get(name, 0))
        statuses.extend([entry["traffic_status"]] * int(entry.get("windows", 1)))
    if frames == 0:
        return None
    return {
        "frames": frames,
        "windows": windows,
        "counts": counts_dict(counts),
        "density_mean": min(round(weighted / frames, 4), peak),
        "density_max": peak,
        "traffic_status": majority_status(statuses),
    }


def fold_days(
    existing: Mapping[str, Mapping[str, Any]], hours: Iterable[Mapping[str, Any]], now: datetime
) -> dict[str, dict[str, Any]]:
    """Camera-day documents after replacing the summaries of the given camera-hour documents."""
    out: dict[str, dict[str, Any]] = {}
    for hour in hours:
        key = camera_day_id(hour["camera_id"], hour["hour_start"])
        if key not in out:
            stored = existing.get(key)
            out[key] = {
                "_id": key,
                "camera_id": hour["camera_id"],
                "day_start": day_floor(hour["hour_start"]),
                "hours": dict(stored["hours"]) if stored else {},
                "updated_at": now,
                "schema_version": SERVING_VERSION,
            }
        slot = _utc(hour["hour_start"]).strftime("%H")
        figures = summarize(hour["windows"].values())
        if figures is None:
            out[key]["hours"].pop(slot, None)
        else:
            out[key]["hours"][slot] = figures
    for doc in out.values():
        doc["hours"] = dict(sorted(doc["hours"].items()))
    return out


def fold_cameras(
    existing: Mapping[str, Mapping[str, Any]],
    days: Iterable[Mapping[str, Any]],
    hours: Iterable[Mapping[str, Any]],
    now: datetime,
) -> dict[str, dict[str, Any]]:
    """Camera documents after the given day documents (totals) and hour documents (latest window).

    The latest window only moves forward: a camera's newest window among the
    touched hours replaces the stored one when it starts at or after it.
    """
    out: dict[str, dict[str, Any]] = {}

    def doc_for(camera_id: str) -> dict[str, Any]:
        if camera_id not in out:
            stored = existing.get(camera_id)
            out[camera_id] = {
                "_id": camera_id,
                "latest": dict(stored["latest"]) if stored else None,
                "days": dict(stored["days"]) if stored else {},
                "updated_at": now,
                "schema_version": SERVING_VERSION,
            }
        return out[camera_id]

    for day in days:
        doc = doc_for(day["camera_id"])
        key = day_key(day["day_start"])
        totals = summarize(day["hours"].values())
        if totals is None:
            doc["days"].pop(key, None)
        else:
            doc["days"][key] = {"frames": totals["frames"], "windows": totals["windows"]}
    for hour in hours:
        if not hour["windows"]:
            continue
        doc = doc_for(hour["camera_id"])
        slot, figures = max(hour["windows"].items())
        start = slot_start(hour["hour_start"], slot)
        held = doc["latest"]
        if held is None or start >= _utc(held["window_start"]):
            end = start + timedelta(seconds=int(hour["window_seconds"]))
            doc["latest"] = {**figures, "window_start": start, "window_end": end}
    for doc in out.values():
        doc["days"] = dict(sorted(doc["days"].items()))
    return {key: doc for key, doc in out.items() if doc["latest"] is not None}


def letter_figures(letter: Mapping[str, Any]) -> dict[str, Any]:
    """The entry a ``dead_letters`` document becomes inside its batch's figures."""
    return {
        "id": str(letter["_id"]),
        "time": letter["created_at"],
        "stage": letter["stage"],
        "reason": letter["reason"],
        "record_key": letter.get("record_key"),
        "camera_id": letter.get("camera_id"),
    }


def batch_figures(
    progress: Mapping[str, Any], dead_by_stage: Mapping[str, int], letters: Iterable[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """The entry a ``pipeline_progress`` document becomes inside its pipeline-hour.

    ``letters`` are the batch's ``dead_letters`` documents; the newest
    :data:`LETTERS_PER_BATCH` are listed.
    """
    listed = sorted((letter_figures(letter) for letter in letters), key=lambda e: (e["time"], e["id"]), reverse=True)
    return {
        "query": progress["query"],
        "batch_id": int(progress["batch_id"]),
        "rows": int(progress["rows"]),
        "results": int(progress["results"]),
        "dead_letters": int(progress["dead_letters"]),
        "dead_letters_by_stage": {stage: int(n) for stage, n in sorted(dead_by_stage.items()) if n},
        "input_rows_per_s": float(progress["input_rows_per_s"]),
        "processed_rows_per_s": float(progress["processed_rows_per_s"]),
        "latency": dict(progress["latency"]) if progress.get("latency") else None,
        "started_at": progress["started_at"],
        "finished_at": progress["finished_at"],
        "latest_dead_letters": listed[:LETTERS_PER_BATCH],
    }


def fold_pipeline(
    existing: Mapping[str, Mapping[str, Any]],
    batches: Iterable[tuple[str, Mapping[str, Any]]],
    now: datetime,
) -> dict[str, dict[str, Any]]:
    """Pipeline-hour documents after writing ``(progress _id, batch figures)`` entries.

    A batch that ran again (a replay after a crash) may finish in a later hour
    than its first run: its entry is removed from every other document in
    ``existing``, so each batch is counted once.
    """
    out: dict[str, dict[str, Any]] = {}
    for progress_id, figures in batches:
        key = hour_key(figures["finished_at"])
        for other_key, other in existing.items():
            if other_key != key and progress_id in other["batches"]:
                held = out.setdefault(other_key, _pipeline_doc(other_key, other, now))
                held["batches"].pop(progress_id, None)
        doc = out.setdefault(key, _pipeline_doc(key, existing.get(key), now))
        doc["batches"][progress_id] = dict(figures)
    for doc in out.values():
        doc["batches"] = dict(sorted(doc["batches"].items(), key=lambda item: item[1]["finished_at"]))
    return out


def _pipeline_doc(key: str, stored: Mapping[str, Any] | None, now: datetime) -> dict[str, Any]:
    return {
        "_id": key,
        "hour_start": datetime.strptime(key, "%Y-%m-%dT%H").replace(tzinfo=UTC),
        "batches": dict(stored["batches"]) if stored else {},
        "updated_at": now,
        "schema_version": SERVING_VERSION,
    }


def state_document(
    stored: Mapping[str, Any] | None,
    progress: Mapping[str, Any],
    hours: Sequence[datetime],
    now: datetime,
    touched: Iterable[datetime] = (),
) -> dict[str, Any]:
    """The serving state after a batch: its progress id, the hour extent widened by ``hours``, the hours it wrote."""
    first = [_utc(stored["first_hour"])] if stored and stored.get("first_hour") else []
    last = [_utc(stored["last_hour"])] if stored and stored.get("last_hour") else []
    started = [_utc(stored["first_batch_at"])] if stored else []
    return {
        "_id": STATE_ID,
        "last_batch": progress["_id"],
        "batch_id": int(progress["batch_id"]),
        "first_hour": min([*first, *hours], default=None),
        "last_hour": max([*last, *hours], default=None),
        "first_batch_at": min([*started, _utc(progress["started_at"])]),
        "last_batch_at": _utc(progress["finished_at"]),
        "touched_hours": sorted({hour_key(hour) for hour in touched}),
        "written_at": now,
        "schema_version": SERVING_VERSION,
    }


# --- reading: what the API computes from the documents ------------------------------------


def windows_of_hours(hours: Iterable[Mapping[str, Any]], start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Window rows (``camera_id``, ``window_start``, ``window_end`` + figures) starting in ``[start, end)``."""
    rows: list[dict[str, Any]] = []
    for hour in hours:
        size = timedelta(seconds=int(hour["window_seconds"]))
        for slot, figures in hour["windows"].items():
            begin = slot_start(hour["hour_start"], slot)
            if start <= begin < end:
                rows.append(
                    {**figures, "camera_id": hour["camera_id"], "window_start": begin, "window_end": begin + size}
                )
    rows.sort(key=lambda row: (row["window_start"], row["camera_id"]))
    return rows


def hours_of_days(days: Iterable[Mapping[str, Any]], start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Hour rows (shaped like window rows, one hour wide) whose hour overlaps ``[start, end)``."""
    rows: list[dict[str, Any]] = []
    for day in days:
        for slot, figures in day["hours"].items():
            begin = _utc(day["day_start"]) + timedelta(hours=int(slot))
            if begin + HOUR > start and begin < end:
                rows.append(
                    {**figures, "camera_id": day["camera_id"], "window_start": begin, "window_end": begin + HOUR}
                )
    rows.sort(key=lambda row: (row["window_start"], row["camera_id"]))
    return rows


def batches_of_hours(hours: Iterable[Mapping[str, Any]], start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Batch entries (with their ``_id``) that finished in ``[start, end)``, oldest first."""
    rows = [
        {**figures, "_id": progress_id}
        for hour in hours
        for progress_id, figures in hour["batches"].items()
        if start <= _utc(figures["finished_at"]) < end
    ]
    rows.sort(key=lambda row: (row["finished_at"], row["batch_id"]))
    return rows


def letters_of_batches(
    batches: Iterable[Mapping[str, Any]], start: datetime, end: datetime, stages: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """Dead letters the batch entries list, created in ``[start, end)`` (of ``stages`` if given), newest first."""
    wanted = set(stages)
    rows = [
        dict(letter)
        for batch in batches
        for letter in batch.get("latest_dead_letters", ())
        if start <= _utc(letter["time"]) < end and (not wanted or letter["stage"] in wanted)
    ]
    rows.sort(key=lambda row: (row["time"], row["id"]), reverse=True)
    return rows
