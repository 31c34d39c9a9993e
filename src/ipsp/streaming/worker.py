"""Executor side of the stream job: one Spark task's Kafka records -> fetch -> detect -> MongoDB.

:func:`partition_function` returns the function given to ``mapInArrow``. For the
records of one task it:

1. parses and validates every Kafka value (bad ones become dead letters);
2. groups the valid records by LMDB shard and reads each shard's frames in one
   read transaction through the process's :class:`ShardReader` (whole shards
   cached on local disk, LRU);
3. checks each frame's size and sha256 against the message and decodes
   batches of ``batch_size`` frames (batches fill across shards) into the
   model's input: steps 2-3 run on a prefetch thread, up to
   ``prefetch_batches`` batches ahead, while the current batch infers;
4. writes results and dead letters to MongoDB (by ``_id``) from a writer
   thread, so the next inference batch runs while the previous one is written;
5. yields one small summary row per record (and one timing row per task) for
   the driver, which recomputes windows and writes the progress document.

Heavy objects (detector, shard reader, Mongo client) are created lazily inside
the Python worker, kept in module-level caches (:mod:`ipsp.streaming.resources`)
and reused by every task the worker runs (``spark.python.worker.reuse``); they
are never pickled.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ipsp.config import Settings
from ipsp.contracts import AnalysisResult, DeadLetter, Detection, ModelRef, dead_letter_id, utc_now
from ipsp.streaming.process import (
    Record,
    build_result,
    check_bytes,
    chunked,
    dead_letter,
    elapsed_ms,
    group_by_shard,
    split_records,
    to_ms,
)
from ipsp.streaming.resources import attempt_number, get_cameras, get_detector, get_reader, get_sink

log = logging.getLogger(__name__)

#: keys read from one shard per read transaction (bounds the bytes held at once)
FETCH_CHUNK = 64

#: columns of the rows a task returns to the driver
SUMMARY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("kind", "string"),  # result | dead | task
    ("event_id", "string"),
    ("record_key", "string"),
    ("camera_id", "string"),
    ("event_ms", "long"),
    ("counts", "string"),  # JSON list: motorbike, car, bus, truck, bicycle, person
    ("density", "double"),
    ("partition", "long"),
    ("offset", "long"),
    ("kept", "long"),  # results of the task's writes the store kept (the rest: a later copy was there)
    ("stale", "long"),  # dead letters of earlier attempts deleted by this task
    ("stage", "string"),
    ("letter_id", "string"),  # dead rows: the dead letter's _id, reason and creation time (serving lists them)
    ("reason", "string"),
    ("created_ms", "long"),
    ("latency_ms", "double"),
    ("read_ms", "double"),
    ("parse_ms", "double"),
    ("fetch_ms", "double"),
    ("check_ms", "double"),
    ("pre_ms", "double"),
    ("wait_ms", "double"),  # inference waiting for its next batch (fetch + check + pre not hidden by prefetch)
    ("infer_ms", "double"),
    ("post_ms", "double"),
    ("build_ms", "double"),
    ("write_ms", "double"),
    ("task_ms", "double"),
)


def summary_schema_ddl() -> str:
    """The summary rows' schema as a Spark DDL string."""
    return ", ".join(f"{name} {kind}" for name, kind in SUMMARY_COLUMNS)


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


@dataclass
class TaskTimings:
    """Milliseconds one task spent per step."""

    read_ms: float = 0.0
    parse_ms: float = 0.0
    fetch_ms: float = 0.0
    check_ms: float = 0.0
    pre_ms: float = 0.0
    #: time inference waited for its next batch; fetch, check and pre run on the prefetch thread
    wait_ms: float = 0.0
    infer_ms: float = 0.0
    post_ms: float = 0.0
    build_ms: float = 0.0
    write_ms: float = 0.0


