"""Capacity model: what N cameras at F frames/s need, from the figures the benchmarks measured.

Pure arithmetic over :class:`Measured` (read from ``benchmarks/results/*.json`` by
:func:`measured_from`) and a :class:`Load`; ``ipsp capacity`` prints it and
``0_pipelines/capacity.md`` explains every line. The model of one micro-batch
(``trigger_seconds`` T of input, R = N x F frames/s, B = R x T frames) is the one
``bench_batch_cost.py`` fits:

    batch time = spark_fixed + driver(windows) + B x slot_s_per_frame / cores

where ``spark_fixed`` is what a batch pays regardless of its size outside the
driver's own writes (scheduling, task start, commit), and ``driver(windows)`` =
``driver_fixed + ms_per_window x windows``: the driver folds and writes every
window a batch touches, one after the other, while the executors wait. The
stream keeps up when the batch time stays below ``utilisation`` x T.

That holds when the frames spread evenly over the cores. On a cluster they do
not: a batch runs one single-thread task per Kafka partition, and Kafka puts a
camera on a partition by its key's hash, so the busiest partition holds more
cameras than the mean and its task ends the batch. :func:`heaviest_partition`
says how many, and the ``hashed`` figures size for it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

GIB = 1 << 30


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``y = intercept + slope x``; returns ``(intercept, slope)``.

    With one distinct ``x`` the slope is 0 and the intercept the mean of ``ys``.
    """
    if len(xs) != len(ys) or not xs:
        raise ValueError("fit_line needs as many ys as xs, at least one")
    n = len(xs)
    mx = sum(xs) / n
    my = sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return my, 0.0
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return my - slope * mx, slope


@dataclass(frozen=True)
class Measured:
    """Figures measured on the local stack (the benchmarks' results files)."""

    slot_s_per_frame: float  # seconds of one task slot (one core) per frame, inference included
    spark_fixed_s: float  # per batch, regardless of size, besides the driver's window and serving work
    driver_fixed_s: float  # the driver's window fold, progress and serving writes of an empty-ish batch
    driver_s_per_window: float  # the same, per window document a batch writes
    bytes_per_frame: float  # a frame in the shards
    frames_per_shard: float  # frames in one shard (shards are per camera)
    shard_bytes: float  # one shard file
    message_bytes: float  # one Kafka event
    doc_bytes: dict[str, float]  # mean BSON bytes per collection
    gpu_frames_per_s: float = 0.0  # one GPU's detector frames/s; 0: not measured


@dataclass(frozen=True)
class Load:
    """The load to size for and the operating point."""

    cameras: int
    fps: float = 1.0  # frames per second per camera
    trigger_seconds: float = 2.0
    window_seconds: int = 60
    utilisation: float = 0.7  # batch time / trigger interval to plan for (headroom for bursts, replays)
    executor_cores: int = 4
    partition_mb_s: float = 5.0  # what one Kafka partition is planned to carry (MB/s)


@dataclass(frozen=True)
class Needs:
    """What the load needs; every figure per second unless named otherwise."""

    frames_per_s: float
    frames_per_batch: float
    windows_per_batch: float
    driver_s_per_batch: float
    executor_busy_s_per_batch: float  # time a batch leaves the executors for frames
    executor_cores: int  # 0: no core count keeps up at this trigger (the driver alone takes too long)
    executors: int
    # the same with cameras hashed to partitions, a partition per core: the busiest partition ends each batch
    executor_cores_hashed: int  # 0: none up to HASHED_SEARCH x the cameras keeps up
    heaviest_partition_cameras: int  # on the busiest of the executor_cores_hashed (else executor_cores) partitions
    gpus: int  # 0 where no GPU figure was measured
    batch_s: float  # batch time with that many cores
    latency_p95_s: float  # about: a frame waits up to one trigger, then its batch
    kafka_partitions: int
    kafka_mb_s: float
    shard_cache_bytes_with_locality: float  # per executor, cameras pinned to executors
    shard_cache_bytes_round_robin: float  # per executor, every executor reading every camera
    object_store_gets_per_s: float  # whole-shard downloads, with camera locality
    object_store_mb_s: float
    object_store_gets_per_s_round_robin: float
    mongo_writes_per_s: dict[str, float]
    mongo_write_mb_s: float
    serving_updates_per_s: float
    max_offsets_per_trigger: int

    def as_dict(self) -> dict[str, Any]:
        """Plain values, rounded for printing."""
        return {k: _round(v) for k, v in asdict(self).items()}


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    return value


