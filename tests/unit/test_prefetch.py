"""The stream task's prefetch stage: bounded, ordered, errors surface, the thread always ends.

The task-level tests run ``run_task`` with the shipped CenterNet model and a real
:class:`ShardReader` over LMDB shards written by the packer's ``write_shard`` to a
file:// store; only the MongoDB sink is an in-memory recorder (the stream
integration tests write to the real server).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from ipsp.config import Settings
from ipsp.contracts import FrameInfo, FrameMessage, LmdbRef, ModelRef
from ipsp.detection import load_cameras_config
from ipsp.detection.detector import Detector, open_backend
from ipsp.detection.errors import FrameError
from ipsp.detection.types import Detections
from ipsp.storage import open_store
from ipsp.storage.shards import ShardReader, initial_map_size, write_shard
from ipsp.streaming.prefetch import Prefetcher
from ipsp.streaming.task.fetch import fetch_with_retries
from ipsp.streaming.task.outcome import FrameOutcome, TaskReport
from ipsp.streaming.task.run import JobContext, run_task
from ipsp.training.synthetic import scene
from support.fakes import FailingInference, RecordingSink, UnansweringStore

CENTERNET = Path(__file__).resolve().parents[2] / "4_model_training" / "models" / "centernet.onnx"
EVENT = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)


def wait_for(check: Any, timeout: float = 10.0) -> None:
    """Poll ``check`` until true (the producer thread runs on its own schedule)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "ipsp-prefetch"]


# --- the Prefetcher alone -------------------------------------------------------------


@pytest.mark.parametrize("depth", [0, 1, 2, 5])
def test_items_come_out_in_order(depth: int) -> None:
    with Prefetcher(lambda _stop: iter(range(50)), depth) as prefetch:
        assert list(prefetch) == list(range(50))
    assert not prefetch.alive


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_look_ahead_is_bounded_by_depth(depth: int) -> None:
    started: list[int] = []  # items the producer began to make

    def produce(_stop: threading.Event) -> Iterator[int]:
        for i in range(20):
            started.append(i)
            yield i

    taken = 0
    with Prefetcher(produce, depth) as prefetch:
        for item in prefetch:
            assert item == taken
            taken += 1
            # the producer fills the look-ahead, then stops: never more than depth items past the consumer
            ahead = min(taken + depth, 20)
            wait_for(lambda ahead=ahead: len(started) == ahead)
            time.sleep(0.02)
            assert len(started) == ahead
    assert taken == 20


def test_a_producer_error_surfaces_after_the_items_before_it() -> None:
    def produce(_stop: threading.Event) -> Iterator[int]:
        yield 1
        yield 2
        raise ConnectionError("S3 server does not answer")

    got: list[int] = []
    prefetch = Prefetcher(produce, 2)
    with pytest.raises(ConnectionError, match="does not answer"):
        for item in prefetch:
            got.append(item)
    prefetch.close()
    assert got == [1, 2] and not prefetch.alive


@pytest.mark.parametrize("depth", [0, 2])
def test_a_consumer_that_stops_early_stops_the_producer(depth: int) -> None:
    closed = threading.Event()

    def produce(_stop: threading.Event) -> Iterator[int]:
        try:
            yield from range(1000)
        finally:
            closed.set()  # runs when the prefetcher closes the generator

    with pytest.raises(RuntimeError, match="inference failed"), Prefetcher(produce, depth) as prefetch:
        for item in prefetch:
            if item == 3:
                raise RuntimeError("inference failed")
    assert not prefetch.alive and closed.is_set()


def test_close_ends_a_producer_waiting_out_an_outage() -> None:
    """A fetch backing off for minutes must not hold the task's exit: the stop event ends the wait."""
    reader = UnansweringStore()

    def produce(stop: threading.Event) -> Iterator[dict[str, Any]]:
        yield fetch_with_retries(reader, "s3://b/s.lmdb", ["k"], 600.0, stop)

    prefetch = Prefetcher(produce, 1)
    wait_for(lambda: reader.calls >= 1)
    closer = threading.Thread(target=prefetch.close)
    closer.start()
    closer.join(timeout=30)
    assert not closer.is_alive() and not prefetch.alive


