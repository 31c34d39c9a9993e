"""Packing throughput against ``tar`` of the same files, in one run on this machine.

1. synthesize the feed (11,508 frames over 20 cameras by default) under
   ``<IPSP_HOME>/bench/`` - reused when an identical feed is already there;
2. ``tar -cf`` the same frame files into one archive (the baseline: a plain
   sequential copy, no validation) - run first, so both read from a warm page cache;
3. ``pack`` them to a fresh ``file://`` dataset (Spark start-up included), then
   once more over the finished dataset (every shard verified and skipped).

Prints a table and writes ``benchmarks/results/pack.json`` with ``frames``,
``pack_mb_s``, ``tar_mb_s``, ``ratio`` (pack / tar) and where the pack's time
goes: Spark start-up, read + decode/validate (stage 1), LMDB write, upload
(stage 2). Task-side figures are sums over all tasks (CPU-seconds-like: with
N cores running, the wall time is about sum / N). ``make bench-pack`` runs it.
"""

from __future__ import annotations

import argparse
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
from ipsp.preprocessing.pack import PackOptions, pack
from ipsp.preprocessing.synth import META_NAME, SynthSpec, synthesize

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


def calibrate_decode(sample: list[Path]) -> float:
    """Milliseconds one process spends validating (fully decoding) a frame: the pack's main cost."""
    from ipsp.preprocessing.validate import check_image

    data = [p.read_bytes() for p in sample]
    started = time.perf_counter()
    for item in data:
        check_image(item)
    return (time.perf_counter() - started) * 1000 / max(1, len(data))


def main(argv: list[str] | None = None) -> None:
    """Synthesize (or reuse), tar, pack, re-pack; print and write the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=11_508)
    parser.add_argument("--cameras", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep", action="store_true", help="keep the packed dataset and the tar archive")
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

    decode_ms = calibrate_decode(files[:200])
    say(f"one process validates a frame in {decode_ms:.1f} ms (full decode), right now")
    load_at_start = os.getloadavg()[0]
    archive = bench / "pack-bench.tar"
    say("tar of the same files")
    tar_s = run_tar(feed, archive)

    target = bench / "pack-bench-dataset"
    shutil.rmtree(target, ignore_errors=True)
    say(f"pack -> {target.as_uri()}")
    options = PackOptions(progress=False)
    started = time.perf_counter()
    result = pack(str(feed), target.as_uri(), options, settings)
    pack_s = time.perf_counter() - started
    say(result.line())
    say("pack again over the finished dataset (verify and skip)")
    started = time.perf_counter()
    again = pack(str(feed), target.as_uri(), options, settings)
    rerun_s = time.perf_counter() - started
    if not args.keep:
        shutil.rmtree(target, ignore_errors=True)
        archive.unlink(missing_ok=True)

    t = result.timings
    after_start = pack_s - t["spark_start_s"]
    out: dict[str, Any] = {
        "frames": result.summary.packed,
        "bytes": total,
        "shards": len(result.summary.shards),
        "pack_s": round(pack_s, 2),
        "pack_mb_s": round(total / MB / pack_s, 1),
        "pack_frames_s": round(result.summary.packed / pack_s, 1),
        "pack_mb_s_after_spark_start": round(total / MB / after_start, 1),
        "tar_s": round(tar_s, 2),
        "tar_mb_s": round(total / MB / tar_s, 1),
        "ratio": round(tar_s / pack_s, 3),
        "rerun_verify_skip_s": round(rerun_s, 2),
        "rerun_skipped_shards": again.skipped,
        "rerun_decodes_skipped": int(again.timings.get("decodes_skipped", 0)),
        "validate_ms_per_frame_one_process": round(decode_ms, 2),
        "where_the_time_goes_s": {
            "spark_start": t["spark_start_s"],
            "list_inputs": t["list_s"],
            "stage1_validate_wall": t["inspect_s"],
            "stage1_tasks_read_sum": round(t["task_read_s"], 2),
            "stage1_tasks_decode_validate_sum": round(t["task_decode_validate_s"], 2),
            "plan_on_driver": t["plan_s"],
            "stage2_write_wall": t["write_s"],
            "stage2_tasks_read_and_check_sum": round(t["shard_read_s"] + t["shard_check_s"], 2),
            "stage2_tasks_lmdb_write_sum": round(t["shard_lmdb_s"], 2),
            "stage2_tasks_upload_sum": round(t["shard_upload_s"], 2),
            "finalize_manifest_and_reports": t["finalize_s"],
        },
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
    for column in ("", "seconds", "MB/s", "frames/s"):
        head.add_column(column, justify="right")
    head.add_row("tar -cf", f"{out['tar_s']:.1f}", f"{out['tar_mb_s']:.0f}", f"{out['frames'] / out['tar_s']:.0f}")
    head.add_row("ipsp pack", f"{out['pack_s']:.1f}", f"{out['pack_mb_s']:.0f}", f"{out['pack_frames_s']:.0f}")
    head.add_row("pack re-run (verify+skip)", f"{out['rerun_verify_skip_s']:.1f}", "", "")
    head.add_row("ratio (tar time / pack time)", f"{out['ratio']:.3f}", "", "")
    split = Table(title="where the pack's time goes (task rows: sums over tasks)")
    split.add_column("step")
    split.add_column("seconds", justify="right")
    for name, seconds in out["where_the_time_goes_s"].items():
        split.add_row(name, f"{seconds:.2f}")
    console = Console()
    console.print(head)
    console.print(split)


if __name__ == "__main__":
    main()
