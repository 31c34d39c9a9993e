"""Soak: the stream job for a long run at half load; memory, Kafka lag and latency sampled every minute.

The synthetic feed is replayed without end (``ipsp produce --loop 0``: every
loop is new events) at ``--rate`` messages per second (default: half the
``pipeline_fps`` of ``benchmarks/results/pipeline.json``) into a fresh topic,
while ``ipsp stream`` runs continuously into a fresh database. Every
``--sample-seconds`` the script records:

- resident memory (RSS) of the driver (the ``ipsp stream`` process), its JVM
  and its Python workers;
- Kafka lag: records in the topic minus records the job has accounted for in
  ``pipeline_progress``;
- latency p50/p95 of the batches finished since the previous sample;
- the load average and the CPU share other processes took.

Goals (``verdict``): memory flat, i.e. the mean total RSS of the last 10
minutes within 10% of the first 10 minutes after ``--warmup-minutes``; lag
bounded, i.e. the largest lag of the last 10 minutes no larger than the largest
of the first 10 plus 30 s of input. Writes ``benchmarks/results/soak.json``;
``make bench-soak`` runs it (30 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench_pipeline import REPO, CpuMeter, prepare_dataset, produce, say

from ipsp.config import Settings, load_settings

RESULTS = REPO / "benchmarks" / "results" / "soak.json"


def rss_mb(pid: int) -> float:
    """Resident memory of one process in MiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def descendants(root: int) -> dict[int, str]:
    """pid -> command line of every descendant of ``root``."""
    parents: dict[int, int] = {}
    cmds: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmds[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = cmds.get(pid, "")
                frontier.append(pid)
    return found


def memory(driver: int) -> dict[str, float]:
    """RSS (MiB) of the driver, its JVM and its Python workers."""
    tree = descendants(driver)
    jvm = sum(rss_mb(p) for p, cmd in tree.items() if "java" in cmd.split(" ")[0])
    workers = sum(rss_mb(p) for p, cmd in tree.items() if "pyspark" in cmd)
    return {"driver_mb": round(rss_mb(driver), 1), "jvm_mb": round(jvm, 1), "workers_mb": round(workers, 1)}


def topic_size(settings: Settings, topic: str) -> int:
    """Records in the topic (sum of end offsets)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        return int(sum(consumer.end_offsets(parts).values()))
    finally:
        consumer.close()


def sample(settings: Settings, db: Any, topic: str, driver: int, since: datetime, meter: CpuMeter) -> dict[str, Any]:
    """One sample: memory, lag, latency of the batches since ``since``, load."""
    progress = list(db.pipeline_progress.find({}, {"rows": 1, "latency": 1, "finished_at": 1}))
    done = sum(p["rows"] for p in progress)
    recent = [p for p in progress if p["finished_at"] >= since and p.get("latency")]
    p95s = sorted(p["latency"]["p95_ms"] for p in recent)
    p50s = sorted(p["latency"]["p50_ms"] for p in recent)
    mem = memory(driver)
    cpu = meter.stop()
    return {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        **mem,
        "total_mb": round(sum(mem.values()), 1),
        "produced": topic_size(settings, topic),
        "processed": done,
        "lag": topic_size(settings, topic) - done,
        "batches": len(recent),
        "latency_p50_ms": round(statistics.median(p50s), 1) if p50s else None,
        "latency_p95_ms": round(p95s[int(0.95 * (len(p95s) - 1))], 1) if p95s else None,
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "neighbours_share": cpu["neighbours_share"],
    }


def verdict(samples: list[dict[str, Any]], warmup: int, rate: float) -> dict[str, Any]:
    """Memory flat and lag bounded, from the per-minute samples (indexes are minutes)."""
    steady = samples[warmup:]
    if len(steady) < 20:
        return {"enough_samples": False, "note": f"{len(steady)} samples after warm-up: 20 needed"}
    first, last = steady[:10], steady[-10:]
    first_mb = statistics.fmean(s["total_mb"] for s in first)
    last_mb = statistics.fmean(s["total_mb"] for s in last)
    lag_first = max(s["lag"] for s in first)
    lag_last = max(s["lag"] for s in last)
    return {
        "enough_samples": True,
        "memory_first10_mb": round(first_mb, 1),
        "memory_last10_mb": round(last_mb, 1),
        "memory_change": round(last_mb / first_mb - 1, 3),
        "memory_flat": abs(last_mb / first_mb - 1) <= 0.10,
        "lag_first10_max": lag_first,
        "lag_last10_max": lag_last,
        "lag_bounded": lag_last <= lag_first + 30 * rate,
    }


def main(argv: list[str] | None = None) -> None:
    """Run the soak and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the soak (default 30)")
    parser.add_argument("--rate", type=float, default=0.0, help="messages/s (default: half of pipeline.json)")
    parser.add_argument("--sample-seconds", type=float, default=60.0, help="time between samples (default 60)")
    parser.add_argument("--warmup-minutes", type=int, default=3, help="samples left out of the verdict")
    parser.add_argument("--frames", type=int, default=1200, help="frames in the looped feed (default 1200)")
    parser.add_argument("--cameras", type=int, default=20, help="cameras in the feed (default 20)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file")
    args = parser.parse_args(argv)

    from kafka.admin import KafkaAdminClient, NewTopic
    from pymongo import MongoClient

    from ipsp.localstack import stack

    settings = load_settings()
    if not stack.status(settings).all_up:
        sys.exit("the local stack is not up: run `make up` (or `ipsp stack up`) first")
    rate = args.rate
    if rate <= 0:
        pipeline = json.loads((REPO / "benchmarks" / "results" / "pipeline.json").read_text())
        rate = float(pipeline["pipeline_fps"]) / 2
    tag = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    topic, db_name = f"soak-{tag}", f"soak_{tag.replace('-', '_')}"
    uri = prepare_dataset(settings, args.frames, args.cameras)
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=settings.kafka_partitions, replication_factor=1)])
    admin.close()

    env = {**os.environ, "IPSP_MONGO_DB": db_name}
    checkpoint = Path(settings.home) / "bench" / "checkpoints" / topic
    log = Path(settings.home) / "bench" / f"{topic}.log"
    say(f"soak: {args.minutes:g} min at {rate:.2f} msg/s into {topic}; stream log {log}")
    with log.open("w") as out:
        stream = subprocess.Popen(
            [sys.executable, "-m", "ipsp.cli", "stream", "--topic", topic, "--checkpoint", str(checkpoint),
             "--no-ui", "--trigger-seconds", "0.5"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    producer = produce(uri, topic, "--rate", f"{rate:.3f}", "--loop", "0", "--event-start", "2026-01-01T08:00:00Z")
    db: Any = MongoClient(settings.mongo_uri.get_secret_value(), tz_aware=True)[db_name]
    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    since = datetime.now(UTC)
    meter = CpuMeter(stack.pids(settings))
    try:
        while time.monotonic() - started < args.minutes * 60:
            time.sleep(args.sample_seconds)
            if stream.poll() is not None:
                sys.exit(f"the stream exited ({stream.returncode}); see {log}")
            now = datetime.now(UTC)
            samples.append(sample(settings, db, topic, stream.pid, since - timedelta(seconds=1), meter))
            since, meter = now, CpuMeter(stack.pids(settings))
            say(json.dumps(samples[-1]))
    finally:
        producer.terminate()
        producer.wait(timeout=60)
        if stream.poll() is None:
            os.killpg(stream.pid, signal.SIGTERM)
            try:
                stream.wait(timeout=180)
            except subprocess.TimeoutExpired:
                os.killpg(stream.pid, signal.SIGKILL)
    result = {
        "minutes": args.minutes,
        "rate_msg_s": round(rate, 3),
        "samples": samples,
        "verdict": verdict(samples, args.warmup_minutes, rate),
        "machine": {"cpus": os.cpu_count(), "spark_master": settings.spark_master},
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["verdict"], indent=2))
    MongoClient(settings.mongo_uri.get_secret_value()).drop_database(db_name)


if __name__ == "__main__":
    main()
