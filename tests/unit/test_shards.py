"""Shard assignment (pure) and the LMDB writer: deterministic files, a map that grows."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from ipsp.storage.shards import (
    PlannedFrame,
    compare_contents,
    initial_map_size,
    plan_shards,
    shard_contents,
    shard_key,
    sort_keys,
    write_shard,
)


def _frame(camera: str, index: int, size: int = 100) -> PlannedFrame:
    key = f"{camera}_{index:05d}"
    return PlannedFrame(key, camera, index, f"{key}.jpg", size, hashlib.sha256(key.encode()).hexdigest())


def test_shard_key_layout() -> None:
    assert shard_key("cam_01", 0) == "shards/cam_01/cam_01-0000.lmdb"
    assert shard_key("cam_12", 37) == "shards/cam_12/cam_12-0037.lmdb"


def test_plan_groups_by_camera_orders_by_frame_and_cuts_at_target() -> None:
    frames = [_frame("cam_02", i) for i in range(5)] + [_frame("cam_01", i) for i in range(7)]
    plans = plan_shards(frames, target_bytes=300)
    assert [p.key for p in plans] == [
        "shards/cam_01/cam_01-0000.lmdb",
        "shards/cam_01/cam_01-0001.lmdb",
        "shards/cam_01/cam_01-0002.lmdb",
        "shards/cam_02/cam_02-0000.lmdb",
        "shards/cam_02/cam_02-0001.lmdb",
    ]
    assert [[f.frame_index for f in p.frames] for p in plans] == [[0, 1, 2], [3, 4, 5], [6], [0, 1, 2], [3, 4]]
    assert all(p.data_bytes <= 300 for p in plans)


def test_plan_is_independent_of_input_order() -> None:
    frames = [_frame(f"cam_{c:02d}", i, size=50 + i) for c in range(1, 4) for i in range(30)]
    shuffled = frames[:]
    random.Random(7).shuffle(shuffled)
    assert plan_shards(frames, 700) == plan_shards(shuffled, 700)


def test_frame_order_is_numeric_not_lexical() -> None:
    frames = [PlannedFrame(f"cam_01_{i}", "cam_01", i, f"cam_01_{i}.jpg", 10, "0" * 64) for i in (10, 9, 100)]
    (plan,) = plan_shards(frames, 1000)
    assert [f.frame_index for f in plan.frames] == [9, 10, 100]


def test_oversized_frame_gets_its_own_shard() -> None:
    frames = [_frame("cam_01", 0, 10), _frame("cam_01", 1, 5000), _frame("cam_01", 2, 10)]
    assert [len(p.frames) for p in plan_shards(frames, 100)] == [1, 1, 1]
    with pytest.raises(ValueError):
        plan_shards(frames, 0)


def test_map_size_fits_the_values() -> None:
    sizes = [150_000] * 300
    assert initial_map_size(sizes) > sum(sizes)
    assert initial_map_size(sizes) % (1 << 20) == 0
    assert initial_map_size([]) >= 1 << 20


def _items(count: int, size: int) -> list[tuple[str, bytes]]:
    return [(f"cam_01_{i:05d}", bytes([i % 251]) * (size + i)) for i in range(count)]


def test_written_shard_is_byte_identical_and_holds_every_value(tmp_path: Path) -> None:
    items = _items(40, 20_000)
    map_size = initial_map_size(len(v) for _, v in items)
    first, second = tmp_path / "a.lmdb", tmp_path / "b.lmdb"
    write_shard(first, lambda: items, map_size)
    write_shard(second, lambda: iter(items), map_size)
    assert first.read_bytes() == second.read_bytes()
    with pytest.raises(ValueError, match="ascending"):
        write_shard(tmp_path / "c.lmdb", lambda: list(reversed(items)), map_size)
    expected = {k: hashlib.sha256(v).hexdigest() for k, v in items}
    assert shard_contents(first) == expected
    assert compare_contents(shard_contents(first), expected) == ""


def test_map_grows_when_full(tmp_path: Path) -> None:
    items = _items(30, 50_000)
    used = write_shard(tmp_path / "s.lmdb", lambda: items, 1 << 20)
    assert used > 1 << 20
    assert len(shard_contents(tmp_path / "s.lmdb")) == 30


def test_duplicate_key_in_one_shard_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unique"):
        write_shard(tmp_path / "d.lmdb", lambda: [("k", b"1"), ("k", b"2")], 1 << 20)


def test_sort_keys_is_byte_order() -> None:
    assert sort_keys(["cam_01_10", "cam_01_9", "CAM_01_1"]) == ["CAM_01_1", "cam_01_10", "cam_01_9"]


def test_compare_contents_says_what_differs() -> None:
    expected = {"a": "1", "b": "2", "c": "3"}
    found = {"a": "1", "b": "X", "d": "4"}
    text = compare_contents(found, expected)
    assert "1 unexpected key(s) (e.g. d)" in text
    assert "1 missing key(s) (e.g. c)" in text
    assert "1 different key(s) (e.g. b)" in text
