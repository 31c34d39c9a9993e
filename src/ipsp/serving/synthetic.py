"""Contract-valid sample runs: what the streaming job would write for a replay.

Used by the serving tests and ``benchmarks/bench_serve.py`` until (and besides)
documents written by the real pipeline. Every document is built through the
contract models (``AnalysisResult``, ``TrafficWindow``, ``DeadLetter``,
``PipelineProgress``) and written with ``to_document()``, so nothing here can
drift from CONTRACTS.md. Values are seeded pseudo-random but shaped like a
real run: per-camera traffic levels that rise and fall, motorbikes dominant,
one-minute windows, 512-offset micro-batches, a few dead letters.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReplaceOne
from pymongo.database import Database

from ipsp.contracts import (
    TOPIC,
    AnalysisResult,
    Contract,
    Counts,
    DeadLetter,
    Detection,
    KafkaCoordinates,
    LatencyStats,
    ModelRef,
    PipelineInfo,
    PipelineProgress,
    TrafficWindow,
    dead_letter_id,
    event_id,
    window_id,
)

#: the user's dataset: 11,508 frames from 20 cameras
FULL_RUN_FRAMES = 11_508
FULL_RUN_CAMERAS = 20
DEFAULT_START = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)
FRAME_SIZE = (1280, 720)
#: density thresholds (percent) of the synthetic statuses: below FREE is Free, below NORMAL is Normal
FREE_BELOW = 15.0
NORMAL_BELOW = 35.0
#: mean objects per frame at traffic level 1.0, per class (motorbikes dominate the dataset)
CLASS_RATES = {"motorbike": 9.0, "car": 2.5, "bus": 0.4, "truck": 0.6, "bicycle": 0.6, "person": 1.2}
#: typical box size (w, h) in pixels per class, for density and detections
BOX_SIZES = {
    "motorbike": (60, 90), "car": (150, 110), "bus": (280, 200),
    "truck": (240, 180), "bicycle": (50, 80), "person": (35, 90),
}  # fmt: skip
DEAD_LETTER_REASONS = {
    "parse": "malformed JSON: Expecting value: line 1 column 1 (char 0)",
    "validate": "unknown schema_version '0.9'",
    "fetch": "LMDB key not found in shard",
    "decode": "corrupt JPEG: premature end of data",
}


@dataclass
class SampleRun:
    """One replay's documents, per collection, as contract models."""

    results: list[AnalysisResult] = field(default_factory=list)
    windows: list[TrafficWindow] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    progress: list[PipelineProgress] = field(default_factory=list)

    def collections(self) -> dict[str, list[Contract]]:
        """Collection name -> documents (as models)."""
        return {
            "analysis_results": list(self.results),
            "traffic_windows": list(self.windows),
            "dead_letters": list(self.dead_letters),
            "pipeline_progress": list(self.progress),
        }


def status_for(density: float) -> str:
    """The synthetic run's traffic status for a density (the real thresholds live in config)."""
    if density < FREE_BELOW:
        return "Free"
    if density < NORMAL_BELOW:
        return "Normal"
    return "Congested"


def camera_ids(count: int) -> list[str]:
    """``cam_01`` .. ``cam_NN`` like the dataset."""
    return [f"cam_{i:02d}" for i in range(1, count + 1)]


