"""Replay producer: unthrottled messages/s and rate accuracy against the local Kafka broker.

1. a synthetic manifest of 11,508 frames over 20 cameras (the user's dataset size;
   the frames themselves are not needed to replay), written to a temp folder;
2. unthrottled, three times (median reported; the machine is shared and noisy):
   ``--as-fast-as-possible --loop 5`` = 57,540 messages; the rate is
   acknowledged messages / (first send -> last acknowledgement), through the same
   code path as ``ipsp produce`` (manifest load, contract validation, pacing loop,
   bounded in-flight window, every future checked); start-up (manifest, templates,
   topic creation, connecting) is reported apart;
3. ``--rate 100`` and ``--rate 1000`` for 30 s each: the achieved rate from the
   broker's record timestamps (set at send, ms), (n - 1) / (last - first), and the
   producer's own send-side figure; error = |achieved - target| / target in percent.

Writes ``benchmarks/results/produce.json`` (``unthrottled_msg_s``,
``rate_error_pct_100``, ``rate_error_pct_1000`` and the details). Topics made here
are deleted afterwards. ``make bench-produce`` runs it (with the stack up).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ipsp.config import Settings, load_settings
from ipsp.producer.broker import ProducerTuning
from ipsp.producer.pacing import Pacing, resolve_pacing
from ipsp.producer.replay import ReplayOptions, ReplayReport, produce
from support.producer_synthetic import synthetic_frames, write_manifest

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "produce.json"
FRAMES = 11_508
CAMERAS = 20


def say(text: str) -> None:
    """A timestamped progress line."""
    print(f"[bench-produce {datetime.now(UTC):%H:%M:%S}] {text}", flush=True)


def write_feed(folder: Path) -> Path:
    """The synthetic manifest: 11,508 frames spread as evenly as possible over 20 cameras."""
    base, extra = divmod(FRAMES, CAMERAS)
    counts = [base + (1 if i < extra else 0) for i in range(CAMERAS)]
    return write_manifest(synthetic_frames(cameras=CAMERAS, frames_per_camera=counts), folder / "manifest.parquet")


def run(settings: Settings, manifest: Path, topic: str, pacing: Pacing, loops: int, limit: int | None,
        tuning: ProducerTuning, max_in_flight: int) -> tuple[ReplayReport, float, float]:  # fmt: skip
    """One replay in this process; returns (report, wall seconds overall, CPU seconds overall)."""
    options = ReplayOptions(
        manifest=str(manifest),
        topic=topic,
        pacing=pacing,
        partitions=settings.kafka_partitions,
        loops=loops,
        limit=limit,
        quiet=True,
        tuning=tuning,
        max_in_flight=max_in_flight,
    )
    wall, cpu = time.perf_counter(), time.process_time()
    report = produce(options, settings)
    return report, time.perf_counter() - wall, time.process_time() - cpu


def broker_rate(settings: Settings, topic: str) -> tuple[int, float]:
    """(records, rate) from the topic's record timestamps: (n - 1) / (last - first)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        stamps: list[int] = []
        while any(consumer.position(tp) < end[tp] for tp in parts):
            for tp, records in consumer.poll(timeout_ms=1000, max_records=10_000).items():
                stamps.extend(r.timestamp for r in records if r.offset < end[tp])
    finally:
        consumer.close()
    stamps.sort()
    span = (stamps[-1] - stamps[0]) / 1000 if len(stamps) > 1 else 0.0
    return len(stamps), (len(stamps) - 1) / span if span > 0 else 0.0


def delete_topics(settings: Settings, topics: list[str]) -> None:
    """Remove the benchmark's topics (best effort)."""
    from kafka import KafkaAdminClient

    try:
        admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        try:
            admin.delete_topics(topics)
        finally:
            admin.close()
    except Exception as exc:  # leftover topics are harmless; say so and go on
        say(f"could not delete topics {topics}: {exc}")


def rate_case(settings: Settings, manifest: Path, prefix: str, target: float, seconds: float,
              tuning: ProducerTuning, topics: list[str]) -> dict[str, Any]:  # fmt: skip
    """Replay at ``target`` msg/s for ``seconds``; measure the achieved rate two ways."""
    topic = f"{prefix}-rate{int(target)}"
    topics.append(topic)
    count = int(target * seconds) + 1  # n messages span (n - 1) / rate seconds
    say(f"--rate {target:g} for {seconds:g} s ({count} messages)")
    report, wall, cpu = run(settings, manifest, topic, resolve_pacing(rate=target), 0, count, tuning, 10_000)
    records, achieved = broker_rate(settings, topic)
    error = abs(achieved - target) / target * 100
    send_error = abs(report.send_rate_msg_s - target) / target * 100
    say(f"  broker timestamps: {achieved:.3f} msg/s over {records} records -> error {error:.3f}%")
    say(f"  producer send side: {report.send_rate_msg_s:.3f} msg/s -> error {send_error:.3f}%")
    return {
        "target_msg_s": target,
        "messages": report.sent,
        "failed": report.failed,
        "achieved_msg_s_broker": round(achieved, 4),
        "achieved_msg_s_send": round(report.send_rate_msg_s, 4),
        "error_pct_broker": round(error, 4),
        "error_pct_send": round(send_error, 4),
        "elapsed_s": round(report.elapsed_s, 3),
        "cpu_s": round(cpu, 3),
        "wall_s": round(wall, 3),
    }


