"""``ipsp pack``: a PySpark batch job that turns an image folder into LMDB shards on an object store.

Two Spark stages, planned on the driver in between:

1. **inspect** - the driver lists the inputs (a local folder, walked
   recursively, or an ``s3://`` prefix) and parses each file name; Spark tasks
   (about 1,000 files each) read each file with a few files of read-ahead in
   threads, hash it as it arrives, and validate it (``validate.check_image``:
   header limits, then the whole stream decoded, at 1/8 scale for JPEG); only
   metadata (size, dimensions, format, sha256) - never the pixels - goes back.
2. **plan** (driver) - duplicates (same sha256) are set aside, frames are
   assigned to shards deterministically (camera, then frame order, cut at the
   target size) and the manifest rows are fixed.
3. **write** - the shards are dealt into one group per core; a task writes its
   shards one after another, reading frames ahead in threads and checking each
   against the sha256 from stage 1, while the previous shard uploads in a
   background thread (``file://``: the shard is built beside its final place
   and moved there, no copy). LMDB values stream in with ``append``, so no shard
   is ever held in memory. A shard already on the store is verified (same keys,
   same value digests) and skipped, or the job stops with a clear error rather
   than overwrite different data.

A re-run over a finished dataset (same options) needs no Spark at all: the
driver hashes every input (threads) against the stored manifest, decodes only
the few files it does not know, and checks every shard against the size and
sha256 that ``pack.json`` recorded (``file://``: hashed in place; ``s3://``: by
size). Only what does not match goes to the Spark stages.

Outputs under the target URI (CONTRACTS.md, section "Packed datasets"):
``shards/<camera_id>/<camera_id>-<nnnn>.lmdb``, ``rejects.jsonl``, ``pack.json``
and, written last so it marks a complete dataset, ``manifest.parquet``.

Why the tasks read the bytes themselves instead of Spark's ``binaryFile``
source: ``binaryFile`` over ``s3://`` needs the s3a connector (hadoop-aws and
the AWS SDK jars), which this deployment does not ship; over a local folder it
silently drops a dangling link (seen with Spark 4.2) and fails the whole task on
an unreadable file, while every input here must end up packed or in the
rejects report. So the driver lists with the storage module (cheap: names and
sizes), and the executors read with it, turning a read error into an
``unreadable`` reject. Local folders must be visible to the executors at the same
path, as with ``binaryFile`` over ``file://``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import shutil
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

from ipsp.config import Settings, get_settings
from ipsp.contracts import ManifestRow, Reject
from ipsp.errors import ServiceUnavailable, UserError
from ipsp.preprocessing.manifest import (
    MANIFEST_NAME,
    REJECTS_NAME,
    SHARDS_PREFIX,
    SUMMARY_NAME,
    PackOptionsRecord,
    PackSummary,
    ShardEntry,
    manifest_bytes,
    read_manifest,
    rejects_bytes,
)
from ipsp.preprocessing.validate import (
    DEFAULT_NAME_PATTERN,
    Checks,
    InvalidInput,
    check_image,
    compile_pattern,
    parse_name,
)
from ipsp.storage.shards import (
    DEFAULT_SHARD_BYTES,
    PlannedFrame,
    ShardPlan,
    compare_contents,
    initial_map_size,
    local_work_dir,
    plan_shards,
    shard_contents,
    sort_keys,
    write_shard,
)

log = logging.getLogger(__name__)

#: files per inspect task: small enough to balance and show progress, big enough to amortise a task
FILES_PER_TASK = 1000
#: files read ahead of the one being decoded or written, and the threads reading them
READ_AHEAD = 6
READ_THREADS = 2
#: at most this many decodes (or 1 in 50 files) run on the driver in a re-run, without Spark
DRIVER_DECODES = 64

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class PackOptions:
    """How to pack; everything that changes the output is recorded in ``pack.json``."""

    name_pattern: str = DEFAULT_NAME_PATTERN
    shard_bytes: int = DEFAULT_SHARD_BYTES
    checks: Checks = field(default_factory=Checks)
    strict: bool = False
    partitions: int | None = None
    work_dir: str | None = None
    progress: bool = True

    def record(self) -> PackOptionsRecord:
        """The output-relevant options, for ``pack.json``."""
        fit = f"{self.checks.fit[0]}x{self.checks.fit[1]}" if self.checks.fit else None
        return PackOptionsRecord(
            name_pattern=self.name_pattern,
            shard_target_bytes=self.shard_bytes,
            max_side=self.checks.max_side,
            max_pixels=self.checks.max_pixels,
            fit=fit,
            quality=self.checks.quality,
        )


@dataclass(frozen=True, slots=True)
class InputFile:
    """One listed input: its path relative to the source root, and its listed size (-1: unknown)."""

    rel: str
    size: int


@dataclass
class PackResult:
    """What a pack did: the summary written to ``pack.json`` plus this run's own counters."""

    summary: PackSummary
    written: int = 0
    skipped: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    def line(self) -> str:
        """The one-line summary the CLI prints."""
        s = self.summary
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(s.reasons.items()) if k != "duplicate") or "none"
        return (
            f"packed {s.packed} frames ({s.data_bytes / 1e6:.1f} MB) into {len(s.shards)} shards "
            f"({self.written} written, {self.skipped} verified and skipped); "
            f"rejected {s.rejected - s.duplicates} ({reasons}); duplicates {s.duplicates} -> {s.dataset_uri}"
        )


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