@dataclass
class TaskOutput:
    """Summary rows of one task, filled as its writes complete."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    kept: int = 0
    stale: int = 0

    def result(self, result: AnalysisResult, written_ms: float) -> None:
        """Record a written event result."""
        c = result.counts
        self.rows.append(
            {
                "kind": "result",
                "event_id": result.id,
                "record_key": result.record_key,
                "camera_id": result.camera_id,
                "event_ms": to_ms(result.event_time),
                "counts": json.dumps([c.motorbike, c.car, c.bus, c.truck, c.bicycle, c.person]),
                "density": result.density_percent,
                "partition": result.pipeline.kafka_partition,
                "offset": result.pipeline.kafka_offset,
                "latency_ms": written_ms,
            }
        )

    def dead(self, letter: DeadLetter) -> None:
        """Record a written dead letter."""
        self.rows.append(
            {
                "kind": "dead",
                "record_key": letter.record_key,
                "camera_id": letter.camera_id,
                "stage": letter.stage,
                "letter_id": letter.id,
                "reason": letter.reason,
                "created_ms": to_ms(letter.created_at),
            }
        )


# --- the task ---------------------------------------------------------------------------


class Writer:
    """Writes results and dead letters on a background thread, one bounded queue deep.

    Inference (ONNX Runtime releases the GIL) then overlaps the previous batch's
    write. An error in the writer is raised in the task at the next put or at
    close, failing the task: the batch is then retried or replayed, never skipped.
    """

    def __init__(self, sink: Any, output: TaskOutput, timings: TaskTimings, reconcile: bool = False) -> None:
        self.sink = sink
        self.reconcile = reconcile
        self.output = output
        self.timings = timings
        self.error: BaseException | None = None
        self.queue: queue.Queue[tuple[list[AnalysisResult], list[DeadLetter], list[str]] | None] = queue.Queue(
            maxsize=2
        )
        self.thread = threading.Thread(target=self._run, name="ipsp-writer", daemon=True)
        self.thread.start()

    def put(self, results: list[AnalysisResult], letters: list[DeadLetter], coords: list[str] | None = None) -> None:
        """Queue one batch of documents (blocks while two are pending); ``coords``: the results' Kafka ids."""
        self._raise()
        if results or letters:
            self.queue.put((results, letters, coords or []))

    def close(self) -> None:
        """Wait for every queued write; raise the writer's error if one happened."""
        self.queue.put(None)
        self.thread.join()
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if self.error is not None:
                continue  # drain without writing: the task is failing anyway
            try:
                self._write(*item)
            except BaseException as exc:
                self.error = exc

    def _write(self, results: list[AnalysisResult], letters: list[DeadLetter], coords: list[str]) -> None:
        started = time.perf_counter()
        self.output.kept += self.sink.write_results(results)
        self.sink.write_dead_letters(letters)
        if self.reconcile and coords:
            # an earlier attempt of this task (or run of this batch) may have dead-lettered these records
            self.output.stale += self.sink.delete_dead_letters(coords)
        written = utc_now()
        self.timings.write_ms += (time.perf_counter() - started) * 1000
        for result in results:
            # latency runs from the producer's hand-off to the moment the write returned
            latency = result.pipeline.latency_ms + elapsed_ms(result.processed_at, written)
            self.output.result(result, latency)
        for letter in letters:
            self.output.dead(letter)


def _detections(det: Any, class_map: dict[str, str]) -> list[Detection]:
    return [Detection.model_validate(r) for r in det.to_records(class_map)]


@dataclass
class Ready:
    """What the prefetch stage hands to inference: dead letters found so far, then one prepared batch.

    ``prepared`` is ``None`` only for the last item of a task whose trailing frames were all dead letters.
    """

    letters: list[DeadLetter]
    records: list[Record]
    prepared: Any  # ipsp.detection.detector.PreparedBatch | None


