"""ShardReader over the file:// store: reads, clear errors, LRU eviction by size, digests, fork safety."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from ipsp.storage import open_store
from ipsp.storage.shards import (
    FrameNotFound,
    ShardCorrupt,
    ShardNotFound,
    ShardReader,
    cache_dir,
    initial_map_size,
    write_shard,
)

VALUE = 30_000


def _publish(tmp_path: Path, name: str, count: int = 3) -> tuple[str, dict[str, bytes], str]:
    """Write one shard to a file:// store; return (its URI, its items, its sha256)."""
    items = {f"{name}_{i:05d}": os.urandom(VALUE) for i in range(count)}
    local = tmp_path / "work" / f"{name}.lmdb"
    local.parent.mkdir(parents=True, exist_ok=True)
    write_shard(local, lambda: items.items(), initial_map_size(len(v) for v in items.values()))
    store = open_store((tmp_path / "store").as_uri())
    key = f"shards/{name}/{name}-0000.lmdb"
    digest = store.upload_file(local, key)
    return store.uri(key), items, digest


@pytest.fixture
def reader(tmp_path: Path) -> ShardReader:
    return ShardReader(tmp_path / "cache", max_bytes=10 << 20)


def test_get_and_get_many(tmp_path: Path, reader: ShardReader) -> None:
    uri, items, _ = _publish(tmp_path, "cam_01")
    key = next(iter(items))
    assert reader.get(uri, key) == items[key]
    got = reader.get_many(uri, [*items, "cam_01_99999"])
    assert all(got[k] == v for k, v in items.items())
    assert isinstance(got["cam_01_99999"], FrameNotFound)
    with pytest.raises(FrameNotFound, match="cam_01_99999"):
        reader.get(uri, "cam_01_99999")
    assert reader.stats.downloads == 1  # one download, then the open handle is reused


def test_missing_shard_and_bad_uri(tmp_path: Path, reader: ShardReader) -> None:
    missing = (tmp_path / "store" / "shards" / "nope.lmdb").as_uri()
    with pytest.raises(ShardNotFound):
        reader.get(missing, "k")
    result = reader.get_many(missing, ["a", "b"])
    assert all(isinstance(v, ShardNotFound) for v in result.values())
    with pytest.raises(ShardNotFound):
        reader.get("http://example.invalid/x.lmdb", "k")


def test_not_an_lmdb_file_is_corrupt(tmp_path: Path, reader: ShardReader) -> None:
    store = open_store((tmp_path / "store").as_uri())
    store.put("shards/bad.lmdb", b"this is not lmdb" * 100)
    with pytest.raises(ShardCorrupt):
        reader.get(store.uri("shards/bad.lmdb"), "k")
    assert reader.cached_bytes() == 0  # the bad copy is not kept


def test_digest_is_checked_and_a_stale_copy_refetched(tmp_path: Path) -> None:
    uri, items, digest = _publish(tmp_path, "cam_02")
    key = next(iter(items))
    strict = ShardReader(tmp_path / "cache", 10 << 20)
    with pytest.raises(ShardCorrupt, match="sha256"):
        strict.get(uri, key, shard_sha256="0" * 64)
    assert strict.get(uri, key, shard_sha256=digest) == items[key]
    # the shard is re-packed on the store: a reader that knows the new digest fetches it again
    uri2, items2, digest2 = _publish(tmp_path, "cam_02")
    assert uri2 == uri
    fresh = ShardReader(tmp_path / "cache", 10 << 20, digests={uri: digest2})
    assert fresh.get(uri, key) == items2[key]
    assert fresh.stats.downloads == 1


def test_cache_is_shared_between_readers(tmp_path: Path) -> None:
    uri, items, _ = _publish(tmp_path, "cam_03")
    first = ShardReader(tmp_path / "cache", 10 << 20)
    first.get(uri, next(iter(items)))
    second = ShardReader(tmp_path / "cache", 10 << 20)
    assert second.get_many(uri, list(items)) == items
    assert (first.stats.downloads, second.stats.downloads, second.stats.hits) == (1, 0, 1)


