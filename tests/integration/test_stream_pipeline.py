"""The stream job end to end on the real stack: Kafka -> Spark -> LMDB on S3 -> detector -> FerretDB.

A synthetic feed is packed once per module onto the local S3 server; each test
produces it to its own topic with bad records mixed in (malformed JSON, unknown
schema version, missing fields, a missing shard, a missing key, a sha256 that
does not match, bytes that do not decode), runs ``ipsp stream`` as a real
subprocess and checks the invariants of CONTRACTS.md section 3 in MongoDB:

- every valid record_key exactly once in ``analysis_results``, with the counts
  the detector gives when run directly on the same bytes;
- every bad record in ``dead_letters`` under its Kafka coordinates, right stage;
- every window's totals equal the sum of its frames;
- progress documents account for every Kafka record exactly once.

The second test SIGKILLs the job mid-stream and restarts it from its checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from ipsp.config import Settings
from ipsp.contracts import FrameInfo, FrameMessage, LmdbRef, ManifestRow, event_id, utc_now
from support.golden import check_golden, snapshot

pytestmark = pytest.mark.slow

FRAMES = 120
CAMERAS = 4
EVENT_START = "2026-01-01T08:00:00Z"
FRAME_INTERVAL_S = 5.0  # 30 frames per camera over 150 s: three 60 s windows per camera
REPO = Path(__file__).resolve().parents[2]


def ipsp(*args: str, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run one ``ipsp`` command as a user would; fail the test with its output if it fails."""
    proc = subprocess.run(
        [sys.executable, "-m", "ipsp.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"ipsp {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPSP_")}
    env["IPSP_HOME"] = str(settings.home)
    env.update(extra)
    return env


@dataclass(frozen=True)
class Dataset:
    """A packed synthetic feed and what the tests need to know about it."""

    uri: str
    rows: list[ManifestRow]
    bad_shard_uri: str
    bad_keys: dict[str, bytes]  # key in the bad shard -> bytes that do not decode


@pytest.fixture(scope="module")
def dataset(stack_settings: Settings) -> Iterator[Dataset]:
    """Synthesize and pack the feed once; add a shard whose frames do not decode."""
    from ipsp.preprocessing.manifest import read_manifest
    from ipsp.storage import open_store
    from ipsp.storage.shards import write_shard

    name = f"test-stream-{uuid.uuid4().hex[:8]}"
    work = Path(stack_settings.home) / "test-work" / name
    work.mkdir(parents=True)
    env = child_env(stack_settings)
    ipsp("synth", str(work / "frames"), "--frames", str(FRAMES), "--cameras", str(CAMERAS), "--no-progress",
         "--workers", "1", env=env)  # fmt: skip
    uri = f"s3://ipsp/datasets/{name}"
    ipsp("pack", str(work / "frames"), "--to", uri, "--no-progress", env=env)
    store = open_store(uri, stack_settings)
    rows = read_manifest(store.get("manifest.parquet"))
    assert len(rows) == FRAMES

    # a shard of frames that pass the sha256 check but are not images (truncated, garbage)
    good = store.get(rows[0].shard_uri[len(uri) + 1 :])
    # fixed bytes (not os.urandom): the golden snapshot holds their sha256 in the dead letters' raw values
    garbage = random.Random(9).randbytes(2000)
    bad = {"cam_09_00000": b"\xff\xd8\xff\xe0" + garbage, "cam_09_00001": good[:100]}
    shard = work / "bad.lmdb"
    write_shard(shard, lambda: bad.items(), 1 << 20)
    store.upload_file(shard, "shards/cam_09/cam_09-0000.lmdb")
    yield Dataset(uri=uri, rows=rows, bad_shard_uri=f"{uri}/shards/cam_09/cam_09-0000.lmdb", bad_keys=bad)
    shutil.rmtree(work, ignore_errors=True)


@dataclass(frozen=True)
class BadRecord:
    """A bad Kafka record we sent, where it went, and what the dead letter must say."""

    coords: str
    stage: str
    reason: str


def message_for(row: ManifestRow, **changes: Any) -> dict[str, Any]:
    now = utc_now()
    msg = FrameMessage(
        record_key=row.record_key,
        camera_id=row.camera_id,
        frame_index=row.frame_index,
        event_time=now,
        lmdb=LmdbRef(uri=row.shard_uri, key=row.key),
        frame=FrameInfo(width=row.width, height=row.height, format=row.format, bytes=row.bytes, sha256=row.sha256),
        replay_id="bad-records",
        produced_at=now,
    )
    doc = json.loads(msg.to_json())
    doc["event_time"] = EVENT_START.replace("Z", ".000Z")
    for key, value in changes.items():
        doc[key] = value
    return doc


def bad_values(ds: Dataset) -> list[tuple[bytes, str, str]]:
    """(value, stage, words of the reason) for every kind of bad input the stream must survive."""
    row = ds.rows[0]
    unknown_version = message_for(row, schema_version="2.0", record_key="cam_01_90000")
    no_lmdb = message_for(row, record_key="cam_01_90001")
    del no_lmdb["lmdb"]
    missing_shard = message_for(row, record_key="cam_01_90002")
    missing_shard["lmdb"] = {"uri": ds.uri + "/shards/cam_01/no-such-shard.lmdb", "key": row.key}
    missing_key = message_for(row, record_key="cam_01_90003")
    missing_key["lmdb"] = {"uri": row.shard_uri, "key": "cam_01_99999"}
    wrong_sha = message_for(row, record_key="cam_01_90004")
    wrong_sha["frame"] = {**wrong_sha["frame"], "sha256": "0" * 64}
    undecodable = []
    for key, data in ds.bad_keys.items():
        doc = message_for(row, record_key=key, camera_id="cam_09", frame_index=int(key[-5:]))
        doc["lmdb"] = {"uri": ds.bad_shard_uri, "key": key}
        doc["frame"] = {**doc["frame"], "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        undecodable.append((json.dumps(doc).encode(), "decode", key))
    return [
        (b'{"schema_version": "1.0", "record_key": ', "parse", "not JSON"),
        (b"\x00\x01binary garbage", "parse", "not JSON"),
        (json.dumps(unknown_version).encode(), "validate", "unknown schema_version"),
        (json.dumps(no_lmdb).encode(), "validate", "lmdb: missing"),
        (json.dumps(missing_shard).encode(), "fetch", "does not exist"),
        (json.dumps(missing_key).encode(), "fetch", "no key"),
        (json.dumps(wrong_sha).encode(), "decode", "sha256"),
        *undecodable,
    ]


def send_bad(settings: Settings, topic: str, values: list[tuple[bytes, str, str]]) -> list[BadRecord]:
    """Send bad records with kafka-python; return where each landed."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    try:
        sent = []
        for value, stage, words in values:
            meta = producer.send(topic, key=b"cam_01", value=value).get(timeout=30)
            sent.append(BadRecord(f"{topic}:{meta.partition}:{meta.offset}", stage, words))
        producer.flush()
        return sent
    finally:
        producer.close()


def create_topic(settings: Settings, topic: str, partitions: int) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        admin.close()


@dataclass
class Feed:
    """One test's topic, database and checkpoint, and the records in the topic."""

    topic: str
    db: str
    checkpoint: Path
    env: dict[str, str]
    bad: list[BadRecord]
    total: int


@pytest.fixture
def feed(stack_settings: Settings, dataset: Dataset) -> Iterator[Feed]:
    """A fresh topic holding the feed with bad records before and after it."""
    tag = uuid.uuid4().hex[:8]
    topic, db = f"test-stream-{tag}", f"test_stream_{tag}"
    checkpoint = Path(stack_settings.home) / "checkpoints" / f"test-{tag}"
    env = child_env(stack_settings, IPSP_MONGO_DB=db)
    create_topic(stack_settings, topic, partitions=2)
    values = bad_values(dataset)
    bad = send_bad(stack_settings, topic, values[: len(values) // 2])
    ipsp("produce", dataset.uri, "--topic", topic, "--as-fast-as-possible", "--event-start", EVENT_START,
         "--frame-interval", str(FRAME_INTERVAL_S), "--quiet", env=env)  # fmt: skip
    bad += send_bad(stack_settings, topic, values[len(values) // 2 :])
    yield Feed(topic=topic, db=db, checkpoint=checkpoint, env=env, bad=bad, total=FRAMES + len(bad))
    from pymongo import MongoClient

    MongoClient(stack_settings.mongo_uri.get_secret_value()).drop_database(db)
    shutil.rmtree(checkpoint, ignore_errors=True)


def stream_args(feed: Feed, *extra: str) -> list[str]:
    return ["stream", "--topic", feed.topic, "--checkpoint", str(feed.checkpoint), "--no-ui", *extra]


# --- the invariants ----------------------------------------------------------------------------


def database(settings: Settings, name: str) -> Any:
    from pymongo import MongoClient

    return MongoClient(settings.mongo_uri.get_secret_value(), tz_aware=True)[name]


def check_results(settings: Settings, db: Any, ds: Dataset) -> dict[str, dict[str, Any]]:
    """Every valid frame exactly once, with the detector's own counts for its bytes."""
    from ipsp.detection import load_cameras_config, load_detector, traffic_summary
    from ipsp.storage.shards import ShardReader

    stored = list(db.analysis_results.find({}))
    docs = {d["record_key"]: d for d in stored}
    expected = {row.record_key for row in ds.rows}
    missing, extra = sorted(expected - set(docs)), sorted(set(docs) - expected)
    assert set(docs) == expected, f"missing {missing[:5]}, extra {extra[:5]}"
    assert len(stored) == len(expected), "a frame stored twice"
    for doc in stored:
        assert doc["_id"] == event_id(doc["camera_id"], doc["event_time"])

    detector = load_detector(settings.model, settings, threads=1)
    cameras = load_cameras_config(settings.cameras_config)
    reader = ShardReader(Path(settings.home) / "test-work" / "reader-cache", 1 << 30, settings)
    for row in ds.rows:
        data = reader.get(row.shard_uri, row.key)
        (det,) = detector.detect_bytes([data])
        summary = traffic_summary(det, row.camera_id, cameras_cfg=cameras)
        doc = docs[row.record_key]
        assert doc["counts"] == summary.counts.model_dump(), row.record_key
        assert doc["density_percent"] == pytest.approx(summary.density_percent, abs=1e-6)
        assert doc["traffic_status"] == summary.status
        assert len(doc["detections"]) == len(summary.detections)  # after cross-class suppression
        assert doc["model"]["sha256"] == detector.model_info.sha256
    return docs


def check_dead_letters(db: Any, feed: Feed) -> None:
    """Each bad record in dead_letters under its coordinates, with the right stage and reason."""
    letters = {d["_id"]: d for d in db.dead_letters.find({})}
    assert set(letters) == {b.coords for b in feed.bad}
    for bad in feed.bad:
        letter = letters[bad.coords]
        assert letter["stage"] == bad.stage, (bad, letter)
        # a frame the detector cannot decode is named by its record key in the reason
        assert bad.reason in letter["reason"], (bad, letter)
        assert letter["raw"]


def check_windows(db: Any, docs: dict[str, dict[str, Any]] | list[dict[str, Any]], window_seconds: int) -> None:
    """Every window equals the sum of its events; every stored event is in exactly one window, once."""
    from ipsp.streaming.windows import to_ms, window_start

    frames: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    for doc in docs.values() if isinstance(docs, dict) else docs:
        frames.setdefault((doc["camera_id"], window_start(doc["event_time"], window_seconds)), []).append(doc)
    windows = {(w["camera_id"], w["window_start"]): w for w in db.traffic_windows.find({})}
    assert set(windows) == set(frames)
    for key, window in windows.items():
        late = {to_ms(key[1]) + ms for ms in window.get("late_events", [])}
        members = [m for m in frames[key] if to_ms(m["event_time"]) not in late]
        assert window["frames"] + window["late_frames"] == len(frames[key]), key
        assert window["frames"] == len(members) == len(window["events"]), key
        for cls in ("motorbike", "car", "bus", "truck", "bicycle", "person", "total"):
            assert window["counts"][cls] == sum(m["counts"][cls] for m in members), (key, cls)
        densities = [m["density_percent"] for m in members]
        assert window["density_mean"] == pytest.approx(sum(densities) / len(densities), abs=1e-3)
        assert window["density_max"] == pytest.approx(max(densities), abs=1e-3)
        assert window["window_end"] - window["window_start"] == timedelta(seconds=window_seconds)


def check_progress(db: Any, feed: Feed) -> list[dict[str, Any]]:
    """Progress documents add up to every Kafka record once (rows = results + dead letters)."""
    progress = list(db.pipeline_progress.find({}))
    assert progress
    for p in progress:
        assert p["rows"] == p["results"] + p["dead_letters"]
        assert p["query"] == f"traffic-stream-{feed.topic}"
        assert p["_id"] == f"{p['run']}:{p['batch_id']}" and p["run"].startswith(f"{feed.db}/{p['query']}/")
    assert sum(p["rows"] for p in progress) == feed.total
    return progress


def check_all(settings: Settings, feed: Feed, ds: Dataset) -> None:
    db = database(settings, feed.db)
    docs = check_results(settings, db, ds)
    check_dead_letters(db, feed)
    check_windows(db, docs, settings.window_seconds)
    check_progress(db, feed)


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
