"""The stream job past one process: a Spark standalone master and two 1-core workers of the local stack.

The cluster comes up through the project's own code (``ipsp stack spark up``'s
module) and goes down at the end. ``ipsp stream`` runs as a real subprocess with
``IPSP_SPARK_MASTER`` pointing at it, over the synthetic feed with bad records
mixed in (:mod:`support.streamfeed`), and the same invariants hold as on one
process: every frame exactly once with the detector's own counts, every bad
record a dead letter, windows and progress adding up. On top: the job counted
both executors' slots, loaded the model in both, and both workers' executors ran
tasks of the micro-batches (their logs under the stack's worker folders say so).
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ipsp.config import Settings
from ipsp.localstack import spark
from ipsp.localstack.layout import StackLayout
from support.streamfeed import (
    Dataset,
    Feed,
    check_all,
    ipsp,
    stream_args,
)

pytestmark = pytest.mark.slow

WORKERS = 2
TASK_LINE = re.compile(r"Running task \S+ in stage (\d+)\.\d+")


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