def test_eviction_is_lru_by_size(tmp_path: Path) -> None:
    shards = [_publish(tmp_path, f"cam_{n:02d}") for n in range(1, 5)]
    one = Path(tmp_path / "store" / "shards" / "cam_01" / "cam_01-0000.lmdb").stat().st_size
    reader = ShardReader(tmp_path / "cache", max_bytes=int(one * 2.5))  # room for two shards
    (a, a_items, _), (b, b_items, _), (c, c_items, _), (d, d_items, _) = shards
    reader.get(a, next(iter(a_items)))
    reader.get(b, next(iter(b_items)))
    reader.get(a, next(iter(a_items)))  # a is now more recent than b
    reader.get(c, next(iter(c_items)))
    assert reader.cached_bytes() <= reader.max_bytes
    assert reader.stats.evictions == 1 and "cam_02-0000.lmdb" in reader.stats.evicted[0]
    assert reader.get_many(a, list(a_items)) == a_items  # still cached, no download
    assert reader.stats.downloads == 3
    reader.get(d, next(iter(d_items)))
    assert reader.get_many(b, list(b_items)) == b_items  # evicted earlier: downloaded again
    assert reader.stats.downloads == 5
    assert reader.cached_bytes() <= reader.max_bytes


def test_a_shard_larger_than_the_cache_is_still_served(tmp_path: Path) -> None:
    uri, items, _ = _publish(tmp_path, "cam_05", count=4)
    reader = ShardReader(tmp_path / "cache", max_bytes=1000)
    assert reader.get_many(uri, list(items)) == items


def test_fork_reopens_instead_of_sharing_the_handle(tmp_path: Path, reader: ShardReader) -> None:
    uri, items, _ = _publish(tmp_path, "cam_06")
    key = next(iter(items))
    assert reader.get(uri, key) == items[key]
    expected = hashlib.sha256(items[key]).hexdigest().encode()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must not touch the parent's LMDB handle
        try:
            value = reader.get(uri, key)
            ok = reader.stats.reopened_after_fork == 1 and reader.stats.downloads == 1
            os.write(write_end, hashlib.sha256(value).hexdigest().encode() if ok else b"bad")
        finally:
            os._exit(0)
    os.close(write_end)
    answer = os.read(read_end, 100)
    os.waitpid(pid, 0)
    os.close(read_end)
    assert answer == expected
    assert reader.stats.reopened_after_fork == 0  # the parent keeps its handle
    assert reader.get(uri, key) == items[key]


def test_the_reader_lists_the_shards_it_downloaded(tmp_path: Path, reader: ShardReader) -> None:
    first, items, _ = _publish(tmp_path, "cam_01")
    second, _, _ = _publish(tmp_path, "cam_02")
    for uri in (first, second, first):
        reader.get_many(uri, list(items)[:1])
    # cache misses only: the second read of cam_01 is a hit
    assert reader.stats.downloaded == [first, second] and reader.stats.hits == 1
    assert reader.local_path(first).exists() and reader.cached_bytes() == reader.stats.downloaded_bytes


def test_the_cache_folder_of_the_machine_wins_over_the_drivers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ipsp.config import Settings

    monkeypatch.delenv("IPSP_SHARD_CACHE_DIR", raising=False)
    settings = Settings(home=tmp_path / "home")  # type: ignore[call-arg]
    assert cache_dir(settings) == tmp_path / "home" / "shard-cache"
    driver = Settings(home=tmp_path / "home", shard_cache_dir=tmp_path / "driver")  # type: ignore[call-arg]
    assert cache_dir(driver) == tmp_path / "driver"
    # an executor gets the driver's settings, but its own machine (environment) names its cache
    monkeypatch.setenv("IPSP_SHARD_CACHE_DIR", str(tmp_path / "worker"))
    assert cache_dir(driver) == tmp_path / "worker"
    assert ShardReader.from_settings(driver).cache_dir == (tmp_path / "worker").resolve()


def test_a_task_report_says_what_its_task_fetched_and_what_the_cache_holds(tmp_path: Path, reader: ShardReader) -> None:
    from ipsp.streaming.task.outcome import TaskReport
    from ipsp.streaming.task.run import account_cache

    first, items, _ = _publish(tmp_path, "cam_01")
    second, _, _ = _publish(tmp_path, "cam_02")
    reader.get_many(first, list(items)[:1])  # an earlier task's fetch
    before = (len(reader.stats.downloaded), reader.stats.downloaded_bytes, reader.stats.hits)
    reader.get_many(first, list(items)[:1])
    reader.get_many(second, ["cam_02_00000"])
    report = TaskReport()
    account_cache(report, reader, before)
    assert report.fetched_shards == [second] and report.cache_hits == 1
    assert report.cache.endswith(f":{reader.cache_dir}") and report.cache_bytes == reader.cached_bytes()
    assert 0 < report.fetched_bytes < report.cache_bytes
