"""``ipsp produce`` against the real local Kafka broker: completeness, order, rate, failure, resume.

Each test writes to its own topic (deleted afterwards) and runs the real CLI in a
subprocess, so signals, exit codes and messages are what a user sees.
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ipsp.config import Settings
from ipsp.contracts import FrameMessage
from ipsp.producer.manifest import Frame
from support.producer_synthetic import synthetic_frames, write_manifest

IPSP = [sys.executable, "-m", "ipsp.cli"]


@dataclass(frozen=True)
class Received:
    """One record read back from the topic."""

    partition: int
    offset: int
    key: str
    timestamp_ms: int
    message: FrameMessage


def ipsp_produce(settings: Settings, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``ipsp produce`` to completion."""
    return subprocess.run(
        [*IPSP, "produce", *args, "--bootstrap", settings.kafka_bootstrap],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_produce(settings: Settings, *args: str) -> subprocess.Popen[str]:
    """Start ``ipsp produce`` in the background."""
    return subprocess.Popen(
        [*IPSP, "produce", *args, "--bootstrap", settings.kafka_bootstrap],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_topic(settings: Settings, topic: str) -> list[Received]:
    """Every record of the topic, from the start to the end offsets seen now."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        out: list[Received] = []
        deadline = time.monotonic() + 120
        while any(consumer.position(tp) < end[tp] for tp in parts):
            assert time.monotonic() < deadline, "topic not read back within 120 s"
            for tp, records in consumer.poll(timeout_ms=1000).items():
                for r in records:
                    if r.offset < end[tp]:
                        out.append(
                            Received(
                                tp.partition, r.offset, r.key.decode(), r.timestamp, FrameMessage.from_json(r.value)
                            )
                        )
        return out
    finally:
        consumer.close()


def topic_count(settings: Settings, topic: str) -> int:
    """Records in the topic now (sum of end offsets; the topic is written once, never trimmed)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        parts = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or [])]
        return sum(consumer.end_offsets(parts).values()) if parts else 0
    finally:
        consumer.close()


@pytest.fixture
def topic(stack_settings: Settings) -> Iterator[str]:
    """A fresh topic name, deleted after the test."""
    from kafka import KafkaAdminClient

    name = f"ipsp_test_produce_{uuid.uuid4().hex[:10]}"
    yield name
    try:
        admin = KafkaAdminClient(bootstrap_servers=stack_settings.kafka_bootstrap)
        try:
            admin.delete_topics([name])
        finally:
            admin.close()
    except Exception:  # the topic may not exist (test failed early); never mask the test's outcome
        pass


def manifest(tmp_path: Path, frames: list[Frame]) -> Path:
    """Write the frames as a dataset folder with manifest.parquet; return the folder."""
    write_manifest(frames, tmp_path / "dataset" / "manifest.parquet")
    return tmp_path / "dataset"


def by_camera(frames: list[Frame]) -> dict[str, list[Frame]]:
    """Each camera's frames in frame order."""
    cams: dict[str, list[Frame]] = defaultdict(list)
    for f in sorted(frames, key=lambda f: (f.camera_id, f.frame_index)):
        cams[f.camera_id].append(f)
    return cams


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_every_row_arrives_once_per_loop_keyed_and_in_order(stack_settings, topic, tmp_path):
    frames = synthetic_frames(cameras=4, frames_per_camera=[30, 25, 30, 10])
    report_path = tmp_path / "report.json"
    before = datetime.now(UTC) - timedelta(seconds=1)
    result = ipsp_produce(
        stack_settings, str(manifest(tmp_path, frames)), "--topic", topic, "--partitions", "3",
        "--as-fast-as-possible", "--loop", "2", "--frame-interval", "0.5",
        "--event-start", "2026-01-01T08:00:00Z", "--report", str(report_path), "-q",
    )  # fmt: skip
    after = datetime.now(UTC) + timedelta(seconds=1)
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    assert report["sent"] == 2 * len(frames) and report["failed"] == 0 and report["complete"]
    assert f"sent {2 * len(frames)} of {2 * len(frames)}" in result.stdout

    received = read_topic(stack_settings, topic)
    assert len(received) == 2 * len(frames)
    assert Counter(r.message.record_key for r in received) == {f.record_key: 2 for f in frames}
    partitions_of: dict[str, set[int]] = defaultdict(set)
    for r in received:
        assert r.key == r.message.camera_id  # key = camera_id
        partitions_of[r.key].add(r.partition)
        assert r.message.replay_id == report["replay_id"]
        assert before <= r.message.produced_at <= after
    assert all(len(p) == 1 for p in partitions_of.values())  # one camera, one partition

    # per partition (offset order), each camera's frames go in frame order, loop after loop,
    # and event time = start + (loop * longest camera + position) * interval
    start = datetime(2026, 1, 1, 8, tzinfo=UTC)
    expected = by_camera(frames)
    for camera, camera_frames in expected.items():
        seen = sorted((r for r in received if r.key == camera), key=lambda r: r.offset)
        assert [r.message.record_key for r in seen] == [f.record_key for f in camera_frames] * 2
        ticks = [loop * 30 + pos for loop in range(2) for pos in range(len(camera_frames))]
        assert [r.message.event_time for r in seen] == [start + timedelta(seconds=0.5 * t) for t in ticks]


