"""The stream job past one process: a Spark standalone master and two 1-core workers of the local stack.

The cluster comes up through the project's own code (``ipsp stack spark up``'s
module) and goes down at the end. ``ipsp stream`` runs as a real subprocess with
``IPSP_SPARK_MASTER`` pointing at it, over the synthetic feed with bad records
mixed in (:mod:`support.streamfeed`), and the same invariants hold as on one
process: every frame exactly once with the detector's own counts, every bad
record a dead letter, windows and progress adding up. On top: the job counted
both executors' slots, loaded the model in both, and both workers' executors ran
tasks of the micro-batches (their logs under the stack's worker folders say so).

Locality: each worker has a shard cache of its own (as each machine of a real
cluster has), and the job keeps each Kafka partition, hence each camera, on one
executor; so each camera's shards are fetched by exactly one executor, once, and
each executor fetches only its own cameras' shards. The job's per-cache summary
says so and the workers' cache folders hold exactly that.

A lost executor (its JVM killed mid-stream) costs the shards of the cameras
that moved, never a cache refill: every cache fetches each shard at most once,
since a shard cache lives on its worker's disk and outlives the executor.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ipsp.config import Settings
from ipsp.localstack import procs, spark
from ipsp.localstack.layout import StackLayout
from ipsp.storage.shards import ShardReader
from support.running import finish, process_tree, rows_done, running_stream, wait_for
from support.streamfeed import (
    Dataset,
    Feed,
    check_all,
    database,
    ipsp,
    stream_args,
)

pytestmark = pytest.mark.slow

WORKERS = 2
TASK_LINE = re.compile(r"Running task \S+ in stage (\d+)\.\d+")
CACHE_LINE = re.compile(
    r"shard cache (?P<cache>\S+): (?P<tasks>\d+) task\(s\), (?P<fetched>\d+) shard\(s\) fetched "
    r"\((?P<bytes>\d+) bytes\), (?P<hits>\d+) hit\(s\), holds (?P<holds>\d+) bytes; cameras fetched: (?P<cams>.*)"
)


@pytest.fixture(scope="module")
def cluster(stack_settings: Settings) -> Iterator[spark.ClusterStatus]:
    """Two 1-core workers, as ``ipsp stack spark up --workers 2 --cores 1`` starts them; stopped afterwards."""
    status = spark.up(stack_settings, spark.ClusterSpec(workers=WORKERS, cores=1))
    try:
        assert (status.up, status.workers, status.cores) == (True, WORKERS, WORKERS)
        yield status
    finally:
        spark.down(stack_settings)


def master_json(status: spark.ClusterStatus) -> dict[str, Any]:
    with urllib.request.urlopen(f"{status.ui_url}/json/", timeout=10) as resp:
        return dict(json.loads(resp.read()))


def stages_run(work_dir: Path, app_id: str) -> list[int]:
    """Stage ids of the tasks the worker's executors ran for ``app_id`` (from their logs)."""
    logs = sorted((work_dir / app_id).glob("*/stderr"))
    return [int(m.group(1)) for log in logs for m in TASK_LINE.finditer(log.read_text(errors="replace"))]


