"""What an executor joining or leaving a running stream costs the shard caches.

Spark's Kafka source gives each topic-partition a preferred executor: its hash
modulo the number of executors, over the executors sorted by host. A camera (the
Kafka key) therefore stays on one executor while the executors stay the same,
and its shards are fetched into that executor's cache once. When one joins
(dynamic allocation scaling up) or leaves (scaling down, a lost executor), the
modulo changes for most partitions, not only for the partitions the newcomer
takes or the leaver gave up. This script measures what that costs, on a Spark
standalone cluster on loopback (``ipsp stack spark up``: one worker per loopback
address, as hosts of a real cluster, each with a shard cache of its own):

1. a fresh topic of ``--partitions`` partitions is pre-loaded with the synthetic
   feed (``--frames`` over ``--cameras`` cameras); the stream drains it
   (available-now, ``--max-offsets`` records per batch) on ``--workers`` 1-core
   workers with cold caches;
2. after ``--phase-batches`` batches a worker joins (its executor takes tasks
   from the first batch planned after it registered);
3. once the new executor ran as many batches, the first worker leaves (stopped,
   its executor killed), as an executor that is lost or given back.

Every fetch of a shard that another cache already holds is a camera that moved.
Per phase: shards fetched for the first time, shards fetched again (a move),
split into moves to the new executor (unavoidable: it takes its share) and
moves between executors that were there before (churn from the modulo), the
cameras behind them, bytes fetched, and batch times. Counts, not speed: the run
is one pass, and its batch times are only a guide.

Writes ``benchmarks/results/rescale.json`` (and prints it). Needs the local
stack (``make up``); ``make bench-rescale`` runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench_pipeline import EVENT_START, REPO, pin_cpus, prepare_dataset, produce, stop_spark

from ipsp.config import Settings, load_settings
from ipsp.contracts import PipelineProgress
from ipsp.streaming.locality import CacheUse, camera_of, public_name

RESULTS = REPO / "benchmarks" / "results" / "rescale.json"


def say(text: str) -> None:
    print(f"[bench-rescale {datetime.now(UTC):%H:%M:%S}] {text}", flush=True)


#: why a cache fetched a shard another cache already held (a camera that moved)
MOVES = ("to the new executor", "from the executor that left", "between executors that stayed")


@dataclass
class Phase:
    """What the shard caches did over a run of batches with the same executors."""

    name: str
    batches: int = 0
    rows: int = 0
    caches: dict[str, int] = field(default_factory=dict)  # cache -> tasks it ran
    first_fetches: int = 0  # shards no cache held yet
    moves: dict[str, list[str]] = field(default_factory=lambda: {kind: [] for kind in MOVES})
    fetched_bytes: int = 0
    batch_ms: list[float] = field(default_factory=list)

    def as_json(self, home: Path) -> dict[str, Any]:
        """The phase's figures as plain JSON (caches named without the machine's paths)."""
        return {
            "batches": self.batches,
            "rows": self.rows,
            "tasks_per_cache": {public_name(cache, home): tasks for cache, tasks in sorted(self.caches.items())},
            "shards_fetched_first_time": self.first_fetches,
            "shards_fetched_again": {kind: len(uris) for kind, uris in self.moves.items()},
            "cameras_moved": {kind: len({camera_of(uri) for uri in uris}) for kind, uris in self.moves.items()},
            "fetched_mb": round(self.fetched_bytes / 1e6, 1),
            "batch_ms_median": round(statistics.median(self.batch_ms), 1) if self.batch_ms else None,
            "first_batch_ms": round(self.batch_ms[0], 1) if self.batch_ms else None,
        }


def phases_of(
    batches: Sequence[dict[str, CacheUse]],
    progress: Sequence[PipelineProgress],
    starts: Sequence[tuple[str, int]],
    new: str,
    left: str,
) -> list[Phase]:
    """Fold the per-batch cache figures into the three phases; ``starts`` = (name, index of its first batch).

    ``new`` and ``left`` are the caches of the executor that joined (at the
    second phase) and of the one that left (at the third).
    """
    phases = [Phase(name) for name, _ in starts]
    bounds = [index for _, index in starts[1:]] + [len(batches)]
    held: dict[str, set[str]] = {}  # shard -> caches that fetched it
    number = 0
    for index, (uses, prog) in enumerate(zip(batches, progress, strict=True)):
        while index >= bounds[number]:
            number += 1
        phase = phases[number]
        phase.batches += 1
        phase.rows += prog.rows
        phase.batch_ms.append(float(prog.durations_ms.get("total", 0.0)))
        for cache, use in uses.items():
            phase.caches[cache] = phase.caches.get(cache, 0) + use.tasks
            phase.fetched_bytes += use.fetched_bytes
            for uri in use.fetched:
                others = held.setdefault(uri, set()) - {cache}
                held[uri].add(cache)
                if not others:
                    phase.first_fetches += 1
                elif number >= 2 and others <= {left}:
                    phase.moves[MOVES[1]].append(uri)  # the leaver's camera: it had to go somewhere
                elif number == 1 and cache == new:
                    phase.moves[MOVES[0]].append(uri)  # the newcomer's share
                else:
                    phase.moves[MOVES[2]].append(uri)  # left an executor that is still there
    return phases


class Rescale:
    """Adds a worker after ``phase_batches`` batches, stops the first once the new one ran as many.

    Called between polls of the query (the ``until`` of ``run_stream``); the
    worker starts on a thread of its own, so batches go on meanwhile.
    """

    def __init__(self, settings: Settings, workers: int, phase_batches: int, new_cache: Path) -> None:
        self.settings = settings
        self.workers = workers
        self.phase_batches = phase_batches
        self.new_cache = new_cache
        self.left_at: datetime | None = None
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def __call__(self, report: Any) -> bool:
        if self.error is not None:
            raise self.error
        if self.thread is None and report.batches >= self.phase_batches:
            self.thread = threading.Thread(target=self._join, daemon=True)
            self.thread.start()
        with_new = sum(1 for uses in list(report.batch_caches) if any(is_cache_of(c, self.new_cache) for c in uses))
        if self.left_at is None and with_new >= self.phase_batches:
            self._leave()
        return False  # available-now ends the query when the topic is drained

    def _join(self) -> None:
        from ipsp.localstack import spark as cluster

        try:
            say(f"a worker joins ({self.workers} -> {self.workers + 1})")
            cluster.up(self.settings, cluster.ClusterSpec(workers=self.workers + 1, cores=1))
        except BaseException as exc:  # surfaced on the next poll
            self.error = exc

    def _leave(self) -> None:
        from ipsp.localstack import procs
        from ipsp.localstack import spark as cluster
        from ipsp.localstack.layout import StackLayout

        layout = StackLayout.from_settings(self.settings)
        say("the first worker leaves")
        # the worker first, so the master cannot start the application a new executor on it; an
        # executor it launched while shutting down outlives it, so every executor on its host goes too
        procs.stop(layout.pid_file(cluster.worker_name(0)))
        host = f"--hostname {cluster.worker_host(0)} "
        for pid in executors_on(host):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.left_at = datetime.now(UTC)


def executors_on(host_flag: str) -> list[int]:
    """Pids of the executor processes whose command line has ``host_flag``."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if entry.name.isdigit() and "CoarseGrainedExecutorBackend" in cmd and host_flag in cmd:
            pids.append(int(entry.name))
    return pids


