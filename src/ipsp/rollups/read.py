"""Reading the serving documents: the rows the API computes from them for a time range."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from ipsp.rollups.keys import as_utc, slot_start
from ipsp.rollups.shapes import HOUR

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
            begin = as_utc(day["day_start"]) + timedelta(hours=int(slot))
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
        if start <= as_utc(figures["finished_at"]) < end
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
        if start <= as_utc(letter["time"]) < end and (not wanted or letter["stage"] in wanted)
    ]
    rows.sort(key=lambda row: (row["time"], row["id"]), reverse=True)
    return rows