def test_stream_on_two_workers_processes_every_record_once(
    stack_settings: Settings, cluster: spark.ClusterStatus, dataset: Dataset, feed: Feed
) -> None:
    env = {**feed.env, "IPSP_SPARK_MASTER": cluster.master_url, "IPSP_SPARK_CORES_MAX": str(WORKERS)}
    out = ipsp(*stream_args(feed, "--available-now", "--max-offsets-per-trigger", "48"), env=env)
    assert f"{feed.total} record(s)" in out.stdout, out.stdout
    # the job waited for both executors: two task slots, the model loaded in one Python worker on each
    assert f"{WORKERS} slot(s)" in out.stderr, out.stderr[-3000:]
    assert f"{WORKERS} Python worker(s) ready" in out.stderr, out.stderr[-3000:]

    check_all(stack_settings, feed, dataset)

    # the application ran on the cluster, and executors on both workers ran tasks past the warm-up
    (app,) = [a for a in master_json(cluster)["completedapps"] if a["name"] == f"ipsp-traffic-stream-{feed.topic}"]
    layout = StackLayout.from_settings(stack_settings)
    per_worker = {name: stages_run(layout.spark_work_dir(name), app["id"]) for name in spark.running_workers(layout)}
    assert len(per_worker) == WORKERS
    warm_up = min(stage for stages in per_worker.values() for stage in stages)
    for name, stages in per_worker.items():
        assert [s for s in stages if s > warm_up], f"{name} ran no task of a micro-batch: {stages}"

    # locality: one shard cache per worker, each camera's shards fetched by exactly one of them
    caches = {m["cache"].split(":", 1)[1]: m for m in CACHE_LINE.finditer(out.stderr)}
    worker_caches = {str(layout.spark_shard_cache(name)): name for name in per_worker}
    assert set(caches) == set(worker_caches), out.stderr[-3000:]
    cameras = {name: set(caches[folder]["cams"].split()) for folder, name in worker_caches.items()}
    shards = {row.shard_uri for row in dataset.rows} | {dataset.bad_shard_uri}
    owners = {uri: [name for folder, name in worker_caches.items() if cached(folder, uri)] for uri in shards}
    print(f"shard caches: {[caches[f].group(0) for f in sorted(caches)]}; owners {owners}")
    assert all(len(names) == 1 for names in owners.values()), f"a shard fetched by more than one executor: {owners}"
    a, b = cameras.values()
    assert a and b and not a & b, f"a camera's shards fetched by both executors: {cameras}"
    assert a | b == {uri.rstrip("/").split("/")[-2] for uri in shards}
    for folder, name in worker_caches.items():
        # each shard fetched once (no refill), and only the shards of the executor's own cameras
        mine = sorted(uri for uri, names in owners.items() if names == [name])
        assert int(caches[folder]["fetched"]) == len(mine), (name, caches[folder].group(0), mine)


def test_a_lost_executor_costs_the_cameras_that_moved_not_a_cache_refill(
    stack_settings: Settings, cluster: spark.ClusterStatus, dataset: Dataset, feed: Feed
) -> None:
    env = {**feed.env, "IPSP_SPARK_MASTER": cluster.master_url, "IPSP_SPARK_CORES_MAX": str(WORKERS)}
    db = database(stack_settings, feed.db)
    layout = StackLayout.from_settings(stack_settings)
    shards = {row.shard_uri for row in dataset.rows} | {dataset.bad_shard_uri}
    log = Path(stack_settings.home) / "test-work" / f"{feed.topic}-executor.log"
    for name in spark.running_workers(layout):  # cold caches, as a fresh cluster starts
        shutil.rmtree(layout.spark_shard_cache(name), ignore_errors=True)
    with running_stream(feed, log, "--trigger-seconds", "1", env=env) as proc:
        wait_for("a first batch", lambda: rows_done(db) > 0, proc, log, 600)

        def in_flight() -> bool:
            done = rows_done(db)
            return db.analysis_results.count_documents({}) > done and done < feed.total // 2

        wait_for("a batch in flight in the first half of the feed", in_flight, proc, log, 300, poll_s=0.05)
        worker = procs.running(layout.pid_file(spark.worker_name(1)))
        assert worker is not None
        executors = [pid for pid, (_, cmd) in process_tree(worker.pid).items() if "CoarseGrainedExecutorBackend" in cmd]
        assert len(executors) == 1, executors
        lost_cache = str(layout.spark_shard_cache(spark.worker_name(1)))
        before = {uri for uri in shards if cached(lost_cache, uri)}  # the lost executor's cameras' shards
        os.kill(executors[0], signal.SIGKILL)
        assert rows_done(db) < feed.total, "the kill did not land mid-stream"
        finish(feed, db, proc, log)
    text = log.read_text()
    assert "Lost executor" in text or "ExecutorLostFailure" in text, text[-4000:]
    check_all(stack_settings, feed, dataset)

    caches = {m["cache"].split(":", 1)[1]: m for m in CACHE_LINE.finditer(text)}
    held = {folder: {uri for uri in shards if cached(folder, uri)} for folder in caches}
    twice = set.intersection(*held.values())
    print(f"after a lost executor: {[m.group(0) for m in caches.values()]}; lost executor's shards {sorted(before)}; "
          f"held by both caches {sorted(twice)}")  # fmt: skip
    assert before and set().union(*held.values()) == shards
    # what the lost executor read may move (its tasks retried elsewhere); the other executor's cameras stay put
    assert twice <= before, f"shards of cameras that never lost their executor were fetched again: {twice - before}"
    for folder, m in caches.items():
        # no refill: a cache fetched each shard it holds once at most (a killed task's fetch goes unreported)
        assert int(m["fetched"]) <= len(held[folder]), m.group(0)


def cached(folder: str, shard_uri: str) -> bool:
    """Whether the worker's shard cache holds the shard."""
    return ShardReader(Path(folder), 1 << 30).local_path(shard_uri).exists()
