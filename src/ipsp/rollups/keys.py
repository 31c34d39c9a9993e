"""The serving documents' ``_id`` values and the UTC hour/day arithmetic behind them."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from ipsp.rollups.shapes import DAY, HOUR

# --- ids ---------------------------------------------------------------------------------


def as_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def hour_floor(moment: datetime) -> datetime:
    """Start of the UTC hour holding ``moment``."""
    return as_utc(moment).replace(minute=0, second=0, microsecond=0)


def day_floor(moment: datetime) -> datetime:
    """Start of the UTC day holding ``moment``."""
    return as_utc(moment).replace(hour=0, minute=0, second=0, microsecond=0)


def hour_key(moment: datetime) -> str:
    """``YYYY-MM-DDTHH`` of the UTC hour holding ``moment``."""
    return as_utc(moment).strftime("%Y-%m-%dT%H")


def day_key(moment: datetime) -> str:
    """``YYYY-MM-DD`` of the UTC day holding ``moment``."""
    return as_utc(moment).strftime("%Y-%m-%d")


def camera_hour_id(camera_id: str, moment: datetime) -> str:
    """``_id`` of the camera-hour document holding ``moment``."""
    return f"{camera_id}|{hour_key(moment)}"


def camera_day_id(camera_id: str, moment: datetime) -> str:
    """``_id`` of the camera-day document holding ``moment``."""
    return f"{camera_id}|{day_key(moment)}"


def slot_key(window_start: datetime) -> str:
    """Key of a window inside its hour: ``MM:SS`` of its start."""
    return as_utc(window_start).strftime("%M:%S")


def slot_start(hour_start: datetime, key: str) -> datetime:
    """The window start a ``MM:SS`` key stands for inside its hour."""
    minutes, seconds = key.split(":")
    return as_utc(hour_start) + timedelta(minutes=int(minutes), seconds=int(seconds))


def _steps_before(first: datetime, end: datetime, step: timedelta) -> list[datetime]:
    """``first``, ``first + step``, ... while before ``end``."""
    starts: list[datetime] = []
    cursor = first
    while cursor < end:
        starts.append(cursor)
        cursor += step
    return starts


def hours_between(start: datetime, end: datetime) -> list[datetime]:
    """Starts of the UTC hours that overlap ``[start, end)``."""
    return _steps_before(hour_floor(start), end, HOUR)


def days_between(start: datetime, end: datetime) -> list[datetime]:
    """Starts of the UTC days that overlap ``[start, end)``."""
    return _steps_before(day_floor(start), end, DAY)


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
