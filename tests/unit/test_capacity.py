"""The capacity model: the line fit of the batch-cost benchmark and the arithmetic of ``ipsp capacity``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ipsp.capacity import GIB, Load, Measured, fit_line, heaviest_partition, measured_from, needs
from ipsp.cli import app


def test_fit_line_recovers_intercept_and_slope() -> None:
    xs = [1.0, 10.0, 100.0, 1.0, 10.0, 100.0]
    ys = [0.6 + 0.05 * x for x in xs]
    fixed, slope = fit_line(xs, ys)
    assert fixed == pytest.approx(0.6)
    assert slope == pytest.approx(0.05)


def test_fit_line_with_one_x_gives_the_mean() -> None:
    assert fit_line([5.0, 5.0], [1.0, 3.0]) == (2.0, 0.0)
    with pytest.raises(ValueError):
        fit_line([], [])


MEASURED = Measured(
    slot_s_per_frame=0.1,
    spark_fixed_s=0.4,
    driver_fixed_s=0.1,
    driver_s_per_window=0.0001,
    bytes_per_frame=200_000,
    frames_per_shard=500,
    shard_bytes=100_000_000,
    message_bytes=400,
    doc_bytes={"analysis_results": 1000, "traffic_windows": 2000, "serving_cameras": 500},
)


def test_needs_for_a_thousand_cameras() -> None:
    out = needs(MEASURED, Load(cameras=1000, fps=1.0, trigger_seconds=2.0, executor_cores=4))
    assert out.frames_per_s == 1000
    assert out.frames_per_batch == 2000
    # each camera's 2 s fall in one 60 s window, or two: 1000 x (1 + 2/60)
    assert out.windows_per_batch == pytest.approx(1000 * (1 + 2 / 60))
    assert out.driver_s_per_batch == pytest.approx(0.1 + 0.0001 * out.windows_per_batch)
    busy = 0.7 * 2.0 - 0.4 - out.driver_s_per_batch
    assert out.executor_cores == -(-2000 * 0.1 // busy)
    assert out.executors == -(-out.executor_cores // 4)
    assert out.batch_s <= 0.7 * 2.0 + 1e-9
    # a batch runs one single-thread task per partition: every core needs a partition of its own
    assert out.kafka_partitions == out.executor_cores
    assert out.object_store_gets_per_s == pytest.approx(1000 / 500)
    assert out.object_store_mb_s == pytest.approx(200)
    assert out.shard_cache_bytes_round_robin == 2 * 1000 * 100_000_000
    assert out.shard_cache_bytes_with_locality < out.shard_cache_bytes_round_robin
    assert out.mongo_writes_per_s["analysis_results"] == 1000
    assert out.serving_updates_per_s == pytest.approx((3 * 1000 + 2) / 2.0)
    assert out.max_offsets_per_trigger == 2000
    assert out.gpus == 0


def test_more_fixed_cost_needs_more_cores_and_too_much_needs_a_longer_trigger() -> None:
    load = Load(cameras=1000)
    base = needs(MEASURED, load).executor_cores
    slower = needs(Measured(**{**vars(MEASURED), "spark_fixed_s": 0.8}), load).executor_cores
    assert slower > base
    stuck = needs(Measured(**{**vars(MEASURED), "driver_s_per_window": 0.002}), load)
    assert stuck.executor_cores == 0 and stuck.executors == 0
    longer = needs(Measured(**{**vars(MEASURED), "driver_s_per_window": 0.002}), Load(cameras=1000, trigger_seconds=6))
    assert longer.executor_cores > 0


def test_gpus_from_a_measured_rate() -> None:
    out = needs(Measured(**{**vars(MEASURED), "gpu_frames_per_s": 350.0}), Load(cameras=1000, utilisation=0.7))
    assert out.gpus == 5  # 1000 / (350 x 0.7) = 4.08


@pytest.mark.parametrize(("cameras", "partitions"), [(20, 4), (200, 40), (200, 400), (60, 6)])
def test_heaviest_partition_is_the_median_busiest_of_random_spreads(cameras: int, partitions: int) -> None:
    import random
    import statistics

    rng = random.Random(7)
    busiest = []
    for _ in range(801):
        counts = [0] * partitions
        for _camera in range(cameras):
            counts[rng.randrange(partitions)] += 1
        busiest.append(max(counts))
    # the formula treats partitions as independent; drawn spreads agree within one camera
    assert abs(heaviest_partition(cameras, partitions) - statistics.median(busiest)) <= 1


def test_heaviest_partition_at_the_ends() -> None:
    assert heaviest_partition(20, 1) == 20 and heaviest_partition(0, 8) == 0
    assert heaviest_partition(3, 100_000) == 1  # three cameras on 100,000 partitions hardly ever share one
    assert heaviest_partition(1000, 16) > 1000 / 16  # the busiest holds more than the mean


def test_hashed_cameras_need_more_cores_than_an_even_spread() -> None:
    load = Load(cameras=1000, fps=1.0, trigger_seconds=10.0)
    out = needs(MEASURED, load)
    assert out.executor_cores > 0 and out.executor_cores_hashed > out.executor_cores
    # the busiest partition's cameras fit what a batch leaves one core, and one partition fewer would not
    camera_s = load.fps * load.trigger_seconds * MEASURED.slot_s_per_frame
    assert out.heaviest_partition_cameras * camera_s <= out.executor_busy_s_per_batch
    assert heaviest_partition(1000, out.executor_cores_hashed - 1) * camera_s > out.executor_busy_s_per_batch
    # when one camera's frames do not fit what a batch leaves a core, no partition count helps
    slow = needs(Measured(**{**vars(MEASURED), "slot_s_per_frame": 0.5}), Load(cameras=1000, trigger_seconds=2.0))
    assert slow.executor_cores > 0 and slow.executor_cores_hashed == 0


def write_results(folder: Path) -> None:
    (folder / "pipeline.json").write_text(json.dumps({"cpu_s_per_frame": {"pipeline": 0.11}}))
    (folder / "pack.json").write_text(json.dumps({"frames": 1000, "bytes": 200_000_000, "shards": 2}))
    cost = {
        "fixed_ms_by_part": {"batch": 600.0, "driver": 150.0},
        "driver_by_windows": {"fixed_ms": 100.0, "ms_per_window": 2.5},
        "sizes": {"kafka_message_bytes": 380, "mongo": {"analysis_results": {"documents": 9, "mean_bytes": 900}}},
    }
    (folder / "batch_cost.json").write_text(json.dumps(cost))


def test_measured_from_the_results_files(tmp_path: Path) -> None:
    write_results(tmp_path)
    m = measured_from(tmp_path)
    assert m.slot_s_per_frame == 0.11
    assert m.spark_fixed_s == pytest.approx(0.45)
    assert m.driver_fixed_s == pytest.approx(0.1)
    assert m.driver_s_per_window == pytest.approx(0.0025)
    assert m.bytes_per_frame == 200_000
    assert m.frames_per_shard == 500
    assert m.message_bytes == 380
    assert m.doc_bytes == {"analysis_results": 900.0}


def test_capacity_command_prints_the_needs(tmp_path: Path) -> None:
    write_results(tmp_path)
    result = CliRunner().invoke(app, ["capacity", "--cameras", "100", "--results", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["needs"]["frames_per_s"] == 100
    assert body["needs"]["executor_cores"] > 0
    text = CliRunner().invoke(app, ["capacity", "--cameras", "100", "--results", str(tmp_path)])
    assert "executor cores" in text.output and "Kafka partitions" in text.output
    assert f"{GIB}" not in text.output


def test_capacity_command_without_results_says_what_to_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["capacity", "--results", str(tmp_path)])
    assert result.exit_code != 0
