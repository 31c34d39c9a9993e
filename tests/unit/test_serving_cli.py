"""`ipsp serve` and `ipsp report` as commands: help, one-line errors before any service is touched."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest


def ipsp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ipsp.cli", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("command", ["serve", "report"])
def test_help(command: str) -> None:
    done = ipsp(command, "--help")
    assert done.returncode == 0 and "IPSP_MONGO_URI" in done.stdout


def test_serve_on_a_taken_port_is_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        done = ipsp("serve", "--port", str(busy.getsockname()[1]))
    assert done.returncode == 2
    assert "cannot listen on 127.0.0.1" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--from", "2026-01-05T08:00:00Z", "--to", "2026-01-05T07:00:00Z"), "inverted"),
        (("--bucket", "often"), "not a duration"),
        (("--camera", "bad id"), "not a valid camera id"),
    ],
)
def test_report_bad_flags_fail_before_connecting(args: tuple[str, ...], fragment: str, tmp_path) -> None:
    done = ipsp("report", "--out", str(tmp_path), *args)
    assert done.returncode == 2 and fragment in done.stderr and "Traceback" not in done.stderr
