"""Pipeline efficiency and latency: Kafka -> Spark -> LMDB -> detector -> MongoDB on this machine.

Every party runs pinned to the same CPU set (this process pins itself first;
every child, Spark's JVM and Python workers included, inherits it), on the
same frames, model, backend and batch size. ``--runs`` (default 3) rounds
alternate the parties, each round in this order:

1. the detector alone, frames already in memory, ``detect_bytes`` in batches:
   one process with every core, and one single-thread process per core; the
   faster of the two is the round's ``detector_fps`` (the best the machine
   does with the detector alone);
2. the **seed-style baseline**: a Spark batch job with a row-at-a-time pandas
   UDF (``groupBy(camera).applyInPandas``) that loads the model once per group
   and runs it one frame at a time, as the original design did; same model,
   backend, frames (read from the shards) and master;
3. the pipeline at full speed: the whole feed pre-loaded in a fresh Kafka
   topic, a cold shard cache, ``run_stream`` available-now into a fresh
   database, from the first batch's start to the last batch's end
   (``pipeline_fps``).

4. the pipeline at full speed with ``--baseline-model`` (default ``centernet``, the
   default before the fine-tuned ``traffic`` model) on the same feed, so a change of
   default model is a throughput ratio measured in the same run
   (``baseline_model.ratio`` = the median of pipeline_fps / baseline pipeline_fps).

5. the pipeline at full speed on a Spark standalone cluster on loopback
   (``ipsp stack spark up``, started for the party and stopped after it): 1 worker
   x 2 cores, then 2 workers x 1 core, each on the same CPU set, feed and cold
   shard caches (one per worker), the daemons and executors counted as the
   pipeline's CPU. ``cluster.<shape>.ratio`` = the median of its pipeline_fps /
   the single-process pipeline_fps of the same round: the cost of distribution
   (goal >= 0.9). ``ratio_after_first_batch`` compares the two rates after each
   run's first batch, which holds what a fresh executor pays once (its JVM
   compiling the query's code, its first Kafka and S3 connections): start-up
   apart from distribution. ``executor_balance`` says how evenly the executors
   shared the work (:func:`ipsp.streaming.locality.balance`): a Kafka partition
   stays on its executor and a camera on its partition, both by hash, so the
   feed's 20 cameras split unevenly and the cluster cannot beat that share.
   ``--cluster none`` leaves the party out.

``efficiency`` = the median over the rounds of pipeline_fps / detector_fps
(goal >= 0.9), and ``efficiency_after_first_batch`` the same after each run's
first batch (a stream runs on: its first batch's start-up is paid once);
``seed_style_speedup`` = the median of pipeline_fps / seed_style_fps. Each
phase records its CPU-seconds per frame and the share of the machine's CPU
other processes took (``neighbours_share``): a round with a high share
measured the neighbours too. Then once, at half load: the producer paced at
half the median pipeline rate into another fresh topic while the stream runs
continuously -> p50/p95 latency from ``produced_at`` to the MongoDB write,
per frame.

Writes ``benchmarks/results/pipeline.json`` (and prints it). Needs the local
stack (``make up``); ``make bench-pipeline`` runs it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ipsp.config import Settings, load_settings
from ipsp.contracts import PipelineProgress
from ipsp.streaming.progress import latency_stats

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "pipeline.json"
EVENT_START = "2026-01-01T08:00:00Z"
STEPS = ("read", "parse", "fetch", "check", "preprocess", "wait", "infer", "postprocess", "build", "write")
#: steps on a task's own thread; fetch/check/preprocess run on its prefetch thread, write on its writer thread
SERIAL = ("read", "parse", "wait", "infer", "postprocess", "build")


def ipsp(*args: str) -> str:
    """Run one ``ipsp`` subcommand; stop the benchmark with its output if it fails."""
    env = dict(os.environ)
    env.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    proc = subprocess.run([sys.executable, "-m", "ipsp.cli", *args], cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"ipsp {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def say(text: str) -> None:
    print(f"[bench-pipeline {datetime.now(UTC):%H:%M:%S}] {text}", flush=True)


def prepare_dataset(settings: Settings, frames: int, cameras: int) -> str:
    """Synthesize and pack the feed (both reuse an earlier identical run)."""
    name = f"bench-synth-{frames}f-{cameras}c"
    source = Path(settings.home) / "bench" / name
    uri = f"s3://ipsp/datasets/{name}"
    say(f"synthesizing {frames} frames over {cameras} cameras -> {source}")
    ipsp("synth", str(source), "--frames", str(frames), "--cameras", str(cameras), "--no-progress")
    say(f"packing -> {uri}")
    ipsp("pack", str(source), "--to", uri, "--no-progress")
    return uri


def frame_refs(settings: Settings, uri: str) -> list[tuple[str, str]]:
    """``(shard_uri, key)`` of every frame, in manifest order."""
    return [(shard, key) for shard, key, _camera in frame_rows(settings, uri)]


def frame_rows(settings: Settings, uri: str) -> list[tuple[str, str, str]]:
    """``(shard_uri, key, camera_id)`` of every frame, in manifest order."""
    from ipsp.preprocessing.manifest import read_manifest
    from ipsp.storage import open_store

    rows = read_manifest(open_store(uri, settings).get("manifest.parquet"))
    return [(row.shard_uri, row.key, row.camera_id) for row in rows]


def seed_style(settings: Settings, rows: list[tuple[str, str, str]], spark: Any) -> dict[str, Any]:
    """The original design's shape: a grouped pandas UDF, the model loaded per group, one frame at a time."""
    import pandas as pd

    def per_camera(frame: pd.DataFrame) -> pd.DataFrame:
        from ipsp.detection import load_detector
        from ipsp.storage.shards import ShardReader

        detector = load_detector(settings.model, settings, threads=1, batch_size=1)  # per group, as the seed did
        reader = ShardReader(Path(settings.home) / "bench" / "reader-cache", 4 << 30, settings)
        vehicles = []
        for shard, key in zip(frame["shard"], frame["key"], strict=True):
            (det,) = detector.detect_bytes([reader.get(shard, key)])  # row at a time
            vehicles.append(0 if isinstance(det, Exception) else len(det))
        return pd.DataFrame({"camera": frame["camera"].iloc[:1].repeat(len(frame)).to_numpy(), "objects": vehicles})

    df = spark.createDataFrame(pd.DataFrame(rows, columns=["shard", "key", "camera"]))
    started = time.perf_counter()
    out = df.groupBy("camera").applyInPandas(per_camera, "camera string, objects long").collect()
    seconds = time.perf_counter() - started
    return {"frames": len(out), "seconds": round(seconds, 3), "fps": round(len(out) / seconds, 3),
            "groups": len({r.camera for r in out})}  # fmt: skip


