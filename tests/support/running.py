"""``ipsp stream`` as a running subprocess: start it, wait on what it wrote, stop it as a user would.

Shared by the stream tests that break something mid-stream (``test_stream_faults``,
``test_stream_cluster``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from support.streamfeed import REPO, Feed, stream_args


@contextmanager
def running_stream(
    feed: Feed, log: Path, *extra: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``ipsp stream`` running continuously in small batches; SIGKILLed (whole group) if still up at the end.

    ``env`` replaces the feed's environment (the cluster test points it at the cluster).
    """
    args = [sys.executable, "-m", "ipsp.cli",
            *stream_args(feed, "--max-offsets-per-trigger", "6", "--trigger-seconds", "0", *extra)]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(args, cwd=REPO, env=env or feed.env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        try:
            yield proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=60)


def rows_done(db: Any) -> int:
    return sum(p["rows"] for p in db.pipeline_progress.find({}, {"rows": 1}))


def wait_for(
    what: str, done: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path, limit_s: float, poll_s: float = 0.5
) -> None:
    deadline = time.monotonic() + limit_s
    while not done():
        assert proc.poll() is None, f"the stream exited while waiting for {what}:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"{what}: not within {limit_s:.0f}s\n{log.read_text()[-4000:]}"
        time.sleep(poll_s)


def finish(feed: Feed, db: Any, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until every record is accounted for, then stop the job as a user would (SIGTERM)."""
    wait_for("every record processed", lambda: rows_done(db) >= feed.total, proc, log, 900)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0, log.read_text()[-4000:]


def process_tree(root: int) -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of ``root`` and all its descendants."""
    procs: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        procs[int(entry.name)] = (int(stat[stat.rindex(")") + 2 :].split()[1]), cmd)
    tree, frontier = {}, {root}
    while frontier:
        children = {pid for pid, (ppid, _) in procs.items() if ppid in frontier and pid not in tree}
        tree.update({pid: procs[pid] for pid in frontier if pid in procs})
        frontier = children
    return tree