def first_batch_with(batches: Sequence[dict[str, CacheUse]], cache: str) -> int:
    """Index of the first batch in which ``cache`` ran a task (the batch count when none did)."""
    return next((i for i, uses in enumerate(batches) if cache in uses), len(batches))


def first_batch_running_at(progress: Sequence[PipelineProgress], moment: datetime | None) -> int:
    """Index of the first batch still running at ``moment`` or later (the batch count when none was)."""
    if moment is None:
        return len(progress)
    return next((i for i, p in enumerate(progress) if p.finished_at > moment), len(progress))


def is_cache_of(cache: str, folder: Path) -> bool:
    """Whether a reported cache name (``<host>:<folder>``) is the cache in ``folder``."""
    return cache.endswith(f":{folder}")


def cache_of(batches: Sequence[dict[str, CacheUse]], folder: Path) -> str:
    """The name a worker's cache reports under, or "" when it ran no task."""
    names = {cache for uses in batches for cache in uses if is_cache_of(cache, folder)}
    return names.pop() if names else ""


def run(settings: Settings, uri: str, tag: str, args: argparse.Namespace) -> dict[str, Any]:
    """Pre-load the topic, run the stream on the cluster with the join and the leave; the phases' figures."""
    from kafka.admin import KafkaAdminClient, NewTopic

    from ipsp.localstack import spark as cluster
    from ipsp.localstack.layout import StackLayout
    from ipsp.streaming.job import StreamOptions, run_stream

    topic = f"bench-rescale-{tag}"
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=args.partitions, replication_factor=1)])
    admin.close()
    say(f"pre-loading {topic} ({args.partitions} partitions)")
    proc = produce(uri, topic, "--as-fast-as-possible", "--event-start", EVENT_START)
    out, _ = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"producer failed:\n{out}")

    layout = StackLayout.from_settings(settings)
    status = cluster.up(settings, cluster.ClusterSpec(workers=args.workers, cores=1))
    for index in range(args.workers + 1):  # cold caches, the joining worker's too
        shutil.rmtree(layout.spark_shard_cache(cluster.worker_name(index)), ignore_errors=True)
    # no spark.cores.max: the application takes the cores of a worker that joins, as dynamic allocation would
    on = settings.model_copy(update={"spark_master": status.master_url, "spark_cores_max": 0})
    options = StreamOptions(
        topic=topic, mode="available-now", ui=False, max_offsets_per_trigger=args.max_offsets,
        checkpoint=str(Path(settings.home) / "bench" / "checkpoints" / topic),
    )  # fmt: skip
    new_cache = layout.spark_shard_cache(cluster.worker_name(args.workers))
    rescale = Rescale(settings, args.workers, args.phase_batches, new_cache)
    try:
        report = run_stream(on, options, until=rescale, keep_latencies=True)
    finally:
        stop_spark()  # before the workers go: the master would fail a running application
        cluster.down(settings)
    if rescale.error is not None:
        raise rescale.error
    batches = report.batch_caches
    new = cache_of(batches, new_cache)
    left = cache_of(batches, layout.spark_shard_cache(cluster.worker_name(0)))
    join = first_batch_with(batches, new)
    leave = max(join, first_batch_running_at(report.progress, rescale.left_at))
    starts = [(f"{args.workers} executors", 0), ("a worker joined", join), ("the first worker left", leave)]
    phases = phases_of(batches, report.progress, starts, new, left)
    if not phases[-1].batches:
        sys.exit(f"the feed ran out before the first worker left: give more --frames (now {args.frames})")
    return {
        "topic": topic,
        "rows": report.rows,
        "results": report.results,
        "dead_letters": report.dead_letters,
        "batches": report.batches,
        "joined_before_batch": join,
        "left_before_batch": leave,
        "phases": {phase.name: phase.as_json(Path(settings.home)) for phase in phases},
    }


