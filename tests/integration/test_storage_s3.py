"""The s3:// object store against the local S3 server: the same behaviour as file://."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from ipsp.config import Settings
from ipsp.storage import IntegrityError, ObjectNotFound, StorageError, open_store, resolve


@pytest.fixture
def store(stack_settings: Settings):  # type: ignore[no-untyped-def]
    return open_store(f"s3://ipsp/tests/storage-{uuid.uuid4().hex[:8]}", stack_settings)


def test_put_get_range_list_delete(store) -> None:  # type: ignore[no-untyped-def]
    store.put("a/b.bin", b"0123456789")
    store.put("a/c.bin", b"x")
    store.put("z.bin", b"y")
    assert store.get("a/b.bin") == b"0123456789"
    assert store.get("a/b.bin", 2, 5) == b"234"
    assert store.get("a/b.bin", 7) == b"789"
    assert store.stat("a/b.bin").size == 10
    assert [o.key for o in store.list()] == ["a/b.bin", "a/c.bin", "z.bin"]
    assert [o.key for o in store.list("a/")] == ["a/b.bin", "a/c.bin"]
    store.delete("a/c.bin")
    assert not store.exists("a/c.bin")
    with pytest.raises(ObjectNotFound):
        store.get("a/c.bin")


def test_upload_download_integrity(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "blob.bin"
    src.write_bytes(bytes(range(256)) * 4096)
    digest = store.upload_file(src, "files/blob.bin")
    copy = store.download_file("files/blob.bin", tmp_path / "copy.bin", sha256=digest)
    assert copy.read_bytes() == src.read_bytes()
    with pytest.raises(IntegrityError):
        store.download_file("files/blob.bin", tmp_path / "bad.bin", sha256="0" * 64)


def test_resolve_full_uri(store, stack_settings: Settings) -> None:  # type: ignore[no-untyped-def]
    store.put("d/e.txt", b"hi")
    parent, key = resolve(store.uri("d/e.txt"), stack_settings)
    assert key == "e.txt" and parent.get(key) == b"hi"


def test_wrong_credentials_refused(stack_settings: Settings) -> None:
    wrong = stack_settings.model_copy(update={"s3_access_key": "not-the-key"})
    with pytest.raises(StorageError, match="failed"):
        open_store("s3://ipsp/tests", wrong).put("x.bin", b"x")
