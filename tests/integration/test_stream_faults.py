"""The stream job under faults, on the real stack: a killed Python worker; Kafka, MongoDB and S3 restarted.

Each test runs ``ipsp stream`` continuously as a subprocess over a fresh topic
(the synthetic feed with bad records mixed in, see ``support.streamfeed``),
breaks something mid-stream, waits until every Kafka record is accounted for,
stops the job with SIGTERM and checks the invariants: every frame exactly once
with the detector's own counts, every bad record in ``dead_letters`` (and no
stale dead letter), windows equal to a rebuild from the stored frames, progress
adding up to every record once.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ipsp.config import Settings
from support.running import finish, process_tree, rows_done, running_stream, wait_for
from support.streamfeed import (
    Dataset,
    Feed,
    check_all,
    database,
)

pytestmark = pytest.mark.slow


def python_workers(root: int) -> list[int]:
    """Spark's forked Python workers under ``root`` (children of a ``pyspark.daemon``)."""
    tree = process_tree(root)
    daemons = {pid for pid, (_, cmd) in tree.items() if "pyspark.daemon" in cmd}
    return sorted(pid for pid, (ppid, _) in tree.items() if ppid in daemons)


def test_a_killed_python_worker_is_retried_nothing_lost_or_doubled(
    stack_settings: Settings, dataset: Dataset, feed: Feed
) -> None:
    db = database(stack_settings, feed.db)
    log = Path(stack_settings.home) / "test-work" / f"{feed.topic}-worker.log"
    # a batch a second: a 0.3 s batch (the whole feed takes about 12 s back to back) would end before the kill lands
    with running_stream(feed, log, "--trigger-seconds", "1") as proc:
        wait_for("a first batch", lambda: rows_done(db) > 0, proc, log, 600)

        def in_flight() -> bool:
            # a task is running when a result is written that no progress document accounts for yet
            done = rows_done(db)
            return db.analysis_results.count_documents({}) > done and done < feed.total // 2

        wait_for("a batch in flight in the first half of the feed", in_flight, proc, log, 300, poll_s=0.05)
        workers = python_workers(proc.pid)
        assert workers, "no forked Python worker found"
        for pid in workers:
            os.kill(pid, signal.SIGKILL)  # every busy worker, mid-task
        killed_at = rows_done(db)
        assert killed_at < feed.total, "the kill did not land mid-stream"
        finish(feed, db, proc, log)
    text = log.read_text()
    assert "Lost task" in text or "exited unexpectedly" in text or "Python worker" in text, text[-4000:]
    check_all(stack_settings, feed, dataset)


def restart(settings: Settings, service: str, between: Callable[[], None] = lambda: None) -> None:
    """Stop one service of the local stack, wait a little, start it again (the stack's own code)."""
    from ipsp.localstack import procs, stack
    from ipsp.localstack.layout import StackLayout

    layout = StackLayout.from_settings(settings)
    assert procs.stop(layout.pid_file(service)) is not None, f"{service} was not running"
    between()
    time.sleep(5)
    stack.up(settings)


def test_kafka_then_mongodb_then_s3_restarted_mid_stream(
    stack_settings: Settings, dataset: Dataset, feed: Feed
) -> None:
    db = database(stack_settings, feed.db)
    log = Path(stack_settings.home) / "test-work" / f"{feed.topic}-faults.log"
    cache = Path(stack_settings.home) / "shard-cache"
    shutil.rmtree(cache, ignore_errors=True)  # cold: frames come from the S3 server
    with running_stream(feed, log) as proc:
        for service in ("kafka", "ferretdb", "s3proxy"):
            seen = rows_done(db)
            wait_for(f"progress before the {service} restart", lambda s=seen: rows_done(db) > s, proc, log, 600)  # type: ignore[misc]
            assert rows_done(db) < feed.total, f"the stream finished before the {service} restart"
            # with the S3 server down, the cached shards go too: the next fetches must wait for it
            restart(
                stack_settings,
                service,
                (lambda: shutil.rmtree(cache, ignore_errors=True)) if service == "s3proxy" else (lambda: None),
            )
        finish(feed, db, proc, log)
    check_all(stack_settings, feed, dataset)