def prepare_batches(
    records: list[Record],
    ctx: JobContext,
    detector: Any,
    reader: Any,
    timings: TaskTimings,
    stop: threading.Event | None = None,
) -> Iterator[Ready]:
    """Fetch each shard's frames, check them and decode full batches, in record order (the prefetch stage).

    A missing frame (``ShardError``) or one whose bytes do not match the message
    becomes a dead letter; a storage outage is raised (the task fails and is retried).
    """
    from ipsp.storage.shards import ShardError

    size = ctx.settings.batch_size
    pending: list[tuple[Record, bytes]] = []
    letters: list[DeadLetter] = []

    def ready(batch: list[tuple[Record, bytes]]) -> Ready:
        nonlocal letters
        prepared = detector.prepare_bytes([data for _, data in batch], [r.message.record_key for r, _ in batch])
        item, letters = Ready(letters, [r for r, _ in batch], prepared), []
        return item

    for shard_uri, group in group_by_shard(records).items():
        for part in chunked(group, FETCH_CHUNK):
            started = time.perf_counter()
            keys = [r.message.lmdb.key for r in part]
            fetched = fetch_with_retries(reader, shard_uri, keys, ctx.retry_seconds, stop)
            timings.fetch_ms += (time.perf_counter() - started) * 1000
            started = time.perf_counter()
            now = utc_now()
            for record in part:
                data = fetched.get(record.message.lmdb.key)
                if isinstance(data, ShardError) or data is None:
                    letters.append(_letter("fetch", str(data or "frame not returned by the reader"), record, now))
                    continue
                if isinstance(data, Exception):
                    raise data  # a storage outage: transient, fail the task so it is retried
                reason = check_bytes(record.message, data)
                if reason is not None:
                    letters.append(_letter("decode", reason, record, now))
                    continue
                pending.append((record, data))
            timings.check_ms += (time.perf_counter() - started) * 1000
            while len(pending) >= size:
                batch, pending = pending[:size], pending[size:]
                yield ready(batch)
    if pending:
        yield ready(pending)
    if letters:
        yield Ready(letters, [], None)


def run_task(
    rows: Sequence[tuple[bytes | None, str, int, int]],
    ctx: JobContext,
    detector: Any,
    reader: Any,
    sink: Any,
    cameras: Any,
) -> tuple[TaskOutput, TaskTimings]:
    """Process one task's Kafka rows end to end; returns its summary rows and timings."""
    from ipsp.detection import traffic_summary
    from ipsp.detection.errors import FrameError
    from ipsp.streaming.prefetch import Prefetcher

    output = TaskOutput()
    timings = TaskTimings()
    writer = Writer(sink, output, timings, reconcile=ctx.replayed or attempt_number() > 0)
    class_map = cameras.full_class_map()
    started = time.perf_counter()
    records, letters = split_records(rows, utc_now())
    timings.parse_ms += (time.perf_counter() - started) * 1000
    writer.put([], letters)

    def infer(item: Ready) -> None:
        outcomes = detector.detect_prepared(item.prepared)
        step = detector.last_timings
        timings.pre_ms += step.pre_ms
        timings.infer_ms += step.infer_ms
        timings.post_ms += step.post_ms
        per_frame = step.infer_ms / max(len(item.records), 1)
        started = time.perf_counter()
        now = utc_now()
        results: list[AnalysisResult] = []
        coords: list[str] = []
        dead: list[DeadLetter] = list(item.letters)
        for record, outcome in zip(item.records, outcomes, strict=True):
            msg = record.message
            if isinstance(outcome, FrameError):
                dead.append(_letter("decode", f"frame does not decode: {outcome}", record, now))
                continue
            summary = traffic_summary(outcome, msg.camera_id, cameras_cfg=cameras)
            results.append(
                build_result(
                    record,
                    counts=summary.counts,
                    density_percent=summary.density_percent,
                    traffic_status=summary.status,
                    detections=_detections(summary.detections, class_map),
                    model=ctx.model,
                    batch_id=ctx.batch_id,
                    inference_ms=per_frame,
                    now=now,
                )
            )
            coords.append(dead_letter_id(record.kafka))
        timings.build_ms += (time.perf_counter() - started) * 1000
        writer.put(results, dead, coords)

    prefetch: Prefetcher[Ready] = Prefetcher(
        lambda stop: prepare_batches(records, ctx, detector, reader, timings, stop), ctx.settings.prefetch_batches
    )
    try:
        for item in prefetch:
            if item.prepared is None:
                writer.put([], item.letters)
            else:
                infer(item)
    finally:
        try:
            prefetch.close()  # stops and joins the prefetch thread, whatever happened
        finally:
            timings.wait_ms = prefetch.wait_ms
            writer.close()
    return output, timings


