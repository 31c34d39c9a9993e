"""The stream job of several checkouts side by side: same packed feed, same CPUs, alternating rounds.

A change that must not cost throughput (a redesign, a new task split) is measured
against the commit before it, in the same run:

    git worktree add ../ipsp-before <commit>
    python benchmarks/bench_checkouts.py --checkout before=../ipsp-before --checkout now=.

Every run produces the feed into a fresh topic with that checkout's own
producer and drains it with that checkout's ``ipsp stream --available-now`` into
a fresh database: the checkout's ``src`` on ``PYTHONPATH``, this venv, and this
checkout's local stack and home (``make up`` first). Frames/s come from the
run's ``pipeline_progress`` documents (the first batch's start to the last
batch's end, as ``bench-pipeline`` reads them); CPU-seconds per frame and the
neighbours' share from ``bench_pipeline.CpuMeter`` over the stream process
tree. Rounds alternate the order of the checkouts. Results (labels and commits,
no paths) go to ``benchmarks/results/checkouts.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench_pipeline import EVENT_START, REPO, CpuMeter, machine, pin_cpus, prepare_dataset

from ipsp.config import Settings, load_settings

RESULTS = REPO / "benchmarks" / "results" / "checkouts.json"


def say(text: str) -> None:
    print(f"[bench-checkouts {datetime.now(UTC):%H:%M:%S}] {text}", flush=True)


def commit_of(folder: Path) -> str:
    out = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def one_run(settings: Settings, uri: str, label: str, folder: Path, number: int) -> dict[str, Any]:
    """Produce and drain the feed with one checkout's code; its figures."""
    from ipsp.mongo import connect

    tag = f"bench-co-{label}-{number}-{uuid.uuid4().hex[:6]}"
    db_name = tag.replace("-", "_")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPSP_")}
    env.update(PYTHONPATH=str(folder / "src"), IPSP_HOME=str(settings.home), IPSP_MONGO_DB=db_name)
    env.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")

    def ipsp(*args: str) -> None:
        proc = subprocess.run([sys.executable, "-m", "ipsp.cli", *args], cwd=folder, env=env, capture_output=True,
                              text=True)  # fmt: skip
        if proc.returncode != 0:
            sys.exit(f"{label}: ipsp {args[0]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")

    ipsp("produce", uri, "--topic", tag, "--as-fast-as-possible", "--event-start", EVENT_START, "--quiet")
    checkpoint = Path(settings.home) / "bench" / "checkpoints" / tag
    cpu = metered_stream(settings, folder, env, label, "--topic", tag, "--available-now", "--no-ui",
                         "--checkpoint", str(checkpoint))  # fmt: skip
    client = connect(settings.mongo_uri.get_secret_value())
    progress = sorted(client[db_name]["pipeline_progress"].find({}), key=lambda p: p["batch_id"])
    client.drop_database(db_name)
    client.close()
    rows = sum(p["rows"] for p in progress)
    seconds = (progress[-1]["finished_at"] - progress[0]["started_at"]).total_seconds()
    return {
        "checkout": label,
        "rows": rows,
        "batches": len(progress),
        "fps": round(rows / max(seconds, 1e-3), 3),
        "cpu_s_per_frame": round(cpu["cpu_s"]["pipeline (driver, JVM, Python workers)"] / max(rows, 1), 4),
        "neighbours_share": cpu["neighbours_share"],
    }


def metered_stream(settings: Settings, folder: Path, env: dict[str, str], label: str, *args: str) -> dict[str, Any]:
    """Run ``ipsp stream`` and meter its CPU, sampling the process tree while it runs.

    Its JVM does not reap every Python worker, so their time never reaches this
    process's children's total: the meter's samples keep it.
    """
    from ipsp.localstack import stack

    meter = CpuMeter(stack.pids(settings))
    with tempfile.TemporaryFile("w+") as log:  # a file, not a pipe: a long log never blocks the job
        proc = subprocess.Popen([sys.executable, "-m", "ipsp.cli", "stream", *args], cwd=folder, env=env,
                                stdout=log, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        while proc.poll() is None:
            meter.sample()
            time.sleep(0.5)
        if proc.returncode != 0:
            log.seek(0)
            sys.exit(f"{label}: ipsp stream failed:\n{log.read()[-4000:]}")
    return meter.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", action="append", required=True, metavar="LABEL=FOLDER",
                        help="a checkout to run (repeat; the first is the reference of the ratios)")  # fmt: skip
    parser.add_argument("--frames", type=int, default=400, help="frames in the synthetic feed (default 400)")
    parser.add_argument("--cameras", type=int, default=20, help="cameras in the synthetic feed (default 20)")
    parser.add_argument("--runs", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--cpus", default="0-1", help="CPU set every run is pinned to (default 0-1)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file")
    args = parser.parse_args(argv)
    checkouts: dict[str, Path] = {}
    for item in args.checkout:
        label, _, folder = item.partition("=")
        path = Path(folder).expanduser().resolve()
        if not label or not (path / "src" / "ipsp").is_dir():
            parser.error(f"--checkout {item!r}: use LABEL=FOLDER, a checkout with src/ipsp")
        checkouts[label] = path

    from ipsp.localstack import stack

    settings = load_settings()
    if not stack.status(settings).all_up:
        sys.exit("the local stack is not up: run `make up` (or `ipsp stack up`) first")
    cpus = pin_cpus(args.cpus)
    load_before = os.getloadavg()
    uri = prepare_dataset(settings, args.frames, args.cameras)
    runs = []
    for number in range(args.runs):
        order = list(checkouts) if number % 2 == 0 else list(checkouts)[::-1]
        for label in order:
            say(f"round {number + 1}: {label}")
            runs.append(one_run(settings, uri, label, checkouts[label], number))
            say(json.dumps(runs[-1]))
    first = next(iter(checkouts))

    def median(label: str, key: str) -> float:
        return round(statistics.median(r[key] for r in runs if r["checkout"] == label), 4)

    result = {
        "benchmark": "checkouts",
        "checkouts": {
            label: {
                "commit": commit_of(folder),
                "fps": median(label, "fps"),
                "fps_runs": [r["fps"] for r in runs if r["checkout"] == label],
                "ratio_to_" + first: round(median(label, "fps") / max(median(first, "fps"), 1e-9), 3),
                "cpu_s_per_frame": median(label, "cpu_s_per_frame"),
            }
            for label, folder in checkouts.items()
        },
        "neighbours_share_max": max(r["neighbours_share"] for r in runs),
        "runs": runs,
        "arguments": {k: str(v) for k, v in vars(args).items() if k not in ("out", "checkout")},
        "machine": machine(cpus, settings, load_before),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["checkouts"], indent=2))


if __name__ == "__main__":
    main()
