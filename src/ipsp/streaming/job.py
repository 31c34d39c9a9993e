"""Driver side of the stream job: the Structured Streaming query and its per-batch sink.

Kafka (``kafka`` source, ``maxOffsetsPerTrigger``) -> ``foreachBatch``: each
micro-batch runs :func:`ipsp.streaming.task.run.partition_function` with
``mapInArrow`` on the executors (fetch, detect, upsert results and dead letters),
collects the small per-record summary, then on the driver recomputes the
per-camera windows the batch touched and writes one progress document.

Exactly once in effect: Spark commits a batch's offsets to the checkpoint only
after ``foreachBatch`` returned; results are one document per event (camera,
event time), written by ``_id`` with the later Kafka record winning; windows
keep each event's contribution and are written with full values, never
incremented. A batch that runs again after a crash, a task retried after a
killed Python worker (``spark.task.maxFailures`` = 4), or a resend of the same
events therefore leaves the same documents, and a restart resumes from the
first uncommitted batch.

On ``local[N]`` each micro-batch is spread over one task per slot (a
round-robin repartition: Kafka partitions are uneven, and one process shares
one shard cache, so spreading costs nothing). On a cluster the batch keeps its
Kafka partitions as tasks: the Kafka source gives each topic-partition one
preferred executor (the same in every batch while the executors stay), and the
topic is keyed by camera, so a camera's frames, and the fetches of its shards,
stay on one executor (:mod:`ipsp.streaming.locality` counts them per cache). A
batch holds about ``batch_seconds`` of the work measured when the workers warm
up, unless ``maxOffsetsPerTrigger`` is given.

Windows (see :mod:`ipsp.streaming.state`): per-camera tumbling windows on event
time, folded by the driver into their own documents, read and written by
``_id``; closed by each camera's watermark or by an idle timeout; late events
counted in ``late_frames``. The small query state (watermarks, open windows) is
versioned per batch in ``<checkpoint>/ipsp/state/``, and the checkpoint's run
epoch (``<checkpoint>/ipsp/epoch``) names the progress documents.
"""

from __future__ import annotations

import logging
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ipsp.config import Settings
from ipsp.contracts import ModelRef, PipelineProgress, utc_now, window_id
from ipsp.errors import UserError
from ipsp.mongo import DEFAULT_RETRY_SECONDS
from ipsp.rollups.write import write_serving
from ipsp.streaming import locality
from ipsp.streaming.control import GracefulStop, StopRequest, wait
from ipsp.streaming.master import (
    TASK_MAX_FAILURES,
    cluster_conf,
    local_checkpoint_conf,
    offsets_for,
    round_robin,
    task_slots,
    with_local_retries,
)
from ipsp.streaming.preflight import check_topic, load_model, open_sink
from ipsp.streaming.progress import elapsed_ms, latency_stats
from ipsp.streaming.sinks import MongoSink
from ipsp.streaming.state import BatchWindows, StateStore, fold_batch, group_by_window, latest_per_event
from ipsp.streaming.task.outcome import FrameOutcome, TaskReport, from_table, schema_ddl
from ipsp.streaming.task.run import JobContext, partition_function, warm_up_function
from ipsp.streaming.windows import from_ms, status_function, to_ms

log = logging.getLogger("ipsp.stream")

DEFAULT_QUERY = "traffic-stream"


@dataclass(frozen=True)
class StreamOptions:
    """How to run the query; defaults come from the settings."""

    topic: str
    query: str = DEFAULT_QUERY
    checkpoint: str = ""  # full checkpoint URI; empty: <checkpoint_uri>/<database>/<query>-<topic>
    starting_offsets: str = "earliest"
    mode: str = "continuous"  # continuous | available-now | once
    trigger_seconds: float = 2.0
    max_offsets_per_trigger: int = 0  # 0: batch_seconds of measured work
    batch_seconds: float = 8.0  # work per micro-batch when max_offsets_per_trigger is derived
    task_rows: int = 0  # Kafka records per Spark task at most; 0: a task per slot (local[N]) or partition
    retry_seconds: float = DEFAULT_RETRY_SECONDS
    ui: bool = True

    @property
    def query_name(self) -> str:
        """The query's name: ``<query>-<topic>`` (checkpoint folder, under the database's folder)."""
        return f"{self.query}-{self.topic}"