def build_run(
    frames: int = FULL_RUN_FRAMES,
    cameras: int = FULL_RUN_CAMERAS,
    start: datetime = DEFAULT_START,
    frames_per_second: float = 2.0,
    batch_rows: int = 512,
    dead_letter_every: int = 400,
    window_seconds: int = 60,
    seed: int = 7,
) -> SampleRun:
    """A run of ``frames`` frames spread round-robin over ``cameras`` cameras at a replay rate."""
    rng = random.Random(seed)
    names = camera_ids(cameras)
    levels = {name: 0.4 + 1.2 * rng.random() for name in names}  # busy and quiet cameras
    phases = {name: rng.random() * 2 * math.pi for name in names}
    model = ModelRef(name="centernet", version="1", sha256=hashlib.sha256(b"centernet-sample").hexdigest())
    replay_id = f"replay-{start:%Y%m%dT%H%M%S}"
    duration_s = frames / frames_per_second
    run = SampleRun()
    offsets: dict[int, int] = defaultdict(int)
    batch_of: list[int] = []
    for index in range(frames):
        camera = names[index % cameras]
        frame_index = index // cameras
        event_time = start + timedelta(seconds=index / frames_per_second)
        # traffic rises and falls over the run, differently per camera
        wave = 0.5 + 0.5 * math.sin(2 * math.pi * (index / frames_per_second) / duration_s * 2 + phases[camera])
        level = levels[camera] * (0.3 + 1.4 * wave)
        per_class = {name: _poisson(rng, rate * level) for name, rate in CLASS_RATES.items()}
        detections = list(_detections(rng, per_class))
        density = _density(per_class)
        partition = int(camera.split("_")[-1]) % 4
        batch_id = index // batch_rows
        latency_ms = round(180.0 + 120.0 * rng.random() + 40.0 * (index % batch_rows) / batch_rows, 3)
        run.results.append(
            AnalysisResult(
                id=event_id(camera, event_time),
                record_key=f"{camera}_{frame_index:05d}",
                camera_id=camera,
                frame_index=frame_index,
                event_time=event_time,
                replay_id=replay_id,
                counts=Counts.of(per_class),
                density_percent=density,
                traffic_status=status_for(density),  # type: ignore[arg-type]
                detections=detections,
                model=model,
                pipeline=PipelineInfo(
                    batch_id=batch_id,
                    kafka_partition=partition,
                    kafka_offset=offsets[partition],
                    inference_ms=round(25.0 + 10.0 * rng.random(), 3),
                    latency_ms=latency_ms,
                ),
                processed_at=event_time + timedelta(milliseconds=latency_ms),
            )
        )
        offsets[partition] += 1
        batch_of.append(batch_id)
        if dead_letter_every and index % dead_letter_every == dead_letter_every - 1:
            run.dead_letters.append(_dead_letter(len(run.dead_letters), camera, event_time, partition, offsets))
    run.windows = list(windows_of(run.results, window_seconds))
    run.progress = list(_progress(run, batch_of, rng))
    return run


def _poisson(rng: random.Random, mean: float) -> int:
    # Knuth's method is fine for the small means used here
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def _detections(rng: random.Random, per_class: dict[str, int]) -> Iterator[Detection]:
    width, height = FRAME_SIZE
    for name, count in per_class.items():
        box_w, box_h = BOX_SIZES[name]
        for _ in range(count):
            w, h = box_w * (0.7 + 0.6 * rng.random()), box_h * (0.7 + 0.6 * rng.random())
            x, y = rng.random() * (width - w), height * 0.3 + rng.random() * (height * 0.7 - h)
            yield Detection(
                cls=name,
                conf=round(0.35 + 0.6 * rng.random(), 3),
                box_xywh=(round(x, 1), round(y, 1), round(w, 1), round(h, 1)),
            )


def _density(per_class: dict[str, int]) -> float:
    # vehicle box area over a region of interest that is half the frame
    roi = FRAME_SIZE[0] * FRAME_SIZE[1] * 0.5
    area = sum(
        per_class[name] * BOX_SIZES[name][0] * BOX_SIZES[name][1] for name in ("motorbike", "car", "bus", "truck")
    )
    return round(min(100.0, 100.0 * area / roi), 3)


def _dead_letter(number: int, camera: str, when: datetime, partition: int, offsets: dict[int, int]) -> DeadLetter:
    stage = list(DEAD_LETTER_REASONS)[number % len(DEAD_LETTER_REASONS)]
    coords = KafkaCoordinates(topic=TOPIC, partition=partition, offset=offsets[partition])
    offsets[partition] += 1  # the bad record took an offset of its own
    raw = "{not json" if stage == "parse" else f'{{"schema_version": "0.9", "camera_id": "{camera}"}}'
    return DeadLetter(
        id=dead_letter_id(coords),
        stage=stage,  # type: ignore[arg-type]
        reason=DEAD_LETTER_REASONS[stage],
        raw=raw,
        kafka=coords,
        record_key=None if stage == "parse" else f"{camera}_bad{number:03d}",
        camera_id=None if stage == "parse" else camera,
        created_at=when + timedelta(milliseconds=250),
    )


