"""The synthetic stream feed of the stream tests, and the invariants they check (CONTRACTS.md section 3).

Shared by the stream tests on one process (``test_stream_pipeline``), under
faults (``test_stream_faults``) and on the local Spark cluster
(``test_stream_cluster``). :func:`packed_dataset` synthesizes and packs a feed
onto the stack's S3 server, plus a shard whose frames do not decode;
:func:`fresh_feed` produces it to a fresh topic with bad records mixed in
(malformed JSON, unknown schema version, missing fields, a missing shard, a
missing key, a sha256 that does not match, bytes that do not decode). The
fixtures ``dataset`` (once per session) and ``feed`` (per test) in
``tests/integration/conftest.py`` wrap them.

The checks, on what ``ipsp stream`` wrote to MongoDB:

- every valid record_key exactly once in ``analysis_results``, with the counts
  the detector gives when run directly on the same bytes;
- every bad record in ``dead_letters`` under its Kafka coordinates, right stage;
- every window's totals equal the sum of its frames;
- progress documents account for every Kafka record exactly once.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from ipsp.config import Settings
from ipsp.contracts import FrameInfo, FrameMessage, LmdbRef, ManifestRow, event_id, utc_now

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


@contextmanager
def packed_dataset(stack_settings: Settings) -> Iterator[Dataset]:
    """Synthesize and pack the feed; add a shard whose frames do not decode."""
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


@contextmanager
def fresh_feed(stack_settings: Settings, dataset: Dataset) -> Iterator[Feed]:
    """A fresh topic holding the feed with bad records before and after it; dropped afterwards."""
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