# --- the detector's two halves ----------------------------------------------------------


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector(open_backend(CENTERNET, threads=1), score_threshold=0.05, batch_size=2)


def jpegs(n: int) -> list[bytes]:
    rng = np.random.default_rng(5)
    return [cv2.imencode(".jpg", cv2.resize(scene(rng, 320, 4)[0], (640, 360)))[1].tobytes() for _ in range(n)]


def test_prepare_then_detect_equals_detect_bytes(detector: Detector) -> None:
    good = jpegs(2)
    batch = [good[0], b"garbage"]
    whole = detector.detect_bytes(batch, ["a", "b"])
    prepared = detector.prepare_bytes(batch, ["a", "b"])
    assert set(prepared.failed) == {1} and prepared.tensor is not None and len(prepared.tensor) == 1
    apart = detector.detect_prepared(prepared)
    assert isinstance(apart[1], FrameError) and str(apart[1]) == str(whole[1])
    assert isinstance(apart[0], Detections) and isinstance(whole[0], Detections)
    np.testing.assert_allclose(apart[0].xyxy, whole[0].xyxy, atol=1e-4)
    assert detector.last_timings.frames == 2 and detector.last_timings.pre_ms == prepared.pre_ms
    with pytest.raises(ValueError, match="one batch"):
        detector.prepare_bytes(jpegs(3))
    only_bad = detector.detect_prepared(detector.prepare_bytes([b""]))
    assert isinstance(only_bad[0], FrameError) and detector.last_timings.batches == 0


# --- run_task with the prefetch stage ---------------------------------------------------


class Feed:
    """Frames packed into shards of a file:// store and the Kafka rows that point at them."""

    def __init__(self, tmp_path: Path) -> None:
        self.store = open_store((tmp_path / "store").as_uri())
        self.work = tmp_path / "work"
        self.rows: list[tuple[bytes | None, str, int, int]] = []

    def shard(self, camera: str, frames: dict[str, bytes]) -> str:
        local = self.work / f"{camera}.lmdb"
        local.parent.mkdir(parents=True, exist_ok=True)
        write_shard(local, lambda: frames.items(), initial_map_size(len(v) for v in frames.values()))
        key = f"shards/{camera}/{camera}-0000.lmdb"
        self.store.upload_file(local, key)
        return self.store.uri(key)

    def message(self, shard: str, key: str, data: bytes, size: int | None = None) -> None:
        camera, index = key.rsplit("_", 1)
        msg = FrameMessage(
            record_key=key,
            camera_id=camera,
            frame_index=int(index),
            event_time=EVENT.replace(second=int(index) % 60),
            lmdb=LmdbRef(uri=shard, key=key),
            frame=FrameInfo(
                width=640,
                height=360,
                format="jpeg",
                bytes=size or len(data),
                sha256=hashlib.sha256(data).hexdigest(),
            ),
            replay_id="r1",
            produced_at=EVENT,
        )
        self.rows.append((msg.to_json().encode(), "t1", 0, len(self.rows)))


def context(prefetch: int, retry_seconds: float = 0.0) -> JobContext:
    settings = Settings(batch_size=2, prefetch_batches=prefetch, cameras_config=None)
    return JobContext(settings, "centernet", ModelRef(name="centernet", version="1", sha256="0" * 64), 0, retry_seconds)


def run(
    feed: Feed, prefetch: int, detector: Detector, reader: Any
) -> tuple[RecordingSink, list[FrameOutcome], TaskReport]:
    sink = RecordingSink()
    outcomes, report = run_task(feed.rows, context(prefetch), detector, reader, sink, load_cameras_config(None))
    return sink, outcomes, report


@pytest.fixture
def feed(tmp_path: Path) -> Feed:
    """Two cameras; among their frames one missing, one corrupt, one of the wrong size, one shard missing."""
    good = jpegs(7)
    corrupt = good[0][:-400]  # its size and sha256 match its message: only the decode fails
    feed = Feed(tmp_path)
    cam1 = {f"cam_01_{i:05d}": data for i, data in enumerate([*good[:4], corrupt])}
    cam2 = {f"cam_02_{i:05d}": data for i, data in enumerate(good[4:])}
    uri1, uri2 = feed.shard("cam_01", cam1), feed.shard("cam_02", cam2)
    for key, data in cam1.items():
        feed.message(uri1, key, data, size=len(data) + 1 if key == "cam_01_00002" else None)
    feed.message(uri1, "cam_01_00099", good[0])  # not in the shard
    for key, data in cam2.items():
        feed.message(uri2, key, data)
    feed.message(uri2.replace("cam_02-0000", "cam_09-0000"), "cam_09_00000", good[0])  # no such shard
    return feed