def _store(uri: str, settings: Settings) -> Any:
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
    data: bytes = _store(source_uri, settings).get(rel)
    return data


# --- stage 1: inspect (runs in Spark tasks) ---------------------------------------


#: what an earlier pack recorded about a frame that passed: sha256, width, height, format
Known = tuple[str, int, int, str]


class _CpuClock:
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


def inspect_files(
    rows: Iterable[tuple[str, str, Known | None]], source_uri: str, checks: Checks, settings: Settings
) -> Iterator[dict[str, Any]]:
    """Read and validate files; yield one small dict per file (no pixels).

    ``rows`` are (rel, record_key, known). Each result has ``rel``, ``record_key``
    and either ``reason``/``detail`` or ``width``/``height``/``format``/``bytes``/
    ``sha256``; plus ``read_s`` (reading and hashing, in read-ahead threads) and
    ``check_s`` (decoding). When ``known`` (from the dataset's own manifest, packed
    with the same checks) has the same sha256 as the bytes just read, the earlier
    verdict stands and the decode is skipped: the same bytes under the same
    checks always get the same verdict.
    """
    cpu = _CpuClock()
    for (rel, record_key, known), loaded in read_ahead(rows, lambda row: load_input(source_uri, row[0], settings)):
        out: dict[str, Any] = {"rel": rel, "record_key": record_key, "read_s": loaded.seconds, "check_s": 0.0}
        out["cpu_s"] = cpu.lap()
        if loaded.data is None:
            out.update(reason="unreadable", detail=loaded.error)
            yield out
            continue
        if known is not None and loaded.sha256 == known[0]:
            out.update(sha256=known[0], width=known[1], height=known[2], format=known[3], bytes=len(loaded.data))
            out["reused"] = True
            yield out
            continue
        started = time.perf_counter()
        try:
            checked = check_image(loaded.data, checks, sha256=loaded.sha256)
            out.update(
                width=checked.width,
                height=checked.height,
                format=checked.format,
                bytes=len(checked.data),
                sha256=checked.sha256,
            )
        except InvalidInput as exc:
            out.update(reason=exc.reason, detail=exc.detail)
        out["check_s"] = time.perf_counter() - started
        yield out


# --- stage 3: write (runs in Spark tasks, one shard each) ---------------------------


class InputChanged(Exception):
    """A file's bytes differ between the inspect and write stages."""