def load_frames(settings: Settings, refs: list[tuple[str, str]]) -> list[bytes]:
    """The frames' bytes, read through a shard reader with its own local cache."""
    from ipsp.storage.shards import ShardReader

    reader = ShardReader(Path(settings.home) / "bench" / "reader-cache", 4 << 30, settings)
    return [reader.get(shard, key) for shard, key in refs]


def _parallel_worker(settings: Settings, refs: list[tuple[str, str]], barrier: Any) -> tuple[float, float, int]:
    """One single-thread detector process: load, warm up, wait for the others, then time its share."""
    from ipsp.detection import load_detector

    data = load_frames(settings, refs)
    detector = load_detector(settings.model, settings, threads=1, batch_size=settings.batch_size)
    detector.detect_bytes(data[: settings.batch_size])
    barrier.wait()
    started = time.monotonic()
    for start in range(0, len(data), settings.batch_size):
        detector.detect_bytes(data[start : start + settings.batch_size])
    return started, time.monotonic(), len(data)


def detector_parallel(settings: Settings, refs: list[tuple[str, str]], processes: int) -> dict[str, Any]:
    """The detector in ``processes`` single-thread processes (the pipeline's layout), frames split evenly."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("spawn")
    barrier = ctx.Manager().Barrier(processes)
    shares = [refs[i::processes] for i in range(processes)]
    with ProcessPoolExecutor(processes, mp_context=ctx) as pool:
        runs = list(pool.map(_parallel_worker, [settings] * processes, shares, [barrier] * processes))
    seconds = max(end for _, end, _ in runs) - min(start for start, _, _ in runs)
    frames = sum(n for _, _, n in runs)
    return {"frames": frames, "seconds": round(seconds, 3), "fps": round(frames / seconds, 3), "processes": processes}


def detector_alone(settings: Settings, data: list[bytes]) -> dict[str, Any]:
    """The detector's own frames/s on the same frames and batch size, one process, every core."""
    from ipsp.detection import load_detector

    detector = load_detector(settings.model, settings, batch_size=settings.batch_size)
    detector.detect_bytes(data[: settings.batch_size])  # warm-up: first-run allocations
    started = time.perf_counter()
    timings = {"pre_ms": 0.0, "infer_ms": 0.0, "post_ms": 0.0}
    for start in range(0, len(data), settings.batch_size):
        detector.detect_bytes(data[start : start + settings.batch_size])
        for key in timings:
            timings[key] += getattr(detector.last_timings, key)
    seconds = time.perf_counter() - started
    return {
        "frames": len(data),
        "seconds": round(seconds, 3),
        "fps": round(len(data) / seconds, 3),
        "threads": detector.backend.threads,
        "per_frame_ms": {k: round(v / len(data), 3) for k, v in timings.items()},
        "model": {"name": detector.model_info.name, "version": detector.model_info.version},
    }


