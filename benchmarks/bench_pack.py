"""Packing throughput against ``tar`` of the same files, in one run on this machine.

1. synthesize the feed (11,508 frames over 20 cameras by default) under
   ``<IPSP_HOME>/bench/`` - reused when an identical feed is already there;
2. read every frame file once, untimed, so ``tar`` and both packs start from the
   same warm page cache (the feed fits in memory; a cold-cache figure would need
   dropping the caches, which needs root and hits every other process);
3. ``tar -cf`` the same frame files into one archive on the same disk (the
   baseline: a plain sequential copy, no validation);
4. ``pack`` them to a fresh ``file://`` dataset (Spark start-up included), then
   once more over the finished dataset (the verified re-run: every input hashed
   against the manifest, every shard checked against ``pack.json``);
5. the same two runs to the local S3 server (``s3://<bucket>/bench-pack-*``),
   when the stack is up (``make bench-pack`` starts it).

Prints a table and writes ``benchmarks/results/pack.json`` with ``frames``,
``bytes``, ``pack_mb_s``, ``tar_mb_s``, ``ratio`` (tar time / pack time),
``rerun_s`` and where the pack's time goes (Spark start-up, read, validate,
write, upload), for each destination. Task-side figures are sums over tasks
and threads (with N cores busy, the wall time is about sum / N). Both packs
run in this one process: the second Spark start-up reuses the running JVM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ipsp.config import load_settings
from ipsp.preprocessing.pack.job import pack
from ipsp.preprocessing.pack.options import PackOptions
from ipsp.preprocessing.synth.feed import META_NAME, SynthSpec, synthesize

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "pack.json"
MB = 1e6


def say(text: str) -> None:
    """A timestamped progress line."""
    print(f"[bench-pack {datetime.now(UTC):%H:%M:%S}] {text}", flush=True)


def feed_files(folder: Path) -> list[Path]:
    """The frame files of a feed (its metadata file excluded)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name != META_NAME)


def run_tar(folder: Path, archive: Path) -> float:
    """Seconds to ``tar -cf`` the feed's frames into ``archive`` (a real file: GNU tar skips /dev/null)."""
    archive.unlink(missing_ok=True)
    started = time.perf_counter()
    subprocess.run(["tar", "-cf", str(archive), f"--exclude={META_NAME}", "-C", str(folder), "."], check=True)
    return time.perf_counter() - started


def warm_cache(files: list[Path]) -> float:
    """Read every file once (untimed for the figures): tar and pack then both read from memory."""
    started = time.perf_counter()
    for path in files:
        with path.open("rb") as fh:
            while fh.read(1 << 20):
                pass
    return time.perf_counter() - started


def calibrate_decode(sample: list[Path]) -> dict[str, float]:
    """Milliseconds one process spends per frame: the packer's check, and a full-resolution decode."""
    import io

    from PIL import Image

    from ipsp.preprocessing.validate import check_image

    data = [p.read_bytes() for p in sample]
    started = time.perf_counter()
    for item in data:
        check_image(item)
    check_ms = (time.perf_counter() - started) * 1000 / max(1, len(data))
    started = time.perf_counter()
    for item in data:
        Image.open(io.BytesIO(item)).load()
    full_ms = (time.perf_counter() - started) * 1000 / max(1, len(data))
    return {"check_ms": round(check_ms, 2), "full_decode_ms": round(full_ms, 2)}


