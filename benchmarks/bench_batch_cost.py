"""Fixed cost per micro-batch: the stream job at batch sizes 1, 10 and 100, time per batch split by step.

For each batch size the real stream job (``run_stream``, available-now, with
``max_offsets_per_trigger`` = the size) drains a fresh topic pre-loaded with
``size x (batches + 1)`` records of the synthetic feed into a fresh database
(one partition by default: Spark splits ``maxOffsetsPerTrigger`` over the
partitions rounding each share up, so with four a batch of 1 would hold 4);
the first batch of a run (cold Python state, shard fetches) is left out. The
job's own ``pipeline_progress`` documents give each batch's steps
(``durations_ms``: job, tasks and the task steps, windows); the run's report
adds the driver's writes after them (progress, serving documents). Per batch:

- ``batch``: from its start to the next batch's start (everything it pays);
- ``spark_job``: the ``mapInArrow`` job as the driver saw it (``job``), split into
  ``tasks`` (task time per slot: the task steps summed over tasks / slots) and
  ``scheduling`` (``job`` minus that: stages, task start, shuffle, Arrow collection);
- ``windows``: the driver's window fold (reads and writes by ``_id``);
- ``progress`` and ``serving``: the driver's progress and serving-document writes;
- ``between_batches``: the rest of the gap to the next batch (Spark's offset and
  commit logs, planning the next batch, Kafka offset look-ups);
- ``spark.*``: Spark's own step times of the batch's trigger (its query
  progress ``durationMs``: Kafka offsets, planning, the offset and commit logs),
  and ``spark.outside_handler``, the trigger's time outside ``foreachBatch``.

Each figure is fitted over the batches of a round as ``fixed + per_frame x
rows`` (least squares): ``fixed`` is what a batch pays regardless of its size.
``--runs`` rounds (default 3) alternate the order of the sizes; the results are
the medians of the rounds. CPU-seconds of the pipeline (driver, JVM, Python
workers) and the neighbours' share are measured over each run's batches after
the first (``CpuMeter`` of ``bench_pipeline``) and fitted the same way.

Writes ``benchmarks/results/batch_cost.json``; ``make bench-batch`` runs it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench_pipeline import EVENT_START, REPO, CpuMeter, machine, pin_cpus, prepare_dataset, produce

from ipsp.capacity import fit_line
from ipsp.config import Settings, load_settings
from ipsp.contracts import PipelineProgress

RESULTS = REPO / "benchmarks" / "results" / "batch_cost.json"
TASK_STEPS = ("read", "parse", "fetch", "check", "preprocess", "wait", "infer", "postprocess", "build", "write")
PARTS = (
    "batch", "spark_job", "scheduling", "tasks", "windows", "progress", "serving", "between_batches", "driver"
)  # fmt: skip


def say(text: str) -> None:
    print(f"[bench-batch {datetime.now(UTC):%H:%M:%S}] {text}", flush=True)


#: Spark's own steps of a micro-batch (its query progress ``durationMs``) besides ``addBatch`` (our handler)
SPARK_STEPS = ("latestOffset", "queryPlanning", "getBatch", "walCommit", "commitOffsets")


def per_batch(
    progress: list[PipelineProgress], after: list[dict[str, float]], slots: int, spark_ms: dict[int, dict[str, int]]
) -> list[dict[str, float]]:
    """Each batch (but the last: it has no next start) as ms per part and per task step (per slot)."""
    ordered = sorted(zip(progress, after, strict=True), key=lambda pa: pa[0].batch_id)
    out = []
    for (p, writes), (nxt, _) in itertools.pairwise(ordered):
        d = p.durations_ms
        batch = (nxt.started_at - p.started_at).total_seconds() * 1000
        tasks = d.get("tasks", 0.0) / slots
        row = {
            "rows": float(p.rows),
            "batch": batch,
            "spark_job": d["job"],
            "scheduling": d["job"] - tasks,
            "tasks": tasks,
            "windows": d["windows"],
            "progress": writes["progress"],
            "serving": writes["serving"],
            "between_batches": batch - d["total"] - writes["progress"] - writes["serving"],
        }
        row.update({f"task.{s}": d.get(s, 0.0) / slots for s in TASK_STEPS})
        spark = spark_ms.get(p.batch_id, {})
        row.update({f"spark.{s}": float(spark.get(s, 0)) for s in SPARK_STEPS})
        # the trigger's time outside our handler: offsets, planning, the offset and commit logs, the rest
        row["spark.outside_handler"] = float(spark.get("triggerExecution", 0) - spark.get("addBatch", 0))
        row["driver"] = d["windows"] + writes["progress"] + writes["serving"]
        row["windows_written"] = writes.get("windows_written", 0.0)
        out.append(row)
    return out


def one_size(settings: Settings, uri: str, tag: str, size: int, batches: int, partitions: int,
             slots: int) -> dict[str, Any]:  # fmt: skip
    """One run of the stream job at ``size`` records per batch; its batches and CPU."""
    from kafka.admin import KafkaAdminClient, NewTopic

    from ipsp.localstack import stack
    from ipsp.streaming.job import StreamOptions, StreamReport, run_stream

    topic = f"bench-batch-{tag}-{size}"
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    admin.close()
    count = size * (batches + 1)
    proc = produce(uri, topic, "--as-fast-as-possible", "--event-start", EVENT_START, "--limit", str(count))
    out, _ = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"producer failed:\n{out}")
    options = StreamOptions(
        topic=topic, mode="available-now", ui=False, max_offsets_per_trigger=size,
        checkpoint=str(Path(settings.home) / "bench" / "checkpoints" / topic),
    )  # fmt: skip
    pids = stack.pids(settings)
    meter: dict[str, Any] = {}

    def until(report: StreamReport) -> bool:
        # the CPU meter starts once the first (cold) batch is done
        if "meter" not in meter and report.batches >= 1:
            meter["meter"], meter["at"] = CpuMeter(pids), datetime.now(UTC)
        return False

    say(f"size {size}: {count} records in {topic} ({partitions} partition(s))")
    report = run_stream(settings, options, until=until, keep_latencies=True)
    cpu = meter["meter"].stop() if "meter" in meter else None
    rows = per_batch(report.progress, report.after_ms, slots, report.spark_ms)[1:]  # the first batch is cold
    # CPU per batch: batches that started after the meter, the one running then by the share of it metered
    counted = 0.0
    frames = 0.0
    if cpu is not None:
        for p in report.progress:
            span = (p.finished_at - p.started_at).total_seconds()
            metered = (p.finished_at - max(p.started_at, meter["at"])).total_seconds()
            share = min(1.0, max(0.0, metered) / max(span, 1e-3))
            counted += share
            frames += share * p.rows
    pipeline_cpu = cpu["cpu_s"]["pipeline (driver, JVM, Python workers)"] if cpu else 0.0
    return {
        "size": size,
        "topic": topic,
        "batches": len(rows),
        "rows_per_batch": round(statistics.fmean(r["rows"] for r in rows), 1) if rows else 0.0,
        "ms_per_batch": {
            k: round(statistics.fmean(r[k] for r in rows), 1) for k in rows[0] if k not in ("rows", "windows_written")
        }
        if rows
        else {},
        "cpu": cpu,
        "cpu_s_per_batch": round(pipeline_cpu / counted, 3) if counted else None,
        "cpu_rows_per_batch": round(frames / counted, 1) if counted else None,
        "rows": rows,
    }


def document_sizes(settings: Settings, topic: str) -> dict[str, Any]:
    """Mean BSON bytes of each collection's documents a run wrote, and of one Kafka message of its topic."""
    import bson
    from kafka import KafkaConsumer
    from pymongo import MongoClient

    client: Any = MongoClient(settings.mongo_uri.get_secret_value())
    db = client[settings.mongo_db]
    sizes: dict[str, Any] = {}
    for name in sorted(db.list_collection_names()):
        docs = list(db[name].find().limit(200))
        if docs:
            sizes[name] = {"documents": db[name].count_documents({}),
                           "mean_bytes": round(statistics.fmean(len(bson.encode(d)) for d in docs))}  # fmt: skip
    client.close()
    consumer = KafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=10_000)  # fmt: skip
    values = [len(m.value) for m, _ in zip(consumer, range(50), strict=False)]
    consumer.close()
    return {"mongo": sizes, "kafka_message_bytes": round(statistics.fmean(values)) if values else None}