EXPECTED_RESULTS = ["cam_01_00000", "cam_01_00001", "cam_01_00003", "cam_02_00000", "cam_02_00001", "cam_02_00002"]


@pytest.mark.parametrize("prefetch", [0, 1, 2])
def test_task_results_and_dead_letters_are_those_of_its_frames(
    feed: Feed, detector: Detector, tmp_path: Path, prefetch: int
) -> None:
    reader = ShardReader(tmp_path / "cache", max_bytes=64 << 20)
    sink, outcomes, report = run(feed, prefetch, detector, reader)
    assert [r.record_key for r in sink.results] == EXPECTED_RESULTS  # the records' order, batch after batch
    stages = {d.record_key: (d.stage, d.reason) for d in sink.letters}
    assert set(stages) == {"cam_01_00002", "cam_01_00004", "cam_01_00099", "cam_09_00000"}
    assert stages["cam_01_00002"][0] == "decode" and "bytes, the message says" in stages["cam_01_00002"][1]
    assert stages["cam_01_00004"][0] == "decode" and stages["cam_01_00004"][1].startswith("frame does not decode:")
    assert stages["cam_01_00099"][0] == "fetch" and "cam_01_00099" in stages["cam_01_00099"][1]
    assert stages["cam_09_00000"][0] == "fetch"
    assert len(outcomes) == len(feed.rows) and report.kept == len(EXPECTED_RESULTS)
    assert [o.record_key for o in outcomes if o.kind == "result"] == EXPECTED_RESULTS
    assert {o.record_key: o.stage for o in outcomes if o.kind == "dead"} == {k: v[0] for k, v in stages.items()}
    assert report.fetch_ms > 0 and report.pre_ms > 0 and report.infer_ms > 0
    assert not prefetch_threads()


def test_prefetch_does_not_change_what_is_detected(feed: Feed, detector: Detector, tmp_path: Path) -> None:
    reader = ShardReader(tmp_path / "cache", max_bytes=64 << 20)
    inline, _, _ = run(feed, 0, detector, reader)
    ahead, _, _ = run(feed, 2, detector, reader)
    assert [(r.record_key, r.counts, r.detections) for r in inline.results] == [
        (r.record_key, r.counts, r.detections) for r in ahead.results
    ]


@pytest.mark.parametrize("prefetch", [0, 2])
def test_a_storage_outage_fails_the_task_and_ends_the_thread(
    feed: Feed, detector: Detector, tmp_path: Path, prefetch: int
) -> None:
    """A transient error is not a dead letter: the task fails (Spark retries it), nothing is left running."""
    real = ShardReader(tmp_path / "cache", max_bytes=64 << 20)

    class Outage:
        """The real reader for cam_01, then the store stops answering."""

        def get_many(self, shard: str, keys: list[str]) -> dict[str, Any]:
            if "cam_01" in shard:
                return real.get_many(shard, keys)
            raise ConnectionResetError("connection reset by the S3 server")

    sink = RecordingSink()
    with pytest.raises(ConnectionResetError, match="reset"):
        run_task(feed.rows, context(prefetch), detector, Outage(), sink, load_cameras_config(None))
    assert not prefetch_threads()
    assert all(r.camera_id == "cam_01" for r in sink.results)  # written before the outage; a retry rewrites them
    assert not any(d.camera_id == "cam_02" for d in sink.letters)  # no frame of the failed fetch was dead-lettered


def test_an_inference_error_stops_the_prefetch_thread(feed: Feed, detector: Detector, tmp_path: Path) -> None:
    reader = ShardReader(tmp_path / "cache", max_bytes=64 << 20)

    with pytest.raises(MemoryError):
        run_task(feed.rows, context(2), FailingInference(detector), reader, RecordingSink(), load_cameras_config(None))
    assert not prefetch_threads()
