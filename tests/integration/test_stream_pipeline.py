"""The stream job end to end on the real stack: Kafka -> Spark -> LMDB on S3 -> detector -> FerretDB.

Each test produces the synthetic feed of :mod:`support.streamfeed` to its own
topic with bad records mixed in, runs ``ipsp stream`` as a real subprocess and
checks the invariants of CONTRACTS.md section 3 in MongoDB (see that module).

The second test SIGKILLs the job mid-stream and restarts it from its checkpoint.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from ipsp.config import Settings
from ipsp.contracts import FrameMessage, event_id
from support.golden import check_golden, snapshot
from support.streamfeed import (
    CAMERAS,
    EVENT_START,
    FRAME_INTERVAL_S,
    FRAMES,
    REPO,
    Dataset,
    Feed,
    check_all,
    check_dead_letters,
    check_progress,
    check_results,
    check_windows,
    child_env,
    create_topic,
    database,
    ipsp,
    stream_args,
)

pytestmark = pytest.mark.slow


# --- the tests ------------------------------------------------------------------------------------


def test_stream_processes_every_record_once(stack_settings: Settings, dataset: Dataset, feed: Feed) -> None:
    out = ipsp(*stream_args(feed, "--available-now", "--max-offsets-per-trigger", "48"), env=feed.env)
    assert f"{feed.total} record(s)" in out.stdout, out.stdout
    check_all(stack_settings, feed, dataset)
    # and the very documents the job wrote before the stream task's redesign (tests/golden)
    names = {feed.topic: "<topic>", feed.db: "<db>", dataset.uri: "<dataset>"}
    changed = check_golden("stream_feed", snapshot(database(stack_settings, feed.db), names))
    assert not changed, f"{len(changed)} difference(s) from tests/golden/stream_feed.json: " + "; ".join(changed[:10])

    # a full replay (new checkpoint, every record again in one batch) changes nothing
    db = database(stack_settings, feed.db)
    before = {w["_id"]: (w["frames"], w["counts"]) for w in db.traffic_windows.find({})}
    replay = feed.checkpoint.with_name(feed.checkpoint.name + "-replay")
    try:
        ipsp("stream", "--topic", feed.topic, "--checkpoint", str(replay), "--query", "replay", "--once", "--no-ui",
             env=feed.env)  # fmt: skip
    finally:
        shutil.rmtree(replay, ignore_errors=True)
    docs = check_results(stack_settings, db, dataset)
    check_dead_letters(db, feed)
    check_windows(db, docs, stack_settings.window_seconds)
    assert {w["_id"]: (w["frames"], w["counts"]) for w in db.traffic_windows.find({})} == before


def test_stream_survives_sigkill_and_resumes(stack_settings: Settings, dataset: Dataset, feed: Feed) -> None:
    db = database(stack_settings, feed.db)
    log = Path(stack_settings.home) / "test-work" / f"{feed.topic}.log"
    args = [sys.executable, "-m", "ipsp.cli", *stream_args(feed, "--max-offsets-per-trigger", "12",
                                                           "--trigger-seconds", "0")]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(args, cwd=REPO, env=feed.env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        try:
            deadline = time.monotonic() + 600
            while db.pipeline_progress.count_documents({}) < 2:
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "the stream made no progress in 10 minutes"
                time.sleep(0.5)
            time.sleep(1.0)  # into the next batch
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver, its JVM and its Python workers, mid-batch
            proc.wait(timeout=60)
    stored = db.analysis_results.count_documents({})
    assert 0 < stored < FRAMES, f"the kill did not land mid-stream ({stored} frames stored)"

    ipsp(*stream_args(feed, "--available-now", "--max-offsets-per-trigger", "48"), env=feed.env)
    check_all(stack_settings, feed, dataset)
    # the serving documents (issue 11) came through the kill too: equal to a rebuild from the stored frames
    from support.serving import check_serving_equals_rebuild

    check_serving_equals_rebuild(db, stack_settings)


# --- MongoDB outage ---------------------------------------------------------------------------------


class PrivateMongo:
    """A FerretDB of our own (same binary as the stack, own port and SQLite folder) that a test may kill."""

    def __init__(self, settings: Settings, folder: Path) -> None:
        import socket

        from ipsp.localstack.layout import StackLayout

        self.binary = StackLayout.from_settings(settings).ferretdb_bin
        self.folder = folder
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.uri = f"mongodb://127.0.0.1:{self.port}/"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        from pymongo import MongoClient

        (self.folder / "data").mkdir(parents=True, exist_ok=True)
        (self.folder / "state").mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [str(self.binary), "--handler=sqlite", f"--sqlite-url=file:{self.folder / 'data'}/",
             f"--listen-addr=127.0.0.1:{self.port}", f"--state-dir={self.folder / 'state'}", "--telemetry=disable",
             "--debug-addr=-", "--log-level=error"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                MongoClient(self.uri, serverSelectionTimeoutMS=1000).admin.command("ping")
                return
            except Exception:
                assert time.monotonic() < deadline, "private FerretDB did not start"
                time.sleep(0.5)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=30)
            self.proc = None


def test_stream_fails_loudly_when_mongo_is_down_then_resumes(
    stack_settings: Settings, dataset: Dataset, feed: Feed
) -> None:
    from pydantic import SecretStr

    mongo = PrivateMongo(stack_settings, Path(stack_settings.home) / "test-work" / f"ferret-{feed.topic}")
    mongo.start()
    try:
        settings = stack_settings.model_copy(update={"mongo_uri": SecretStr(mongo.uri)})
        env = {**feed.env, "IPSP_MONGO_URI": mongo.uri}
        db = database(settings, feed.db)
        args = [sys.executable, "-m", "ipsp.cli",
                *stream_args(feed, "--max-offsets-per-trigger", "12", "--trigger-seconds", "0",
                             "--sink-retry-seconds", "5")]  # fmt: skip
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 600
            while db.pipeline_progress.count_documents({}) < 1:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the stream made no progress in 10 minutes"
                time.sleep(0.5)
            mongo.kill()  # the server goes away mid-stream
            out, err = proc.communicate(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 4, (out, err[-3000:])
        assert "MongoDB did not accept" in err, err[-3000:]
        assert "runs again when you restart" in err, err[-3000:]

        mongo.start()  # the server is back (same data): the same command resumes from the checkpoint
        ipsp(*stream_args(feed, "--available-now", "--max-offsets-per-trigger", "48"), env=env)
        docs = check_results(settings, db, dataset)
        check_dead_letters(db, feed)
        check_windows(db, docs, settings.window_seconds)
        check_progress(db, feed)
    finally:
        mongo.kill()
        shutil.rmtree(mongo.folder, ignore_errors=True)


# --- event identity: loops are new events, a resend is the same event --------------------------------


def latest_records(settings: Settings, topic: str) -> dict[str, tuple[int, int]]:
    """event_id -> the (partition, offset) of its last copy in the topic, read back from Kafka."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=5000)  # fmt: skip
    latest: dict[str, tuple[int, int]] = {}
    try:
        for record in consumer:
            msg = FrameMessage.from_json(record.value)
            key = event_id(msg.camera_id, msg.event_time)
            latest[key] = max(latest.get(key, (-1, -1)), (record.partition, record.offset))
    finally:
        consumer.close()
    return latest


