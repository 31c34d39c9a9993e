"""``file://`` backend: a folder on local disk, the embedded default."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

from ipsp.storage.base import ObjectInfo, ObjectNotFound, ObjectStore, StorageError, check_key, sha256_file


class LocalStore(ObjectStore):
    """Objects are files under a root folder; writes go through a temp file and a rename."""

    def __init__(self, root_uri: str) -> None:
        parsed = urlparse(root_uri)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            raise StorageError(f"not a local file URI: {root_uri!r} (expected file:///absolute/path)")
        self.base = Path(unquote(parsed.path))
        self.root = self.base.as_uri()

    def _path(self, key: str) -> Path:
        return self.base / check_key(key)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.part")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        path = self._path(key)
        try:
            with path.open("rb") as fh:
                if start:
                    fh.seek(start)
                if end is None:
                    return fh.read()
                return fh.read(max(0, end - (start or 0)))
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFound(f"no such object: {self.uri(key)}") from None

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFound(f"no such object: {self.uri(key)}")
        return ObjectInfo(key, path.stat().st_size)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if not self.base.is_dir():
            return
        found = []
        for path in self.base.rglob("*"):
            if path.is_file() and not path.name.endswith(".part"):
                key = path.relative_to(self.base).as_posix()
                if key.startswith(prefix):
                    found.append(ObjectInfo(key, path.stat().st_size))
        yield from sorted(found, key=lambda info: info.key)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def _upload(self, path: Path, key: str) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        shutil.copyfile(path, tmp)
        os.replace(tmp, target)

    def staging_path(self, key: str) -> Path:
        """A temporary path beside ``key``'s file (same folder, so same file system).

        A writer builds a large file there and ``place_file`` moves it into place:
        no second copy of the bytes. The ``.part`` suffix keeps it out of ``list``.
        """
        target = self._path(check_key(key))
        target.parent.mkdir(parents=True, exist_ok=True)
        return target.with_name(f".{target.name}.{os.getpid()}.part")

    def place_file(self, path: Path, key: str) -> str:
        """Move a file built at ``staging_path(key)`` to ``key`` atomically; return its sha256."""
        digest = sha256_file(path)
        os.replace(path, self._path(check_key(key)))
        return digest

    def _download(self, key: str, path: Path) -> None:
        source = self._path(key)
        if not source.is_file():
            raise ObjectNotFound(f"no such object: {self.uri(key)}")
        shutil.copyfile(source, path)
