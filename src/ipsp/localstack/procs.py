"""Background processes with pid files: start detached, check, stop by process group.

A pid file records the pid, the process's start time (from /proc) and its
command line, so ``down`` never signals a process that merely reuses an old pid:
it stops exactly what ``up`` started and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

# Popen objects of children started by this interpreter, kept so they are reaped
# (no zombies, no "still running" warnings) when the same process stops them.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class PidRecord:
    """What a pid file holds."""

    pid: int
    start_ticks: int | None
    cmd: list[str]

    def to_json(self) -> str:
        """Serialise for the pid file."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> PidRecord:
        """Parse a pid file; raises ValueError on anything malformed."""
        data = json.loads(text)
        ticks = data.get("start_ticks")
        return cls(
            pid=int(data["pid"]),
            start_ticks=int(ticks) if ticks is not None else None,
            cmd=[str(c) for c in data.get("cmd", [])],
        )


def _proc_stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    return text[text.rfind(")") + 2 :].split()


def parse_start_ticks(stat_fields: Sequence[str]) -> int:
    """Process start time (clock ticks since boot) from /proc/<pid>/stat fields after the name."""
    return int(stat_fields[19])  # field 22 of the full line


def start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None without /proc."""
    fields = _proc_stat(pid)
    return parse_start_ticks(fields) if fields else None


def is_alive(record: PidRecord) -> bool:
    """True when the recorded process still runs (same pid *and* same start time)."""
    _reap(record.pid)
    try:
        os.kill(record.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists but belongs to someone else; the start-time check decides
    fields = _proc_stat(record.pid)
    if fields is None:
        return record.start_ticks is None  # no /proc: trust the pid
    if fields[0] == "Z":
        return False
    return record.start_ticks is None or parse_start_ticks(fields) == record.start_ticks


def read_pid_file(path: Path) -> PidRecord | None:
    """The record in ``path``, or None when absent or unreadable."""
    try:
        return PidRecord.from_json(path.read_text())
    except (OSError, ValueError, KeyError):
        return None


def running(path: Path) -> PidRecord | None:
    """The live process recorded in ``path``; a stale pid file is removed."""
    record = read_pid_file(path)
    if record is None:
        return None
    if is_alive(record):
        return record
    path.unlink(missing_ok=True)
    return None


def start(
    cmd: Sequence[str],
    log_file: Path,
    pid_file: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> PidRecord:
    """Start ``cmd`` detached in its own session (own process group), logging to ``log_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        log.write(f"\n=== {stamp} starting: {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,  # own process group: down signals the group, survives our exit
        )
    _CHILDREN[proc.pid] = proc
    record = PidRecord(pid=proc.pid, start_ticks=start_ticks(proc.pid), cmd=list(cmd))
    tmp = pid_file.with_suffix(".tmp")
    tmp.write_text(record.to_json())
    tmp.replace(pid_file)
    return record


def _reap(pid: int) -> None:
    proc = _CHILDREN.get(pid)
    if proc is not None and proc.poll() is not None:
        _CHILDREN.pop(pid, None)


def _signal(record: PidRecord, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        try:
            same_group = os.getpgid(record.pid) == record.pid
        except ProcessLookupError:
            return
        if same_group:
            os.killpg(record.pid, sig)
        else:
            os.kill(record.pid, sig)


def stop(pid_file: Path, timeout: float = 30.0) -> PidRecord | None:
    """Stop the process group recorded in ``pid_file`` (TERM, then KILL after ``timeout``).

    Returns the record of what was stopped, or None when nothing of ours ran.
    """
    record = running(pid_file)
    if record is None:
        return None
    _signal(record, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while is_alive(record) and time.monotonic() < deadline:
        time.sleep(0.2)
    if is_alive(record):
        _signal(record, signal.SIGKILL)
        while is_alive(record):
            time.sleep(0.1)
    pid_file.unlink(missing_ok=True)
    return record