@dataclass
class StreamReport:
    """What one run of the query did (totals over its batches)."""

    query: str
    checkpoint: str
    batches: int = 0
    rows: int = 0
    results: int = 0
    dead_letters: int = 0
    late: int = 0
    stages: Counter[str] = field(default_factory=Counter)
    first_started: datetime | None = None
    last_finished: datetime | None = None
    stopped_by_signal: bool = False
    keep_latencies: bool = False  # the benchmark wants every frame's latency; a long run does not
    latencies_ms: list[float] = field(default_factory=list)
    progress: list[PipelineProgress] = field(default_factory=list)
    #: per shard cache (``<host>:<folder>``, one per machine): shards fetched, hits, bytes held
    caches: dict[str, locality.CacheUse] = field(default_factory=dict)
    #: per batch, kept with the latencies: ms of the driver's writes after ``total`` (progress, serving documents)
    #: and the window documents the batch wrote
    after_ms: list[dict[str, float]] = field(default_factory=list)
    #: per batch id, kept with the latencies: Spark's own step times (``durationMs`` of its query progress)
    spark_ms: dict[int, dict[str, int]] = field(default_factory=dict)
    #: per batch, kept with the latencies: what each shard cache did in that batch alone
    batch_caches: list[dict[str, locality.CacheUse]] = field(default_factory=list)

    def line(self) -> str:
        """One line for the terminal."""
        dead = ", ".join(f"{k} {v}" for k, v in sorted(self.stages.items())) or "none"
        return (
            f"{self.query}: {self.batches} batch(es), {self.rows} record(s) -> {self.results} result(s), "
            f"{self.dead_letters} dead letter(s) ({dead}); checkpoint {self.checkpoint}"
        )


# --- checkpoint and watermark state ------------------------------------------------------


def checkpoint_location(settings: Settings, options: StreamOptions) -> str:
    """The query's checkpoint URI: explicit, else ``<checkpoint_uri>/<database>/<query>-<topic>``.

    The database is part of the name: the same query into another database is
    another stream of writes and must not resume from (or skip by) this one's offsets.
    """
    default = f"{settings.checkpoint_uri.rstrip('/')}/{settings.mongo_db}/{options.query_name}"
    uri = options.checkpoint or default
    parsed = urlparse(uri)
    if parsed.scheme == "":
        uri = Path(uri).resolve().as_uri()
        parsed = urlparse(uri)
    if parsed.scheme == "file":
        path = Path(parsed.path)
        tmp = Path(tempfile.gettempdir()).resolve()
        if path.resolve() == tmp or tmp in path.resolve().parents:
            log.warning("checkpoint %s is under the temp folder %s: it may not survive a reboot", path, tmp)
    elif parsed.scheme not in ("s3", "s3a"):
        raise UserError(f"checkpoint {uri!r}: use file:///absolute/path or s3://bucket/prefix")
    return uri


def spark_checkpoint(uri: str) -> str:
    """The checkpoint URI as Hadoop wants it (``s3a://`` for S3)."""
    return "s3a://" + uri[len("s3://") :] if uri.startswith("s3://") else uri


# --- the per-batch sink -----------------------------------------------------------------


