"""Replay planning: order, camera filter, loops, resume points, limit, event clock."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from ipsp.errors import UserError
from ipsp.producer.plan import (
    EventClock,
    ResumePoint,
    make_plan,
    order_frames,
    parse_cameras,
    parse_time,
    select_cameras,
)
from support.producer_synthetic import synthetic_frames


def keys(plan, limit=None):
    """(loop, record_key) of every send of a plan."""
    out = []
    for send in plan.sends():
        out.append((send.loop, plan.frames[send.frame].record_key))
        if limit is not None and len(out) >= limit:
            break
    return out


def test_round_robin_by_position_and_frame_order_within_camera():
    frames = synthetic_frames(cameras=3, frames_per_camera=[3, 1, 2])
    shuffled = frames[:]
    random.Random(7).shuffle(shuffled)
    ordered, positions = order_frames(shuffled)
    assert [f.record_key for f in ordered] == [
        "cam_01_00000", "cam_02_00000", "cam_03_00000",
        "cam_01_00001", "cam_03_00001",
        "cam_01_00002",
    ]  # fmt: skip
    assert positions == [0, 0, 0, 1, 1, 2]


def test_cameras_advance_together_whatever_their_frame_numbers():
    # cam_02's numbering starts at 500: position, not raw frame_index, drives the interleave
    frames = synthetic_frames(cameras=1, frames_per_camera=2) + [
        replace(f, camera_id="cam_02", record_key=f"cam_02_{f.frame_index + 500:05d}", frame_index=f.frame_index + 500)
        for f in synthetic_frames(cameras=1, frames_per_camera=2)
    ]
    ordered, _ = order_frames(frames)
    assert [f.camera_id for f in ordered] == ["cam_01", "cam_02", "cam_01", "cam_02"]


def test_frame_order_uses_frame_index_not_file_order_or_text():
    frames = synthetic_frames(cameras=1, frames_per_camera=12)[::-1]
    ordered, _ = order_frames(frames)
    assert [f.frame_index for f in ordered] == list(range(12))


def test_camera_filter_keeps_only_named_cameras():
    frames = synthetic_frames(cameras=4, frames_per_camera=2)
    assert {f.camera_id for f in select_cameras(frames, ["cam_02", "cam_04"])} == {"cam_02", "cam_04"}
    assert select_cameras(frames, None) == frames


def test_unknown_camera_error_lists_known_ones():
    frames = synthetic_frames(cameras=2, frames_per_camera=1)
    with pytest.raises(UserError, match=r"unknown camera\(s\) cam_09.*cam_01, cam_02"):
        select_cameras(frames, ["cam_01", "cam_09"])


def test_parse_cameras_drops_blanks():
    assert parse_cameras(" cam_01, ,cam_02 ") == ["cam_01", "cam_02"]
    assert parse_cameras("") is None
    assert parse_cameras(None) is None


def test_loops_repeat_the_same_order_and_count():
    plan = make_plan(synthetic_frames(cameras=2, frames_per_camera=3), loops=3)
    sends = keys(plan)
    assert plan.total == len(sends) == 18
    one_loop = [k for loop, k in sends if loop == 0]
    for loop in (1, 2):
        assert [k for lp, k in sends if lp == loop] == one_loop


def test_ticks_continue_across_loops_at_the_longest_camera():
    plan = make_plan(synthetic_frames(cameras=2, frames_per_camera=[3, 1]), loops=2)
    ticks = [(plan.frames[s.frame].record_key, s.tick) for s in plan.sends()]
    assert plan.loop_ticks == 3
    assert ticks == [
        ("cam_01_00000", 0), ("cam_02_00000", 0), ("cam_01_00001", 1), ("cam_01_00002", 2),
        ("cam_01_00000", 3), ("cam_02_00000", 3), ("cam_01_00001", 4), ("cam_01_00002", 5),
    ]  # fmt: skip


def test_limit_caps_the_run():
    plan = make_plan(synthetic_frames(cameras=2, frames_per_camera=5), loops=2, limit=7)
    assert plan.total == 7 and len(keys(plan)) == 7


def test_endless_loop_has_no_total():
    plan = make_plan(synthetic_frames(cameras=1, frames_per_camera=2), loops=0)
    assert plan.total is None
    assert keys(plan, limit=5) == [(0, "cam_01_00000"), (0, "cam_01_00001"), (1, "cam_01_00000"),
                                   (1, "cam_01_00001"), (2, "cam_01_00000")]  # fmt: skip


@pytest.mark.parametrize("cut", [0, 1, 5, 11, 17])
def test_resume_after_any_point_completes_the_plan_without_gap_or_overlap(cut):
    frames = synthetic_frames(cameras=3, frames_per_camera=3)
    full = make_plan(frames, loops=2)
    everything = keys(full)
    point = full.resume_point(cut)
    assert str(point) == f"{everything[cut][0]}:{everything[cut][1]}"
    resumed = make_plan(frames, loops=2, start_after=ResumePoint.parse(str(point)))
    assert everything[: cut + 1] + keys(resumed) == everything
    # the event clock of the resumed part is the original one
    assert [s.tick for s in resumed.sends()] == [s.tick for s in full.sends()][cut + 1 :]


def test_resume_after_the_last_frame_sends_nothing():
    frames = synthetic_frames(cameras=2, frames_per_camera=2)
    plan = make_plan(frames, loops=1, start_after=ResumePoint(0, "cam_02_00001"))
    assert plan.total == 0 and keys(plan) == []


def test_resume_point_parsing():
    assert ResumePoint.parse("2:cam_01_00042") == ResumePoint(2, "cam_01_00042")
    assert ResumePoint.parse("cam_01_00042") == ResumePoint(0, "cam_01_00042")
    for bad in ("x:cam_01", "1:", ":cam_01"):
        with pytest.raises(UserError, match="expected <loop>:<record_key>"):
            ResumePoint.parse(bad)


def test_resume_point_outside_the_plan_is_an_error():
    frames = synthetic_frames(cameras=2, frames_per_camera=2)
    with pytest.raises(UserError, match="not among the frames selected"):
        make_plan(frames, cameras=["cam_01"], start_after=ResumePoint(0, "cam_02_00000"))
    with pytest.raises(UserError, match="past the last loop"):
        make_plan(frames, loops=2, start_after=ResumePoint(2, "cam_01_00000"))


def test_bad_loop_and_limit_values():
    frames = synthetic_frames(cameras=1, frames_per_camera=1)
    with pytest.raises(UserError, match="--loop"):
        make_plan(frames, loops=-1)
    with pytest.raises(UserError, match="--limit"):
        make_plan(frames, limit=-1)


def test_event_clock_advances_at_the_original_cadence():
    start = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
    clock = EventClock.anchored(start, 0.04, first_tick=0, now=datetime.now(UTC))
    assert clock.at(0) == start
    assert clock.at(25) == start + timedelta(seconds=1)
    assert clock.at(1) == start + timedelta(milliseconds=40)


def test_event_clock_default_puts_the_first_frame_sent_at_now():
    now = datetime(2026, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)
    clock = EventClock.anchored(None, 2.0, first_tick=10, now=now)
    assert clock.at(10) == now
    assert clock.at(0) == now - timedelta(seconds=20)


def test_event_clock_rejects_bad_interval():
    with pytest.raises(UserError, match="--frame-interval"):
        EventClock.anchored(None, 0.0, 0, datetime.now(UTC))


def test_parse_time_needs_a_time_zone():
    assert parse_time("2026-01-01T08:00:00Z") == datetime(2026, 1, 1, 8, tzinfo=UTC)
    with pytest.raises(UserError, match="no time zone"):
        parse_time("2026-01-01T08:00:00")
    with pytest.raises(UserError, match="not an RFC 3339"):
        parse_time("yesterday")