def pack_twice(feed: Path, target: str, settings: Any, total: int) -> dict[str, Any]:
    """Pack ``feed`` to ``target``, then run the verified re-run; figures and time split."""
    options = PackOptions(progress=False)
    say(f"pack -> {target}")
    cpu_before = cpu_counters()[1]
    started = time.perf_counter()
    result = pack(str(feed), target, options, settings)
    pack_s = time.perf_counter() - started
    pack_cpu_s = cpu_counters()[1] - cpu_before
    say(result.line())
    say("pack again over the finished dataset (verified re-run)")
    started = time.perf_counter()
    again = pack(str(feed), target, options, settings)
    rerun_s = time.perf_counter() - started
    say(again.line())
    t, r = result.timings, again.timings
    return {
        "target": target.split("/bench/")[0].split("://")[0] + "://",
        "frames": result.summary.packed,
        "shards": len(result.summary.shards),
        "pack_s": round(pack_s, 2),
        "pack_mb_s": round(total / MB / pack_s, 1),
        "pack_mb_s_after_spark_start": round(total / MB / (pack_s - t["spark_start_s"]), 1),
        # CPU seconds of the driver and the Spark JVM (process tree) plus those the Python
        # tasks measured themselves (their workers end with the session, out of sight):
        # what the pack costs whatever else runs; on an idle machine wall >= this / cores
        "pack_cpu_s": round(pack_cpu_s + t["task_cpu_s"] + t["shard_cpu_s"], 1),
        "pack_cpu_s_python_tasks": {"stage1": round(t["task_cpu_s"], 1), "stage2": round(t["shard_cpu_s"], 1)},
        "rerun_s": round(rerun_s, 2),
        "rerun_over_pack": round(rerun_s / pack_s, 3),
        "rerun_written_skipped": [again.written, again.skipped],
        "rerun_decodes_skipped": int(r.get("decodes_skipped", 0)),
        "rerun_started_spark": r.get("spark_start_s", 0.0) > 0,
        "time_split_s": {
            "spark_start": t["spark_start_s"],
            "list_inputs": t["list_s"],
            "stage1_read_validate_wall": t["inspect_s"],
            "stage1_read_and_hash_sum": round(t["task_read_s"], 2),
            "stage1_validate_decode_sum": round(t["task_decode_validate_s"], 2),
            "plan_on_driver": t["plan_s"],
            "stage2_write_upload_wall": t["write_s"],
            "stage2_read_and_hash_sum": round(t["shard_read_s"] + t["shard_check_s"], 2),
            "stage2_lmdb_write_sum": round(t["shard_lmdb_s"], 2),
            "stage2_upload_sum": round(t["shard_upload_s"], 2),
            "finalize_manifest_and_reports": t["finalize_s"],
        },
        "rerun_time_split_s": {k: r[k] for k in ("list_s", "inspect_s", "plan_s", "verify_in_place_s", "write_s")},
    }


def s3_target(settings: Any) -> str | None:
    """A fresh prefix on the local S3 server, or None when it does not answer."""
    from ipsp.localstack import stack

    status = stack.status(settings)
    if not status.s3_up:
        return None
    return f"s3://ipsp/bench-pack-{int(time.time())}"


def remove_s3(target: str, settings: Any) -> None:
    """Delete everything the S3 run wrote."""
    from ipsp.storage import open_store

    store = open_store(target, settings)
    for info in list(store.list()):
        store.delete(info.key)