class BatchSink:
    """The ``foreachBatch`` function: run the batch on the executors, then windows and progress."""

    def __init__(
        self,
        settings: Settings,
        options: StreamOptions,
        model_ref: str,
        model: ModelRef,
        sink: MongoSink,
        states: StateStore,
        report: StreamReport,
        run_name: str = "",
        slots: int = 1,
    ) -> None:
        self.settings = settings
        self.options = options
        self.model_ref = model_ref
        self.model = model
        self.sink = sink
        self.states = states
        self.report = report
        #: window status with each camera's thresholds
        self.status_of = status_function(settings.cameras_config)
        self.in_batch = threading.Event()
        self.lock = threading.Lock()
        self.stop = StopRequest()
        self.last_batch: int | None = None
        self.previous_start: datetime | None = None
        self.run_name = run_name or f"{settings.mongo_db}/{options.query_name}/-"
        self.slots = 1 if options.task_rows else slots  # --task-rows: split Kafka partitions instead
        #: round-robin only in one process; a cluster keeps each Kafka partition (cameras) on its executor
        self.round_robin = round_robin(settings.spark_master)

    def __call__(self, df: Any, batch_id: int) -> None:
        with self.lock:
            if self.stop.requested.is_set():
                # refuse the batch: it stays uncommitted (nothing of it was written) and runs on restart
                log.warning("stopping: batch %d is left for the next run", batch_id)
                raise GracefulStop(f"stop requested before batch {batch_id}")
            self.in_batch.set()
        try:
            self.run(df, batch_id)
            self.last_batch = batch_id
        except Exception:
            log.error("batch %d failed; it is not committed and runs again when the query restarts", batch_id)
            raise
        finally:
            self.in_batch.clear()

    def run(self, df: Any, batch_id: int) -> None:
        """Process one micro-batch (``df`` holds its Kafka records)."""
        started = utc_now()
        t0 = time.perf_counter()
        # the first batch of a run may have run before (a crash after its writes, before its commit)
        replayed = self.last_batch is None
        ctx = JobContext(self.settings, self.model_ref, self.model, batch_id, self.options.retry_seconds, replayed)
        table = (
            self.shaped(df.select("value", "topic", "partition", "offset"))
            .mapInArrow(partition_function(ctx), schema_ddl())
            .toArrow()
        )
        t1 = time.perf_counter()
        outcomes, tasks = from_table(table)
        shards = locality.fold(tasks, self.report.caches)
        results = [o for o in outcomes if o.kind == "result"]
        dead = [o for o in outcomes if o.kind == "dead"]

        changes = self.update_windows(batch_id, results, utc_now())
        windows = changes.documents
        t2 = time.perf_counter()

        finished = utc_now()
        stages = Counter(o.stage for o in dead)
        total_rows = len(results) + len(dead)
        # input rate as Spark defines it: rows over the time since the previous batch started
        interval_s = elapsed_ms(self.previous_start, started) / 1000 if self.previous_start else t2 - t0
        durations = {name: round(sum(getattr(t, field) for t in tasks), 3) for name, field in TASK_STEPS.items()}
        durations.update(
            job=round((t1 - t0) * 1000, 3), windows=round((t2 - t1) * 1000, 3), total=round((t2 - t0) * 1000, 3)
        )
        latency = latency_stats(o.latency_ms for o in results)
        progress = PipelineProgress(
            id=f"{self.run_name}:{batch_id}",
            query=self.options.query_name,
            run=self.run_name,
            batch_id=batch_id,
            rows=total_rows,
            results=len(results),
            dead_letters=len(dead),
            late_frames=changes.late,
            input_rows_per_s=round(total_rows / max(interval_s, 1e-3), 3),
            processed_rows_per_s=round(total_rows / max(t2 - t0, 1e-3), 3),
            durations_ms=durations,
            latency=latency,
            started_at=started,
            finished_at=finished,
        )
        self.sink.write_progress(progress)
        t3 = time.perf_counter()
        write_serving(self.sink, self.settings.window_seconds, windows, progress, [letter_of(o) for o in dead])
        t4 = time.perf_counter()
        self.previous_start = started
        self._account(progress, stages, changes.late)
        if self.report.keep_latencies:
            self.report.latencies_ms.extend(o.latency_ms for o in results)
            self.report.progress.append(progress)
            self.report.after_ms.append(
                {"progress": (t3 - t2) * 1000, "serving": (t4 - t3) * 1000, "windows_written": float(len(windows))}
            )
            self.report.batch_caches.append(shards)
        self._log(progress, stages, changes, tasks, len(windows))
        if shards:
            log.info("batch %d shards: %s", batch_id, locality.batch_line(shards))

    def shaped(self, df: Any) -> Any:
        """The batch's records as tasks: one per slot on ``local[N]``, the Kafka partitions on a cluster.

        In one process the round-robin evens out uneven Kafka partitions and all
        tasks share one shard cache. Its shuffle stage costs 0.1-0.35 s on a
        1-record batch, but the Kafka source's own split (``minPartitions``, tried
        instead) made the Python tasks wait on their Kafka reads and ran the
        backlog 0.81-0.86x as fast (``bench_checkouts.py``). On a cluster the
        round-robin would send every camera to every executor, each then fetching
        every camera's shards; the Kafka partitions keep their preferred
        executors, so a camera stays on one.
        """
        if self.slots <= 1 or not self.round_robin:
            return df
        return df.repartition(self.slots)

    def update_windows(self, batch_id: int, written: list[FrameOutcome], now: datetime) -> BatchWindows:
        """Fold the batch's events into their windows (read and written by ``_id``), then close windows.

        Starts from the state after the previous batch (so a replayed batch sees
        what its first run saw) and saves the state after this one.
        """
        ws = self.settings.window_seconds
        state = self.states.before(batch_id)
        keys = group_by_window(latest_per_event(written), ws)
        stored = self.sink.read_windows(sorted(window_id(c, from_ms(ms)) for c, ms in keys))
        out = fold_batch(
            state, stored, written, ws, self.settings.watermark_seconds, self.settings.window_idle_seconds,
            now, self.status_of,
        )  # fmt: skip
        self.sink.write_windows(out.documents)
        self.sink.close_windows(out.close_ids, now)
        self.states.save(batch_id, state)
        return out

    def close_idle(self) -> int:
        """Close the open windows of cameras silent for ``window_idle_seconds`` (between batches).

        Without a batch nothing else would close them: Spark runs no batch while
        the topic is quiet. The state of the last committed batch is updated in place.
        """
        latest = self.states.latest()
        if latest is None:
            return 0
        batch_id, state = latest
        now = utc_now()
        closing = state.to_close(
            state.open, self.settings.window_seconds, self.settings.watermark_seconds,
            self.settings.window_idle_seconds, to_ms(now),
        )  # fmt: skip
        if not closing:
            return 0
        self.sink.close_windows([window_id(c, from_ms(ms)) for c, ms in sorted(closing)], now)
        state.open -= closing
        self.states.save(batch_id, state)
        log.info("closed %d window(s) of idle camera(s)", len(closing))
        return len(closing)

    def _account(self, progress: PipelineProgress, stages: Counter[str], late: int) -> None:
        report = self.report
        report.batches += 1
        report.rows += progress.rows
        report.results += progress.results
        report.dead_letters += progress.dead_letters
        report.late += late
        report.stages.update(stages)
        report.first_started = report.first_started or progress.started_at
        report.last_finished = progress.finished_at

    def _log(
        self,
        p: PipelineProgress,
        stages: Counter[str],
        changes: BatchWindows,
        tasks: list[TaskReport],
        written: int,
    ) -> None:
        d = p.durations_ms
        dead = " (" + ", ".join(f"{k} {v}" for k, v in sorted(stages.items())) + ")" if stages else ""
        lat = f"latency p50 {p.latency.p50_ms:.0f} ms p95 {p.latency.p95_ms:.0f} ms" if p.latency else "no frames"
        kept = sum(t.kept for t in tasks)
        stale = sum(t.stale for t in tasks)
        extra = [
            f"{p.results - kept} older cop(ies) not written" if p.results > kept else "",
            f"{stale} stale dead letter(s) removed" if stale else "",
            f"{changes.late} late frame(s)" if changes.late else "",
            f"{changes.closed} closed" if changes.closed else "",
        ]
        notes = "".join(f", {e}" for e in extra if e)
        log.info(
            "batch %d: %d rows -> %d results, %d dead letters%s in %.2fs (%.1f rows/s, %d tasks); "
            "windows %d written, %d open%s; %s; task time: fetch %.0f ms, decode+pre %.0f ms, infer %.0f ms, "
            "write %.0f ms",
            p.batch_id, p.rows, p.results, p.dead_letters, dead, d["total"] / 1000, p.processed_rows_per_s,
            len(tasks), written, changes.open, notes, lat, d["fetch"], d["preprocess"], d["infer"], d["write"],
        )  # fmt: skip


