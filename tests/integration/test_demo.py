"""``ipsp demo`` end to end on the real stack, twice: the second run must change nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ipsp.config import Settings

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
FRAMES = 48
CAMERAS = 4


def run_demo(env: dict[str, str], *extra: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "ipsp.cli", "demo", "--frames", str(FRAMES), "--cameras", str(CAMERAS), *extra],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert proc.returncode == 0, f"demo exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


@pytest.fixture
def demo_db(stack_settings: Settings) -> Iterator[tuple[dict[str, str], Any]]:
    from pymongo import MongoClient

    name = f"test_demo_{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPSP_")}
    env.update(IPSP_HOME=str(stack_settings.home), IPSP_MONGO_DB=name)
    client: Any = MongoClient(stack_settings.mongo_uri.get_secret_value(), tz_aware=True)
    yield env, client[name]
    client.drop_database(name)


def windows_of(db: Any) -> dict[str, tuple[int, dict[str, int]]]:
    return {w["_id"]: (w["frames"], w["counts"]) for w in db.traffic_windows.find({})}


def test_demo_end_to_end_and_rerun_is_harmless(demo_db: tuple[dict[str, str], Any]) -> None:
    env, db = demo_db
    out = run_demo(env)
    for camera in range(1, CAMERAS + 1):
        assert re.search(rf"cam_0{camera}\s.*\s{FRAMES // CAMERAS}\s", out), out
    assert "Per-camera summary" in out
    assert "Where to look next" in out
    assert "ipsp serve" in out
    report = re.search(r"Report\s+(\S+\.html)", out)
    assert report is not None and Path(report.group(1)).is_file(), out

    assert db.analysis_results.count_documents({}) == FRAMES
    assert db.dead_letters.count_documents({}) == 0
    assert "feed: real road footage" in out, out  # not the photo fallback
    # the report covers the run's own windows (event time), not January to today
    from ipsp.contracts import format_time

    starts = [w["window_start"] for w in db.traffic_windows.find({}, {"window_start": 1})]
    assert f"{format_time(min(starts))} to " in Path(report.group(1)).read_text()
    first = windows_of(db)
    assert sum(frames for frames, _ in first.values()) == FRAMES
    per_camera: dict[str, int] = {}
    for window_id in first:
        camera = window_id.split("|")[0]
        per_camera[camera] = per_camera.get(camera, 0) + 1
    assert len(per_camera) == CAMERAS and min(per_camera.values()) >= 10, per_camera
    assert sum(d["counts"]["car"] for d in db.analysis_results.find({}, {"counts": 1})) > 0
    totals = sum(d["counts"]["total"] for d in db.analysis_results.find({}, {"counts": 1}))
    assert sum(counts["total"] for _, counts in first.values()) == totals

    # a second run: same frames, same event clock -> the same documents, nothing doubled, the same summary
    again = run_demo(env, "--no-report")
    assert db.analysis_results.count_documents({}) == FRAMES
    assert windows_of(db) == first
    assert summary_rows(again) == summary_rows(out), again


def summary_rows(out: str) -> list[str]:
    """The per-camera summary's camera and 'all' rows as printed."""
    rows = [line for line in out.splitlines() if re.match(r"^\W*(cam_\d+|all)\s", line)]
    assert len(rows) == CAMERAS + 1, out
    return rows