def main(argv: list[str] | None = None) -> None:
    """Synthesize (or reuse), warm, tar, pack to file:// and S3 with re-runs; print and write the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=11_508, help="frames in the synthetic feed")
    parser.add_argument("--cameras", type=int, default=20, help="cameras in the synthetic feed")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the results JSON")
    parser.add_argument("--keep", action="store_true", help="keep the packed datasets and the tar archive")
    parser.add_argument("--no-s3", action="store_true", help="skip the run to the local S3 server")
    args = parser.parse_args(argv)

    settings = load_settings()
    bench = Path(settings.home) / "bench"
    feed = bench / f"bench-synth-{args.frames}f-{args.cameras}c"
    say(f"synthesizing {args.frames} frames over {args.cameras} cameras -> {feed}")
    started = time.perf_counter()
    report = synthesize(feed, SynthSpec(frames=args.frames, cameras=args.cameras), progress=True)
    synth_s = time.perf_counter() - started
    files = feed_files(feed)
    total = sum(p.stat().st_size for p in files)
    say(f"feed: {len(files)} files, {total / MB:.0f} MB ({'reused' if report.reused else f'{synth_s:.0f} s'})")

    decode = calibrate_decode(files[:200])
    say(f"one process checks a frame in {decode['check_ms']:.1f} ms (full decode {decode['full_decode_ms']:.1f} ms)")
    load_at_start = os.getloadavg()[0]
    cpu_before = cpu_counters()
    measured_from = time.perf_counter()
    warm_s = warm_cache(files)
    say(f"page cache warmed (untimed read of every frame: {warm_s:.1f} s)")
    archive = bench / "pack-bench.tar"
    say("tar of the same files")
    tar_cpu_before = cpu_counters()[1]
    tar_s = run_tar(feed, archive)
    tar_cpu_s = cpu_counters()[1] - tar_cpu_before

    target = bench / "pack-bench-dataset"
    shutil.rmtree(target, ignore_errors=True)
    local = pack_twice(feed, target.as_uri(), settings, total)
    share_file = other_cpu_share(cpu_before, time.perf_counter() - measured_from)
    s3: dict[str, Any] | None = None
    s3_uri = None if args.no_s3 else s3_target(settings)
    if s3_uri is not None:
        s3 = pack_twice(feed, s3_uri, settings, total)
    elif not args.no_s3:
        say("the local S3 server does not answer: no S3 figures (`ipsp stack up` first)")
    if not args.keep:
        shutil.rmtree(target, ignore_errors=True)
        archive.unlink(missing_ok=True)
        if s3_uri is not None:
            remove_s3(s3_uri, settings)

    tar_mb_s = total / MB / tar_s
    out: dict[str, Any] = {
        "frames": local["frames"],
        "bytes": total,
        "shards": local["shards"],
        "cache_state": "warm: every frame read once, untimed, before tar and the packs",
        "tar_s": round(tar_s, 2),
        "tar_mb_s": round(tar_mb_s, 1),
        "tar_cpu_s": round(tar_cpu_s, 1),
        "pack_s": local["pack_s"],
        "pack_mb_s": local["pack_mb_s"],
        "ratio": round(local["pack_mb_s"] / tar_mb_s, 3),
        "rerun_s": local["rerun_s"],
        "s3_pack_mb_s": s3["pack_mb_s"] if s3 else None,
        "s3_ratio": round(s3["pack_mb_s"] / tar_mb_s, 3) if s3 else None,
        "s3_rerun_s": s3["rerun_s"] if s3 else None,
        "goal": {"ratio_file": 0.33, "ratio_s3": 0.25, "rerun_over_pack": 0.10},
        "file": local,
        "s3": s3,
        "validate_ms_per_frame_one_process": decode,
        "synth": {
            "reused": report.reused,
            "seconds": round(synth_s, 1) if not report.reused else report.seconds,
            "workers": report.workers,
            "sources": report.sources,
        },
        "machine": {
            "cores": os.cpu_count(),
            # other work on the machine slows every figure here: the load says how much
            "load_average_1m_at_start": round(load_at_start, 2),
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
            # measured while tar and the packs ran; children that ended are not counted as ours
            "other_processes_cpu_share_tar_and_file_pack": share_file,
            "other_processes_cpu_share_whole_run": other_cpu_share(cpu_before, time.perf_counter() - measured_from),
            "spark_master": settings.spark_master,
            "python": platform.python_version(),
            "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    }
    print_table(out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    say(f"wrote {args.out}")


def print_table(out: dict[str, Any]) -> None:
    """The headline figures and the time split as two small tables."""
    from rich.console import Console
    from rich.table import Table

    head = Table(title=f"pack vs tar: {out['frames']} frames, {out['bytes'] / MB:.0f} MB, {out['shards']} shards")
    for column in ("", "seconds", "MB/s", "ratio to tar"):
        head.add_column(column, justify="right")
    head.add_row("tar -cf", f"{out['tar_s']:.1f}", f"{out['tar_mb_s']:.0f}", "1")
    split = Table(title="where the pack's time goes (sum rows: over tasks and threads)")
    split.add_column("step")
    for name in ("file", "s3"):
        run = out[name]
        if run is None:
            continue
        ratio = run["pack_mb_s"] / out["tar_mb_s"]
        head.add_row(f"ipsp pack -> {run['target']}", f"{run['pack_s']:.1f}", f"{run['pack_mb_s']:.0f}", f"{ratio:.3f}")
        head.add_row(f"  verified re-run ({run['rerun_over_pack']:.1%} of the pack)", f"{run['rerun_s']:.1f}", "", "")
        split.add_column(run["target"], justify="right")
    for step in out["file"]["time_split_s"]:
        split.add_row(step, *(f"{out[n]['time_split_s'][step]:.2f}" for n in ("file", "s3") if out[n]))
    console = Console()
    console.print(head)
    console.print(split)


def cpu_counters() -> tuple[float, float]:
    """(seconds the whole machine was busy, seconds this process and its children used), so far.

    Spark's JVM and its Python workers are children of this process, so the
    difference of two readings is what *other* processes took meanwhile.
    """
    import psutil

    times = psutil.cpu_times()
    busy = sum(times) - times.idle - getattr(times, "iowait", 0.0)
    own = psutil.Process()
    # user, system, and those of children already reaped (tar; Spark's ended Python workers, reaped by the JVM)
    mine = sum(own.cpu_times()[:4])
    for child in own.children(recursive=True):
        with contextlib.suppress(psutil.Error):  # a worker that ended meanwhile
            mine += sum(child.cpu_times()[:4])
    return busy, mine


def other_cpu_share(before: tuple[float, float], wall_s: float) -> float:
    """Share of the machine's CPU capacity that other processes used since ``before``."""
    busy, mine = cpu_counters()
    others = (busy - before[0]) - (mine - before[1])
    return round(max(0.0, others) / max(1e-9, wall_s * (os.cpu_count() or 1)), 2)


if __name__ == "__main__":
    main()
