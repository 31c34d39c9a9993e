"""Parsing and checking of the API's query parameters (pure, no I/O).

Grafana sends time ranges as epoch milliseconds (``${__from}``) or RFC 3339
(``${__from:date:iso}``) and intervals as ``30s``/``5m``/``1h``; both forms are
accepted here. Every failure raises :class:`BadParameter` with a message meant
for the person reading the panel error, never a stack trace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ipsp.contracts import RECORD_KEY_PATTERN

#: earliest and latest instants the API accepts; anything outside is a typo or a unit mix-up
MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(2100, 1, 1, tzinfo=UTC)
#: longest range one request may cover (a year and a bit): bounds the work of a single query
MAX_RANGE = timedelta(days=400)
#: range used when a caller gives neither ``from`` nor ``to``
DEFAULT_RANGE = timedelta(hours=24)
#: cameras one request may name (the dataset has 20; the bound keeps ``$in`` lists small)
MAX_CAMERAS = 200

_EPOCH_MS = re.compile(r"^-?\d{1,16}$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)?$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_CAMERA = re.compile(RECORD_KEY_PATTERN)


class BadParameter(ValueError):
    """A query parameter the API cannot use; the message names the parameter and the fix."""


@dataclass(frozen=True)
class TimeRange:
    """Half-open UTC interval ``[start, end)``."""

    start: datetime
    end: datetime

    @property
    def span(self) -> timedelta:
        """Length of the range."""
        return self.end - self.start


def parse_time(value: str, name: str) -> datetime:
    """Parse epoch milliseconds or an RFC 3339 timestamp with a zone into an aware UTC datetime."""
    text = value.strip()
    if not text:
        raise BadParameter(f"'{name}' is empty; give epoch milliseconds or an RFC 3339 time")
    if _EPOCH_MS.match(text):
        millis = int(text)
        try:
            parsed = _from_millis(millis)
        except (OverflowError, ValueError) as exc:
            raise BadParameter(f"'{name}'={text} is out of range for epoch milliseconds") from exc
    else:
        try:
            parsed = datetime.fromisoformat(text.replace("z", "Z"))
        except ValueError as exc:
            raise BadParameter(
                f"'{name}'={text!r} is neither epoch milliseconds nor an RFC 3339 time "
                "(e.g. 1767254400000 or 2026-01-01T08:00:00Z)"
            ) from exc
        if parsed.tzinfo is None:
            raise BadParameter(f"'{name}'={text!r} has no time zone; add 'Z' or an offset such as +07:00")
        parsed = parsed.astimezone(UTC)
    if not MIN_TIME <= parsed <= MAX_TIME:
        raise BadParameter(f"'{name}'={text} is outside {MIN_TIME:%Y}-{MAX_TIME:%Y}; check the unit (ms)")
    return parsed


def _from_millis(millis: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=millis)


def parse_range(start: str | None, end: str | None, now: datetime | None = None) -> TimeRange:
    """Build a checked range; a missing end is now, a missing start is end minus a day."""
    stop = parse_time(end, "to") if end is not None else (now or datetime.now(UTC))
    begin = parse_time(start, "from") if start is not None else stop - DEFAULT_RANGE
    if begin >= stop:
        raise BadParameter(f"time range is inverted or empty: from ({_iso(begin)}) must be before to ({_iso(stop)})")
    if stop - begin > MAX_RANGE:
        raise BadParameter(
            f"time range of {(stop - begin).days} days is too long; at most {MAX_RANGE.days} days per request"
        )
    return TimeRange(begin, stop)


def parse_duration(value: str, name: str = "bucket") -> timedelta:
    """Parse a Grafana-style interval (``500ms``, ``30s``, ``5m``, ``1h``, ``1d``, ``1w``; bare = seconds)."""
    text = value.strip().lower()
    match = _DURATION.match(text)
    if not match:
        raise BadParameter(f"'{name}'={value!r} is not a duration; use e.g. 30s, 5m, 1h")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    if seconds < 1.0:
        raise BadParameter(f"'{name}'={value!r} is shorter than one second")
    if seconds > MAX_RANGE.total_seconds():
        raise BadParameter(f"'{name}'={value!r} is longer than the longest range ({MAX_RANGE.days} days)")
    return timedelta(seconds=seconds)


def parse_cameras(values: list[str] | None) -> list[str]:
    """Camera ids from repeated and/or comma-separated values (Grafana's ``${camera:csv}``), deduplicated.

    An empty list means every camera. Grafana's ``{a,b}`` glob form is accepted too.
    """
    cameras: list[str] = []
    for raw in values or []:
        for part in raw.strip().strip("{}").split(","):
            camera = part.strip()
            if not camera:
                continue
            if not _CAMERA.match(camera):
                raise BadParameter(f"camera {camera!r} is not a valid camera id (letters, digits, _ . -)")
            if camera not in cameras:
                cameras.append(camera)
    if len(cameras) > MAX_CAMERAS:
        raise BadParameter(f"{len(cameras)} cameras named; at most {MAX_CAMERAS} per request")
    return cameras


def _iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
