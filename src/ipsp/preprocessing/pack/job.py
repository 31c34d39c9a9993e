"""The driver of ``ipsp pack``: the three stages in order, on a Spark session started only when needed."""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import Counter
from typing import Any

from ipsp.config import Settings, get_settings
from ipsp.contracts import Reject
from ipsp.errors import ServiceUnavailable, UserError
from ipsp.preprocessing.manifest import (
    MANIFEST_NAME,
    REJECTS_NAME,
    SUMMARY_NAME,
    PackSummary,
    ShardEntry,
    manifest_bytes,
    rejects_bytes,
)
from ipsp.preprocessing.pack.inputs import InputFile, check_locations, list_inputs, normalize_uri
from ipsp.preprocessing.pack.inspect import (
    DRIVER_DECODES,
    FILES_PER_TASK,
    Known,
    inspect_files,
    known_frames,
    parse_names,
)
from ipsp.preprocessing.pack.options import PackOptions, PackResult
from ipsp.preprocessing.pack.plan import accepted, drop_duplicates, manifest_rows, refuse_conflicts, verified_in_place
from ipsp.preprocessing.pack.write import balance, raise_on_failures, write_shards
from ipsp.preprocessing.validate import compile_pattern
from ipsp.storage.shards import ShardPlan, plan_shards

log = logging.getLogger(__name__)


def pack(
    source: str,
    target: str,
    options: PackOptions | None = None,
    settings: Settings | None = None,
    spark: Any = None,
) -> PackResult:
    """Pack the images under ``source`` into a dataset at ``target``; see the package docstring.

    ``spark``: a session to run on (left running); by default one is started and stopped.
    """
    options = options or PackOptions()
    settings = settings or get_settings()
    timings: dict[str, float] = {}
    source_uri, dataset_uri = normalize_uri(source), normalize_uri(target)
    check_locations(source_uri, dataset_uri)
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
    named = parse_names(files, pattern, rejects)

    session = _LazySpark(spark, settings, timings)
    try:
        t0 = time.perf_counter()
        inspected, on_driver = _inspect(session, named, known_frames(store, options), source_uri, options, settings)
        if on_driver:
            timings["inspect_on_driver"] = 1.0
        timings["inspect_s"] = time.perf_counter() - t0 - session.started_in(t0)
        timings["task_read_s"] = sum(r["read_s"] for r in inspected)
        timings["task_decode_validate_s"] = sum(r["check_s"] for r in inspected)
        timings["decodes_skipped"] = sum(1 for r in inspected if r.get("reused"))
        timings["task_cpu_s"] = sum(r.get("cpu_s", 0.0) for r in inspected)

        t0 = time.perf_counter()
        frames = drop_duplicates(accepted(named, inspected, rejects), rejects)
        plans = plan_shards(frames, options.shard_bytes)
        manifest = manifest_bytes(manifest_rows(plans, store))
        refuse_conflicts(store, dataset_uri, plans, manifest)
        timings["plan_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        verified = verified_in_place(store, plans, manifest, options)
        todo = [plan for plan in plans if plan.key not in verified]
        timings["verify_in_place_s"] = time.perf_counter() - t0
        written = list(verified.values())
        if todo:
            written += _write(session, todo, source_uri, dataset_uri, options, settings)
        timings["write_s"] = time.perf_counter() - t0 - session.started_in(t0)
        for name in ("read_s", "check_s", "lmdb_s", "upload_s", "verify_s", "cpu_s"):
            timings[f"shard_{name}"] = sum(r.get(name, 0.0) for r in written)
    finally:
        session.stop()
        timings.setdefault("spark_start_s", 0.0)

    raise_on_failures(written)
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


def _inspect(
    session: _LazySpark,
    named: list[tuple[InputFile, Any]],
    known: dict[str, Known],
    source_uri: str,
    options: PackOptions,
    settings: Settings,
) -> tuple[list[dict[str, Any]], bool]:
    """Stage 1 results, and whether they came from the driver (a re-run: hashing and a few decodes need no Spark)."""
    rows = [(f.rel, name.record_key, known.get(name.record_key)) for f, name in named]
    checks = options.checks
    unknown = sum(1 for row in rows if row[2] is None)
    if known and unknown <= max(DRIVER_DECODES, len(rows) // 50):
        return list(inspect_files(rows, source_uri, checks, settings)), True
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
    return inspected, False


def _write(
    session: _LazySpark,
    todo: list[ShardPlan],
    source_uri: str,
    dataset_uri: str,
    options: PackOptions,
    settings: Settings,
) -> list[dict[str, Any]]:
    """Stage 3 in Spark tasks: the shards still to write, dealt into one group per task."""
    sc = session.context()
    checks, work_dir = options.checks, options.work_dir
    groups = options.partitions or sc.defaultParallelism
    batches = balance(todo, groups)
    return _collect(
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


#: on top of the project's defaults (``sparkutil.spark_conf``); the Kafka jars are left out
SPARK_CONF = {
    "spark.ui.enabled": "false",
    "spark.log.level": "ERROR",
    "spark.ui.showConsoleProgress": "false",  # our own bar, from the status tracker
    "spark.python.worker.reuse": "true",
    "spark.task.maxFailures": "2",
}


def _spark_session(settings: Settings) -> Any:
    """The project's session, without the Kafka connector this batch job never uses."""
    from ipsp.sparkutil import build_batch_spark

    return build_batch_spark("ipsp-pack", settings, **SPARK_CONF)


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
