"""The file:// object store: put/get/range/stat/list/delete/upload/download with integrity."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ipsp.storage import IntegrityError, ObjectNotFound, StorageError, open_store, resolve


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    return open_store((tmp_path / "root").as_uri())


def test_put_get_range_stat(store) -> None:  # type: ignore[no-untyped-def]
    store.put("a/b.bin", b"0123456789")
    assert store.get("a/b.bin") == b"0123456789"
    assert store.get("a/b.bin", 2, 5) == b"234"
    assert store.get("a/b.bin", 7) == b"789"
    assert store.stat("a/b.bin").size == 10
    assert store.exists("a/b.bin") and not store.exists("a/c.bin")


def test_list_is_sorted_and_prefixed(store) -> None:  # type: ignore[no-untyped-def]
    for key in ("z/1", "a/2", "a/1"):
        store.put(key, b"x")
    assert [o.key for o in store.list()] == ["a/1", "a/2", "z/1"]
    assert [o.key for o in store.list("a/")] == ["a/1", "a/2"]


def test_missing_and_delete(store) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ObjectNotFound, match="no such object"):
        store.get("nope")
    store.put("k", b"v")
    store.delete("k")
    store.delete("k")
    assert not store.exists("k")


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "."])
def test_bad_keys_rejected(store, key: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(StorageError, match="invalid object key"):
        store.put(key, b"x")


def test_upload_download_with_integrity(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload" * 1000)
    digest = store.upload_file(src, "files/src.bin")
    assert digest == hashlib.sha256(src.read_bytes()).hexdigest()
    out = store.download_file("files/src.bin", tmp_path / "out" / "copy.bin", sha256=digest)
    assert out.read_bytes() == src.read_bytes()
    with pytest.raises(IntegrityError):
        store.download_file("files/src.bin", tmp_path / "bad.bin", sha256="0" * 64)
    assert not (tmp_path / "bad.bin").exists()
    with pytest.raises(IntegrityError):
        store.upload_file(src, "files/other.bin", sha256="0" * 64)


def test_resolve_splits_uri(store) -> None:  # type: ignore[no-untyped-def]
    store.put("d/e.txt", b"hi")
    parent, key = resolve(store.uri("d/e.txt"))
    assert key == "e.txt" and parent.get(key) == b"hi"


def test_unsupported_scheme() -> None:
    with pytest.raises(StorageError, match="unsupported storage URI"):
        open_store("ftp://host/x")


def test_a_staged_file_is_moved_into_place_unlisted_until_then(store) -> None:  # type: ignore[no-untyped-def]
    staged = store.staging_path("shards/cam_01/cam_01-0000.lmdb")
    staged.write_bytes(b"shard bytes")
    assert [info.key for info in store.list()] == []  # a half-written file is not an object
    digest = store.place_file(staged, "shards/cam_01/cam_01-0000.lmdb")
    assert digest == hashlib.sha256(b"shard bytes").hexdigest()
    assert not staged.exists()
    assert store.get("shards/cam_01/cam_01-0000.lmdb") == b"shard bytes"
