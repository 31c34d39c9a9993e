"""Test and benchmark support for serving: write a run through the stream job's sink code, run the API.

:func:`write_through_sink` is the driver half of the stream job's micro-batch
without Spark: frames (generated detections, as the serving benchmark is allowed)
go through the job's own :class:`~ipsp.streaming.sinks.MongoSink` (results,
windows, dead letters, progress), its window state
(:func:`~ipsp.streaming.state.fold_batch`) and its serving writer
(:mod:`ipsp.rollups.write`). No second implementation of windows or
statuses: the API, dashboard and report tests read what that code wrote.

:func:`seed_traffic_db` fills a test database that way and describes what it
holds (:class:`SeededRun`) by reading the serving documents back.
:class:`ApiServer` runs the real ``ipsp serve`` command on a free loopback port.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from ipsp import mongo, rollups
from ipsp.config import Settings
from ipsp.contracts import (
    AnalysisResult,
    Counts,
    DeadLetter,
    Detection,
    KafkaCoordinates,
    ModelRef,
    PipelineInfo,
    PipelineProgress,
    event_id,
    window_id,
)
from ipsp.mongo import connect
from ipsp.rollups.write import write_serving
from ipsp.streaming.progress import latency_stats
from ipsp.streaming.sinks import MongoSink
from ipsp.streaming.state import StreamState, fold_batch, group_by_window, latest_per_event
from ipsp.streaming.task.outcome import FrameOutcome
from ipsp.streaming.windows import from_ms, status_function

DEFAULT_START = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)
FRAME_SIZE = (1280, 720)
CLASS_RATES = {"motorbike": 9.0, "car": 2.5, "bus": 0.4, "truck": 0.6, "bicycle": 0.6, "person": 1.2}
BOX_SIZES = {
    "motorbike": (60.0, 90.0), "car": (150.0, 110.0), "bus": (320.0, 220.0),
    "truck": (280.0, 200.0), "bicycle": (55.0, 80.0), "person": (35.0, 90.0),
}  # fmt: skip
DEAD_STAGES = ("parse", "validate", "fetch", "decode")
TOPIC = "traffic-metadata"


# --- frames with generated detections ------------------------------------------------------


def camera_ids(count: int) -> list[str]:
    """``cam_01`` .. ``cam_NN`` like the dataset."""
    return [f"cam_{i:02d}" for i in range(1, count + 1)]


def _poisson(rng: random.Random, mean: float) -> int:
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def _detections(rng: random.Random, per_class: dict[str, int]) -> list[Detection]:
    width, height = FRAME_SIZE
    out = []
    for name, count in per_class.items():
        box_w, box_h = BOX_SIZES[name]
        for _ in range(count):
            w, h = box_w * (0.7 + 0.6 * rng.random()), box_h * (0.7 + 0.6 * rng.random())
            x, y = rng.random() * (width - w), height * 0.3 + rng.random() * (height * 0.7 - h)
            out.append(Detection(cls=name, conf=round(0.35 + 0.6 * rng.random(), 3),
                                 box_xywh=(round(x, 1), round(y, 1), round(w, 1), round(h, 1))))  # fmt: skip
    return out


def _density(per_class: dict[str, int]) -> float:
    roi = FRAME_SIZE[0] * FRAME_SIZE[1] * 0.5
    area = sum(per_class[n] * BOX_SIZES[n][0] * BOX_SIZES[n][1] for n in ("motorbike", "car", "bus", "truck"))
    return round(min(100.0, 100.0 * area / roi), 3)


def generated_frames(
    frames: int, cameras: int, start: datetime, frames_per_second: float, seed: int = 7, boxes: bool = True
) -> Iterator[tuple[str, str, datetime, int, dict[str, int], float, list[Detection]]]:
    """``(record_key, camera, event_time, frame_index, per-class counts, density, detections)`` round-robin.

    ``boxes=False`` leaves the detections list empty (counts and density stay): a
    frame document a fifth the size, for histories of a million frames.
    """
    rng = random.Random(seed)
    names = camera_ids(cameras)
    levels = {name: 0.4 + 1.2 * rng.random() for name in names}
    phases = {name: rng.random() * 2 * math.pi for name in names}
    period = max(frames / frames_per_second / 2, 1.0)
    for index in range(frames):
        camera = names[index % cameras]
        frame_index = index // cameras
        event_time = start + timedelta(seconds=frame_index / frames_per_second)
        wave = 0.5 + 0.5 * math.sin(2 * math.pi * (index / frames_per_second) / period + phases[camera])
        per_class = {n: _poisson(rng, rate * levels[camera] * (0.3 + 1.4 * wave)) for n, rate in CLASS_RATES.items()}
        yield (f"{camera}_{frame_index:06d}", camera, event_time, frame_index, per_class, _density(per_class),
               _detections(rng, per_class) if boxes else [])  # fmt: skip


# --- the stream job's driver half, without Spark --------------------------------------------------


def write_through_sink(
    sink: MongoSink,
    settings: Settings,
    frames: int,
    cameras: int,
    start: datetime = DEFAULT_START,
    frames_per_second: float = 1.0,
    batch_frames: int = 128,
    dead_every: int = 400,
    query: str = "traffic-stream-feed",
    progress: Callable[[int], None] | None = None,
    boxes: bool = True,
) -> int:
    """Write ``frames`` frames in micro-batches of ``batch_frames`` the way the stream job's driver does.

    Per batch: results (``MongoSink.write_results``), dead letters, the window
    state's full window documents (``write_windows``), the progress document,
    then the serving documents (``write_serving``). Returns batches written.
    """
    status_of = status_function(settings.cameras_config)
    window_seconds = settings.window_seconds
    state = StreamState()
    model = ModelRef(name="centernet", version="1", sha256=hashlib.sha256(b"centernet-sample").hexdigest())
    replay_id = f"replay-{start:%Y%m%dT%H%M%S}"
    offset = 0
    batch: list[tuple[str, str, datetime, int, dict[str, int], float, list[Detection]]] = []
    batch_id = 0

    def flush() -> None:
        nonlocal batch, batch_id, offset
        if not batch:
            return
        # a live feed: the batch starts just after its newest frame's event time (the clock is the feed's)
        started = max(frame[2] for frame in batch) + timedelta(milliseconds=200)
        wall = time.perf_counter()
        results: list[AnalysisResult] = []
        letters: list[DeadLetter] = []
        for key, camera, event_time, frame_index, per_class, density, dets in batch:
            counts = Counts.of(per_class)
            latency = 150.0 + (offset % 97)
            results.append(AnalysisResult(
                id=event_id(camera, event_time), record_key=key, camera_id=camera, frame_index=frame_index,
                event_time=event_time, replay_id=replay_id,
                counts=counts, density_percent=density,
                traffic_status=status_of(camera, density, counts.total),  # type: ignore[arg-type]
                detections=dets, model=model,
                pipeline=PipelineInfo(batch_id=batch_id, kafka_partition=0, kafka_offset=offset,
                                      inference_ms=30.0, latency_ms=latency),
                processed_at=started,
            ))  # fmt: skip
            offset += 1
            if dead_every and offset % dead_every == 0:
                letters.append(DeadLetter(
                    id=f"{TOPIC}:0:{offset}", stage=DEAD_STAGES[(offset // dead_every - 1) % len(DEAD_STAGES)],  # type: ignore[arg-type]
                    reason="generated bad record", raw="{not json", created_at=started,
                    kafka=KafkaCoordinates(topic=TOPIC, partition=0, offset=offset), camera_id=camera,
                    record_key=None if offset // dead_every % len(DEAD_STAGES) == 1 else key,
                ))  # fmt: skip
                offset += 1
        sink.write_results(results)
        sink.write_dead_letters(letters)
        # the driver's window step (BatchSink.update_windows), on the feed's clock
        written = [FrameOutcome.of_result(r, latency_ms=0.0) for r in results]
        keys = group_by_window(latest_per_event(written), window_seconds)
        stored = sink.read_windows(sorted(window_id(c, from_ms(ms)) for c, ms in keys))
        out = fold_batch(
            state, stored, written, window_seconds, settings.watermark_seconds, settings.window_idle_seconds,
            started, status_of,
        )  # fmt: skip
        sink.write_windows(out.documents)
        sink.close_windows(out.close_ids, started)
        windows = out.documents
        seconds = max(time.perf_counter() - wall, 1e-3)
        finished = started + timedelta(seconds=seconds)
        doc = PipelineProgress(
            id=f"{query}:{batch_id}", query=query, batch_id=batch_id, rows=len(results) + len(letters),
            results=len(results), dead_letters=len(letters),
            input_rows_per_s=round((len(results) + len(letters)) / seconds, 3),
            processed_rows_per_s=round((len(results) + len(letters)) / seconds, 3),
            durations_ms={"total": round(seconds * 1000, 3)},
            latency=latency_stats(r.pipeline.latency_ms for r in results),
            started_at=started, finished_at=finished,
        )  # fmt: skip
        sink.write_progress(doc)
        write_serving(sink, window_seconds, windows, doc, [letter.to_document() for letter in letters])
        batch_id += 1
        batch = []

    for seen, frame in enumerate(generated_frames(frames, cameras, start, frames_per_second, boxes=boxes), start=1):
        batch.append(frame)
        if len(batch) >= batch_frames:
            flush()
            if progress is not None:
                progress(seen)
    flush()
    return batch_id


def open_sink(settings: Settings, db_name: str) -> MongoSink:
    """The stream job's Mongo sink over ``db_name`` (with the contract's indexes)."""
    sink = MongoSink(connect(settings.mongo_uri.get_secret_value(), timeout_ms=10_000), db_name, retry_seconds=120)
    sink.ensure_indexes()
    return sink


@dataclass(frozen=True)
class SeededRun:
    """What a seeded database holds, read back from it."""

    mongo_uri: str
    db_name: str
    cameras: list[str]
    frames: int
    start: datetime
    end: datetime


def seed_traffic_db(settings: Settings, db_name: str, frames: int = 1200, cameras: int = 6) -> SeededRun:
    """Replace database ``db_name`` with ``frames`` frames over ``cameras`` cameras written through the sink."""
    sink = open_sink(settings, db_name)
    try:
        sink.client.drop_database(db_name)
        sink.ensure_indexes()
        # a frame every 4 s per camera: 1,200 frames over 6 cameras span 13 minutes (several 5-minute buckets)
        write_through_sink(sink, settings, frames, cameras, frames_per_second=0.25)
    finally:
        sink.client.close()
    return describe(settings, db_name)


def describe(settings: Settings, db_name: str) -> SeededRun:
    """Read back what database ``db_name`` holds (from its serving documents): cameras, frames, extent."""
    client = connect(settings.mongo_uri.get_secret_value(), timeout_ms=10_000, query_timeout_ms=300_000)
    try:
        db = client[db_name]
        cameras = {str(doc["_id"]): doc for doc in db[mongo.CAMERAS].find({})}
        state = db[mongo.STATE].find_one({"_id": rollups.STATE_ID})
        if not cameras or state is None:
            raise RuntimeError(f"database {db_name} holds no run")
        first = min([*(_first_window(db, camera) for camera in cameras), state["first_batch_at"]])
        last = max([*(doc["latest"]["window_end"] for doc in cameras.values()), state["last_batch_at"]])
        return SeededRun(
            mongo_uri=settings.mongo_uri.get_secret_value(),
            db_name=db_name,
            cameras=sorted(cameras),
            frames=sum(int(d["frames"]) for doc in cameras.values() for d in doc["days"].values()),
            start=first,
            end=last + timedelta(seconds=1),
        )
    finally:
        client.close()


def _first_window(db: Any, camera: str) -> datetime:
    first_day = db[mongo.CAMERAS].find_one({"_id": camera})["days"]
    day = db[mongo.CAMERA_DAYS].find_one({"_id": f"{camera}|{min(first_day)}"})
    hour = min(day["hours"])
    doc = db[mongo.CAMERA_HOURS].find_one({"_id": f"{camera}|{min(first_day)}T{hour}"})
    return rollups.slot_start(doc["hour_start"], min(doc["windows"]))


def drop_database(settings: Settings, db_name: str) -> None:
    """Remove a test database."""
    client = connect(settings.mongo_uri.get_secret_value(), timeout_ms=10_000, query_timeout_ms=300_000)
    try:
        client.drop_database(db_name)
    finally:
        client.close()


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ApiServer:
    """``ipsp serve`` in a subprocess on a free loopback port, for as long as the ``with`` block lasts."""

    def __init__(self, mongo_uri: str, db_name: str, env: dict[str, str] | None = None, log: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._mongo_uri = mongo_uri
        self._db_name = db_name
        self._env = env or {}
        self._log = log
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ApiServer:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the server and wait until it answers ``/healthz`` (200 or 503: it is up either way)."""
        env = {**os.environ, "IPSP_MONGO_URI": self._mongo_uri, "IPSP_MONGO_DB": self._db_name, **self._env}
        output: Any = self._log.open("wb") if self._log else subprocess.DEVNULL
        command = [sys.executable, "-m", "ipsp.cli", "serve", "--port", str(self.port), "--log-level", "warning"]
        self._process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"ipsp serve exited with {self._process.returncode}")
            try:
                httpx.get(self.url + "/healthz", timeout=5.0)
                return
            except httpx.TransportError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"ipsp serve did not answer on {self.url} within {timeout_s:.0f}s")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s)."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)


