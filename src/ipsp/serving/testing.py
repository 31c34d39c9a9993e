"""Test support for the serving tests and the serving benchmark: seed a database, run the API.

Seeding lives here, in one place: :func:`seed_traffic_db` fills a database with
a run and describes what it holds (:class:`SeededRun`) by reading the database
back, never from how it was filled. Today it writes a synthetic, contract-valid
run (``ipsp.serving.synthetic``); swapping it for documents written by the real
pipeline changes this function only, not the tests.

:class:`ApiServer` runs the real ``ipsp serve`` command as a subprocess on a free
loopback port and waits for ``/healthz``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from ipsp.config import Settings
from ipsp.serving import queries
from ipsp.serving.synthetic import build_run, write_run


@dataclass(frozen=True)
class SeededRun:
    """What a seeded database holds, read back from it."""

    mongo_uri: str
    db_name: str
    cameras: list[str]
    frames: int
    start: datetime
    end: datetime


def seed_traffic_db(settings: Settings, db_name: str, frames: int = 1200, cameras: int = 6) -> SeededRun:
    """Replace database ``db_name`` with one run of ``frames`` frames over ``cameras`` cameras."""
    client = queries.connect(settings, timeout_ms=10_000, query_timeout_ms=300_000)
    try:
        client.drop_database(db_name)
        db = client[db_name]
        write_run(db, build_run(frames=frames, cameras=cameras, frames_per_second=1.0, batch_rows=128))
        queries.ensure_indexes(db)
        return describe(settings, db_name)
    finally:
        client.close()


def describe(settings: Settings, db_name: str) -> SeededRun:
    """Read back what database ``db_name`` holds: cameras, frame count, time extent."""
    from ipsp.serving.report import run_extent

    client = queries.connect(settings, timeout_ms=10_000, query_timeout_ms=300_000)
    try:
        db = client[db_name]
        per_camera = queries.count_frames_per_camera(db)
        extent = run_extent(db)
        if not per_camera or extent is None:
            raise RuntimeError(f"database {db_name} holds no run")
        return SeededRun(
            mongo_uri=settings.mongo_uri.get_secret_value(),
            db_name=db_name,
            cameras=sorted(per_camera),
            frames=sum(per_camera.values()),
            start=extent.start,
            end=extent.end,
        )
    finally:
        client.close()


def drop_database(settings: Settings, db_name: str) -> None:
    """Remove a test database."""
    client = queries.connect(settings, timeout_ms=10_000, query_timeout_ms=300_000)
    try:
        client.drop_database(db_name)
    finally:
        client.close()


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ApiServer:
    """``ipsp serve`` in a subprocess on a free loopback port, for as long as the ``with`` block lasts."""

    def __init__(self, mongo_uri: str, db_name: str, env: dict[str, str] | None = None, log: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._mongo_uri = mongo_uri
        self._db_name = db_name
        self._env = env or {}
        self._log = log
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ApiServer:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the server and wait until it answers ``/healthz`` (200 or 503: it is up either way)."""
        env = {**os.environ, "IPSP_MONGO_URI": self._mongo_uri, "IPSP_MONGO_DB": self._db_name, **self._env}
        output: Any = self._log.open("wb") if self._log else subprocess.DEVNULL
        command = [sys.executable, "-m", "ipsp.cli", "serve", "--port", str(self.port), "--log-level", "warning"]
        self._process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"ipsp serve exited with {self._process.returncode}")
            try:
                httpx.get(self.url + "/healthz", timeout=5.0)
                return
            except httpx.TransportError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"ipsp serve did not answer on {self.url} within {timeout_s:.0f}s")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s)."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)