def produce(uri: str, topic: str, *flags: str) -> subprocess.Popen[str]:
    """Start the producer (a subprocess, as in production)."""
    env = dict(os.environ)
    return subprocess.Popen(
        [sys.executable, "-m", "ipsp.cli", "produce", uri, "--topic", topic, "--quiet", *flags],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def breakdown(progress: list[PipelineProgress]) -> dict[str, Any]:
    """Where the time goes per batch: task time per step, wall time per phase, gaps between batches."""
    frames = sum(p.results for p in progress) or 1
    task_total = sum(p.durations_ms.get("tasks", 0.0) for p in progress) or 1.0
    steps = {s: sum(p.durations_ms.get(s, 0.0) for p in progress) for s in STEPS}
    # input (fetch, check, preprocess) and writes run on their own threads, overlapping inference: the task's
    # serial time holds only what inference waited for them ("wait")
    serial = {s: steps[s] for s in SERIAL}
    shares = {s: round(100 * v / task_total, 1) for s, v in serial.items()}
    shares["other (worker overhead)"] = round(100 * (1 - sum(serial.values()) / task_total), 1)
    made = steps["fetch"] + steps["check"] + steps["preprocess"]
    ordered = sorted(progress, key=lambda p: p.batch_id)
    gaps = [(b.started_at - a.finished_at).total_seconds() * 1000 for a, b in itertools.pairwise(ordered)]
    wall = {k: statistics.fmean(p.durations_ms[k] for p in progress) for k in ("job", "windows", "total")}
    return {
        "batches": len(progress),
        "rows_per_batch": round(statistics.fmean(p.rows for p in progress), 1),
        "task_ms_per_frame": {s: round(v / frames, 3) for s, v in steps.items()},
        "task_share_percent": shares,
        # share of the input work (fetch + check + preprocess) that ran while inference ran, not before it
        "input_hidden_percent": round(100 * (1 - steps["wait"] / made), 1) if made else None,
        "wall_ms_per_batch": {k: round(v, 1) for k, v in wall.items()},
        "gap_between_batches_ms_mean": round(statistics.fmean(gaps), 1) if gaps else 0.0,
        "first_batch_ms": round(ordered[0].durations_ms["total"], 1),
    }


class CpuMeter:
    """CPU seconds over a phase: the whole machine, this process tree, the stack's servers, the rest.

    Other work on a shared machine shows up as ``other``: a phase with much of it
    measured the machine's neighbours as well as the pipeline.
    """

    def __init__(self, stack_pids: dict[str, int | None]) -> None:
        self.stack = {name: pid for name, pid in stack_pids.items() if pid}
        self.tick = os.sysconf("SC_CLK_TCK")
        self.start = self._snapshot()
        self.peak: dict[int, float] = {}  # per pid, the most CPU seen by sample()
        self.started = time.monotonic()

    @staticmethod
    def _machine() -> float:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
        return float(sum(fields) - fields[3] - fields[4])  # all but idle and iowait

    def _proc(self, pid: int) -> float:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            # utime + stime, plus cutime + cstime: children that ended (pool workers) still count
            return float(sum(int(v) for v in fields[11:15]))
        except (OSError, IndexError, ValueError):
            return 0.0

    @staticmethod
    def _tree(root: int) -> set[int]:
        parents: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as fh:
                        parents[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
        tree, frontier = {root}, [root]
        while frontier:
            parent = frontier.pop()
            for pid, ppid in parents.items():
                if ppid == parent and pid not in tree:
                    tree.add(pid)
                    frontier.append(pid)
        return tree

    def _snapshot(self) -> dict[str, Any]:
        tree = self._tree(os.getpid())
        return {
            "machine": self._machine(),
            "tree": {pid: self._proc(pid) for pid in tree},
            "stack": {name: self._proc(pid) for name, pid in self.stack.items()},
        }

    def sample(self) -> None:
        """Note the tree's CPU now: a descendant that ends unreaped (a JVM's Python workers) still counts."""
        for pid in self._tree(os.getpid()):
            self.peak[pid] = max(self.peak.get(pid, 0.0), self._proc(pid))

    def stop(self) -> dict[str, Any]:
        """CPU seconds per part since the meter started, and the wall time."""
        end = self._snapshot()
        wall = time.monotonic() - self.started
        machine = (end["machine"] - self.start["machine"]) / self.tick
        seen = {pid: max(end["tree"].get(pid, 0.0), self.peak.get(pid, 0.0)) for pid in {*end["tree"], *self.peak}}
        tree = sum(v - self.start["tree"].get(pid, 0.0) for pid, v in seen.items()) / self.tick
        stack = {k: (end["stack"][k] - self.start["stack"][k]) / self.tick for k in self.stack}
        other = machine - tree - sum(stack.values())
        return {
            "wall_s": round(wall, 1),
            "cpu_s": {
                "machine": round(machine, 1),
                "pipeline (driver, JVM, Python workers)": round(tree, 1),
                **{f"stack {k}": round(v, 1) for k, v in stack.items()},
                "other processes": round(max(other, 0.0), 1),
            },
            "cores_busy": round(machine / max(wall, 1e-3), 2),
            # share of the machine's CPU that other work took: high means the figures are disturbed
            "neighbours_share": round(max(other, 0.0) / max(machine, 1e-3), 3),
        }


def fps_of(progress: list[PipelineProgress], skip_first: bool = False) -> float:
    """Rows per second from the first batch's start to the last batch's end."""
    chosen = sorted(progress, key=lambda p: p.batch_id)[1 if skip_first else 0 :]
    if not chosen:
        return 0.0
    seconds = (chosen[-1].finished_at - chosen[0].started_at).total_seconds()
    return sum(p.rows for p in chosen) / max(seconds, 1e-3)


def full_speed(settings: Settings, uri: str, tag: str) -> tuple[dict[str, Any], Any]:
    """Phase 2: drain a pre-loaded topic; efficiency figures and the report."""
    from ipsp.streaming import locality
    from ipsp.streaming.job import StreamOptions, run_stream

    topic = f"bench-full-{tag}"
    say(f"pre-loading {topic}")
    proc = produce(uri, topic, "--as-fast-as-possible", "--event-start", EVENT_START)
    out, _ = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"producer failed:\n{out}")
    options = StreamOptions(
        topic=topic, mode="available-now", ui=False,
        checkpoint=str(Path(settings.home) / "bench" / "checkpoints" / topic),
    )  # fmt: skip
    say(f"streaming {topic} (available-now, batches sized from the measured throughput)")
    from ipsp.localstack import stack

    meter = CpuMeter(stack.pids(settings))
    report = run_stream(settings, options, keep_latencies=True)
    cpu = meter.stop()
    say(f"CPU during the stream: {cpu}")
    summary = {"topic": topic, "rows": report.rows, "results": report.results, "dead_letters": report.dead_letters}
    # shards fetched from the store (cache misses) and bytes held, per shard cache (one per machine)
    summary["shard_caches"] = locality.as_json(report.caches, Path(settings.home))
    return {**summary, "cpu": cpu}, report


CLUSTERS = {"1x2": (1, 2), "2x1": (2, 1)}  # workers x cores each


def stop_spark() -> None:
    """Stop this process's Spark session, so the next one starts on another master."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        active.stop()


def on_cluster(settings: Settings, uri: str, tag: str, shape: str) -> dict[str, Any]:
    """Party 5: ``full_speed`` on a loopback standalone cluster of the given shape, cold shard caches."""
    import shutil

    from ipsp.localstack import spark as cluster
    from ipsp.localstack.layout import StackLayout
    from ipsp.streaming import locality

    workers, cores = CLUSTERS[shape]
    say(f"cluster {shape}: {workers} worker(s) x {cores} core(s)")
    stop_spark()
    status = cluster.up(settings, cluster.ClusterSpec(workers=workers, cores=cores))
    layout = StackLayout.from_settings(settings)
    try:
        for name in cluster.running_workers(layout):
            shutil.rmtree(layout.spark_shard_cache(name), ignore_errors=True)
        on = settings.model_copy(
            update={"spark_master": status.master_url, "spark_cores_max": workers * cores,
                    "mongo_db": f"{settings.mongo_db}c{shape.replace('x', '_')}"}
        )  # fmt: skip
        full, report = full_speed(on, uri, f"{tag}-c{shape}")
    finally:
        stop_spark()
        cluster.down(settings)
    full["pipeline_fps"] = round(fps_of(report.progress), 3)
    full["pipeline_fps_after_first_batch"] = round(fps_of(report.progress, skip_first=True), 3)
    full["cpu_s_per_frame"] = per_frame(full["cpu"], report.rows)
    full["executor_balance"] = round(locality.balance(report.batch_caches), 3)
    return full


def half_load(settings: Settings, uri: str, tag: str, rate: float, seconds: float) -> dict[str, Any]:
    """Phase 3: the producer paced at ``rate`` while the stream runs; per-frame latency."""
    from kafka.admin import KafkaAdminClient, NewTopic

    from ipsp.streaming.job import StreamOptions, run_stream

    topic = f"bench-half-{tag}"
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=settings.kafka_partitions, replication_factor=1)])
    admin.close()
    count = max(int(rate * seconds), 1)
    started: dict[str, Any] = {}

    def until(report: Any) -> bool:
        # the query is running when this is first called: start the paced producer now
        if "proc" not in started:
            started["proc"] = produce(uri, topic, "--rate", f"{rate:.3f}", "--limit", str(count), "--loop", "0")
        return bool(report.rows >= count)

    options = StreamOptions(
        topic=topic, mode="continuous", trigger_seconds=0.5, ui=False,
        checkpoint=str(Path(settings.home) / "bench" / "checkpoints" / topic),
    )  # fmt: skip
    say(f"half load: {count} frames at {rate:.1f} msg/s into {topic}")
    timer = threading.Timer(seconds * 4 + 300, lambda: os.kill(os.getpid(), 15))  # never hang the bench
    timer.start()
    try:
        report = run_stream(settings, options, until=until, keep_latencies=True)
    finally:
        timer.cancel()
        proc = started.get("proc")
        if proc is not None:
            proc.wait(timeout=60)
    stats = latency_stats(report.latencies_ms)
    return {
        "topic": topic,
        "rate_msg_s": round(rate, 3),
        "frames": report.results,
        "batches": report.batches,
        "latency_p50_ms": stats.p50_ms if stats else None,
        "latency_p95_ms": stats.p95_ms if stats else None,
        "latency_max_ms": stats.max_ms if stats else None,
        "breakdown": breakdown(report.progress) if report.progress else None,
    }


def machine(cpus: list[int], settings: Settings, load_before: tuple[float, float, float]) -> dict[str, Any]:
    """What a results file says of the machine: CPUs, the ones pinned, the master, the load before and after."""
    return {
        "cpus": os.cpu_count(),
        "pinned_cpus": cpus,
        "spark_master": settings.spark_master,
        "loadavg_before": [round(v, 2) for v in load_before],
        "loadavg_after": [round(v, 2) for v in os.getloadavg()],
    }


def pin_cpus(spec: str) -> list[int]:
    """Pin this process (and so every child it starts) to a CPU set: ``all`` or e.g. ``0-1``."""
    if spec == "all":
        cpus = sorted(os.sched_getaffinity(0))
    else:
        cpus = sorted({c for part in spec.split(",") for c in _cpu_range(part)})
    os.sched_setaffinity(0, cpus)
    return cpus


def _cpu_range(part: str) -> range:
    low, _, high = part.partition("-")
    return range(int(low), int(high or low) + 1)


def per_frame(cpu: dict[str, Any], frames: int, part: str = "pipeline (driver, JVM, Python workers)") -> float:
    """CPU-seconds per frame of the measured party."""
    return round(cpu["cpu_s"][part] / max(frames, 1), 4)


def one_round(settings: Settings, uri: str, refs: list[tuple[str, str]], rows: list[tuple[str, str, str]],
              tag: str, slots: int, seed_cameras: int, baseline: str, shapes: list[str]) -> dict[str, Any]:  # fmt: skip
    """One round of every party, in a fixed order; figures of each."""
    from ipsp.localstack import stack
    from ipsp.sparkutil import build_spark
    from ipsp.streaming.job import StreamOptions, spark_conf

    # the stream job's own settings (the seed-style job runs on the same master); a cluster party stops it
    spark = build_spark("ipsp-bench-pipeline", settings, **spark_conf(settings, StreamOptions(topic="-", ui=False)))

    pids = stack.pids(settings)
    data = load_frames(settings, refs)
    meter = CpuMeter(pids)
    single = detector_alone(settings, data)
    single["cpu"] = meter.stop()
    single["cpu_s_per_frame"] = per_frame(single["cpu"], single["frames"])
    say(f"detector: {single['fps']} frames/s, one process with {single['threads']} threads")
    meter = CpuMeter(pids)
    parallel = detector_parallel(settings, refs, slots)
    parallel["cpu"] = meter.stop()
    parallel["cpu_s_per_frame"] = per_frame(parallel["cpu"], parallel["frames"])
    say(f"detector: {parallel['fps']} frames/s in {slots} single-thread processes")
    # the seed-style job is slow: it runs on every frame of a few cameras (same frames per group as the feed)
    cameras = sorted({camera for _, _, camera in rows})[:seed_cameras]
    meter = CpuMeter(pids)
    seed = seed_style(settings, [r for r in rows if r[2] in cameras], spark)
    seed["cpu"] = meter.stop()
    seed["cpu_s_per_frame"] = per_frame(seed["cpu"], seed["frames"])
    say(f"seed-style: {seed['fps']} frames/s (model loaded per group, one frame at a time)")

    # a cold shard cache: the pipeline fetches its shards from the S3 server as in production
    import shutil

    shutil.rmtree(Path(settings.home) / "shard-cache", ignore_errors=True)
    full, report = full_speed(settings, uri, tag)
    pipeline_fps = fps_of(report.progress)
    steady_fps = fps_of(report.progress, skip_first=True)
    full["cpu_s_per_frame"] = per_frame(full["cpu"], report.rows)
    best = max(single["fps"], parallel["fps"])
    say(f"pipeline: {pipeline_fps:.2f} frames/s -> efficiency {pipeline_fps / best:.3f}")
    stats = latency_stats(report.latencies_ms)
    shutil.rmtree(Path(settings.home) / "shard-cache", ignore_errors=True)
    base_settings = settings.model_copy(
        update={"model": baseline, "input_size": "", "mongo_db": settings.mongo_db + "b"}
    )
    base_full, base_report = full_speed(base_settings, uri, tag + "-base")
    base_fps = fps_of(base_report.progress)
    say(f"pipeline with {baseline}: {base_fps:.2f} frames/s -> ratio {pipeline_fps / max(base_fps, 1e-9):.3f}")
    clusters = {shape: on_cluster(settings, uri, tag, shape) for shape in shapes}
    for shape, row in clusters.items():
        row["ratio"] = round(row["pipeline_fps"] / max(pipeline_fps, 1e-9), 3)
        row["ratio_after_first_batch"] = round(row["pipeline_fps_after_first_batch"] / max(steady_fps, 1e-9), 3)
        say(
            f"cluster {shape}: {row['pipeline_fps']:.2f} frames/s -> ratio {row['ratio']:.3f} to one process, "
            f"executor balance {row['executor_balance']:.3f}"
        )
    return {
        "pipeline_fps": round(pipeline_fps, 3),
        "baseline_pipeline_fps": round(base_fps, 3),
        "baseline_ratio": round(pipeline_fps / max(base_fps, 1e-9), 3),
        "baseline_full_speed": {**base_full, "cpu_s_per_frame": per_frame(base_full["cpu"], base_report.rows)},
        "pipeline_fps_after_first_batch": round(steady_fps, 3),
        "detector_fps": best,
        "efficiency": round(pipeline_fps / best, 3),
        "efficiency_after_first_batch": round(steady_fps / best, 3),
        "seed_style_fps": seed["fps"],
        "seed_style_speedup": round(pipeline_fps / max(seed["fps"], 1e-9), 2),
        "detector": {"one_process_all_cores": single, "one_process_per_core": parallel},
        "seed_style": seed,
        "full_speed": {
            **full,
            "latency_p50_ms": stats.p50_ms if stats else None,
            "latency_p95_ms": stats.p95_ms if stats else None,
            "note": "the feed was pre-loaded: latency here is mostly queueing time in Kafka",
            "breakdown": breakdown(report.progress),
        },
        "cluster": clusters,
        "neighbours_share": {
            "detector_one_process": single["cpu"]["neighbours_share"],
            "detector_per_core": parallel["cpu"]["neighbours_share"],
            "seed_style": seed["cpu"]["neighbours_share"],
            "pipeline": full["cpu"]["neighbours_share"],
            **{f"cluster {shape}": row["cpu"]["neighbours_share"] for shape, row in clusters.items()},
        },
    }


def main(argv: list[str] | None = None) -> None:
    """Run the rounds and the half-load phase; write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1200, help="frames in the feed (default 1200)")
    parser.add_argument("--cameras", type=int, default=20, help="cameras in the synthetic feed (default 20)")
    parser.add_argument("--runs", type=int, default=3, help="alternating rounds of every party (default 3)")
    parser.add_argument("--seed-cameras", type=int, default=5, help="cameras the seed-style job runs on (default 5)")
    parser.add_argument("--cpus", default="all", help="CPU set every party is pinned to: all, or e.g. 0-1")
    parser.add_argument("--half-load-seconds", type=float, default=60.0, help="length of the half-load phase")
    parser.add_argument("--baseline-model", default="centernet", help="model of the baseline pipeline run")
    parser.add_argument(
        "--cluster", default="1x2,2x1", help="cluster shapes (workers x cores) to run, or none (default 1x2,2x1)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file")
    args = parser.parse_args(argv)
    shapes = [] if args.cluster == "none" else [s.strip() for s in args.cluster.split(",")]
    if any(shape not in CLUSTERS for shape in shapes):
        parser.error(f"--cluster: choose from {', '.join(CLUSTERS)} or none")

    from ipsp.localstack import stack

    if not stack.status(load_settings()).all_up:
        sys.exit("the local stack is not up: run `make up` (or `ipsp stack up`) first")
    cpus = pin_cpus(args.cpus)
    tag = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    db = f"bench_{tag.replace('-', '_')}"
    settings = load_settings(mongo_db=db + "_full")
    load_before = os.getloadavg()

    uri = prepare_dataset(settings, args.frames, args.cameras)
    rows = frame_rows(settings, uri)
    refs = [(shard, key) for shard, key, _ in rows]
    from ipsp.streaming.master import task_slots

    slots = task_slots(settings.spark_master, len(cpus))
    rounds = []
    for number in range(args.runs):
        say(f"round {number + 1} of {args.runs} on CPUs {cpus} (load {os.getloadavg()[0]:.1f})")
        rounds.append(one_round(load_settings(mongo_db=f"{db}_full{number}"), uri, refs, rows, f"{tag}-{number}",
                                slots, args.seed_cameras, args.baseline_model, shapes))  # fmt: skip

    def median(key: str) -> float:
        return round(statistics.median(r[key] for r in rounds), 3)

    pipeline_fps = median("pipeline_fps")
    half_settings = load_settings(mongo_db=db + "_half")
    half = half_load(half_settings, uri, tag, pipeline_fps / 2, args.half_load_seconds)
    say(f"half load: p50 {half['latency_p50_ms']} ms, p95 {half['latency_p95_ms']} ms")
    last = rounds[-1]
    result = {
        "frames": last["full_speed"]["results"],
        "pipeline_fps": pipeline_fps,
        "detector_fps": median("detector_fps"),
        "efficiency": median("efficiency"),
        "latency_p50_ms": half["latency_p50_ms"],
        "latency_p95_ms": half["latency_p95_ms"],
        "efficiency_runs": [r["efficiency"] for r in rounds],
        "efficiency_after_first_batch": median("efficiency_after_first_batch"),
        "efficiency_after_first_batch_runs": [r["efficiency_after_first_batch"] for r in rounds],
        "baseline_model": {
            "name": args.baseline_model,
            "pipeline_fps": median("baseline_pipeline_fps"),
            "ratio": median("baseline_ratio"),
            "ratio_runs": [r["baseline_ratio"] for r in rounds],
            "ratio_definition": "pipeline_fps with the default model / with the baseline model, same feed, "
            "CPU set and round; median of the rounds",
        },
        "efficiency_definition": "pipeline_fps / the faster of one multi-threaded detector process and one "
        "single-thread process per core, same CPU set, model, backend and frames; median of the rounds",
        "cluster": {
            shape: {
                "pipeline_fps": statistics.median(r["cluster"][shape]["pipeline_fps"] for r in rounds),
                "ratio": statistics.median(r["cluster"][shape]["ratio"] for r in rounds),
                "ratio_runs": [r["cluster"][shape]["ratio"] for r in rounds],
                "ratio_after_first_batch": statistics.median(
                    r["cluster"][shape]["ratio_after_first_batch"] for r in rounds
                ),
                "ratio_after_first_batch_runs": [r["cluster"][shape]["ratio_after_first_batch"] for r in rounds],
                "cpu_s_per_frame": statistics.median(r["cluster"][shape]["cpu_s_per_frame"] for r in rounds),
                "executor_balance": statistics.median(r["cluster"][shape]["executor_balance"] for r in rounds),
                "executor_balance_runs": [r["cluster"][shape]["executor_balance"] for r in rounds],
                "shard_caches": last["cluster"][shape]["shard_caches"],
            }
            for shape in shapes
        },
        "cluster_definition": "pipeline_fps on a loopback standalone cluster (workers x cores, same CPU set) / "
        "the single-process pipeline_fps of the same round; median of the rounds (ratio_after_first_batch: "
        "both rates after each run's first batch, which holds the executors' start-up); executor_balance: "
        "the mean executor's busy time over the busiest's, summed over the batches (1.0 = an even share)",
        "seed_style_fps": median("seed_style_fps"),
        "seed_style_speedup": median("seed_style_speedup"),
        "seed_style_speedup_runs": [r["seed_style_speedup"] for r in rounds],
        "cpu_s_per_frame": {
            "pipeline": statistics.median(r["full_speed"]["cpu_s_per_frame"] for r in rounds),
            "detector_one_process": statistics.median(
                r["detector"]["one_process_all_cores"]["cpu_s_per_frame"] for r in rounds
            ),
            "detector_per_core": statistics.median(
                r["detector"]["one_process_per_core"]["cpu_s_per_frame"] for r in rounds
            ),
            "seed_style": statistics.median(r["seed_style"]["cpu_s_per_frame"] for r in rounds),
        },
        "neighbours_share_max": max(max(r["neighbours_share"].values()) for r in rounds),
        "detector_fps_per_core": statistics.median(r["detector"]["one_process_per_core"]["fps"] for r in rounds),
        "detector_fps_one_process": statistics.median(r["detector"]["one_process_all_cores"]["fps"] for r in rounds),
        "batch_size": settings.batch_size,
        "model": last["detector"]["one_process_all_cores"]["model"],
        "rounds": rounds,
        "half_load": half,
        "arguments": {k: str(v) for k, v in vars(args).items() if k != "out"},  # no machine path in results
        "machine": machine(cpus, settings, load_before),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    from pymongo import MongoClient

    client: Any = MongoClient(settings.mongo_uri.get_secret_value())
    suffixes = ["", "b", *(f"c{shape.replace('x', '_')}" for shape in shapes)]
    for name in [*(f"{db}_full{n}{suffix}" for n in range(args.runs) for suffix in suffixes), half_settings.mongo_db]:
        client.drop_database(name)


if __name__ == "__main__":
    main()
