"""``ipsp detect`` and ``inference.py`` on the bus photo shipped in the ultralytics wheel, with the shipped COCO model.

The photo is found in the installed wheel at test time (never copied into the
repository). Expected from the shipped CenterNet at score >= 0.3: the bus and at
least two of the three persons. (The default ``traffic`` model is trained for
traffic-camera views and knows no persons; ``make bench-fidelity`` measures it on road
frames, and the demo test runs it on the road footage.)
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def bus_photo() -> Path:
    """``ultralytics/assets/bus.jpg`` from the installed wheel (found without importing ultralytics)."""
    spec = importlib.util.find_spec("ultralytics")
    assert spec is not None and spec.submodule_search_locations, "the 'train' extra (ultralytics) is not installed"
    path = Path(next(iter(spec.submodule_search_locations))) / "assets" / "bus.jpg"
    assert path.is_file(), f"{path} missing from the ultralytics wheel"
    return path


def run(cmd: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPSP_")}
    env["IPSP_HOME"] = str(home)  # an empty registry: the default model resolves to the shipped file
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False, cwd=REPO)


@pytest.mark.parametrize(
    "entry",
    [[sys.executable, "-m", "ipsp.cli", "detect"], [sys.executable, "4_model_training/inference.py"]],
    ids=["ipsp-detect", "inference.py"],
)
def test_coco_model_finds_the_bus_and_the_people(entry: list[str], tmp_path: Path) -> None:
    args = [str(bus_photo()), "--model", "centernet", "--score", "0.3", "--format", "jsonl", "--no-progress"]
    done = run([*entry, *args], tmp_path / "home")
    assert done.returncode == 0, done.stderr
    (record,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert record["path"] == str(bus_photo())
    counts = record["counts"]
    assert counts["bus"] >= 1 and counts["person"] >= 2, record
    assert counts["total"] == counts["motorbike"] + counts["car"] + counts["bus"] + counts["truck"]
    buses = [d for d in record["detections"] if d["cls"] == "bus"]
    _, _, w, h = buses[0]["box_xywh"]
    assert w > 500 and h > 300  # the bus fills most of the 810x1080 photo's width
    assert all(d["conf"] >= 0.3 for d in record["detections"])  # the score threshold asked for