#: the progress document's step durations and the task report fields they sum
TASK_STEPS = {
    "read": "read_ms",
    "parse": "parse_ms",
    "fetch": "fetch_ms",
    "check": "check_ms",
    "preprocess": "pre_ms",
    "wait": "wait_ms",  # inference waiting for input (fetch/check/preprocess run ahead)
    "infer": "infer_ms",
    "postprocess": "post_ms",
    "build": "build_ms",
    "write": "write_ms",
    "tasks": "task_ms",
}


def letter_of(outcome: FrameOutcome) -> dict[str, Any]:
    """A task's dead-letter outcome as the ``dead_letters`` document it stands for (less its raw value)."""
    return {
        "_id": outcome.letter_id,
        "created_at": from_ms(outcome.created_ms),
        "stage": outcome.stage,
        "reason": outcome.reason,
        "record_key": outcome.record_key or None,
        "camera_id": outcome.camera_id or None,
    }


# --- the query ----------------------------------------------------------------------------------


#: How long the broker holds a fetch that finds no new records. With Kafka's default
#: (500 ms) every task at the tail of a live topic waited for its pooled consumer's
#: read-ahead fetch from the batch before to time out: 300-600 ms per Kafka task at
#: half load, about 1 s of a 2.3 s micro-batch. A task reads a range it knows to
#: exist, so it never needs the broker to wait for more.
KAFKA_FETCH_WAIT_MS = 10