#: serving documents a batch rewrites per camera it touches (camera-hour, camera-day, camera)
SERVING_PER_CAMERA = 3
#: serving documents a batch rewrites regardless (pipeline-hour, state)
SERVING_PER_BATCH = 2


def heaviest_partition(cameras: int, partitions: int) -> int:
    """Cameras on the busiest of ``partitions`` when each camera's key hashes to one of them.

    Kafka's key hash spreads cameras like independent uniform draws: a partition
    holds Binomial(cameras, 1/partitions) of them. Returns the median of the
    busiest partition's count: the smallest k with P(every partition <= k) >= 1/2.
    """
    if partitions <= 1 or cameras <= 0:
        return max(cameras, 0)
    p = 1 / partitions
    log_p, log_q = math.log(p), math.log1p(-p)
    below = 0.0  # P(one partition holds <= k cameras)
    for k in range(cameras + 1):
        log_pmf = math.lgamma(cameras + 1) - math.lgamma(k + 1) - math.lgamma(cameras - k + 1)
        below += math.exp(log_pmf + k * log_p + (cameras - k) * log_q)
        if below > 0 and partitions * math.log(min(below, 1.0)) >= math.log(0.5):
            return k
    return cameras


#: how far past the even-spread core count the hashed search goes, in cameras
HASHED_SEARCH = 20


def hashed_cores(cameras: int, camera_s: float, busy_s: float, start: int) -> int:
    """The fewest partitions (a core each) from ``start`` up whose busiest one's cameras fit ``busy_s``.

    ``camera_s`` is one camera's share of a batch on one core. The busiest count
    falls as partitions are added, so a bisection finds the edge; 0 where even
    ``HASHED_SEARCH`` x the cameras do not fit.
    """

    def fits(partitions: int) -> bool:
        return heaviest_partition(cameras, partitions) * camera_s <= busy_s

    low, high = start, HASHED_SEARCH * cameras
    if busy_s <= 0 or start <= 0 or low > high or not fits(high):
        return 0
    while low < high:
        middle = (low + high) // 2
        if fits(middle):
            high = middle
        else:
            low = middle + 1
    return low


