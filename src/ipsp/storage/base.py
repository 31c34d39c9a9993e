"""The object-store interface every stage uses, whatever the backend."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ipsp.errors import UserError

CHUNK = 1 << 20


class StorageError(UserError):
    """An object-store operation failed (message names the URI)."""


class ObjectNotFound(StorageError):
    """The object does not exist."""


class IntegrityError(StorageError):
    """Bytes read or written do not match the expected sha256."""


@dataclass(frozen=True)
class ObjectInfo:
    """What a listing or stat returns about one object (key relative to the store root)."""

    key: str
    size: int


def sha256_file(path: Path) -> str:
    """Hex sha256 of a local file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_key(key: str) -> str:
    """Keys are relative, '/'-separated, without '..' (no escaping the root)."""
    if not key or key.startswith("/") or any(part in ("", ".", "..") for part in key.split("/")):
        raise StorageError(f"invalid object key {key!r}")
    return key


class ObjectStore(ABC):
    """A bucket-like store rooted at a URI; keys are relative to that root."""

    root: str

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Write an object whole (replacing any existing one)."""

    @abstractmethod
    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        """Read an object, or the byte range [start, end) of it."""

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Size of an object; ObjectNotFound if absent."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with prefix, in key order."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object (absent is not an error)."""

    @abstractmethod
    def _upload(self, path: Path, key: str) -> None: ...

    @abstractmethod
    def _download(self, key: str, path: Path) -> None: ...

    def exists(self, key: str) -> bool:
        """True when the object exists."""
        try:
            self.stat(key)
        except ObjectNotFound:
            return False
        return True

    def uri(self, key: str = "") -> str:
        """Full URI of a key under this store."""
        return self.root.rstrip("/") + ("/" + check_key(key) if key else "")

    def upload_file(self, path: Path, key: str, sha256: str | None = None) -> str:
        """Upload a local file, check the stored size, return its sha256.

        The sha256 is taken before the upload; when given, it must match (the
        file changed under us otherwise). A ``<key>.sha256`` sidecar is not kept:
        the manifest and model cards carry the digests.
        """
        digest = sha256_file(path)
        if sha256 is not None and digest != sha256:
            raise IntegrityError(f"{path}: sha256 {digest} != expected {sha256}")
        self._upload(path, check_key(key))
        stored = self.stat(key).size
        if stored != path.stat().st_size:
            raise IntegrityError(f"{self.uri(key)}: stored {stored} bytes, local file has {path.stat().st_size}")
        return digest

    def download_file(self, key: str, path: Path, sha256: str | None = None) -> Path:
        """Download to a local file atomically; verify the sha256 when given."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.part")
        try:
            self._download(check_key(key), tmp)
            if sha256 is not None and (digest := sha256_file(tmp)) != sha256:
                raise IntegrityError(f"{self.uri(key)}: sha256 {digest} != expected {sha256}")
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        return path
