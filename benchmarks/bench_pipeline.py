"""Pipeline efficiency and latency: Kafka -> Spark -> LMDB -> detector -> MongoDB on this machine.

Phases, all in one run on the same frames, model and batch size:

1. the detector alone, frames already in memory, ``detect_bytes`` in batches of
   ``batch_size``, in two layouts: one process with every core (what
   ``bench-detect`` measures: ``detector_fps``) and one single-thread process
   per core (the layout the pipeline itself uses: ``detector_fps_per_core``);
2. the pipeline at full speed: the whole feed pre-loaded in a fresh Kafka topic,
   ``ipsp stream --available-now`` from the first offset consumed (first batch
   start) to the last document written (last batch end) -> ``pipeline_fps``;
   ``efficiency`` = pipeline_fps / detector_fps (target >= 0.9), and the
   stricter ``efficiency_vs_per_core`` against the pipeline's own layout;
3. half load: the producer paced at half the measured pipeline capacity into
   another fresh topic while the stream runs continuously -> p50/p95 latency
   from ``produced_at`` to the MongoDB write, per frame.

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
from ipsp.streaming.process import latency_stats

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "pipeline.json"
EVENT_START = "2026-01-01T08:00:00Z"
STEPS = ("read", "parse", "fetch", "check", "preprocess", "infer", "postprocess", "build", "write")


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
    from ipsp.preprocessing.manifest import read_manifest
    from ipsp.storage import open_store

    return [(row.shard_uri, row.key) for row in read_manifest(open_store(uri, settings).get("manifest.parquet"))]


def load_frames(settings: Settings, refs: list[tuple[str, str]]) -> list[bytes]:
    """The frames' bytes, read through a shard reader with its own local cache."""
    from ipsp.preprocessing.shards import ShardReader

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
    # the write runs on its own thread, overlapping inference: it is not part of the task's serial time
    serial = {s: v for s, v in steps.items() if s != "write"}
    shares = {s: round(100 * v / task_total, 1) for s, v in serial.items()}
    shares["other (worker overhead)"] = round(100 * (1 - sum(serial.values()) / task_total), 1)
    ordered = sorted(progress, key=lambda p: p.batch_id)
    gaps = [(b.started_at - a.finished_at).total_seconds() * 1000 for a, b in itertools.pairwise(ordered)]
    wall = {k: statistics.fmean(p.durations_ms[k] for p in progress) for k in ("job", "windows", "total")}
    return {
        "batches": len(progress),
        "rows_per_batch": round(statistics.fmean(p.rows for p in progress), 1),
        "task_ms_per_frame": {s: round(v / frames, 3) for s, v in steps.items()},
        "task_share_percent": shares,
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

    def stop(self) -> dict[str, Any]:
        """CPU seconds per part since the meter started, and the wall time."""
        end = self._snapshot()
        wall = time.monotonic() - self.started
        machine = (end["machine"] - self.start["machine"]) / self.tick
        tree = sum(v - self.start["tree"].get(pid, 0.0) for pid, v in end["tree"].items()) / self.tick
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


def full_speed(settings: Settings, uri: str, tag: str, max_offsets: int) -> tuple[dict[str, Any], Any]:
    """Phase 2: drain a pre-loaded topic; efficiency figures and the report."""
    from ipsp.streaming.job import StreamOptions, run_stream

    topic = f"bench-full-{tag}"
    say(f"pre-loading {topic}")
    proc = produce(uri, topic, "--as-fast-as-possible", "--event-start", EVENT_START)
    out, _ = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"producer failed:\n{out}")
    options = StreamOptions(
        topic=topic, mode="available-now", max_offsets_per_trigger=max_offsets, ui=False,
        checkpoint=str(Path(settings.home) / "bench" / "checkpoints" / topic),
    )  # fmt: skip
    say(f"streaming {topic} (available-now, {max_offsets} offsets per batch)")
    from ipsp.localstack import stack

    meter = CpuMeter(stack.pids(settings))
    report = run_stream(settings, options, keep_latencies=True)
    cpu = meter.stop()
    say(f"CPU during the stream: {cpu}")
    summary = {"topic": topic, "rows": report.rows, "results": report.results, "dead_letters": report.dead_letters}
    return {**summary, "cpu": cpu}, report


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
        topic=topic, mode="continuous", trigger_seconds=0.5, max_offsets_per_trigger=512, ui=False,
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


