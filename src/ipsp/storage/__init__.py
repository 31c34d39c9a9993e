"""Object storage behind one small interface: ``file://`` (local disk) or ``s3://`` (minio SDK).

Backends are chosen by the URI's scheme, so every stage takes a URI and never
cares where the bytes live.
"""

from __future__ import annotations

from urllib.parse import urlparse

from ipsp.config import Settings, get_settings
from ipsp.storage.base import (
    IntegrityError,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StorageError,
    sha256_file,
)

__all__ = [
    "IntegrityError",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "StorageError",
    "open_store",
    "resolve",
    "sha256_file",
]


def open_store(uri: str, settings: Settings | None = None) -> ObjectStore:
    """The store rooted at ``uri`` (``file:///abs/dir`` or ``s3://bucket[/prefix]``)."""
    scheme = urlparse(uri).scheme
    if scheme == "file":
        from ipsp.storage.local import LocalStore

        return LocalStore(uri)
    if scheme == "s3":
        from ipsp.storage.s3 import S3Store

        return S3Store(uri, settings or get_settings())
    raise StorageError(f"unsupported storage URI {uri!r}: use file:///absolute/path or s3://bucket/prefix")


def resolve(uri: str, settings: Settings | None = None) -> tuple[ObjectStore, str]:
    """Split a full object URI into (store at its parent folder, key)."""
    parsed = urlparse(uri)
    head, _, key = parsed.path.rstrip("/").rpartition("/")
    if not key:
        raise StorageError(f"{uri!r} does not name an object")
    root = f"{parsed.scheme}://{parsed.netloc}{head}"
    if parsed.scheme == "file" and not head:
        root = "file:///"
    return open_store(root, settings), key
