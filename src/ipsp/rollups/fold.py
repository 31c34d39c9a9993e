"""Folding windows into camera-hours, hours into camera-days, days into cameras, batches into pipeline-hours.

Pure: each function takes the stored documents and returns the new ones, written whole by ``_id``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ipsp.contracts import (
    TRAFFIC_STATUSES,
    VEHICLE_CLASSES,
)
from ipsp.rollups.keys import (
    as_utc,
    camera_day_id,
    camera_hour_id,
    day_floor,
    day_key,
    hour_floor,
    hour_key,
    slot_key,
    slot_start,
)
from ipsp.rollups.shapes import CLASS_NAMES, LETTERS_PER_BATCH, SERVING_VERSION, STATE_ID


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
        slot = as_utc(hour["hour_start"]).strftime("%H")
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
        if held is None or start >= as_utc(held["window_start"]):
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
    first = [as_utc(stored["first_hour"])] if stored and stored.get("first_hour") else []
    last = [as_utc(stored["last_hour"])] if stored and stored.get("last_hour") else []
    started = [as_utc(stored["first_batch_at"])] if stored else []
    return {
        "_id": STATE_ID,
        "last_batch": progress["_id"],
        "batch_id": int(progress["batch_id"]),
        "first_hour": min([*first, *hours], default=None),
        "last_hour": max([*last, *hours], default=None),
        "first_batch_at": min([*started, as_utc(progress["started_at"])]),
        "last_batch_at": as_utc(progress["finished_at"]),
        "touched_hours": sorted({hour_key(hour) for hour in touched}),
        "written_at": now,
        "schema_version": SERVING_VERSION,
    }