def windows_of(results: Iterable[AnalysisResult], window_seconds: int = 60) -> Iterator[TrafficWindow]:
    """Per-camera tumbling windows over frames, as the streaming job computes them."""
    groups: dict[tuple[str, datetime], list[AnalysisResult]] = defaultdict(list)
    for result in results:
        epoch = int(result.event_time.timestamp())
        start = datetime.fromtimestamp(epoch - epoch % window_seconds, tz=UTC)
        groups[(result.camera_id, start)].append(result)
    for (camera, start), frames in sorted(groups.items()):
        counts = Counts()
        for frame in frames:
            counts = counts + frame.counts
        densities = [frame.density_percent for frame in frames]
        mean = round(sum(densities) / len(densities), 3)
        yield TrafficWindow(
            id=window_id(camera, start),
            camera_id=camera,
            window_start=start,
            window_end=start + timedelta(seconds=window_seconds),
            frames=len(frames),
            counts=counts,
            density_mean=mean,
            density_max=max(max(densities), mean),
            traffic_status=status_for(mean),  # type: ignore[arg-type]
            updated_at=max(frame.processed_at for frame in frames),
        )


def _progress(run: SampleRun, batch_of: list[int], rng: random.Random) -> Iterator[PipelineProgress]:
    by_batch: dict[int, list[AnalysisResult]] = defaultdict(list)
    for result, batch_id in zip(run.results, batch_of, strict=True):
        by_batch[batch_id].append(result)
    dead_by_batch: dict[int, int] = defaultdict(int)
    for letter in run.dead_letters:
        for batch_id, frames in by_batch.items():
            if frames[0].event_time <= letter.created_at <= frames[-1].processed_at:
                dead_by_batch[batch_id] += 1
                break
    for batch_id, frames in sorted(by_batch.items()):
        started = frames[0].event_time
        finished = max(frame.processed_at for frame in frames) + timedelta(milliseconds=rng.randint(50, 400))
        seconds = max((finished - started).total_seconds(), 0.001)
        latencies = sorted(frame.pipeline.latency_ms for frame in frames)
        dead = dead_by_batch[batch_id]
        yield PipelineProgress(
            id=f"stream:{batch_id}",
            query="stream",
            batch_id=batch_id,
            rows=len(frames) + dead,
            results=len(frames),
            dead_letters=dead,
            input_rows_per_s=round((len(frames) + dead) / seconds, 3),
            processed_rows_per_s=round(len(frames) / seconds * (0.95 + 0.1 * rng.random()), 3),
            durations_ms={"addBatch": round(seconds * 900, 3), "triggerExecution": round(seconds * 1000, 3)},
            latency=LatencyStats(
                p50_ms=latencies[len(latencies) // 2],
                p95_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))],
                max_ms=latencies[-1],
            ),
            started_at=started,
            finished_at=finished,
        )


def write_run(db: Database[dict[str, Any]], run: SampleRun, chunk: int = 1000) -> dict[str, int]:
    """Write every document of the run keyed by ``_id``: idempotent, like the pipeline's sinks.

    An empty collection is filled with bulk inserts; otherwise each document is
    upserted by ``_id`` (on FerretDB an upsert costs about ten inserts).
    """
    written: dict[str, int] = {}
    for name, models in run.collections().items():
        empty = db[name].find_one({}, projection={"_id": 1}) is None
        for begin in range(0, len(models), chunk):
            docs = [model.to_document() for model in models[begin : begin + chunk]]
            if empty:
                db[name].insert_many(docs, ordered=False)
            else:
                db[name].bulk_write([ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in docs], ordered=False)
        written[name] = len(models)
    return written