def main() -> None:
    """Run the three measurements and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loops", type=int, default=5, help="passes for the unthrottled run (default 5)")
    parser.add_argument("--repeat", type=int, default=3, help="unthrottled runs; the median is reported")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each rate run (default 30)")
    parser.add_argument("--linger-ms", type=int, default=ProducerTuning.linger_ms)
    parser.add_argument("--batch-size", type=int, default=ProducerTuning.batch_size)
    parser.add_argument("--compression", default=None)
    parser.add_argument("--max-in-flight", type=int, default=10_000)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    from kafka import codec
    from kafka.version import __version__ as kafka_python_version

    settings = load_settings()
    tuning = ProducerTuning(linger_ms=args.linger_ms, batch_size=args.batch_size, compression=args.compression)
    prefix = f"ipsp-bench-produce-{datetime.now(UTC):%Y%m%dt%H%M%S}"
    topics: list[str] = []
    load_before = os.getloadavg()
    try:
        with tempfile.TemporaryDirectory(prefix="ipsp-bench-produce-") as tmp:
            manifest = write_feed(Path(tmp))
            runs = []
            for attempt in range(1, args.repeat + 1):
                topic = f"{prefix}-unthrottled{attempt}"
                topics.append(topic)
                say(f"unthrottled #{attempt}: {FRAMES} frames x {args.loops} loops, {CAMERAS} cameras")
                report, wall, _ = run(
                    settings, manifest, topic, Pacing("none"), args.loops, None, tuning, args.max_in_flight
                )
                if report.error or report.sent != FRAMES * args.loops:
                    raise SystemExit(f"unthrottled run incomplete: {report.summary()}")
                cpu_us = report.cpu_s / report.sent * 1e6
                say(f"  {report.rate_msg_s:,.0f} msg/s ({report.sent} in {report.elapsed_s:.2f} s; "
                    f"{wall:.2f} s with start-up; {cpu_us:.0f} us CPU per message)")  # fmt: skip
                runs.append(
                    {
                        "messages": report.sent,
                        "msg_s": round(report.rate_msg_s, 1),
                        "send_elapsed_s": round(report.elapsed_s, 3),
                        "wall_with_startup_s": round(wall, 3),
                        "startup_s": round(wall - report.elapsed_s, 3),
                        "send_cpu_s": round(report.cpu_s, 3),
                        "cpu_us_per_msg": round(cpu_us, 1),
                    }
                )
            unthrottled = {"median_msg_s": statistics.median(r["msg_s"] for r in runs), "runs": runs}
            rate_100 = rate_case(settings, manifest, prefix, 100.0, args.seconds, tuning, topics)
            rate_1000 = rate_case(settings, manifest, prefix, 1000.0, args.seconds, tuning, topics)
    finally:
        delete_topics(settings, topics)
    results = {
        "unthrottled_msg_s": unthrottled["median_msg_s"],
        "rate_error_pct_100": rate_100["error_pct_broker"],
        "rate_error_pct_1000": rate_1000["error_pct_broker"],
        "unthrottled": unthrottled,
        "rate_100": rate_100,
        "rate_1000": rate_1000,
        "target": {"unthrottled_msg_s": 20_000, "rate_error_pct": 1.0},
        "producer": {
            "kafka_python": kafka_python_version,
            "crc32c_native": _crc32c_native(),
            "linger_ms": tuning.linger_ms,
            "batch_size": tuning.batch_size,
            "compression": tuning.compression or "none",
            "max_in_flight": args.max_in_flight,
            "acks": "all",
            "idempotence": True,
            "gzip_available": codec.has_gzip(),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_1m_before": round(load_before[0], 2),
            "load_avg_1m_after": round(os.getloadavg()[0], 2),
        },
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    say(f"wrote {args.output}")
    print(json.dumps({k: results[k] for k in ("unthrottled_msg_s", "rate_error_pct_100", "rate_error_pct_1000")}))


def _crc32c_native() -> bool:
    # kafka-python computes record-batch CRC32C in pure Python unless the crc32c package is present
    try:
        import crc32c  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
