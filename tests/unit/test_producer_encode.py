"""Message encoding: the cheap per-send JSON equals the contract model's own serialization."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from ipsp.contracts import FrameMessage, format_time
from ipsp.errors import UserError
from ipsp.producer.encode import MillisFormatter, build_template, build_templates, check_replay_id, frame_message
from ipsp.producer.plan import to_ms
from support.producer_synthetic import synthetic_frames

FRAME = synthetic_frames(cameras=1, frames_per_camera=1)[0]


@pytest.mark.parametrize(
    "frame",
    [
        FRAME,
        replace(FRAME, shard_uri='s3://bucket/odd "quoted" \\ path/ünï.lmdb', key='k"ey\n/é.jpg', format="png"),
        replace(
            FRAME, shard_uri="file:///x/produced_at/event_time.lmdb", key='"event_time":"1970-01-01T00:00:00.001Z"'
        ),
    ],
)
def test_template_render_equals_model_json(frame):
    event = datetime(2026, 3, 4, 5, 6, 7, 891000, tzinfo=UTC)
    produced = datetime(2026, 11, 28, 23, 59, 59, 999000, tzinfo=UTC)
    template = build_template(frame, "replay-1")
    fmt = MillisFormatter()
    rendered = template.render(fmt(to_ms(event)), fmt(to_ms(produced)))
    expected = frame_message(frame, "replay-1", event, produced).to_json().encode()
    assert rendered == expected
    parsed = FrameMessage.from_json(rendered)
    assert parsed.event_time == event and parsed.produced_at == produced
    assert parsed.lmdb.uri == frame.shard_uri and parsed.lmdb.key == frame.key


def test_millis_formatter_matches_contract_format_across_seconds():
    fmt = MillisFormatter()
    start = datetime(2025, 12, 31, 23, 59, 59, 990000, tzinfo=UTC)
    for step in range(0, 40, 3):
        moment = start + timedelta(milliseconds=step)
        assert fmt(to_ms(moment)).decode() == format_time(moment)


@pytest.mark.parametrize(
    ("change", "column"),
    [
        ({"width": 0}, "width"),
        ({"format": "gif"}, "format"),
        ({"sha256": "xyz"}, "sha256"),
        ({"shard_uri": "a"}, "shard_uri"),
        ({"record_key": "bad key!"}, "record_key"),
        ({"frame_index": -1}, "frame_index"),
    ],
)
def test_bad_row_is_reported_by_manifest_column(change, column):
    with pytest.raises(UserError, match=rf"manifest row .*{column}:"):
        build_template(replace(FRAME, **change), "replay-1")


def test_replay_id_rules():
    assert check_replay_id("r1") == "r1"
    for bad in ("", " r1", "x" * 129):
        with pytest.raises(UserError, match="--replay-id"):
            check_replay_id(bad)
    with pytest.raises(UserError, match="--replay-id"):
        build_templates([FRAME], "")