def main(argv: list[str] | None = None) -> None:
    """Run the three phases and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1200, help="frames in the feed (default 1200)")
    parser.add_argument("--cameras", type=int, default=20)
    parser.add_argument("--max-offsets", type=int, default=512, help="Kafka offsets per micro-batch")
    parser.add_argument("--half-load-seconds", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    from ipsp.localstack import stack

    if not stack.status(load_settings()).all_up:
        sys.exit("the local stack is not up: run `make up` (or `ipsp stack up`) first")
    tag = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    db = f"bench_{tag.replace('-', '_')}"
    settings = load_settings(mongo_db=db + "_full")
    load_before = os.getloadavg()

    uri = prepare_dataset(settings, args.frames, args.cameras)
    refs = frame_refs(settings, uri)
    say(f"detector alone on {len(refs)} frames (batch {settings.batch_size}): one process, every core")
    from ipsp.localstack import stack

    meter = CpuMeter(stack.pids(settings))
    single = detector_alone(settings, load_frames(settings, refs))
    single["cpu"] = meter.stop()
    say(f"detector: {single['fps']} frames/s with {single['threads']} threads in one process")
    from ipsp.streaming.job import task_slots

    slots = task_slots(settings.spark_master, os.cpu_count() or 1)
    meter = CpuMeter(stack.pids(settings))
    parallel = detector_parallel(settings, refs, slots)
    parallel["cpu"] = meter.stop()
    say(f"detector: {parallel['fps']} frames/s in {slots} single-thread processes")

    full, report = full_speed(settings, uri, tag, args.max_offsets)
    pipeline_fps = fps_of(report.progress)
    steady_fps = fps_of(report.progress, skip_first=True)
    full_stats = latency_stats(report.latencies_ms)
    say(f"pipeline: {pipeline_fps:.2f} frames/s ({steady_fps:.2f} after the first batch)")

    # its own database: the same frames again with a new clock would be re-timed frames (the slow path)
    half_settings = load_settings(mongo_db=db + "_half")
    half = half_load(half_settings, uri, tag, pipeline_fps / 2, args.half_load_seconds)
    say(f"half load: p50 {half['latency_p50_ms']} ms, p95 {half['latency_p95_ms']} ms")

    result = {
        "frames": full["results"],
        "pipeline_fps": round(pipeline_fps, 3),
        "detector_fps": single["fps"],
        "efficiency": round(pipeline_fps / single["fps"], 3),
        "latency_p50_ms": half["latency_p50_ms"],
        "latency_p95_ms": half["latency_p95_ms"],
        "detector_fps_per_core": parallel["fps"],
        "efficiency_vs_per_core": round(pipeline_fps / parallel["fps"], 3),
        "pipeline_fps_after_first_batch": round(steady_fps, 3),
        "efficiency_after_first_batch": round(steady_fps / single["fps"], 3),
        "efficiency_vs_per_core_after_first_batch": round(steady_fps / parallel["fps"], 3),
        "batch_size": settings.batch_size,
        "model": single["model"],
        "detector": {"one_process_all_cores": single, "one_process_per_core": parallel},
        "full_speed": {
            **full,
            "latency_p50_ms": full_stats.p50_ms if full_stats else None,
            "latency_p95_ms": full_stats.p95_ms if full_stats else None,
            "note": "the feed was pre-loaded: latency here is mostly queueing time in Kafka",
            "breakdown": breakdown(report.progress),
        },
        "half_load": half,
        "machine": {
            "cpus": os.cpu_count(),
            "spark_master": settings.spark_master,
            "loadavg_before": [round(v, 2) for v in load_before],
            "loadavg_after": [round(v, 2) for v in os.getloadavg()],
        },
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    from pymongo import MongoClient

    client: Any = MongoClient(settings.mongo_uri.get_secret_value())
    for name in (settings.mongo_db, half_settings.mongo_db):
        client.drop_database(name)


if __name__ == "__main__":
    main()
