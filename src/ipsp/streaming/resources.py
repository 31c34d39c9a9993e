"""Per-process resources of a stream job's Python worker: detector, shard reader, Mongo sink, cameras.

Created lazily on first use, then kept in module-level caches and reused by every
task the worker runs (``spark.python.worker.reuse``); they are never pickled.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from typing import TYPE_CHECKING

from ipsp.config import Settings

if TYPE_CHECKING:
    from ipsp.detection.detector import Detector
    from ipsp.detection.metrics import CamerasConfig
    from ipsp.storage.shards import ShardReader
    from ipsp.streaming.sinks import MongoSink
    from ipsp.streaming.task.run import JobContext

log = logging.getLogger(__name__)

_LOCK = threading.Lock()
_DETECTORS: dict[tuple[str, str, int, int], Detector] = {}
_READERS: dict[str, ShardReader] = {}
_SINKS: dict[tuple[str, str, int], MongoSink] = {}
_CAMERAS: dict[str, CamerasConfig] = {}
_frozen = False  # the long-lived objects are out of the GC walk (guarded by _LOCK)


def task_cores(settings: Settings) -> int:
    """Threads one task may use: ``intra_op_threads`` when set, else the task's ``spark.task.cpus``."""
    if settings.intra_op_threads:
        return settings.intra_op_threads
    try:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        if ctx is not None:
            return max(1, int(ctx.cpus()))
    except Exception:  # outside Spark (tests, the bench): fall back to one thread
        pass
    return 1


def pin_threads(threads: int) -> None:
    """Pin OpenMP / BLAS / OpenCV thread pools to the task's cores (set before they start)."""
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    try:
        import cv2

        cv2.setNumThreads(threads)
    except ImportError:  # pragma: no cover - OpenCV is a dependency
        pass


def get_detector(ctx: JobContext) -> Detector:
    """The worker's detector for this model (loaded on first use, then reused)."""
    global _frozen
    threads = task_cores(ctx.settings)
    key = (ctx.model_ref, ctx.settings.input_size, threads, ctx.settings.batch_size)
    with _LOCK:
        detector = _DETECTORS.get(key)
        if detector is None:
            pin_threads(threads)
            from ipsp.detection import load_detector

            started = time.perf_counter()
            detector = load_detector(ctx.model_ref, ctx.settings, threads=threads, batch_size=ctx.settings.batch_size)
            info = detector.model_info
            if info.sha256 != ctx.model.sha256:
                raise RuntimeError(
                    f"model {ctx.model_ref} resolved to sha256 {info.sha256} on this worker, "
                    f"but the driver loaded {ctx.model.sha256}: the registry changed under the job"
                )
            log.info("pid %d loaded %s in %.1fs (%d threads)", os.getpid(), ctx.model_ref,
                     time.perf_counter() - started, threads)  # fmt: skip
            _DETECTORS.clear()  # one model per worker: a new model replaces the old one
            _DETECTORS[key] = detector
            if _frozen:  # let the old model's objects be collected; the next task freezes again
                gc.unfreeze()
                _frozen = False
        return detector


def get_reader(settings: Settings) -> ShardReader:
    """The worker's shard reader (local LRU cache of whole shards, one folder per machine: ``cache_dir``)."""
    from ipsp.storage.shards import ShardReader, cache_dir

    key = str(cache_dir(settings))
    with _LOCK:
        reader = _READERS.get(key)
        if reader is None:
            reader = ShardReader.from_settings(settings)
            _READERS[key] = reader
        return reader


def get_sink(settings: Settings, retry_seconds: float) -> MongoSink:
    """The worker's MongoDB sink (one client per process; pymongo clients must not cross a fork)."""
    from ipsp.mongo import connect
    from ipsp.streaming.sinks import MongoSink

    key = (settings.mongo_uri.get_secret_value(), settings.mongo_db, os.getpid())
    with _LOCK:
        sink = _SINKS.get(key)
        if sink is None:
            sink = MongoSink(connect(key[0]), settings.mongo_db, retry_seconds)
            _SINKS[key] = sink
        sink.retry_seconds = retry_seconds
        return sink


def get_cameras(settings: Settings) -> CamerasConfig:
    """The worker's parsed cameras config (parsed once per process, not per task)."""
    from ipsp.detection import load_cameras_config

    key = str(settings.cameras_config or "")
    with _LOCK:
        cameras = _CAMERAS.get(key)
        if cameras is None:
            cameras = load_cameras_config(settings.cameras_config)
            _CAMERAS[key] = cameras
        return cameras


def freeze_long_lived() -> None:
    """Put the worker's long-lived objects (modules, model, clients) out of the cyclic GC's reach.

    PySpark's reused Python worker runs a full ``gc.collect()`` after every task
    before it reads the next one. Over the ~100,000 objects of the loaded modules
    that walk cost 150-300 ms per task in a stream job on 2 cores (py-spy), paid
    by every micro-batch whatever its size. Frozen objects are skipped by every
    later collection, which then walks only what the tasks allocated. Called once
    the resources exist; a no-op after that until a new model is loaded.
    """
    global _frozen
    with _LOCK:
        if not _frozen:
            gc.collect()  # garbage first: what is frozen is never collected
            gc.freeze()
            _frozen = True


def attempt_number() -> int:
    """Which attempt of its Spark task this is (0 the first; 0 outside Spark)."""
    try:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        return int(ctx.attemptNumber()) if ctx is not None else 0
    except Exception:  # outside Spark (tests, the bench)
        return 0