def write_shards(
    plans: Iterable[ShardPlan],
    source_uri: str,
    dataset_uri: str,
    checks: Checks,
    settings: Settings,
    work_dir: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Write (or verify and skip) each planned shard; yield one result dict per shard.

    ``status`` is ``written``, ``skipped`` (already on the store with exactly the
    planned keys and values), ``conflict`` (different data there) or ``changed``
    (an input changed since it was inspected). A finished shard is uploaded in a
    background thread while the next one is written (one upload in flight, so at
    most two shard files exist on local disk and none is held in memory).
    """
    from concurrent.futures import Future, ThreadPoolExecutor

    store = _store(dataset_uri, settings)
    cpu = _CpuClock()

    def timed(result: dict[str, Any]) -> dict[str, Any]:
        result["cpu_s"] = cpu.lap()
        return result

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ipsp-upload") as uploader:
        pending: Future[dict[str, Any]] | None = None
        for plan in plans:
            result, finish = _write_one(plan, store, source_uri, checks, settings, work_dir)
            if pending is not None:
                yield timed(pending.result())
                pending = None
            if finish is None:
                yield timed(result)
            else:
                pending = uploader.submit(finish)
        if pending is not None:
            yield timed(pending.result())


def _write_one(
    plan: ShardPlan, store: Any, source_uri: str, checks: Checks, settings: Settings, work_dir: str | None
) -> tuple[dict[str, Any], Callable[[], dict[str, Any]] | None]:
    """Build one shard; returns its result, plus the upload still to run when it was written."""
    from ipsp.storage.local import LocalStore

    result: dict[str, Any] = {"key": plan.key, "read_s": 0.0, "check_s": 0.0, "lmdb_s": 0.0, "upload_s": 0.0}
    if store.exists(plan.key):
        scratch = local_work_dir(work_dir)
        try:
            _verify_existing(plan, store, scratch, result)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return result, None
    local = isinstance(store, LocalStore)
    folder = None if local else local_work_dir(work_dir)
    # file://: build the shard beside its final place, then move it there (no copy)
    path = store.staging_path(plan.key) if local else (folder or Path()) / Path(plan.key).name
    timings = {"read_s": 0.0, "check_s": 0.0}

    def items() -> Iterator[tuple[str, bytes]]:
        order = {key: n for n, key in enumerate(sort_keys(f.record_key for f in plan.frames))}
        frames = sorted(plan.frames, key=lambda f: order[f.record_key])
        for frame, loaded in read_ahead(frames, lambda f: load_input(source_uri, f.source, settings)):
            timings["read_s"] += loaded.seconds
            if loaded.data is None:
                raise InputChanged(f"{frame.source} can no longer be read ({loaded.error})")
            data, digest = loaded.data, loaded.sha256
            if checks.reencode:
                t0 = time.perf_counter()
                checked = check_image(data, checks)
                data, digest = checked.data, checked.sha256
                timings["check_s"] += time.perf_counter() - t0
            if digest != frame.sha256:
                raise InputChanged(f"{frame.source} changed since it was inspected")
            yield frame.record_key, data

    t0 = time.perf_counter()
    try:
        write_shard(path, items, initial_map_size(f.bytes for f in plan.frames))
    except (InputChanged, OSError) as exc:
        path.unlink(missing_ok=True)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        result.update(status="changed", detail=str(exc))
        return result, None
    result.update(timings)
    result.update(status="written", detail="", size=path.stat().st_size)
    result["lmdb_s"] = time.perf_counter() - t0 - timings["check_s"]  # read-ahead overlaps; its own sum is read_s

    def finish() -> dict[str, Any]:
        t1 = time.perf_counter()
        try:
            result["sha256"] = store.place_file(path, plan.key) if local else store.upload_file(path, plan.key)
        finally:
            path.unlink(missing_ok=True)
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
        result["upload_s"] = time.perf_counter() - t1
        return result

    return result, finish


def _verify_existing(plan: ShardPlan, store: Any, folder: Path, result: dict[str, Any]) -> None:
    """Compare a shard already on the store with the plan: ``skipped`` when equal, else ``conflict``."""
    from ipsp.storage import sha256_file
    from ipsp.storage.local import LocalStore

    started = time.perf_counter()
    path = store.base / plan.key if isinstance(store, LocalStore) else folder / "existing.lmdb"
    if not isinstance(store, LocalStore):
        store.download_file(plan.key, path)
    try:
        problem = compare_contents(shard_contents(path), plan.expected())
    except Exception as exc:  # lmdb.Error and friends: not a shard we wrote
        problem = f"not a readable LMDB file ({type(exc).__name__})"
    result.update(verify_s=time.perf_counter() - started, size=path.stat().st_size, sha256=sha256_file(path))
    result["status"] = "conflict" if problem else "skipped"
    result["detail"] = problem


def balance(plans: list[ShardPlan], bins: int) -> list[list[ShardPlan]]:
    """Plans dealt into ``bins`` groups of about equal bytes (largest first to the lightest group)."""
    groups: list[list[ShardPlan]] = [[] for _ in range(max(1, min(bins, len(plans))))]
    loads = [0] * len(groups)
    for plan in sorted(plans, key=lambda p: (-p.data_bytes, p.key)):
        lightest = loads.index(min(loads))
        groups[lightest].append(plan)
        loads[lightest] += plan.data_bytes
    return [sorted(group, key=lambda p: p.key) for group in groups if group]


# --- the driver ----------------------------------------------------------------------


def pack(
    source: str,
    target: str,
    options: PackOptions | None = None,
    settings: Settings | None = None,
    spark: Any = None,
) -> PackResult:
    """Pack the images under ``source`` into a dataset at ``target``; see the module docstring.

    ``spark``: a session to run on (left running); by default one is started and stopped.
    """
    options = options or PackOptions()
    settings = settings or get_settings()
    timings: dict[str, float] = {}
    source_uri, dataset_uri = normalize_uri(source), normalize_uri(target)
    _check_locations(source_uri, dataset_uri)
    try:
        pattern = compile_pattern(options.name_pattern)
    except ValueError as exc:
        raise UserError(str(exc)) from None

    t0 = time.perf_counter()
    files = list_inputs(source_uri, settings)
    if not files:
        raise UserError(f"no input files under {source_uri}")
    store = _open_target(dataset_uri, settings)
    timings["list_s"] = time.perf_counter() - t0

    rejects: list[Reject] = []
    named = _parse_names(files, pattern, rejects)

    session = _LazySpark(spark, settings, timings)
    try:
        t0 = time.perf_counter()
        known = _known_frames(store, options)
        rows = [(f.rel, name.record_key, known.get(name.record_key)) for f, name in named]
        checks = options.checks
        unknown = sum(1 for row in rows if row[2] is None)
        if known and unknown <= max(DRIVER_DECODES, len(rows) // 50):
            # a re-run over the same dataset: hashing (and a few decodes) needs no Spark
            inspected = list(inspect_files(rows, source_uri, checks, settings))
            timings["inspect_on_driver"] = 1.0
        else:
            sc = session.context()
            slices = options.partitions or max(2 * sc.defaultParallelism, math.ceil(len(rows) / FILES_PER_TASK))
            slices = max(1, min(slices, len(rows)))
            inspected = _collect(
                sc,
                "validate",
                len(rows),
                options.progress,
                lambda: (
                    sc.parallelize(rows, slices)
                    .mapPartitions(lambda part: inspect_files(part, source_uri, checks, settings))
                    .collect()
                ),
            )
        timings["inspect_s"] = time.perf_counter() - t0 - session.started_in(t0)
        timings["task_read_s"] = sum(r["read_s"] for r in inspected)
        timings["task_decode_validate_s"] = sum(r["check_s"] for r in inspected)
        timings["decodes_skipped"] = sum(1 for r in inspected if r.get("reused"))
        timings["task_cpu_s"] = sum(r.get("cpu_s", 0.0) for r in inspected)

        t0 = time.perf_counter()
        frames = _accepted(named, inspected, rejects)
        frames = _drop_duplicates(frames, rejects)
        plans = plan_shards(frames, options.shard_bytes)
        rows_out = _manifest_rows(plans, store)
        manifest = manifest_bytes(rows_out)
        _refuse_conflicts(store, dataset_uri, plans, manifest)
        timings["plan_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        verified = _verified_in_place(store, plans, manifest, options)
        todo = [plan for plan in plans if plan.key not in verified]
        timings["verify_in_place_s"] = time.perf_counter() - t0
        written = list(verified.values())
        if todo:
            sc = session.context()
            work_dir = options.work_dir
            groups = options.partitions or sc.defaultParallelism
            batches = balance(todo, groups)
            written += _collect(
                sc,
                "write shards",
                len(batches),
                options.progress,
                lambda: (
                    sc.parallelize(batches, len(batches))
                    .mapPartitions(
                        lambda part: write_shards(
                            (plan for batch in part for plan in batch),
                            source_uri,
                            dataset_uri,
                            checks,
                            settings,
                            work_dir,
                        )
                    )
                    .collect()
                ),
            )
        timings["write_s"] = time.perf_counter() - t0 - session.started_in(t0)
        for name in ("read_s", "check_s", "lmdb_s", "upload_s", "verify_s", "cpu_s"):
            timings[f"shard_{name}"] = sum(r.get(name, 0.0) for r in written)
    finally:
        session.stop()
        timings.setdefault("spark_start_s", 0.0)

    _raise_on_failures(written)
    t0 = time.perf_counter()
    summary = _summary(source_uri, store, files, plans, written, rejects, options)
    rejects.sort(key=lambda r: r.file)
    _put_if_changed(store, REJECTS_NAME, rejects_bytes(rejects))
    _put_if_changed(store, SUMMARY_NAME, summary.to_bytes())
    _put_if_changed(store, MANIFEST_NAME, manifest)  # last: a manifest means a complete dataset
    timings["finalize_s"] = time.perf_counter() - t0
    statuses = Counter(r["status"] for r in written)
    return PackResult(
        summary=summary,
        written=statuses.get("written", 0),
        skipped=statuses.get("skipped", 0),
        timings={k: round(v, 3) for k, v in timings.items()},
    )


class _LazySpark:
    """The Spark session, started on first use (a re-run that only verifies never starts one)."""

    def __init__(self, given: Any, settings: Settings, timings: dict[str, float]) -> None:
        self.session = given
        self.own = given is None
        self.settings = settings
        self.timings = timings

        self.started_at = 0.0

    def context(self) -> Any:
        """The SparkContext, starting a session now when there is none yet."""
        if self.session is None:
            self.started_at = time.perf_counter()
            self.session = _spark_session(self.settings)
            self.timings["spark_start_s"] = time.perf_counter() - self.started_at
        return self.session.sparkContext

    def started_in(self, since: float) -> float:
        """Seconds of Spark start-up spent after ``since`` (to keep it out of a stage's wall time)."""
        return self.timings.get("spark_start_s", 0.0) if self.started_at >= since else 0.0

    def stop(self) -> None:
        """Stop the session when this pack started it."""
        if self.own and self.session is not None:
            _stop(self.session)


def _verified_in_place(store: Any, plans: list[ShardPlan], manifest: bytes, options: PackOptions) -> dict[str, Any]:
    """Shards that need no Spark task: the store's manifest and ``pack.json`` describe exactly these.

    Only when the stored manifest equals the one just planned (every frame's
    sha256 in its shard) and ``pack.json`` was written with the same options.
    Each shard is then checked against the size and sha256 recorded for it: a
    ``file://`` shard is hashed where it lies; an ``s3://`` one is checked by its
    size (downloading every shard to hash it would cost as much as the pack).
    Anything else goes to the write stage, which compares contents key by key.
    """
    from ipsp.storage import ObjectNotFound, sha256_file
    from ipsp.storage.local import LocalStore

    try:
        if store.get(MANIFEST_NAME) != manifest:
            return {}
        summary = PackSummary.from_bytes(store.get(SUMMARY_NAME))
    except Exception:  # no manifest or no summary yet, or an unreadable one
        return {}
    if summary.options != options.record():
        return {}
    recorded = {entry.uri: entry for entry in summary.shards}

    def check(plan: ShardPlan) -> tuple[str, dict[str, Any] | None]:
        entry = recorded.get(store.uri(plan.key))
        if entry is None or entry.frames != len(plan.frames) or entry.data_bytes != plan.data_bytes:
            return plan.key, None
        t0 = time.perf_counter()
        try:
            size = store.stat(plan.key).size
        except ObjectNotFound:
            return plan.key, None
        if size != entry.size:
            return plan.key, None
        if isinstance(store, LocalStore) and sha256_file(store.base / plan.key) != entry.sha256:
            return plan.key, None
        seconds = time.perf_counter() - t0
        return plan.key, {
            "key": plan.key,
            "status": "skipped",
            "detail": "",
            "size": size,
            "sha256": entry.sha256,
            "verify_s": seconds,
        }

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        return {key: result for key, result in pool.map(check, plans) if result is not None}


def _check_locations(source_uri: str, dataset_uri: str) -> None:
    src, dst = _local_path(source_uri), _local_path(dataset_uri)
    if source_uri == dataset_uri or (src and dst and (dst == src or src in dst.parents)):
        raise UserError("the --to location must not be inside the input folder (its files would become inputs)")
    if not src and not dst and dataset_uri.startswith(source_uri.rstrip("/") + "/"):
        raise UserError("the --to location must not be inside the input prefix (its files would become inputs)")


def _open_target(dataset_uri: str, settings: Settings) -> Any:
    from ipsp.storage import StorageError, open_store
    from ipsp.storage.s3 import S3Store

    try:
        store = open_store(dataset_uri, settings)
        if isinstance(store, S3Store) and not _bucket_exists(store):
            raise UserError(f"cannot use {dataset_uri}: bucket {store.bucket!r} does not exist")
        store.exists(MANIFEST_NAME)  # fails early on a server that does not answer
    except StorageError as exc:
        raise UserError(f"cannot use {dataset_uri}: {exc}") from None
    return store


def _bucket_exists(store: Any) -> bool:
    try:
        return bool(store.client.bucket_exists(store.bucket))
    except Exception as exc:  # connection refused, bad credentials ...: one line, no traceback
        raise ServiceUnavailable(f"S3 server at {store.endpoint} does not answer ({type(exc).__name__})") from None


def _known_frames(store: Any, options: PackOptions) -> dict[str, Known]:
    """What the dataset's own manifest says about its frames, when packed with these very options.

    Only used to skip decoding bytes that were already validated; never when
    re-encoding (the manifest then holds the digests of the new bytes).
    """
    if options.checks.reencode:
        return {}
    try:
        if not (store.exists(MANIFEST_NAME) and store.exists(SUMMARY_NAME)):
            return {}
        if PackSummary.from_bytes(store.get(SUMMARY_NAME)).options != options.record():
            return {}
        rows = read_manifest(store.get(MANIFEST_NAME))
    except Exception as exc:  # an unreadable old manifest just means a full validation
        log.info("not reusing the earlier manifest: %s", exc)
        return {}
    return {row.record_key: (row.sha256, row.width, row.height, row.format) for row in rows}


def _parse_names(files: list[InputFile], pattern: Any, rejects: list[Reject]) -> list[tuple[InputFile, Any]]:
    """Files whose name parses, first of each record key; the rest become rejects."""
    named = []
    owner: dict[str, str] = {}
    for item in files:
        try:
            name = parse_name(item.rel.rsplit("/", 1)[-1], pattern)
        except InvalidInput as exc:
            rejects.append(Reject(file=item.rel, reason=exc.reason, detail=exc.detail))
            continue
        if name.record_key in owner:
            rejects.append(
                Reject(
                    file=item.rel,
                    reason="duplicate_key",
                    detail=f"record key {name.record_key!r} already taken by {owner[name.record_key]}",
                )
            )
            continue
        owner[name.record_key] = item.rel
        named.append((item, name))
    return named


def _accepted(
    named: list[tuple[InputFile, Any]], inspected: list[dict[str, Any]], rejects: list[Reject]
) -> list[PlannedFrame]:
    by_rel = {r["rel"]: r for r in inspected}
    frames = []
    for item, name in named:
        result = by_rel[item.rel]
        if "reason" in result:
            rejects.append(Reject(file=item.rel, reason=result["reason"], detail=result.get("detail", "")))
            continue
        frames.append(
            PlannedFrame(
                record_key=name.record_key,
                camera_id=name.camera_id,
                frame_index=name.frame_index,
                source=item.rel,
                bytes=result["bytes"],
                sha256=result["sha256"],
                width=result["width"],
                height=result["height"],
                format=result["format"],
            )
        )
    return frames


def _drop_duplicates(frames: list[PlannedFrame], rejects: list[Reject]) -> list[PlannedFrame]:
    """Keep the first frame (camera, frame order) of each sha256; report the others."""
    kept: dict[str, PlannedFrame] = {}
    unique = []
    for frame in sorted(frames, key=lambda f: (f.camera_id, f.frame_index, f.record_key)):
        first = kept.get(frame.sha256)
        if first is not None:
            rejects.append(
                Reject(
                    file=frame.source,
                    reason="duplicate",
                    duplicate_of=first.source,
                    detail=f"same bytes as {first.record_key} (sha256 {frame.sha256[:12]}...)",
                )
            )
            continue
        kept[frame.sha256] = frame
        unique.append(frame)
    return unique


def _manifest_rows(plans: list[ShardPlan], store: Any) -> list[ManifestRow]:
    rows = []
    for plan in plans:
        uri = store.uri(plan.key)
        for f in plan.frames:
            rows.append(
                ManifestRow(
                    record_key=f.record_key,
                    camera_id=f.camera_id,
                    frame_index=f.frame_index,
                    shard_uri=uri,
                    key=f.record_key,
                    width=f.width,
                    height=f.height,
                    format=f.format,
                    bytes=f.bytes,
                    sha256=f.sha256,  # type: ignore[arg-type]
                )
            )
    return rows


def _refuse_conflicts(store: Any, dataset_uri: str, plans: list[ShardPlan], manifest: bytes) -> None:
    """Stop before writing anything when the target already holds a different dataset."""
    hint = "choose another --to location or delete the old dataset first"
    if store.exists(MANIFEST_NAME):
        old = store.get(MANIFEST_NAME)
        if old != manifest:
            try:
                same = read_manifest(old) == read_manifest(manifest)
            except Exception:
                same = False
            if not same:
                raise UserError(f"{dataset_uri} already holds a different dataset (manifest differs); {hint}")
    planned = {plan.key for plan in plans}
    stray = [info.key for info in store.list(SHARDS_PREFIX) if info.key not in planned]
    if stray:
        raise UserError(
            f"{dataset_uri} holds {len(stray)} shard(s) this input would not produce (e.g. {stray[0]}); {hint}"
        )


def _raise_on_failures(written: list[dict[str, Any]]) -> None:
    conflicts = [r for r in written if r["status"] == "conflict"]
    if conflicts:
        first = conflicts[0]
        raise UserError(
            f"{len(conflicts)} existing shard(s) hold different data (e.g. {first['key']}: {first['detail']}); "
            "refusing to overwrite: choose another --to location or delete the old dataset first"
        )
    changed = [r for r in written if r["status"] == "changed"]
    if changed:
        raise UserError(f"input changed while packing ({changed[0]['detail']}); run again")


def _summary(
    source: str,
    store: Any,
    files: list[InputFile],
    plans: list[ShardPlan],
    written: list[dict[str, Any]],
    rejects: list[Reject],
    options: PackOptions,
) -> PackSummary:
    by_key = {r["key"]: r for r in written}
    shards = [
        ShardEntry(
            uri=store.uri(plan.key),
            camera_id=plan.camera_id,
            frames=len(plan.frames),
            first_key=min(f.record_key for f in plan.frames),
            last_key=max(f.record_key for f in plan.frames),
            data_bytes=plan.data_bytes,
            size=by_key[plan.key]["size"],
            sha256=by_key[plan.key]["sha256"],
        )
        for plan in plans
    ]
    reasons = Counter(r.reason for r in rejects)
    return PackSummary(
        source=source,
        dataset_uri=store.uri(),
        inputs=len(files),
        packed=sum(len(plan.frames) for plan in plans),
        rejected=len(rejects),
        duplicates=reasons.get("duplicate", 0),
        reasons=dict(sorted(reasons.items())),
        data_bytes=sum(plan.data_bytes for plan in plans),
        options=options.record(),
        shards=shards,
    )


def _put_if_changed(store: Any, key: str, data: bytes) -> None:
    from ipsp.storage import ObjectNotFound

    with contextlib.suppress(ObjectNotFound):
        if store.stat(key).size == len(data) and store.get(key) == data:
            return
    store.put(key, data)


# --- Spark plumbing ---------------------------------------------------------------------


def _spark_session(settings: Settings) -> Any:
    """A session with the project's defaults (``sparkutil.spark_conf``) but no Kafka jars.

    ``build_spark`` insists on the Kafka connector, which this batch job never
    uses; so only its configuration is borrowed.
    """
    import sys

    conf: dict[str, str] = {
        "spark.app.name": "ipsp-pack",
        "spark.master": settings.spark_master,
        "spark.driver.memory": settings.spark_driver_memory,
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
        "spark.ui.enabled": "false",
        "spark.log.level": "ERROR",
    }
    try:
        from ipsp.sparkutil import spark_conf
    except ImportError:  # pragma: no cover - sparkutil ships with the package
        pass
    else:
        conf = spark_conf("ipsp-pack", settings, [], **{"spark.ui.enabled": "false", "spark.log.level": "ERROR"})
    conf.update(
        {
            "spark.ui.showConsoleProgress": "false",  # our own bar, from the status tracker
            "spark.python.worker.reuse": "true",
            "spark.task.maxFailures": "2",
        }
    )
    # executors must run this interpreter (the one with ipsp installed)
    os.environ["PYSPARK_PYTHON"] = conf["spark.pyspark.python"]
    os.environ["PYSPARK_DRIVER_PYTHON"] = conf["spark.pyspark.driver.python"]
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(conf["spark.log.level"])
    return spark


def _stop(spark: Any) -> None:
    with contextlib.suppress(Exception):
        spark.stop()


def _collect(sc: Any, label: str, total: int, progress: bool, action: Any) -> list[dict[str, Any]]:
    """Run a Spark action under a job group, showing its task progress as a tqdm bar."""
    group = f"ipsp-pack-{label.replace(' ', '-')}-{time.monotonic_ns()}"
    sc.setJobGroup(group, f"ipsp pack: {label}")
    stop = threading.Event()
    watcher = None
    if progress:
        watcher = threading.Thread(target=_watch, args=(sc, group, label, stop), daemon=True)
        watcher.start()
    try:
        result: list[dict[str, Any]] = action()
        return result
    except Exception as exc:
        raise _spark_error(exc, label) from exc
    finally:
        stop.set()
        if watcher is not None:
            watcher.join(timeout=5)


def _watch(sc: Any, group: str, label: str, stop: threading.Event) -> None:
    from tqdm import tqdm

    bar: Any = None
    try:
        while not stop.wait(0.5):
            done = total = 0
            tracker = sc.statusTracker()
            for job_id in tracker.getJobIdsForGroup(group):
                job = tracker.getJobInfo(job_id)
                for stage_id in job.stageIds if job else []:
                    stage = tracker.getStageInfo(stage_id)
                    if stage:
                        done, total = done + stage.numCompletedTasks, total + stage.numTasks
            if total:
                if bar is None:
                    bar = tqdm(total=total, desc=label, unit="task", dynamic_ncols=True)
                bar.update(done - bar.n)
        if bar is not None:
            bar.update(int(bar.total or 0) - bar.n)
    except Exception:  # the bar is a courtesy; never let it break the job
        log.debug("progress watcher stopped", exc_info=True)
    finally:
        if bar is not None:
            bar.close()


def _spark_error(exc: Exception, label: str) -> Exception:
    """A failed Spark action as one line: the Python error of the failed task when there is one."""
    if isinstance(exc, UserError):
        return exc
    text = str(exc)
    for marker in ("UserError: ", "StorageError: ", "ServiceUnavailable: ", "IntegrityError: "):
        if marker in text:
            return UserError(f"{label} failed: " + text.split(marker, 1)[1].splitlines()[0])
    lines = [line for line in text.splitlines() if line.strip()]
    tail = next((line for line in reversed(lines) if "Error" in line), lines[-1] if lines else repr(exc))
    return UserError(f"{label} failed in a Spark task: {tail.strip()[:400]}")


def with_options(options: PackOptions, **changes: Any) -> PackOptions:
    """A copy of options with some fields changed (tests and the benchmark use it)."""
    return replace(options, **changes)