def kafka_source_options(settings: Settings, options: StreamOptions, max_offsets: int) -> dict[str, str]:
    """Options of the Kafka source: the topic from its start point, at most ``max_offsets`` records a batch."""
    source = {
        "kafka.bootstrap.servers": settings.kafka_bootstrap,
        "subscribe": options.topic,
        "startingOffsets": options.starting_offsets,
        "maxOffsetsPerTrigger": str(max_offsets),
        "kafka.fetch.max.wait.ms": str(KAFKA_FETCH_WAIT_MS),
    }
    if options.task_rows:
        # explicit task size: Kafka partitions are split into tasks of at most task_rows records
        source["maxRecordsPerPartition"] = str(options.task_rows)
    return source


def spark_conf(settings: Settings, options: StreamOptions, checkpoint: str = "") -> dict[str, str]:
    """Spark settings of the stream job (besides what ``build_spark`` sets)."""
    conf = cluster_conf(settings) | {
        "spark.master": with_local_retries(settings.spark_master),
        # one Python worker per core, kept across tasks and batches: the model loads once per worker
        "spark.python.worker.reuse": "true",
        # Arrow batches into the Python worker are bounded in rows and bytes
        "spark.sql.execution.arrow.maxRecordsPerBatch": "1024",
        "spark.sql.execution.arrow.maxBytesPerBatch": str(16 << 20),
        "spark.sql.shuffle.partitions": "4",
        # adaptive execution does not apply to streaming queries (Spark warns when it is on)
        "spark.sql.adaptive.enabled": "false",
        "spark.sql.streaming.metricsEnabled": "true",
        "spark.ui.enabled": "true" if options.ui else "false",
        "spark.ui.showConsoleProgress": "false",
        # every write is idempotent, so a failed task (a killed Python worker, a lost executor) is retried;
        # past these attempts the batch fails, uncommitted, and runs again on restart
        "spark.task.maxFailures": str(TASK_MAX_FAILURES),
    }
    return conf | local_checkpoint_conf(checkpoint)


