"""``ipsp capacity``: what N cameras at F frames/s need, from the benchmarks' measured figures."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ipsp.errors import UserError


def capacity(
    cameras: int = typer.Option(1000, "--cameras", min=1, help="Cameras to size for."),
    fps: float = typer.Option(1.0, "--fps", min=0.001, help="Frames per second per camera."),
    trigger_seconds: float = typer.Option(2.0, "--trigger-seconds", min=0.1, help="Micro-batch interval."),
    utilisation: float = typer.Option(0.7, "--utilisation", min=0.1, max=1.0, help="Batch time / interval."),
    executor_cores: int = typer.Option(4, "--executor-cores", min=1, help="Cores per Spark executor."),
    gpu_fps: float = typer.Option(0.0, "--gpu-fps", min=0.0, help="One GPU's measured frames/s (0: none)."),
    results: Path = typer.Option(Path("benchmarks/results"), "--results", help="Benchmark results folder."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of lines."),
) -> None:
    """Executor cores, Kafka partitions, shard cache, MongoDB and object-store rates for a camera count.

    Reads pipeline.json (CPU per frame), batch_cost.json (fixed cost per batch, driver
    time per window, document and message sizes) and pack.json (bytes per frame, shards);
    0_pipelines/capacity.md explains each figure.
    """
    from dataclasses import replace

    from ipsp.capacity import GIB, HASHED_SEARCH, Load, measured_from, needs

    try:
        measured = measured_from(results)
    except FileNotFoundError as exc:
        raise UserError(f"{exc.filename}: run the benchmarks (make bench-pipeline bench-batch) first") from None
    measured = replace(measured, gpu_frames_per_s=gpu_fps)
    load = Load(cameras=cameras, fps=fps, trigger_seconds=trigger_seconds, utilisation=utilisation,
                executor_cores=executor_cores)  # fmt: skip
    out = needs(measured, load)
    if as_json:
        typer.echo(json.dumps({"load": vars(load), "measured": vars(measured), "needs": out.as_dict()}, indent=2))
        return
    if out.executor_cores:
        hashed = (
            f"{out.executor_cores_hashed} with cameras hashed to a partition per core (the busiest holds "
            f"{out.heaviest_partition_cameras} of {cameras})"
            if out.executor_cores_hashed
            else f"none keeps up with cameras hashed to a partition per core (up to {HASHED_SEARCH * cameras})"
        )
        cores = f"{out.executor_cores} ({out.executors} executor(s) of {executor_cores}) spread evenly; {hashed}"
    else:
        cores = "none keeps up: the driver's per-batch work exceeds the interval; raise --trigger-seconds"
    lines = [
        f"{cameras} camera(s) x {fps:g} frame/s = {out.frames_per_s:g} frames/s; batches of {trigger_seconds:g} s "
        f"= {out.frames_per_batch:.0f} frames, {out.windows_per_batch:.0f} windows",
        f"executor cores        {cores}",
        f"GPUs                  {out.gpus if out.gpus else 'not measured (pass --gpu-fps)'}",
        f"driver per batch      {out.driver_s_per_batch:.2f} s of {trigger_seconds:g} s; batch {out.batch_s:.2f} s; "
        f"latency p95 about {out.latency_p95_s:.1f} s",
        f"maxOffsetsPerTrigger  at least {out.max_offsets_per_trigger}",
        f"Kafka partitions      {out.kafka_partitions} ({out.kafka_mb_s:.2f} MB/s in)",
        f"shard cache/executor  {out.shard_cache_bytes_with_locality / GIB:.1f} GiB with cameras pinned to "
        f"executors, {out.shard_cache_bytes_round_robin / GIB:.0f} GiB round-robin",
        f"object-store reads    {out.object_store_gets_per_s:.2f} shard GET/s ({out.object_store_mb_s:.0f} MB/s) "
        f"with locality; {out.object_store_gets_per_s_round_robin:.1f} GET/s round-robin",
        "MongoDB writes/s      "
        + ", ".join(f"{k} {v:.1f}" for k, v in out.mongo_writes_per_s.items())
        + f" ({sum(out.mongo_writes_per_s.values()):.0f} in all, {out.mongo_write_mb_s:.1f} MB/s)",
        f"serving updates/s     {out.serving_updates_per_s:.1f}",
    ]
    typer.echo("\n".join(lines))
