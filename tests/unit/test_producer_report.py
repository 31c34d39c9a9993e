"""The run report: summary line and the flags that resume a replay exactly."""

from __future__ import annotations

import json

from ipsp.producer.replay import ReplayReport


def report(**changes) -> ReplayReport:
    base = ReplayReport(
        manifest="file:///d/manifest.parquet",
        topic="traffic-metadata",
        partitions=4,
        replay_id="replay-x",
        event_start="2026-01-01T08:00:00.000Z",
        pacing="200 msg/s",
        planned=1000,
        options={"loops": 1, "cameras": None, "limit": None, "frame_interval_s": 1.0},
    )
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def test_complete_run_summary():
    line = report(sent=1000, elapsed_s=5.0, rate_msg_s=200.0, resume_point="0:cam_02_00499", complete=True).summary()
    assert line.startswith("sent 1000 of 1000 to traffic-metadata (failed 0) in 5.00 s, 200.0 msg/s")
    assert "last acknowledged 0:cam_02_00499" in line
    assert "resume" not in line


def test_incomplete_run_names_the_exact_resume_flags():
    line = report(
        sent=400,
        failed=12,
        acked_after_failure=3,
        resume_point="1:cam_03_00007",
        options={"loops": 3, "cameras": ["cam_03", "cam_01"], "limit": 900, "frame_interval_s": 0.04},
    ).summary()
    assert line.endswith(
        "resume with: --replay-id replay-x --event-start 2026-01-01T08:00:00.000Z --cameras cam_03,cam_01 "
        "--loop 3 --frame-interval 0.04 --start-after 1:cam_03_00007 "
        "(3 acknowledged after the first failure will repeat)"
    )
    assert "--limit" not in line  # a resumed run's limit counts from the resume point


def test_nothing_acknowledged_resumes_from_the_start():
    flags = report(sent=0, failed=5).resume_flags()
    assert "--start-after" not in flags


def test_report_json_round_trips():
    data = json.loads(report(sent=3).to_json())
    assert data["sent"] == 3 and data["replay_id"] == "replay-x"
