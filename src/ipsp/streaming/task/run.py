"""The task: one Spark task's Kafka rows through parse -> fetch -> analyze -> write.

:func:`partition_function` returns the function given to ``mapInArrow``. For the
records of one task :func:`run_task`

1. parses and validates every Kafka value (:mod:`.parse`; bad ones become dead letters);
2. reads each shard's frames in one read transaction, checks their size and
   sha256 and decodes full batches (:mod:`.fetch`), on a prefetch thread up to
   ``prefetch_batches`` batches ahead of inference;
3. infers each batch and builds its results (:mod:`.analyze`);
4. writes results and dead letters by ``_id`` from a writer thread (:mod:`.write`),
   so the next batch infers while the previous one is written;
5. returns one :class:`FrameOutcome` per record and one :class:`TaskReport` as
   Arrow rows (:mod:`.outcome`) for the driver, which folds windows and writes progress.

Heavy objects (detector, shard reader, Mongo client) are created lazily inside
the Python worker, kept in module-level caches (:mod:`ipsp.streaming.resources`)
and reused by every task the worker runs (``spark.python.worker.reuse``); they
are never pickled.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ipsp.config import Settings
from ipsp.contracts import ModelRef, utc_now
from ipsp.streaming.resources import (
    attempt_number,
    freeze_long_lived,
    get_cameras,
    get_detector,
    get_reader,
    get_sink,
)
from ipsp.streaming.task.analyze import Analyzed, analyze
from ipsp.streaming.task.fetch import Ready, prepare_batches
from ipsp.streaming.task.outcome import FrameOutcome, TaskReport, to_record_batch
from ipsp.streaming.task.parse import KafkaRow, split_records
from ipsp.streaming.task.protocols import FrameDetector, ResultSink, ShardSource
from ipsp.streaming.task.write import Writer

if TYPE_CHECKING:
    from ipsp.detection.metrics import CamerasConfig
    from ipsp.storage.shards import ShardReader


@dataclass(frozen=True)
class JobContext:
    """What every task of one micro-batch needs (small and picklable)."""

    settings: Settings
    model_ref: str
    model: ModelRef
    batch_id: int
    retry_seconds: float
    #: a batch that may have run before (the first of a restarted query): reconcile its dead letters
    replayed: bool = False


def run_task(
    rows: Sequence[KafkaRow],
    ctx: JobContext,
    detector: FrameDetector,
    reader: ShardSource,
    sink: ResultSink,
    cameras: CamerasConfig,
) -> tuple[list[FrameOutcome], TaskReport]:
    """Process one task's Kafka rows end to end; returns one outcome per row and the task's report."""
    from ipsp.streaming.prefetch import Prefetcher

    report = TaskReport()
    writer = Writer(sink, report, reconcile=ctx.replayed or attempt_number() > 0)
    started = time.perf_counter()
    records, letters = split_records(rows, utc_now())
    report.parse_ms += (time.perf_counter() - started) * 1000
    writer.put(Analyzed(letters=letters))

    def fetch(stop: Any) -> Iterator[Ready]:
        return prepare_batches(records, detector, reader, ctx.settings.batch_size, ctx.retry_seconds, report, stop)

    class_map = cameras.full_class_map()
    prefetch: Prefetcher[Ready] = Prefetcher(fetch, ctx.settings.prefetch_batches)
    try:
        for item in prefetch:
            writer.put(analyze(item, detector, cameras, class_map, ctx.model, ctx.batch_id, report))
    finally:
        try:
            prefetch.close()  # stops and joins the prefetch thread, whatever happened
        finally:
            report.wait_ms = prefetch.wait_ms
            outcomes = writer.close()
    return outcomes, report


def partition_function(ctx: JobContext) -> Callable[[Iterator[Any]], Iterator[Any]]:
    """The ``mapInArrow`` function of one micro-batch (a closure over picklable ``ctx`` only)."""

    def process(batches: Iterator[Any]) -> Iterator[Any]:
        started = time.perf_counter()
        rows: list[KafkaRow] = []
        for batch in batches:
            cols = batch.to_pydict()
            rows.extend(zip(cols["value"], cols["topic"], cols["partition"], cols["offset"], strict=True))
        read_ms = (time.perf_counter() - started) * 1000
        if not rows:
            return
        detector = get_detector(ctx)
        reader = get_reader(ctx.settings)
        sink = get_sink(ctx.settings, ctx.retry_seconds)
        cameras = get_cameras(ctx.settings)
        freeze_long_lived()
        before = (len(reader.stats.downloaded), reader.stats.downloaded_bytes, reader.stats.hits)
        outcomes, report = run_task(rows, ctx, detector, reader, sink, cameras)
        account_cache(report, reader, before)
        report.read_ms = read_ms
        report.task_ms = (time.perf_counter() - started) * 1000
        yield to_record_batch(outcomes, report)

    return process


def account_cache(report: TaskReport, reader: ShardReader, before: tuple[int, int, int]) -> None:
    """Fill the report's shard-cache fields: what the task fetched and what the cache holds now.

    A Python worker runs one task at a time, so the reader's counters moved by
    this task alone since ``before`` (downloads, downloaded bytes, hits).
    """
    downloads, downloaded_bytes, hits = before
    report.cache = f"{socket.gethostname()}:{reader.cache_dir}"
    report.fetched = "\n".join(reader.stats.downloaded[downloads:])
    # handed over in the report: kept, the list would grow for as long as the worker lives
    del reader.stats.downloaded[downloads:]
    report.fetched_bytes = reader.stats.downloaded_bytes - downloaded_bytes
    report.cache_hits = reader.stats.hits - hits
    report.cache_bytes = reader.cached_bytes()


def warm_up_function(ctx: JobContext) -> Callable[[Iterator[Any]], Iterator[Any]]:
    """A ``mapInArrow`` function that loads the model and opens the sinks in a Python worker.

    Run before the query starts, through the same Arrow path as the micro-batches
    (Spark keeps a separate worker pool per kind of job), so the first batch does
    not pay for worker start-up, model loading and first-inference set-up.
    """

    def warm(_batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa

        for _ in _batches:
            pass
        from ipsp.detection import traffic_summary
        from ipsp.detection.types import Detections

        detector = get_detector(ctx)
        cameras = get_cameras(ctx.settings)
        frames = [blank_jpeg()] * ctx.settings.batch_size
        # one real inference first: ONNX Runtime sizes its buffers on the first run, not at load
        for det in detector.detect_bytes(frames[:2]):
            if isinstance(det, Detections):  # a blank frame always decodes
                traffic_summary(det, "warm-up", cameras_cfg=cameras)
        # then one timed batch: the job sizes its micro-batches in seconds of this work
        started = time.perf_counter()
        detector.detect_bytes(frames)
        frame_s = (time.perf_counter() - started) / len(frames)
        get_reader(ctx.settings)
        get_sink(ctx.settings, ctx.retry_seconds)
        freeze_long_lived()
        schema = pa.schema([pa.field("pid", pa.int64()), pa.field("frame_s", pa.float64())])
        yield pa.RecordBatch.from_pylist([{"pid": os.getpid(), "frame_s": frame_s}], schema=schema)

    return warm


def blank_jpeg(width: int = 1280, height: int = 720) -> bytes:
    """A grey JPEG frame (for warming the model up)."""
    import cv2
    import numpy as np

    ok, data = cv2.imencode(".jpg", np.full((height, width, 3), 128, np.uint8))
    if not ok:  # pragma: no cover - OpenCV always encodes a plain array
        raise RuntimeError("OpenCV could not encode a blank frame")
    return bytes(data.tobytes())