#: fields that say when (and by which batch) a document was written, not what it holds
WRITE_TIMES = ("updated_at", "written_at", "touched_hours")


def serving_snapshot(db: Any) -> dict[str, dict[str, dict[str, Any]]]:
    """Every stored serving document by collection and ``_id``, without its write times."""
    return {
        name: {str(doc["_id"]): {k: v for k, v in doc.items() if k not in WRITE_TIMES} for doc in db[name].find({})}
        for name in mongo.SERVING_COLLECTIONS
    }


def rebuilt_snapshot(db: Any, settings: Settings) -> dict[str, dict[str, dict[str, Any]]]:
    """What ``ipsp rollups rebuild`` computes from the stored frames, in the same form."""
    from ipsp.streaming.maintenance import rebuild_documents

    documents = rebuild_documents(db, settings.window_seconds, status_function(settings.cameras_config))
    return {
        name: {key: {k: v for k, v in doc.items() if k not in WRITE_TIMES} for key, doc in docs.items()}
        for name, docs in documents.items()
    }


def check_serving_equals_rebuild(db: Any, settings: Settings) -> None:
    """Every serving document the writer left equals the one rebuilt from the stored frames."""
    stored, rebuilt = serving_snapshot(db), rebuilt_snapshot(db, settings)
    for name in mongo.SERVING_COLLECTIONS:
        assert set(stored[name]) == set(rebuilt[name]), (name, sorted(set(stored[name]) ^ set(rebuilt[name]))[:5])
        for key, doc in rebuilt[name].items():
            assert stored[name][key] == doc, (name, key)