def needs(m: Measured, load: Load) -> Needs:
    """What ``load`` needs according to ``m``."""
    rate = load.cameras * load.fps
    trigger = load.trigger_seconds
    batch = rate * trigger
    cameras_per_batch = min(float(load.cameras), batch)
    # a camera's frames of one trigger interval fall in one window, or two when they cross its end
    windows = cameras_per_batch * (1 + min(trigger, load.window_seconds) / load.window_seconds)
    driver = m.driver_fixed_s + m.driver_s_per_window * windows
    busy = load.utilisation * trigger - m.spark_fixed_s - driver
    cores = math.ceil(batch * m.slot_s_per_frame / busy) if busy > 0 else 0
    executors = math.ceil(cores / load.executor_cores) if cores else 0
    # one camera's frames of a batch take this long on one core; a partition's task runs them one after another
    hashed = hashed_cores(load.cameras, load.fps * trigger * m.slot_s_per_frame, busy, cores)
    gpus = math.ceil(rate / (m.gpu_frames_per_s * load.utilisation)) if m.gpu_frames_per_s > 0 else 0
    batch_s = m.spark_fixed_s + driver + (batch * m.slot_s_per_frame / cores if cores else math.inf)
    kafka_mb_s = rate * m.message_bytes / 1e6
    # a batch runs one single-thread task per Kafka partition: a core without a partition idles
    partitions = max(cores, math.ceil(kafka_mb_s / load.partition_mb_s), 1)
    # a camera's current shard and the next one stay cached; shards are per camera
    per_executor_cameras = math.ceil(load.cameras / max(executors, 1))
    shard_gets = rate / m.frames_per_shard
    writes = {
        "analysis_results": rate,
        "traffic_windows": windows / trigger,
        # windows closed by the watermark or the idle timeout, marked one by one
        "traffic_windows_closed": load.cameras * load.fps / max(load.fps * load.window_seconds, 1),
        "pipeline_progress": 1 / trigger,
        "serving": (SERVING_PER_CAMERA * cameras_per_batch + SERVING_PER_BATCH) / trigger,
    }
    write_bytes = (
        rate * m.doc_bytes.get("analysis_results", 0.0)
        + windows / trigger * m.doc_bytes.get("traffic_windows", 0.0)
        + cameras_per_batch / trigger * sum(m.doc_bytes.get(c, 0.0) for c in SERVING_DOCS)
        + 1 / trigger * m.doc_bytes.get("pipeline_progress", 0.0)
    )
    return Needs(
        frames_per_s=rate,
        frames_per_batch=batch,
        windows_per_batch=windows,
        driver_s_per_batch=driver,
        executor_busy_s_per_batch=max(busy, 0.0),
        executor_cores=cores,
        executors=executors,
        executor_cores_hashed=hashed,
        heaviest_partition_cameras=heaviest_partition(load.cameras, hashed or partitions),
        gpus=gpus,
        batch_s=batch_s,
        latency_p95_s=trigger + batch_s,
        kafka_partitions=partitions,
        kafka_mb_s=kafka_mb_s,
        shard_cache_bytes_with_locality=2 * per_executor_cameras * m.shard_bytes,
        shard_cache_bytes_round_robin=2 * load.cameras * m.shard_bytes,
        object_store_gets_per_s=shard_gets,
        object_store_mb_s=rate * m.bytes_per_frame / 1e6,
        object_store_gets_per_s_round_robin=shard_gets * max(executors, 1),
        mongo_writes_per_s=writes,
        mongo_write_mb_s=write_bytes / 1e6,
        serving_updates_per_s=writes["serving"],
        max_offsets_per_trigger=math.ceil(batch),
    )


#: the serving collections rewritten per camera a batch touches
SERVING_DOCS = ("serving_camera_hours", "serving_camera_days", "serving_cameras")


def measured_from(results: Path) -> Measured:
    """The figures of ``pipeline.json``, ``batch_cost.json`` and ``pack.json`` in the results folder."""
    pipeline = json.loads((results / "pipeline.json").read_text())
    cost = json.loads((results / "batch_cost.json").read_text())
    pack = json.loads((results / "pack.json").read_text())
    parts = cost["fixed_ms_by_part"]
    driver = cost["driver_by_windows"]
    # the driver's share of the fixed cost is modelled per window; the rest is Spark's
    spark_fixed_ms = parts["batch"] - parts["driver"]
    shards = max(int(pack["shards"]), 1)
    sizes = cost.get("sizes", {})
    return Measured(
        # CPU-seconds of the whole pipeline per frame at full speed: what one core does per frame
        slot_s_per_frame=float(pipeline["cpu_s_per_frame"]["pipeline"]),
        spark_fixed_s=spark_fixed_ms / 1000,
        driver_fixed_s=max(driver["fixed_ms"], 0.0) / 1000,
        driver_s_per_window=max(driver["ms_per_window"], 0.0) / 1000,
        bytes_per_frame=pack["bytes"] / pack["frames"],
        frames_per_shard=pack["frames"] / shards,
        shard_bytes=pack["bytes"] / shards,
        message_bytes=float(sizes.get("kafka_message_bytes") or 0.0),
        doc_bytes={k: float(v["mean_bytes"]) for k, v in sizes.get("mongo", {}).items()},
    )
