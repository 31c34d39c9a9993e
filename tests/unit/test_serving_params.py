"""Query-parameter parsing of the traffic API: times, ranges, durations, camera lists."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ipsp.serving.params import (
    MAX_CAMERAS,
    MAX_RANGE,
    BadParameter,
    parse_cameras,
    parse_duration,
    parse_range,
    parse_time,
)

T0 = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1767596400000", T0),
        (" 1767596400000 ", T0),
        ("1767596400123", T0 + timedelta(milliseconds=123)),
        ("2026-01-05T07:00:00Z", T0),
        ("2026-01-05T07:00:00.000Z", T0),
        ("2026-01-05T14:00:00+07:00", T0),
        ("2026-01-05T07:00:00z", T0),
        ("0", datetime(1970, 1, 1, tzinfo=UTC)),
    ],
)
def test_parse_time_accepts_grafana_forms(raw: str, expected: datetime) -> None:
    assert parse_time(raw, "from") == expected


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("", "empty"),
        ("yesterday", "neither epoch milliseconds nor an RFC 3339"),
        ("2026-01-05T07:00:00", "no time zone"),
        ("9999999999999999", "out of range"),
        ("-5", "outside"),
        ("4102444800001", "outside"),  # just past 2100-01-01
        ("2026-13-01T00:00:00Z", "neither"),
        ("1e12", "neither"),
        ("12345678901234567890", "neither"),  # too many digits for an epoch
    ],
)
def test_parse_time_rejects_with_clear_message(raw: str, fragment: str) -> None:
    with pytest.raises(BadParameter, match=fragment):
        parse_time(raw, "from")


def test_parse_time_names_the_parameter() -> None:
    with pytest.raises(BadParameter, match="'to'"):
        parse_time("nope", "to")


def test_range_defaults_to_last_day_before_now() -> None:
    span = parse_range(None, None, now=T0)
    assert span.end == T0 and span.span == timedelta(hours=24)


def test_range_with_only_to_goes_back_a_day() -> None:
    span = parse_range(None, "2026-01-05T07:00:00Z")
    assert span.start == T0 - timedelta(hours=24)


@pytest.mark.parametrize(
    ("start", "end", "fragment"),
    [
        ("2026-01-05T08:00:00Z", "2026-01-05T07:00:00Z", "inverted"),
        ("2026-01-05T07:00:00Z", "2026-01-05T07:00:00Z", "inverted or empty"),
        ("2020-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "too long"),
    ],
)
def test_range_rejects_inverted_empty_and_absurd(start: str, end: str, fragment: str) -> None:
    with pytest.raises(BadParameter, match=fragment):
        parse_range(start, end)


def test_range_at_the_limit_is_accepted() -> None:
    end = T0 + MAX_RANGE
    assert parse_range(str(int(T0.timestamp() * 1000)), str(int(end.timestamp() * 1000))).span == MAX_RANGE


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("30s", 30), ("5m", 300), ("1h", 3600), ("1d", 86400), ("1w", 604800), ("90", 90), ("1500ms", 1.5), ("2.5m", 150)],
)
def test_parse_duration(raw: str, seconds: float) -> None:
    assert parse_duration(raw).total_seconds() == seconds


@pytest.mark.parametrize(
    ("raw", "fragment"), [("abc", "not a duration"), ("5x", "not a duration"), ("500ms", "shorter"), ("999d", "longer")]
)
def test_parse_duration_rejects(raw: str, fragment: str) -> None:
    with pytest.raises(BadParameter, match=fragment):
        parse_duration(raw)


def test_parse_cameras_splits_dedupes_and_accepts_glob() -> None:
    assert parse_cameras(["cam_01,cam_02", "cam_02", " cam_03 ", "{cam_04,cam_05}", ""]) == [
        "cam_01",
        "cam_02",
        "cam_03",
        "cam_04",
        "cam_05",
    ]
    assert parse_cameras(None) == []
    assert parse_cameras([","]) == []


@pytest.mark.parametrize("raw", ["cam 01", "cam/01", "../etc", "$where", "_cam"])
def test_parse_cameras_rejects_bad_ids(raw: str) -> None:
    with pytest.raises(BadParameter, match="not a valid camera id"):
        parse_cameras([raw])


def test_parse_cameras_bounds_the_list() -> None:
    with pytest.raises(BadParameter, match="at most"):
        parse_cameras([",".join(f"cam_{i}" for i in range(MAX_CAMERAS + 1))])