def fit_round(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Fixed ms per batch and ms per frame of every part, over every batch of a round's runs."""
    rows = [r for run in runs for r in run["rows"]]
    xs = [r["rows"] for r in rows]
    fits = {}
    for key in rows[0]:
        if key not in ("rows", "windows_written"):
            fixed, slope = fit_line(xs, [r[key] for r in rows])
            fits[key] = {"fixed_ms": round(fixed, 1), "ms_per_frame": round(slope, 2)}
    cpu_points = [(r["cpu_rows_per_batch"], r["cpu_s_per_batch"]) for r in runs if r["cpu_s_per_batch"] is not None]
    cpu_fit = None
    if len(cpu_points) >= 2:
        fixed, slope = fit_line([x for x, _ in cpu_points], [y for _, y in cpu_points])
        cpu_fit = {"fixed_cpu_s_per_batch": round(fixed, 3), "cpu_s_per_frame": round(slope, 4)}
    # the driver's window fold and serving writes grow with the windows a batch touches, not with its frames
    fixed, per_window = fit_line([r["windows_written"] for r in rows], [r["driver"] for r in rows])
    driver = {"fixed_ms": round(fixed, 1), "ms_per_window": round(per_window, 2)}
    return {"fits": fits, "cpu": cpu_fit, "driver_by_windows": driver}


def main(argv: list[str] | None = None) -> None:
    """Run the rounds; write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,100", help="records per micro-batch (default 1,10,100)")
    parser.add_argument("--batches", type=int, default=4, help="measured batches per run, after the cold one")
    parser.add_argument("--runs", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--frames", type=int, default=600, help="frames in the synthetic feed (default 600)")
    parser.add_argument("--cameras", type=int, default=20, help="cameras in the synthetic feed (default 20)")
    # one partition: Spark splits maxOffsetsPerTrigger over partitions rounding up, so with more a batch of 1 is 4
    parser.add_argument("--partitions", type=int, default=1, help="Kafka partitions of the topics (default 1)")
    parser.add_argument("--cpus", default="all", help="CPU set every party is pinned to: all, or e.g. 0-1")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]

    from ipsp.localstack import stack
    from ipsp.streaming.master import task_slots

    if not stack.status(load_settings()).all_up:
        sys.exit("the local stack is not up: run `make up` (or `ipsp stack up`) first")
    cpus = pin_cpus(args.cpus)
    tag = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    db = f"bench_batch_{tag.replace('-', '_')}"
    settings = load_settings()
    partitions = args.partitions
    slots = task_slots(settings.spark_master, len(cpus))
    uri = prepare_dataset(settings, max(args.frames, max(sizes) * (args.batches + 1)), args.cameras)
    load_before = os.getloadavg()
    rounds = []
    for number in range(args.runs):
        order = sizes if number % 2 == 0 else sizes[::-1]
        say(f"round {number + 1} of {args.runs}: sizes {order} (load {os.getloadavg()[0]:.1f})")
        runs = []
        for size in order:
            run_settings = load_settings(mongo_db=f"{db}_{number}_{size}")
            runs.append(one_size(run_settings, uri, f"{tag}-{number}", size, args.batches, partitions, slots))
        runs.sort(key=lambda r: r["size"])
        if number == 0:
            sizes_doc = document_sizes(load_settings(mongo_db=f"{db}_0_{max(sizes)}"), runs[-1]["topic"])
        rounds.append({"runs": runs, **fit_round(runs)})
        say(f"round {number + 1}: fixed {rounds[-1]['fits']['batch']['fixed_ms']} ms per batch, "
            f"{rounds[-1]['fits']['batch']['ms_per_frame']} ms per frame")  # fmt: skip

    def median(pick: Any) -> float:
        values = [pick(r) for r in rounds]
        values = [v for v in values if v is not None]
        return round(statistics.median(values), 3) if values else float("nan")

    keys = list(rounds[0]["fits"])
    fixed = {k: median(lambda r, k=k: r["fits"][k]["fixed_ms"]) for k in keys}
    slope = {k: median(lambda r, k=k: r["fits"][k]["ms_per_frame"]) for k in keys}
    by_size = {}
    for index, size in enumerate(sorted(sizes)):
        ms = {k: round(statistics.median(r["runs"][index]["ms_per_batch"][k] for r in rounds), 1) for k in keys}
        by_size[str(size)] = {
            "rows_per_batch": statistics.median(r["runs"][index]["rows_per_batch"] for r in rounds),
            "seconds_per_batch": round(ms["batch"] / 1000, 3),
            "fixed_share": round(fixed["batch"] / ms["batch"], 3) if ms["batch"] else None,
            "ms_per_batch": ms,
            "cpu_s_per_batch": median(lambda r, i=index: r["runs"][i]["cpu_s_per_batch"]),
        }
    cpu_fixed = median(lambda r: (r["cpu"] or {}).get("fixed_cpu_s_per_batch"))
    cpu_frame = median(lambda r: (r["cpu"] or {}).get("cpu_s_per_frame"))
    shares = [run["cpu"]["neighbours_share"] for r in rounds for run in r["runs"] if run["cpu"]]
    result = {
        "fixed_s_per_batch": round(fixed["batch"] / 1000, 3),
        "s_per_frame": round(slope["batch"] / 1000, 4),
        "fixed_ms_by_part": {k: fixed[k] for k in PARTS},
        "fixed_ms_by_task_step": {k[5:]: fixed[k] for k in keys if k.startswith("task.")},
        "fixed_ms_by_spark_step": {k[6:]: fixed[k] for k in keys if k.startswith("spark.")},
        "ms_per_frame_by_part": {k: slope[k] for k in PARTS},
        "by_size": by_size,
        "cpu": {"fixed_cpu_s_per_batch": cpu_fixed, "cpu_s_per_frame": cpu_frame},
        "driver_by_windows": {
            k: median(lambda r, k=k: r["driver_by_windows"][k]) for k in ("fixed_ms", "ms_per_window")
        },
        "sizes": sizes_doc,
        "neighbours_share_max": max(shares) if shares else None,
        "definition": "per batch: start to the next batch's start; fitted as fixed + per_frame x rows (least "
        "squares over the measured batches of a round); medians of the rounds. scheduling = job - task time per "
        "slot; between_batches = the gap to the next batch less the progress and serving writes",
        "slots": slots,
        "partitions": partitions,
        "rounds": [{**r, "runs": [{k: v for k, v in run.items() if k != "rows"} for run in r["runs"]]} for r in rounds],
        "arguments": {k: str(v) for k, v in vars(args).items() if k != "out"},
        "machine": machine(cpus, settings, load_before),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=2))
    from pymongo import MongoClient

    client: Any = MongoClient(settings.mongo_uri.get_secret_value())
    for number in range(args.runs):
        for size in sizes:
            client.drop_database(f"{db}_{number}_{size}")


if __name__ == "__main__":
    main()