def fetch_with_retries(
    reader: Any, shard_uri: str, keys: list[str], retry_seconds: float, stop: threading.Event | None = None
) -> dict[str, Any]:
    """``reader.get_many`` that waits out an object-store outage (backoff, up to ``retry_seconds``).

    A missing shard or key is the frame's own fault and comes back per key (a
    dead letter); a store that does not answer is transient: retried here, and
    past the deadline raised, so the task fails (and is retried by Spark).
    ``stop`` (the prefetch stage's) ends the waiting early: the task is already failing.
    """
    from ipsp.errors import ServiceUnavailable
    from ipsp.storage import IntegrityError, StorageError

    deadline = time.monotonic() + retry_seconds
    delay = 0.5
    while True:
        try:
            return dict(reader.get_many(shard_uri, keys))
        except (StorageError, ServiceUnavailable) as exc:
            if isinstance(exc, IntegrityError):
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            log.warning("object store: %s (retrying in %.1fs)", str(exc).splitlines()[0][:200], min(delay, left))
            pause = min(delay, left)
            if stop is None:
                time.sleep(pause)
            elif stop.wait(pause):
                raise
            delay = min(delay * 2, 8.0)


def _letter(stage: Any, reason: str, record: Record, now: Any) -> DeadLetter:
    msg = record.message
    return dead_letter(stage, reason, record.raw, record.kafka, now, msg.record_key, msg.camera_id)


def partition_function(ctx: JobContext) -> Callable[[Iterator[Any]], Iterator[Any]]:
    """The ``mapInArrow`` function of one micro-batch (a closure over picklable ``ctx`` only)."""

    def process(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa

        started = time.perf_counter()
        rows: list[tuple[bytes | None, str, int, int]] = []
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
        output, timings = run_task(rows, ctx, detector, reader, sink, cameras)
        timings.read_ms = read_ms
        task_row = {
            "kind": "task",
            **timings.__dict__,
            "kept": output.kept,
            "stale": output.stale,
            "task_ms": (time.perf_counter() - started) * 1000,
        }
        names = [name for name, _ in SUMMARY_COLUMNS]
        table = [*output.rows, task_row]
        yield pa.RecordBatch.from_pylist([{n: r.get(n) for n in names} for r in table], schema=arrow_schema())

    return process


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

        detector = get_detector(ctx)
        cameras = get_cameras(ctx.settings)
        frames = [blank_jpeg()] * ctx.settings.batch_size
        # one real inference first: ONNX Runtime sizes its buffers on the first run, not at load
        for det in detector.detect_bytes(frames[:2]):
            traffic_summary(det, "warm-up", cameras_cfg=cameras)
        # then one timed batch: the job sizes its micro-batches in seconds of this work
        started = time.perf_counter()
        detector.detect_bytes(frames)
        frame_s = (time.perf_counter() - started) / len(frames)
        get_reader(ctx.settings)
        get_sink(ctx.settings, ctx.retry_seconds)
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


def arrow_schema() -> Any:
    """The summary rows' Arrow schema (matches :func:`summary_schema_ddl`)."""
    import pyarrow as pa

    kinds = {"string": pa.string(), "long": pa.int64(), "double": pa.float64()}
    return pa.schema([pa.field(name, kinds[kind]) for name, kind in SUMMARY_COLUMNS])