def test_rate_holds_over_a_short_run(stack_settings, topic, tmp_path):
    # 5 s at 200 msg/s; tolerance 15% so a busy machine does not fail it (precise figure: the benchmark)
    frames = synthetic_frames(cameras=5, frames_per_camera=200)
    report_path = tmp_path / "report.json"
    result = ipsp_produce(
        stack_settings, str(manifest(tmp_path, frames)), "--topic", topic, "--rate", "200",
        "--report", str(report_path), "-q",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    received = read_topic(stack_settings, topic)
    assert len(received) == 1000
    stamps = sorted(r.timestamp_ms for r in received)  # record timestamp = produced_at, set at send
    broker_rate = (len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1000)
    assert broker_rate == pytest.approx(200, rel=0.15)
    assert json.loads(report_path.read_text())["send_rate_msg_s"] == pytest.approx(200, rel=0.15)


def resume_flags(stderr: str) -> list[str]:
    """The flags the error/stop line tells the user to resume with."""
    match = re.search(r"resume with: (.*?)(?: \(\d+ acknowledged after|$)", stderr.strip().splitlines()[-1])
    assert match, stderr
    return match.group(1).split()


def test_sigterm_flushes_and_the_resume_point_completes_the_feed_exactly(stack_settings, topic, tmp_path):
    frames = synthetic_frames(cameras=4, frames_per_camera=150)
    dataset = str(manifest(tmp_path, frames))
    common = ["--topic", topic, "--frame-interval", "0.2", "-q"]
    proc = start_produce(stack_settings, dataset, *common, "--rate", "150", "--report", str(tmp_path / "r1.json"))
    deadline = time.monotonic() + 60
    while topic_count(stack_settings, topic) < 150:  # some way in, far from the end (600 frames, 4 s)
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    first = json.loads((tmp_path / "r1.json").read_text())
    assert first["stopped_by"] == "SIGTERM" and first["failed"] == 0 and 0 < first["sent"] < 600
    assert "stopped by SIGTERM; resume with:" in err

    second = ipsp_produce(stack_settings, dataset, *common, "--as-fast-as-possible", *resume_flags(err))
    assert second.returncode == 0, second.stderr
    received = read_topic(stack_settings, topic)
    # a clean stop acknowledges everything in flight: the two runs are the feed, no gap, no duplicate
    assert sorted(r.message.record_key for r in received) == sorted(f.record_key for f in frames)
    assert len({r.message.replay_id for r in received}) == 1
    assert_event_clock_continuous(received, frames, interval_s=0.2)


def assert_event_clock_continuous(received: list[Received], frames: list[Frame], interval_s: float) -> None:
    """Every copy of a frame carries the same event time, on the one clock of the replay."""
    times: dict[str, set[datetime]] = defaultdict(set)
    for r in received:
        times[r.message.record_key].add(r.message.event_time)
    assert all(len(t) == 1 for t in times.values())
    for camera_frames in by_camera(frames).values():
        stamps = [next(iter(times[f.record_key])) for f in camera_frames]
        steps = {round((b - a).total_seconds(), 3) for a, b in itertools.pairwise(stamps)}
        assert steps == {interval_s}


def stop_kafka(settings: Settings) -> None:
    """Stop the stack's Kafka process (only that one, through the stack's own pid file)."""
    from ipsp.localstack import procs, stack
    from ipsp.localstack.layout import StackLayout

    layout = StackLayout.from_settings(settings)
    with stack.stack_lock(layout, lambda _msg: None):
        assert procs.stop(layout.pid_file("kafka")) is not None, "Kafka was not started by the stack"


def test_broker_stopped_mid_run_gives_a_clean_error_and_a_resume_point_without_gap(stack_settings, topic, tmp_path):
    from ipsp.localstack import stack

    frames = synthetic_frames(cameras=4, frames_per_camera=500)
    dataset = str(manifest(tmp_path, frames))
    common = ["--topic", topic, "--partitions", "2", "-q"]
    proc = start_produce(
        stack_settings, dataset, *common, "--rate", "200", "--delivery-timeout", "5",
        "--report", str(tmp_path / "r1.json"),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while topic_count(stack_settings, topic) < 300:
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        stop_kafka(stack_settings)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        stack.up(stack_settings)  # bring Kafka back for the rest of the suite (idempotent)

    assert proc.returncode == 3, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Kafka delivery failed at "), err
    first = json.loads((tmp_path / "r1.json").read_text())
    assert f"sent {first['sent']} (acknowledged), failed {first['failed']}" in lines[0]
    assert 0 < first["sent"] < len(frames) and first["failed"] > 0
    assert first["resume_point"] in lines[0]
    assert out.startswith(f"sent {first['sent']} of {len(frames)}")
    written = topic_count(stack_settings, topic)
    assert written >= first["sent"]  # every acknowledged record is in the topic

    second = ipsp_produce(stack_settings, dataset, *common, "--as-fast-as-possible", *resume_flags(err))
    assert second.returncode == 0, second.stderr
    received = read_topic(stack_settings, topic)
    keys = Counter(r.message.record_key for r in received)
    assert set(keys) == {f.record_key for f in frames}  # no gap
    duplicates = sum(keys.values()) - len(frames)
    # repeats can only be records past the resume point that reached the broker in the first run:
    # acknowledged after the first failure, or written while their acknowledgement was lost
    assert duplicates <= written - first["sent"] + first["acked_after_failure"]
    print(f"broker stop: first run sent {first['sent']}, wrote {written}, duplicates after resume {duplicates}")
    assert_event_clock_continuous(received, frames, interval_s=1.0)


def test_topic_that_cannot_be_created_is_a_clear_error(stack_settings, topic, tmp_path):
    dataset = str(manifest(tmp_path, synthetic_frames(cameras=1, frames_per_camera=2)))
    first = ipsp_produce(stack_settings, dataset, "--topic", topic, "--as-fast-as-possible", "-q")
    assert first.returncode == 0, first.stderr
    # Kafka refuses a name that differs from an existing one only by '.' against '_'
    result = ipsp_produce(stack_settings, dataset, "--topic", topic.replace("_", "."), "-q")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "cannot be created" in result.stderr and "collides with existing topic" in result.stderr
    assert "nothing sent" in result.stderr


def test_camera_filter_limit_and_resume_on_the_broker(stack_settings, topic, tmp_path):
    frames = synthetic_frames(cameras=3, frames_per_camera=10)
    dataset = str(manifest(tmp_path, frames))
    common = ["--topic", topic, "--cameras", "cam_03,cam_01", "--as-fast-as-possible", "-q"]
    first = ipsp_produce(stack_settings, dataset, *common, "--limit", "7", "--replay-id", "r-test")
    assert first.returncode == 0, first.stderr
    point = re.search(r"last acknowledged (\S+)", first.stdout)
    assert point and point.group(1) == "0:cam_01_00003"  # cam_01 0..3 and cam_03 0..2, interleaved
    second = ipsp_produce(stack_settings, dataset, *common, "--start-after", point.group(1), "--replay-id", "r-test")
    assert second.returncode == 0, second.stderr
    received = read_topic(stack_settings, topic)
    assert sorted(r.message.record_key for r in received) == sorted(
        f.record_key for f in frames if f.camera_id in ("cam_01", "cam_03")
    )
