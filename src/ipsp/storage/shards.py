"""LMDB shards: how frames are assigned to them, how one is written, and how frames are read back.

A shard is one single-file LMDB (``subdir=False``), so one shard is one object on
the store: key = the frame's ``record_key`` (UTF-8), value = the frame's bytes.

Writing is deterministic: keys go in sorted order in one transaction, pages are
zero-initialised and the map size is derived from the data, so the same frames
give the same file bytes (same sha256) on every run with the same lmdb library.

``ShardReader`` is what the stream job uses: it downloads whole shards to a
bounded local cache (LRU by size), opens each read-only with ``lock=False``
once per process, and reopens after a fork instead of sharing a handle.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ipsp.config import Settings
from ipsp.storage.base import sha256_file

log = logging.getLogger(__name__)

PAGE = 4096
MIB = 1 << 20
#: default target size of one shard (the cache unit of the stream job)
DEFAULT_SHARD_BYTES = 128 * MIB
#: a write that fills the map restarts with a map this many times larger
MAP_GROWTH = 2
MAX_MAP_ATTEMPTS = 8


# --- planning (pure) -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlannedFrame:
    """A validated frame waiting for its shard; ``source`` says where to read its bytes."""

    record_key: str
    camera_id: str
    frame_index: int
    source: str
    bytes: int
    sha256: str
    width: int = 0
    height: int = 0
    format: str = "jpeg"


@dataclass(frozen=True, slots=True)
class ShardPlan:
    """One shard to write: its object key (relative to the dataset root) and its frames."""

    key: str
    camera_id: str
    frames: tuple[PlannedFrame, ...]

    @property
    def data_bytes(self) -> int:
        """Sum of the frames' byte sizes."""
        return sum(frame.bytes for frame in self.frames)

    def expected(self) -> dict[str, str]:
        """record_key -> sha256 of the value, what a verified shard must hold exactly."""
        return {frame.record_key: frame.sha256 for frame in self.frames}


def shard_key(camera_id: str, number: int) -> str:
    """Object key of a camera's n-th shard: ``shards/<camera_id>/<camera_id>-<nnnn>.lmdb``."""
    return f"shards/{camera_id}/{camera_id}-{number:04d}.lmdb"


def plan_shards(frames: Iterable[PlannedFrame], target_bytes: int = DEFAULT_SHARD_BYTES) -> list[ShardPlan]:
    """Assign frames to shards: by camera, then frame order, cut before ``target_bytes`` is passed.

    Deterministic in the frames alone (the input order does not matter). A frame
    larger than the target gets a shard of its own rather than failing.
    """
    if target_bytes < 1:
        raise ValueError("target shard size must be positive")
    by_camera: dict[str, list[PlannedFrame]] = {}
    for frame in frames:
        by_camera.setdefault(frame.camera_id, []).append(frame)
    plans: list[ShardPlan] = []
    for camera_id in sorted(by_camera):
        ordered = sorted(by_camera[camera_id], key=lambda f: (f.frame_index, f.record_key))
        current: list[PlannedFrame] = []
        size = 0
        for frame in ordered:
            if current and size + frame.bytes > target_bytes:
                plans.append(ShardPlan(shard_key(camera_id, _count(plans, camera_id)), camera_id, tuple(current)))
                current, size = [], 0
            current.append(frame)
            size += frame.bytes
        if current:
            plans.append(ShardPlan(shard_key(camera_id, _count(plans, camera_id)), camera_id, tuple(current)))
    return plans


def _count(plans: list[ShardPlan], camera_id: str) -> int:
    return sum(1 for plan in plans if plan.camera_id == camera_id)


