"""Dashboard panels at 100,000 and 1,000,000 frames of history: do they cost the same?

For each history size (one run, same machine):

1. build database ``ipsp_bench_serve_<size>`` through the stream job's own sink
   code (``tests/support/serving.write_through_sink``: the job's
   MongoSink, window state and serving writer; detections are generated), 20
   cameras at 1 frame/s ending now - reused when it already holds that history
   (``--reseed`` forces) and left in place afterwards so it can be inspected;
2. start the real ``ipsp serve`` (one uvicorn worker) on a free loopback port;
3. measure each panel's cache-miss cost: a few requests whose range no other
   request used (every one reads its serving documents from MongoDB);
4. run ``--viewers`` concurrent viewers for ``--seconds``: every
   ``--refresh-seconds`` each reloads every panel of the provisioned dashboards
   at once, as Grafana does (their own requests, the last 6 hours; viewers'
   phases spread over the interval), and like Grafana's ``now-6h`` every request
   sends its own from/to (the clock moves), so a cache keyed on the exact range
   would earn nothing. ``--refresh-seconds 0`` sends back to back (saturation).

Prints a table and writes ``benchmarks/results/serve.json``: per size and panel,
requests, errors, p50 and p95, and the p95 ratio of the two sizes. ``make
bench-serve`` runs it. The history's clock is its own: a reused database is
viewed as if "now" were the end of its history plus the time since the load began.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from ipsp import mongo
from ipsp.config import load_settings
from ipsp.serving.cli import KEEP_ALIVE_S
from support.dashboards import grafana_values, infinity_queries, load_dashboards, resolve_request  # tests/support
from support.serving import ApiServer, open_sink, write_through_sink  # tests/support (run via make: PYTHONPATH=tests)

REPO = Path(__file__).resolve().parents[1]

RESULTS = REPO / "benchmarks" / "results" / "serve.json"
DASHBOARDS = REPO / "1_infrastructure" / "grafana" / "dashboards"
CAMERAS = 20
SIZES = {"100k": 100_000, "1m": 1_000_000}
VIEW = timedelta(hours=6)
#: frames per micro-batch while building a history (1,000 s of 20 cameras): each batch also rewrites
#: the windows it shares with the previous one, and FerretDB scans the windows collection per replace
BATCH_FRAMES = 20_000


def say(text: str) -> None:
    """A timestamped progress line."""
    print(f"[bench-serve {datetime.now(UTC):%H:%M:%S}] {text}", flush=True)


@dataclass
class Panel:
    """One panel query of a dashboard (resolved afresh for every request)."""

    name: str
    target: Mapping[str, Any]
    latencies_ms: list[float] = field(default_factory=list)
    miss_ms: list[float] = field(default_factory=list)
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (a reported p95 is a latency that happened)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))]


def panels() -> list[Panel]:
    """Every Infinity query of the provisioned dashboards, deduplicated by dashboard and panel title."""
    out: dict[str, Panel] = {}
    for name, board in load_dashboards(DASHBOARDS).items():
        for query in infinity_queries(name, board):
            key = f"{name.removesuffix('.json')}: {query.panel or query.ref_id}"
            out.setdefault(key, Panel(key, query.target))
    return list(out.values())


def history_of(db: Any) -> tuple[int, datetime | None]:
    """Frames held (from the serving documents) and the end of the history."""
    cameras = list(db[mongo.CAMERAS].find({}))
    frames = sum(int(day["frames"]) for doc in cameras for day in doc["days"].values())
    end = max((doc["latest"]["window_end"] for doc in cameras), default=None)
    return frames, end


def build(settings: Any, db_name: str, frames: int, reseed: bool) -> dict[str, Any]:
    """Make sure ``db_name`` holds ``frames`` frames written through the sink; return how it was built."""
    sink = open_sink(settings, db_name)
    try:
        held, end = history_of(sink.db)
        if held == frames and end is not None and not reseed:
            say(f"{db_name}: reusing {held:,} frames")
            return {"reused": True, "write_seconds": None, "end": end}
        sink.client.drop_database(db_name)
        sink.ensure_indexes()
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=frames // CAMERAS)
        began = time.perf_counter()

        def progress(done: int) -> None:
            if done % 50_000 < 2_000:
                rate = done / max(time.perf_counter() - began, 1e-3)
                say(f"{db_name}: {done:,} / {frames:,} frames written ({rate:,.0f} frames/s)")

        # detection boxes left out (counts and density kept): no panel reads them, and a million
        # frame documents with boxes take FerretDB about an hour to insert on a 2-core machine
        batches = write_through_sink(sink, settings, frames, CAMERAS, start=start, batch_frames=BATCH_FRAMES,
                                     progress=progress, boxes=False)  # fmt: skip
        seconds = time.perf_counter() - began
        held, end = history_of(sink.db)
        if held != frames:
            raise RuntimeError(f"{db_name} holds {held} frames after writing {frames}")
        say(f"{db_name}: {frames:,} frames in {batches} batches in {seconds:.0f} s ({frames / seconds:,.0f} frames/s)")
        return {"reused": False, "write_seconds": round(seconds, 1), "frames_per_s": round(frames / seconds, 1),
                "batches": batches, "frame_detections": "none (counts and density only)", "end": end}  # fmt: skip
    finally:
        sink.client.close()


class Connection:
    """One keep-alive HTTP/1.1 connection of a viewer, as each of Grafana's pooled connections is.

    The viewers use the standard library's client, not httpx: httpx spends 3-4 times
    the client CPU per request (about 1.5 ms against 0.4 ms here), and 20 viewers'
    bursts of 12 requests share two cores with the server under one GIL, so the
    client's own work was a large part of the latency it reported.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.conn: http.client.HTTPConnection | None = None
        self.used = 0.0

    def get(self, path: str, params: list[tuple[str, str]]) -> int:
        """The status of GET ``path?params`` (the body is read whole); 0 when the request failed."""
        # an idle connection is dropped well before `ipsp serve` closes it (KEEP_ALIVE_S): never reused as it closes
        if self.conn is not None and time.monotonic() - self.used > KEEP_ALIVE_S / 2:
            self.close()
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60.0)
            self.conn.request("GET", f"{path}?{urlencode(params)}" if params else path)
            response = self.conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            return 0
        self.used = time.monotonic()
        if response.will_close:
            self.close()
        return response.status

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def request_for(panel: Panel, now: datetime, cameras: list[str]) -> tuple[str, list[tuple[str, str]]]:
    """The panel's request for the last 6 hours ending ``now`` (Grafana's variables substituted)."""
    values = grafana_values(now - VIEW, now, {"camera": cameras, "bucket": "5m"})
    request = resolve_request(panel.target, values)
    return request.path, request.params


