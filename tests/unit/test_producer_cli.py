"""``ipsp produce`` with bad input: one clear line, non-zero exit, nothing sent (no broker needed)."""

from __future__ import annotations

import socket
import sys

import pytest

from ipsp.cli import main
from support.producer_synthetic import synthetic_frames, write_manifest


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run ``ipsp produce ARGS`` in-process; return (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["ipsp", "produce", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def dataset(tmp_path):
    write_manifest(synthetic_frames(cameras=2, frames_per_camera=3), tmp_path / "ds" / "manifest.parquet")
    return tmp_path / "ds"


def assert_one_line_error(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--cameras", "cam_01,cam_07"], ["unknown camera(s) cam_07", "cam_01, cam_02"]),
        (["--rate", "10", "--as-fast-as-possible"], ["choose one of --rate, --as-fast-as-possible"]),
        (["--start-after", "1:cam_01_00000"], ["past the last loop"]),
        (["--start-after", "0:cam_09_00000"], ["not among the frames selected"]),
        (["--start-after", "x:y"], ["expected <loop>:<record_key>"]),
        (["--event-start", "2026-01-01 08:00"], ["no time zone"]),
        (["--compression", "brotli"], ["--compression 'brotli'"]),
        (["--topic", "bad topic!"], ["topic name 'bad topic!' is invalid"]),
        (["--replay-id", " spaced "], ["--replay-id"]),
    ],
)
def test_bad_flags(monkeypatch, capsys, dataset, args, fragments):
    # a dead bootstrap address proves each error comes before any connection attempt
    code, out, err = run_cli(
        monkeypatch, capsys, str(dataset), "--bootstrap", f"127.0.0.1:{free_port()}", "--connect-timeout", "1", *args
    )
    assert code == 2
    assert_one_line_error(err, *fragments)
    assert out == ""


def test_missing_manifest(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, str(tmp_path / "absent"))
    assert code == 2
    assert_one_line_error(err, "manifest not found", (tmp_path / "absent").as_uri())


def test_malformed_manifest(monkeypatch, capsys, tmp_path):
    bad = tmp_path / "manifest.parquet"
    bad.write_bytes(b"PAR1 not really")
    code, _, err = run_cli(monkeypatch, capsys, str(bad))
    assert code == 2
    assert_one_line_error(err, "is not a readable Parquet file")


def test_broker_down_at_start(monkeypatch, capsys, dataset):
    port = free_port()
    code, out, err = run_cli(
        monkeypatch, capsys, str(dataset), "--bootstrap", f"127.0.0.1:{port}", "--connect-timeout", "1", "-q"
    )
    assert code == 3
    assert_one_line_error(err, f"Kafka at 127.0.0.1:{port} does not answer", "nothing sent")
    assert out == ""


def test_help_lists_the_replay_flags(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "--help")
    assert code == 0
    for flag in ("--rate", "--per-camera-fps", "--speedup", "--as-fast-as-possible", "--loop", "--cameras",
                 "--limit", "--start-after", "--replay-id", "--event-start", "--quiet"):  # fmt: skip
        assert flag in out