def main(argv: list[str] | None = None) -> None:
    """Run the stream through a join and a leave; write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=900, help="frames in the feed (default 900)")
    parser.add_argument("--cameras", type=int, default=20, help="cameras in the synthetic feed (default 20)")
    parser.add_argument("--partitions", type=int, default=6, help="partitions of the topic (default 6)")
    parser.add_argument("--workers", type=int, default=2, help="1-core workers at the start (default 2)")
    parser.add_argument("--max-offsets", type=int, default=30, help="records per micro-batch (default 30)")
    parser.add_argument("--phase-batches", type=int, default=5, help="batches before the join and the leave (5)")
    parser.add_argument("--cpus", default="all", help="CPU set the run is pinned to: all, or e.g. 0-1")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file")
    args = parser.parse_args(argv)
    if args.workers < 2:
        parser.error("--workers: at least 2 (one of them leaves)")

    from ipsp.localstack import stack

    if not stack.status(load_settings()).all_up:
        sys.exit("the local stack is not up: run `make up` (or `ipsp stack up`) first")
    cpus = pin_cpus(args.cpus)
    tag = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    settings = load_settings(mongo_db=f"bench_rescale_{tag.replace('-', '_')}")
    uri = prepare_dataset(settings, args.frames, args.cameras)
    result = {
        **run(settings, uri, tag, args),
        "definition": "a shard fetched by one cache while another already holds it is a camera that moved: "
        "to the new executor (it takes its share) or from the one that left (its share goes elsewhere), "
        "both unavoidable; between executors that stayed: the partition-to-executor modulo changed for a "
        "partition neither of them gained or lost",
        "arguments": {k: str(v) for k, v in vars(args).items() if k != "out"},  # no machine path in results
        "machine": {"cpus": os.cpu_count(), "pinned_cpus": cpus},
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    from pymongo import MongoClient

    client: Any = MongoClient(settings.mongo_uri.get_secret_value())
    client.drop_database(settings.mongo_db)


if __name__ == "__main__":
    main()