def test_loops_are_new_events_and_a_resend_is_the_same_event(stack_settings: Settings, dataset: Dataset) -> None:
    """Done-when of issue 13: --loop 2 plus a resend of loop 0, into a fresh database."""
    tag = uuid.uuid4().hex[:8]
    topic, db_name = f"test-loops-{tag}", f"test_loops_{tag}"
    checkpoint = Path(stack_settings.home) / "checkpoints" / f"test-{tag}"
    env = child_env(stack_settings, IPSP_MONGO_DB=db_name)
    create_topic(stack_settings, topic, partitions=2)
    same = ["--replay-id", f"loops-{tag}", "--event-start", EVENT_START, "--frame-interval", str(FRAME_INTERVAL_S)]
    try:
        ipsp(
            "produce", dataset.uri, "--topic", topic, "--as-fast-as-possible", "--loop", "2", *same, "--quiet", env=env
        )
        ipsp(
            "produce", dataset.uri, "--topic", topic, "--as-fast-as-possible", "--loop", "1", *same, "--quiet", env=env
        )
        ipsp("stream", "--topic", topic, "--checkpoint", str(checkpoint), "--no-ui", "--available-now",
             "--max-offsets-per-trigger", "100", env=env)  # fmt: skip
        db = database(stack_settings, db_name)
        stored = list(db.analysis_results.find({}))
        per_frame: dict[str, list[Any]] = {}
        for doc in stored:
            assert doc["_id"] == event_id(doc["camera_id"], doc["event_time"])
            per_frame.setdefault(doc["record_key"], []).append(doc["event_time"])
        # every frame exactly once per loop: two events, one loop length apart
        loop_s = FRAMES // CAMERAS * FRAME_INTERVAL_S
        assert set(per_frame) == {row.record_key for row in dataset.rows}
        for key, times in per_frame.items():
            assert len(times) == 2, (key, times)
            assert abs((max(times) - min(times)).total_seconds()) == loop_s, (key, times)
        # each event holds the result of its LAST Kafka copy (the resend for loop 0), whatever task wrote first
        latest = latest_records(stack_settings, topic)
        assert len(latest) == len(stored) == 2 * FRAMES
        for doc in stored:
            assert (doc["pipeline"]["kafka_partition"], doc["pipeline"]["kafka_offset"]) == latest[doc["_id"]]
        # windows add up to the stored frames and vehicle counts; none is late (the resend is counted events)
        check_windows(db, stored, stack_settings.window_seconds)
        windows = list(db.traffic_windows.find({}))
        assert sum(w["late_frames"] for w in windows) == 0
        assert sum(w["frames"] for w in windows) == len(stored)
        for cls in ("car", "total"):
            assert sum(w["counts"][cls] for w in windows) == sum(d["counts"][cls] for d in stored)
        # loop 0's windows were closed by loop 1's watermark (event time runs on across loops)
        assert any(w["closed"] for w in windows)
        progress = list(db.pipeline_progress.find({}))
        assert sum(p["rows"] for p in progress) == 3 * FRAMES
        assert sum(p["late_frames"] for p in progress) == 0

        # the whole topic again in ONE batch through a new checkpoint (copies of an event in one batch,
        # split over concurrent tasks): nothing changes
        before = {w["_id"]: (w["frames"], w["counts"], w["events"]) for w in windows}
        kept = {d["_id"]: d["pipeline"] for d in stored}
        ipsp("stream", "--topic", topic, "--checkpoint", str(checkpoint) + "-again", "--query", "again", "--once",
             "--no-ui", env=env)  # fmt: skip
        again = list(db.analysis_results.find({}))
        assert {d["_id"]: (d["pipeline"]["kafka_partition"], d["pipeline"]["kafka_offset"]) for d in again} == {
            k: (p["kafka_partition"], p["kafka_offset"]) for k, p in kept.items()
        }
        assert {w["_id"]: (w["frames"], w["counts"], w["events"]) for w in db.traffic_windows.find({})} == before
    finally:
        from pymongo import MongoClient

        MongoClient(stack_settings.mongo_uri.get_secret_value()).drop_database(db_name)
        shutil.rmtree(checkpoint, ignore_errors=True)
        shutil.rmtree(str(checkpoint) + "-again", ignore_errors=True)