def run_stream(
    settings: Settings,
    options: StreamOptions,
    until: Callable[[StreamReport], bool] | None = None,
    keep_latencies: bool = False,
) -> StreamReport:
    """Run the stream query until drained (available-now / once), stopped (SIGTERM) or ``until(report)``.

    ``until`` is checked between batches (the benchmark stops a continuous run
    once it has seen every record it produced); ``keep_latencies`` keeps every
    frame's latency and every progress document in the report.
    """
    checkpoint = checkpoint_location(settings, options)
    model_ref, model = load_model(settings)
    check_topic(settings, options.topic)
    sink = open_sink(settings, options.retry_seconds)
    states = StateStore(checkpoint, settings)
    run_name = f"{settings.mongo_db}/{options.query_name}/{states.epoch()}"
    report = StreamReport(query=options.query_name, checkpoint=checkpoint, keep_latencies=keep_latencies)
    log.info("model %s (%s:%s, sha256 %s...)", model_ref, model.name, model.version, model.sha256[:12])

    from ipsp.sparkutil import build_spark

    spark = build_spark(f"ipsp-{options.query_name}", settings, **spark_conf(settings, options, checkpoint))
    slots, frame_s = warm_up(spark, JobContext(settings, model_ref, model, 0, options.retry_seconds))
    max_offsets = options.max_offsets_per_trigger or offsets_for(options.batch_seconds, slots, frame_s)
    log.info("run %s; %d slot(s), %.0f ms per frame and slot measured at warm-up -> %d records per batch at most%s",
             run_name, slots, frame_s * 1000, max_offsets,
             "" if options.max_offsets_per_trigger else f" (~{options.batch_seconds:g}s of work)")  # fmt: skip
    handler = BatchSink(settings, options, model_ref, model, sink, states, report, run_name, slots)
    writer = (
        spark.readStream.format("kafka")
        .options(**kafka_source_options(settings, options, max_offsets))
        .load()
        .writeStream.queryName(options.query_name)
        .option("checkpointLocation", spark_checkpoint(checkpoint))
        .foreachBatch(handler)
    )
    if options.mode == "available-now":
        writer = writer.trigger(availableNow=True)
    elif options.mode == "once":
        writer = writer.trigger(once=True)
    else:
        writer = writer.trigger(processingTime=f"{options.trigger_seconds} seconds")

    stop = handler.stop
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        query = writer.start()
        ui = spark.sparkContext.uiWebUrl
        log.info("query %s started (%s); checkpoint %s%s", options.query_name, options.mode, checkpoint,
                 f"; Spark UI {ui}" if ui else "")  # fmt: skip
        wait(query, handler, report, until)
        if keep_latencies:
            report.spark_ms = {int(p["batchId"]): dict(p["durationMs"]) for p in query.recentProgress}
        for line in locality.summary_lines(report.caches):
            log.info("%s", line)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        sink.client.close()
    return report


def warm_up(spark: Any, ctx: JobContext) -> tuple[int, float]:
    """Start the Python workers and load the model in each before the query reads anything.

    Returns the number of task slots and the measured seconds per frame of one
    slot (the slowest worker's warm inference of one batch).
    """
    sc = spark.sparkContext
    slots = task_slots(sc.master, int(sc.defaultParallelism))
    started = time.perf_counter()
    rows = spark.range(0, slots, 1, slots).mapInArrow(warm_up_function(ctx), "pid long, frame_s double").collect()
    pids = sorted({row.pid for row in rows})
    frame_s = max(row.frame_s for row in rows)
    log.info("%d Python worker(s) ready with the model in %.1fs", len(pids), time.perf_counter() - started)
    return slots, frame_s
