"""Where the inputs are and how a task reads them: listing, reading with read-ahead, hashing.

Shared by the inspect stage (every input) and the write stage (the frames of a shard).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

from ipsp.config import Settings
from ipsp.errors import UserError

#: files read ahead of the one being decoded or written, and the threads reading them
READ_AHEAD = 6
READ_THREADS = 2

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class InputFile:
    """One listed input: its path relative to the source root, and its listed size (-1: unknown)."""

    rel: str
    size: int


# --- locations --------------------------------------------------------------------


def normalize_uri(location: str) -> str:
    """A local path or URI as a URI (``file:///abs`` or ``s3://...``), without a trailing slash."""
    parsed = urlparse(location)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise UserError(f"{location!r}: an S3 location needs a bucket, e.g. s3://ipsp/datasets/demo")
        return location.rstrip("/")
    if parsed.scheme == "file":
        return Path(unquote(parsed.path)).resolve().as_uri()
    if parsed.scheme in ("", None) or len(parsed.scheme) == 1:  # 'C:' style drive letters
        return Path(location).expanduser().resolve().as_uri()
    raise UserError(f"{location!r}: use a local path, file:///absolute/path or s3://bucket/prefix")


def _local_path(uri: str) -> Path | None:
    parsed = urlparse(uri)
    return Path(unquote(parsed.path)) if parsed.scheme == "file" else None


def list_inputs(source_uri: str, settings: Settings) -> list[InputFile]:
    """Every input file under the source, sorted; hidden files and folders (``.name``) are skipped."""
    root = _local_path(source_uri)
    if root is not None:
        if not root.is_dir():
            raise UserError(f"input folder {root} does not exist or is not a folder")
        return _list_local(root)
    from ipsp.storage import StorageError, open_store

    try:
        store = open_store(source_uri, settings)
        return [
            InputFile(info.key, info.size)
            for info in store.list()
            if not any(part.startswith(".") for part in info.key.split("/"))
        ]
    except StorageError as exc:
        raise UserError(f"cannot list {source_uri}: {exc}") from None


def _list_local(root: Path) -> list[InputFile]:
    found: list[InputFile] = []
    for folder, dirs, files in os.walk(root, followlinks=False, onerror=None):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.startswith("."):
                continue
            path = Path(folder) / name
            try:
                size = path.stat().st_size
            except OSError:
                size = -1  # a dangling link or a vanished file: the read will say so
            found.append(InputFile(path.relative_to(root).as_posix(), size))
    return sorted(found, key=lambda f: f.rel)


# pool of stores per worker process, rebuilt after a fork (clients hold sockets)
_STORES: dict[str, Any] = {}
_STORES_PID = [0]


def cached_store(uri: str, settings: Settings) -> Any:
    """The store at ``uri``, opened once per process (again after a fork: clients hold sockets)."""
    from ipsp.storage import open_store

    if _STORES_PID[0] != os.getpid():
        _STORES.clear()
        _STORES_PID[0] = os.getpid()
    if uri not in _STORES:
        _STORES[uri] = open_store(uri, settings)
    return _STORES[uri]


def read_input(source_uri: str, rel: str, settings: Settings) -> bytes:
    """The bytes of one input file (local path or object); OSError / StorageError when unreadable."""
    root = _local_path(source_uri)
    if root is not None:
        with open(root / rel, "rb") as fh:
            return fh.read()
    data: bytes = cached_store(source_uri, settings).get(rel)
    return data


def check_locations(source_uri: str, dataset_uri: str) -> None:
    """Refuse a target inside the source, whose files would become inputs."""
    src, dst = _local_path(source_uri), _local_path(dataset_uri)
    if source_uri == dataset_uri or (src and dst and (dst == src or src in dst.parents)):
        raise UserError("the --to location must not be inside the input folder (its files would become inputs)")
    if not src and not dst and dataset_uri.startswith(source_uri.rstrip("/") + "/"):
        raise UserError("the --to location must not be inside the input prefix (its files would become inputs)")


class CpuClock:
    """CPU seconds of this whole process (read-ahead threads included) since the last lap.

    Task-side timings are wall clock, which a busy machine stretches; this says
    what the work itself cost. A lap also covers the time Spark spent between two
    records, which is the task's work too.
    """

    def __init__(self) -> None:
        self.last = time.process_time()

    def lap(self) -> float:
        """Seconds since the previous lap."""
        now = time.process_time()
        spent, self.last = now - self.last, now
        return spent


def read_ahead(items: Iterable[T], fn: Callable[[T], R], depth: int = READ_AHEAD) -> Iterator[tuple[T, R]]:
    """``(item, fn(item))`` in input order, with up to ``depth`` calls of ``fn`` running ahead.

    ``fn`` reads a file and hashes it; both release the GIL, so the next files
    load while the caller decodes or writes this one. ``fn`` must not raise.
    """
    from concurrent.futures import Future, ThreadPoolExecutor

    source = iter(items)
    window: deque[tuple[T, Future[R]]] = deque()
    with ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="ipsp-read") as pool:
        for item in source:
            window.append((item, pool.submit(fn, item)))
            if len(window) >= depth:
                break
        while window:
            item, future = window.popleft()
            for following in source:
                window.append((following, pool.submit(fn, following)))
                break
            yield item, future.result()


@dataclass(frozen=True, slots=True)
class Loaded:
    """One input read (and hashed, in the reading thread), or why it could not be read."""

    data: bytes | None
    sha256: str
    error: str
    seconds: float


def load_input(source_uri: str, rel: str, settings: Settings) -> Loaded:
    """Read one input and take its sha256 right away; a read error becomes ``Loaded.error``."""
    from ipsp.storage import StorageError

    started = time.perf_counter()
    try:
        data = read_input(source_uri, rel, settings)
    except (OSError, StorageError) as exc:
        return Loaded(None, "", f"{type(exc).__name__}: {exc}"[:300], time.perf_counter() - started)
    return Loaded(data, hashlib.sha256(data).hexdigest(), "", time.perf_counter() - started)