def initial_map_size(value_sizes: Iterable[int], key_bytes: int = 64) -> int:
    """A map size that fits the values with room to spare, from their sizes alone.

    Values over a page go to overflow pages (16-byte header, whole pages);
    branch/leaf pages and the two meta pages are covered by the margin.
    """
    pages = 0
    count = 0
    for size in value_sizes:
        pages += -(-(size + 16 + key_bytes) // PAGE)
        count += 1
    raw = (pages + 2 * count // 32 + 64) * PAGE
    return -(-int(raw * 1.10) // MIB) * MIB


# --- writing --------------------------------------------------------------------


def write_shard(
    path: Path,
    items: Callable[[], Iterable[tuple[str, bytes]]],
    map_size: int,
) -> int:
    """Write one LMDB file at ``path`` from ``items()`` (called again after a map-full restart).

    ``items()`` must yield keys in ascending byte order (``sort_keys`` gives it),
    so values stream straight into one append-only transaction and a shard is
    never held in memory. When the map fills up, the file is removed and the
    write starts over with a larger map, so the final bytes depend only on the
    data. Returns the map size used.
    """
    import lmdb

    for _attempt in range(MAX_MAP_ATTEMPTS):
        path.unlink(missing_ok=True)
        env = lmdb.open(
            str(path),
            subdir=False,
            map_size=map_size,
            lock=False,
            meminit=True,
            sync=False,
            metasync=False,
            readahead=False,
            max_dbs=0,
        )
        try:
            with env.begin(write=True) as txn:
                previous = b""
                for key, value in items():
                    raw = key.encode()
                    if raw <= previous:
                        raise ValueError(f"shard keys must be unique and ascending: {key!r} after {previous!r}")
                    txn.put(raw, value, overwrite=False, append=True)
                    previous = raw
            # no fsync: the file is uploaded (and verified) next, then deleted
            return map_size
        except lmdb.MapFullError:
            log.info("LMDB map of %s full at %d bytes; growing", path.name, map_size)
            map_size *= MAP_GROWTH
        finally:
            env.close()
    raise RuntimeError(f"{path}: LMDB map still full after {MAX_MAP_ATTEMPTS} attempts")


def sort_keys(keys: Iterable[str]) -> list[str]:
    """Keys in the byte order LMDB keeps them (the order ``write_shard`` wants)."""
    return sorted(keys, key=str.encode)


def shard_contents(path: Path) -> dict[str, str]:
    """record_key -> sha256 of every value in an LMDB file (opened read-only, lock=False)."""
    import lmdb

    env = lmdb.open(str(path), subdir=False, readonly=True, lock=False, readahead=False)
    try:
        with env.begin(buffers=True) as txn:
            return {bytes(k).decode(): hashlib.sha256(v).hexdigest() for k, v in txn.cursor()}
    finally:
        env.close()


def compare_contents(found: Mapping[str, str], expected: Mapping[str, str]) -> str:
    """Empty when a shard holds exactly the expected keys and values, else what differs."""
    if found == expected:
        return ""
    extra = sorted(set(found) - set(expected))
    missing = sorted(set(expected) - set(found))
    changed = sorted(k for k in set(found) & set(expected) if found[k] != expected[k])
    parts = []
    for label, keys in (("unexpected", extra), ("missing", missing), ("different", changed)):
        if keys:
            parts.append(f"{len(keys)} {label} key(s) (e.g. {keys[0]})")
    return ", ".join(parts)


# --- reading --------------------------------------------------------------------


class ShardError(Exception):
    """A frame could not be read from its shard (the stream job dead-letters these)."""


class ShardNotFound(ShardError):
    """The shard object does not exist on the store."""


class FrameNotFound(ShardError):
    """The shard exists but holds no such key."""


class ShardCorrupt(ShardError):
    """The shard's bytes do not match its sha256, or it is not a readable LMDB file."""


@dataclass
class _Open:
    env: Any
    path: Path
    sha256: str | None  # of the file when it was opened (from its sidecar)


class _Handles:
    """This process's open shard environments, shared by every ShardReader in it.

    LMDB (and py-lmdb's guard) forbid opening one file twice in a process, so
    handles are keyed by the local file and live here, not in a reader. After a
    fork the child forgets the parent's handles (never uses them) and reopens.
    """

    def __init__(self, max_open: int = 64) -> None:
        self.lock = threading.RLock()
        self.max_open = max_open
        self.pid = os.getpid()
        self.open: OrderedDict[Path, _Open] = OrderedDict()

    def check_fork(self) -> bool:
        """True (once) in a child after a fork: the inherited handles were dropped unused."""
        if os.getpid() == self.pid:
            return False
        self.open = OrderedDict()  # the parent's handles are left to the garbage collector
        self.pid = os.getpid()
        return True

    def get(self, path: Path) -> _Open | None:
        handle = self.open.get(path)
        if handle is not None:
            self.open.move_to_end(path)
        return handle

    def add(self, handle: _Open) -> None:
        self.open[handle.path] = handle
        while len(self.open) > self.max_open:
            self.close(next(iter(self.open)))

    def close(self, path: Path) -> None:
        handle = self.open.pop(path, None)
        if handle is not None:
            handle.env.close()


_HANDLES = _Handles()


@dataclass
class CacheStats:
    """Counters of one reader, for logs, metrics and tests."""

    hits: int = 0
    downloads: int = 0
    evictions: int = 0
    reopened_after_fork: int = 0
    downloaded_bytes: int = 0
    evicted: list[str] = field(default_factory=list)
    #: shard URIs this reader downloaded (cache misses), oldest first
    downloaded: list[str] = field(default_factory=list)


class ShardReader:
    """Read frames by (shard URI, key) through a local, size-bounded cache of whole shards.

    - Shards are downloaded whole (one object each) into ``cache_dir``, verified
      against a sha256 when one is known (``digests`` or the call's argument),
      and renamed into place, so processes sharing the folder never see half a file.
    - The cache is bounded by ``max_bytes`` over the shard files in the folder
      (all processes together); the least recently used shards go first. A
      single shard larger than the bound is still served (logged), with
      everything else evicted.
    - Each process opens a shard read-only with ``lock=False`` once and keeps the
      handle (shared by every reader in the process); after a fork the child
      drops the parent's handles and reopens.
    """

    def __init__(
        self,
        cache_dir: Path,
        max_bytes: int,
        settings: Settings | None = None,
        digests: Mapping[str, str] | None = None,
    ) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self.cache_dir = Path(cache_dir).resolve()
        self.max_bytes = max_bytes
        self.settings = settings
        self.digests = dict(digests or {})
        self.stats = CacheStats()
        self._pid = os.getpid()
        self.cache_dir.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_settings(cls, settings: Settings, digests: Mapping[str, str] | None = None) -> ShardReader:
        """A reader over :func:`cache_dir` bounded by ``shard_cache_bytes``."""
        return cls(cache_dir(settings), settings.shard_cache_bytes, settings, digests)

    def get(self, shard_uri: str, key: str, shard_sha256: str | None = None) -> bytes:
        """The bytes stored under ``key`` in the shard; ShardNotFound / FrameNotFound / ShardCorrupt."""
        result = self.get_many(shard_uri, [key], shard_sha256)[key]
        if isinstance(result, Exception):
            raise result
        return result

    def get_many(
        self, shard_uri: str, keys: Sequence[str], shard_sha256: str | None = None
    ) -> dict[str, bytes | Exception]:
        """Several keys of one shard in one read transaction; a failure is returned per key.

        A shard-level failure (missing, corrupt) becomes that exception for every
        key; a missing key becomes FrameNotFound for that key only. Storage
        outages (``StorageError`` other than not-found) are raised, not returned:
        they are transient, not a property of the frame.
        """
        with _HANDLES.lock:
            try:
                handle = self._handle(shard_uri, shard_sha256 or self.digests.get(shard_uri))
            except ShardError as exc:
                return dict.fromkeys(keys, exc)
            out: dict[str, bytes | Exception] = {}
            with handle.env.begin(buffers=False) as txn:
                for key in keys:
                    value = txn.get(key.encode())
                    out[key] = value if value is not None else FrameNotFound(f"no key {key!r} in shard {shard_uri}")
            return out

    def cached_bytes(self) -> int:
        """Bytes of shard files now in the cache folder (all processes)."""
        return sum(size for _path, size, _mtime in self._files())

    def close(self) -> None:
        """Close this process's handles on this reader's cache folder (files stay cached)."""
        with _HANDLES.lock:
            if not _HANDLES.check_fork():
                for path in [p for p in _HANDLES.open if p.parent == self.cache_dir]:
                    _HANDLES.close(path)

    # -- internals

    def _handle(self, shard_uri: str, digest: str | None) -> _Open:
        if _HANDLES.check_fork() or os.getpid() != self._pid:
            self._pid = os.getpid()
            self.stats.reopened_after_fork += 1
        path = self._local_path(shard_uri)
        handle = _HANDLES.get(path)
        if handle is not None and path.exists() and digest in (None, handle.sha256):
            self.stats.hits += 1
            _touch(path)
            return handle
        if handle is not None:  # evicted by another process, or stale: reopen a fresh copy
            _HANDLES.close(path)
        if path.exists() and digest in (None, _sidecar(path)):
            self.stats.hits += 1
            _touch(path)
        else:
            self._download(shard_uri, path, digest)
        return self._open_env(shard_uri, path)

    def _open_env(self, shard_uri: str, path: Path) -> _Open:
        import lmdb

        try:
            env = lmdb.open(str(path), subdir=False, readonly=True, lock=False, readahead=False, max_readers=512)
        except lmdb.Error as exc:
            _remove(path)
            raise ShardCorrupt(f"shard {shard_uri} is not a readable LMDB file: {exc}") from None
        handle = _Open(env=env, path=path, sha256=_sidecar(path))
        _HANDLES.add(handle)
        return handle

    def _download(self, shard_uri: str, path: Path, digest: str | None) -> None:
        from ipsp.storage import IntegrityError, ObjectNotFound, StorageError, resolve

        try:
            store, key = resolve(shard_uri, self.settings)
            size = store.stat(key).size
        except ObjectNotFound:
            raise ShardNotFound(f"shard {shard_uri} does not exist") from None
        except StorageError as exc:
            if "unsupported storage URI" in str(exc) or "does not name an object" in str(exc):
                raise ShardNotFound(f"shard URI {shard_uri!r} is not valid: {exc}") from None
            raise
        self._make_room(size, keep=path)
        # a name of our own: two processes may fetch the same shard at once
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")
        try:
            store.download_file(key, tmp)
            actual = sha256_file(tmp)
            if digest is not None and actual != digest:
                raise ShardCorrupt(f"shard {shard_uri}: sha256 {actual} != expected {digest}")
            _sidecar_path(path).write_text(actual)
            os.replace(tmp, path)
        except ObjectNotFound:
            raise ShardNotFound(f"shard {shard_uri} does not exist") from None
        except IntegrityError as exc:
            raise ShardCorrupt(str(exc)) from None
        finally:
            tmp.unlink(missing_ok=True)
        self.stats.downloads += 1
        self.stats.downloaded_bytes += size
        self.stats.downloaded.append(shard_uri)

    def _make_room(self, incoming: int, keep: Path) -> None:
        files = sorted(self._files(), key=lambda item: item[2])  # least recently used first
        total = sum(size for path, size, _ in files if path != keep) + incoming
        if incoming > self.max_bytes:
            log.warning("shard of %d bytes is larger than the whole cache (%d bytes)", incoming, self.max_bytes)
        for path, size, _mtime in files:
            if total <= self.max_bytes:
                break
            if path == keep:
                continue
            _HANDLES.close(path)
            _remove(path)
            total -= size
            self.stats.evictions += 1
            self.stats.evicted.append(path.name)

    def _files(self) -> list[tuple[Path, int, float]]:
        found = []
        for path in self.cache_dir.glob("*.lmdb"):
            with contextlib.suppress(FileNotFoundError):
                info = path.stat()
                found.append((path, info.st_size, info.st_mtime))
        return found

    def local_path(self, shard_uri: str) -> Path:
        """Where the shard is (or would be) cached in this reader's folder."""
        return self._local_path(shard_uri)

    def _local_path(self, shard_uri: str) -> Path:
        digest = hashlib.sha256(shard_uri.encode()).hexdigest()[:24]
        name = shard_uri.rstrip("/").rsplit("/", 1)[-1]
        return self.cache_dir / f"{digest}-{name}"


def cache_dir(settings: Settings) -> Path:
    """The shard cache folder of this machine: ``IPSP_SHARD_CACHE_DIR`` where the code runs, else the settings'.

    The environment of the process comes first because a cache belongs to the
    machine, not to the job: a Spark executor gets its settings from the driver,
    yet must keep its shards where its own machine (or local-stack worker) says.
    """
    local = os.environ.get("IPSP_SHARD_CACHE_DIR", "").strip()
    if local:
        return Path(local).expanduser()
    return settings.shard_cache_dir or settings.home / "shard-cache"


def _sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _sidecar(path: Path) -> str | None:
    try:
        return _sidecar_path(path).read_text().strip()
    except FileNotFoundError:
        return None


def _remove(path: Path) -> None:
    # unlinking a file another process has mapped is safe: its mapping lives on
    path.unlink(missing_ok=True)
    _sidecar_path(path).unlink(missing_ok=True)


def _touch(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.utime(path)


def local_work_dir(base: str | None = None) -> Path:
    """A fresh folder for writing shards on the task's local disk (SPARK_LOCAL_DIRS when set)."""
    root = base or os.environ.get("SPARK_LOCAL_DIRS", "").split(",")[0] or None
    return Path(tempfile.mkdtemp(prefix="ipsp-pack-", dir=root))