def measure_misses(client: httpx.Client, items: list[Panel], end: datetime, cameras: list[str], tries: int) -> None:
    """Each panel ``tries`` times over ranges shifted by whole hours: no answer is cached for them."""
    for index in range(tries):
        now = end - timedelta(hours=index + 1, minutes=7 * index + 3)
        for panel in items:
            path, params = request_for(panel, now, cameras)
            started = time.perf_counter()
            response = client.get(path, params=params)
            panel.miss_ms.append((time.perf_counter() - started) * 1000.0)
            if response.status_code != 200:
                panel.errors += 1


def run_viewers(
    url: str, items: list[Panel], end: datetime, cameras: list[str], viewers: int, seconds: float, refresh_s: float
) -> None:
    """``viewers`` viewers for ``seconds``; each refreshes all its panels at once every ``refresh_s``, as Grafana does.

    Viewers opened their dashboards at different moments (phases spread over one
    refresh interval). ``refresh_s`` 0: each viewer sends panel after panel with
    no pause (a saturation test, not a viewer).
    """
    began = time.monotonic()
    deadline = began + seconds

    def send(connection: Connection, panel: Panel) -> None:
        now = end + timedelta(seconds=time.monotonic() - began)  # the clock moves: a new from/to each time
        path, params = request_for(panel, now, cameras)
        started = time.perf_counter()
        status = connection.get(path, params)
        elapsed = (time.perf_counter() - started) * 1000.0
        with panel.lock:
            panel.latencies_ms.append(elapsed)
            if status != 200:
                panel.errors += 1

    def viewer(number: int) -> None:
        # one connection per sending thread (at most one per panel), reused from one refresh to the next
        # as Grafana reuses its pooled connections (it keeps idle ones 90 s)
        connections: list[Connection] = []
        mine = threading.local()

        def connection() -> Connection:
            if not hasattr(mine, "connection"):
                mine.connection = Connection(url)
                connections.append(mine.connection)
            return mine.connection  # type: ignore[no-any-return]

        try:
            if refresh_s <= 0:
                turn = number
                while time.monotonic() < deadline:
                    send(connection(), items[turn % len(items)])
                    turn += 1
                return
            tick = began + refresh_s * number / viewers
            with ThreadPoolExecutor(max_workers=len(items)) as pool:
                while tick < deadline:
                    time.sleep(max(0.0, tick - time.monotonic()))
                    list(pool.map(lambda panel: send(connection(), panel), items))  # every panel at once
                    tick += refresh_s
        finally:
            for each in connections:
                each.close()

    threads = [threading.Thread(target=viewer, args=(n,)) for n in range(viewers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def summarize(panel: Panel, seconds: float) -> dict[str, Any]:
    """One panel's figures."""
    lat = panel.latencies_ms
    return {
        "requests": len(lat),
        "errors": panel.errors,
        "requests_per_s": round(len(lat) / seconds, 1),
        "p50_ms": round(statistics.median(lat), 2) if lat else None,
        "p95_ms": round(percentile(lat, 0.95), 2) if lat else None,
        "max_ms": round(max(lat), 2) if lat else None,
        "cache_miss_p50_ms": round(statistics.median(panel.miss_ms), 2) if panel.miss_ms else None,
        "cache_miss_max_ms": round(max(panel.miss_ms), 2) if panel.miss_ms else None,
    }


def bench_size(settings: Any, label: str, frames: int, args: argparse.Namespace) -> dict[str, Any]:
    """Build (or reuse) one history and load its dashboards."""
    db_name = f"ipsp_bench_serve_{label}"
    built = build(settings, db_name, frames, args.reseed)
    end: datetime = built.pop("end")
    cameras = [f"cam_{i:02d}" for i in range(1, CAMERAS + 1)]
    items = panels()
    log = REPO / ".local" / "logs" / f"bench-serve-{label}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with ApiServer(settings.mongo_uri.get_secret_value(), db_name, log=log) as server:
        with httpx.Client(base_url=server.url, timeout=120.0) as client:
            measure_misses(client, items, end, cameras, args.miss_tries)
        load_before = os.getloadavg()[0]
        cpu_before = time.process_time()
        say(
            f"{db_name}: {args.viewers} viewers x {args.seconds:.0f} s, "
            f"refresh {args.refresh_seconds:g} s, {len(items)} panels"
        )
        run_viewers(server.url, items, end, cameras, args.viewers, args.seconds, args.refresh_seconds)
        client_cpu = time.process_time() - cpu_before
    per_panel = {panel.name: summarize(panel, args.seconds) for panel in items}
    return {
        "history_frames": frames,
        "database": {"name": db_name, **built},
        "load_average_1m_before": round(load_before, 2),
        "load_average_1m_after": round(os.getloadavg()[0], 2),
        "client_cpu_seconds": round(client_cpu, 1),
        "panels": per_panel,
    }


def main(argv: list[str] | None = None) -> None:
    """Build both histories, load the dashboards over each, print and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewers", type=int, default=20, help="Concurrent dashboard viewers.")
    parser.add_argument("--seconds", type=float, default=30.0, help="How long the viewers refresh.")
    parser.add_argument(
        "--refresh-seconds", type=float, default=5.0,
        help="Each viewer reloads all panels this often (Grafana's shortest refresh); 0: back-to-back, no pause.",
    )  # fmt: skip
    parser.add_argument("--miss-tries", type=int, default=3, help="Uncached requests per panel (cache-miss cost).")
    parser.add_argument("--sizes", default="100k,1m", help="Comma-separated history sizes (100k, 1m).")
    parser.add_argument("--reseed", action="store_true", help="Rebuild the histories even when present.")
    args = parser.parse_args(argv)
    settings = load_settings()
    started = datetime.now(UTC)
    sizes = {label: SIZES[label] for label in args.sizes.split(",")}
    runs = {label: bench_size(settings, label, frames, args) for label, frames in sizes.items()}
    ratios: dict[str, float | None] = {}
    if set(runs) == set(SIZES):
        for name, big in runs["1m"]["panels"].items():
            small = runs["100k"]["panels"].get(name, {})
            ratios[name] = round(big["p95_ms"] / small["p95_ms"], 2) if big["p95_ms"] and small.get("p95_ms") else None
    print(f"\n{'panel':58} {'size':>5} {'req':>6} {'err':>4} {'p50 ms':>8} {'p95 ms':>8} {'miss ms':>8}")
    for label, run in runs.items():
        for name, row in run["panels"].items():
            print(
                f"{name[:58]:58} {label:>5} {row['requests']:>6} {row['errors']:>4} {row['p50_ms']!s:>8} "
                f"{row['p95_ms']!s:>8} {row['cache_miss_p50_ms']!s:>8}"
            )
    result = {
        "benchmark": "serve",
        "started_at": started.isoformat(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "viewers": args.viewers,
        "seconds": args.seconds,
        "refresh_seconds": args.refresh_seconds,
        "view": "last 6 hours, from/to moving with the clock on every request",
        "mongo": "local stack (FerretDB 1.24, SQLite)",
        "sizes": runs,
        "p95_ratio_1m_over_100k": ratios,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    say(f"wrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
