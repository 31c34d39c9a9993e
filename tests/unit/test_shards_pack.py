"""The packer's driver-side logic: locations, name parsing into rejects, duplicates, read-ahead, shard groups."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from ipsp.contracts import Reject
from ipsp.errors import UserError
from ipsp.preprocessing.pack.inputs import InputFile, check_locations, normalize_uri, read_ahead
from ipsp.preprocessing.pack.inspect import parse_names
from ipsp.preprocessing.pack.plan import drop_duplicates
from ipsp.preprocessing.pack.write import balance
from ipsp.preprocessing.validate import DEFAULT_NAME_PATTERN, compile_pattern
from ipsp.storage.shards import PlannedFrame, ShardPlan


def test_normalize_uri(tmp_path: Path) -> None:
    assert normalize_uri(str(tmp_path)) == tmp_path.resolve().as_uri()
    assert normalize_uri(tmp_path.as_uri() + "/") == tmp_path.resolve().as_uri()
    assert normalize_uri("s3://ipsp/datasets/demo/") == "s3://ipsp/datasets/demo"
    for bad in ("s3:///nobucket", "http://host/x"):
        with pytest.raises(UserError):
            normalize_uri(bad)


def test_target_inside_the_input_is_refused(tmp_path: Path) -> None:
    src = tmp_path.as_uri()
    with pytest.raises(UserError, match="inside the input"):
        check_locations(src, (tmp_path / "out").as_uri())
    with pytest.raises(UserError):
        check_locations("s3://b/in", "s3://b/in/out")
    check_locations(src, (tmp_path.parent / "elsewhere").as_uri())
    check_locations("s3://b/in", "s3://b/input-packed")


def test_names_that_do_not_parse_and_taken_keys_become_rejects() -> None:
    files = [InputFile(n, 10) for n in ("a/cam_01_00001.jpg", "b/cam_01_00001.png", "readme.txt", "cam_02_7.jpg")]
    rejects: list[Reject] = []
    named = parse_names(files, compile_pattern(DEFAULT_NAME_PATTERN), rejects)
    assert [(f.rel, n.record_key) for f, n in named] == [
        ("a/cam_01_00001.jpg", "cam_01_00001"),
        ("cam_02_7.jpg", "cam_02_7"),
    ]
    assert [(r.file, r.reason) for r in rejects] == [
        ("b/cam_01_00001.png", "duplicate_key"),
        ("readme.txt", "bad_name"),
    ]


def test_duplicates_keep_the_first_in_camera_and_frame_order() -> None:
    def frame(camera: str, index: int, sha: str) -> PlannedFrame:
        key = f"{camera}_{index:05d}"
        return PlannedFrame(key, camera, index, f"{key}.jpg", 10, sha * 64)

    frames = [frame("cam_02", 1, "a"), frame("cam_01", 9, "a"), frame("cam_01", 3, "b"), frame("cam_01", 4, "c")]
    rejects: list[Reject] = []
    kept = drop_duplicates(frames, rejects)
    assert [f.record_key for f in kept] == ["cam_01_00003", "cam_01_00004", "cam_01_00009"]
    assert [(r.file, r.reason, r.duplicate_of) for r in rejects] == [
        ("cam_02_00001.jpg", "duplicate", "cam_01_00009.jpg")
    ]


def test_read_ahead_keeps_order_and_runs_a_bounded_window_ahead() -> None:
    started: list[int] = []
    lock = threading.Lock()

    def load(n: int) -> int:
        with lock:
            started.append(n)
        time.sleep(0.01 * (n % 3))  # later items may finish first
        return n * n

    seen = []
    for item, value in read_ahead(range(20), load, depth=4):
        seen.append((item, value))
        with lock:
            assert max(started) <= item + 4  # never more than `depth` loads ahead of the consumer
    assert seen == [(n, n * n) for n in range(20)]


def test_balance_deals_shards_into_groups_of_similar_bytes() -> None:
    def plan(key: str, size: int) -> ShardPlan:
        frame = PlannedFrame(key, "cam_01", 0, f"{key}.jpg", size, "0" * 64, 8, 8, "jpeg")
        return ShardPlan(key=key, camera_id="cam_01", frames=(frame,))

    plans = [plan(f"s{i}", size) for i, size in enumerate([90, 10, 50, 40, 30, 30])]
    groups = balance(plans, 2)
    assert sorted(p.key for g in groups for p in g) == sorted(p.key for p in plans)
    assert sorted(sum(p.data_bytes for p in g) for g in groups) == [120, 130]  # largest first, to the lightest
    assert len(balance(plans[:1], 4)) == 1  # never an empty group
