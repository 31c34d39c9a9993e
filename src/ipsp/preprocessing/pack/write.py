"""Stage 3, write: shards built in Spark tasks (or verified and skipped), uploaded while the next is built."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ipsp.config import Settings
from ipsp.errors import UserError
from ipsp.preprocessing.pack.inputs import CpuClock, cached_store, load_input, read_ahead
from ipsp.preprocessing.validate import Checks, check_image
from ipsp.storage.shards import (
    ShardPlan,
    compare_contents,
    initial_map_size,
    local_work_dir,
    shard_contents,
    sort_keys,
    write_shard,
)


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

    store = cached_store(dataset_uri, settings)
    cpu = CpuClock()

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


def raise_on_failures(written: list[dict[str, Any]]) -> None:
    """Stop on a conflicting shard or a changed input, before anything marks the dataset complete."""
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
