"""Requests/s and latency of the traffic API's dashboard queries over a full run, on loopback.

1. seed database ``ipsp_bench_serve`` on the local stack with a full run (11,508
   contract-valid frames over 20 cameras, their one-minute windows, micro-batches
   and dead letters) - reused when it already holds that run (``--reseed`` forces);
2. start the real ``ipsp serve`` (one uvicorn worker) on a free loopback port;
3. for each panel request of the provisioned Grafana dashboards (the whole run as
   the time range, every camera selected), plus the frames drill-down, send
   requests from ``--concurrency`` client threads until ``--requests`` are done
   or ``--seconds`` have passed, and record each request's latency;
4. load each dashboard as Grafana does (all its panel requests at once),
   ``--dashboard-loads`` times, and record the time until the last panel answered.

Steps 3 and the first round of 4 run with window sharing off
(``IPSP_API_CACHE_SECONDS=0``: every request pays its own MongoDB read); a
second round of 4 runs with the default, where panels asking for the same
cameras and range share one read of the windows.

Prints a table and writes ``benchmarks/results/serve.json``. ``make bench-serve``
runs it. The numbers describe this machine and its MongoDB server (on the local
stack: FerretDB with SQLite, which scans a whole collection for every query).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from ipsp.config import load_settings
from ipsp.serving import queries
from ipsp.serving.dashboards import grafana_values, infinity_queries, load_dashboards, resolve_request
from ipsp.serving.synthetic import FULL_RUN_CAMERAS, FULL_RUN_FRAMES, build_run, write_run
from ipsp.serving.testing import ApiServer, describe

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "serve.json"
DASHBOARDS = REPO / "1_infrastructure" / "grafana" / "dashboards"
DB_NAME = "ipsp_bench_serve"


def say(text: str) -> None:
    """A timestamped progress line."""
    print(f"[bench-serve {datetime.now(UTC):%H:%M:%S}] {text}", flush=True)


@dataclass
class Probe:
    """One request shape to load: a name, a path and its query parameters."""

    name: str
    path: str
    params: list[tuple[str, str]]
    concurrency: int | None = None  # None: the --concurrency of the run
    latencies_ms: list[float] = field(default_factory=list)
    single_ms: list[float] = field(default_factory=list)
    errors: int = 0
    rows: int = 0
    seconds: float = 0.0


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation: a reported p95 is a latency that happened)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))]


def seed(reseed: bool, frames: int, cameras: int) -> dict[str, int]:
    """Make sure the bench database holds the full run; return its collection counts."""
    settings = load_settings(mongo_db=DB_NAME)
    client = queries.connect(settings, timeout_ms=10_000, query_timeout_ms=600_000)
    try:
        db = client[DB_NAME]
        held = queries.count_frames_per_camera(db)  # from the small windows collection
        if reseed or sum(held.values()) != frames or len(held) != cameras:
            say(f"seeding {frames:,} frames over {cameras} cameras into {DB_NAME}")
            client.drop_database(DB_NAME)
            started = time.perf_counter()
            written = write_run(db, build_run(frames=frames, cameras=cameras))
            queries.ensure_indexes(db)
            say(f"seeded {written} in {time.perf_counter() - started:.0f}s")
        else:
            say(f"reusing {DB_NAME}: {sum(held.values()):,} frames over {len(held)} cameras")
        return {name: db[name].count_documents({}) for name in queries.INDEXES}
    finally:
        client.close()


def dashboard_probes(start: datetime, end: datetime, cameras: list[str]) -> dict[str, list[Probe]]:
    """Each dashboard's panel requests (variable queries included), deduplicated per dashboard."""
    values = grafana_values(start, end, {"camera": cameras, "bucket": "5m"})
    probes: dict[str, list[Probe]] = {}
    for name, board in load_dashboards(DASHBOARDS).items():
        seen: dict[tuple[str, tuple[tuple[str, str], ...]], Probe] = {}
        for query in infinity_queries(name, board):
            request = resolve_request(query.target, values)
            key = (request.path, tuple(request.params))
            if key not in seen:
                seen[key] = Probe(f"{name.removesuffix('.json')}: {query.panel}", request.path, request.params)
        probes[name] = list(seen.values())
    return probes


def load(client: httpx.Client, probe: Probe, concurrency: int, max_requests: int, max_seconds: float) -> None:
    """Send ``probe`` from ``concurrency`` threads until the request count or the time bound is reached."""
    lock = threading.Lock()
    issued = 0
    deadline = time.perf_counter() + max_seconds

    def worker() -> None:
        nonlocal issued
        while True:
            with lock:
                if issued >= max_requests or time.perf_counter() >= deadline:
                    return
                issued += 1
            started = time.perf_counter()
            try:
                response = client.get(probe.path, params=probe.params)
                ok = response.status_code == 200
                body = response.json() if ok else None
            except httpx.HTTPError:
                ok, body = False, None
            elapsed = (time.perf_counter() - started) * 1000.0
            with lock:
                if ok:
                    probe.latencies_ms.append(elapsed)
                    probe.rows = len(body) if isinstance(body, list) else 1
                else:
                    probe.errors += 1

    began = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    probe.seconds = time.perf_counter() - began


def summarize(probe: Probe) -> dict[str, Any]:
    """One probe's figures for the JSON and the table."""
    lat = probe.latencies_ms
    return {
        "name": probe.name,
        "path": probe.path,
        "params": dict(probe.params),
        "concurrency": probe.concurrency,
        "single_request_ms": round(statistics.median(probe.single_ms), 1) if probe.single_ms else None,
        "requests": len(lat),
        "errors": probe.errors,
        "rows": probe.rows,
        "seconds": round(probe.seconds, 3),
        "requests_per_s": round(len(lat) / probe.seconds, 2) if probe.seconds else 0.0,
        "p50_ms": round(statistics.median(lat), 1) if lat else None,
        "p95_ms": round(percentile(lat, 0.95), 1) if lat else None,
        "max_ms": round(max(lat), 1) if lat else None,
    }


def http_client(server: ApiServer) -> httpx.Client:
    """A client for the load: generous timeout, enough connections for every panel at once."""
    return httpx.Client(base_url=server.url, timeout=120.0, limits=httpx.Limits(max_connections=64))


def server_errors(metrics_text: str) -> float:
    """5xx answers the server counted (its own Prometheus counter)."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics_text.splitlines()
        if line.startswith("ipsp_api_requests_total{") and 'status="5' in line
    )


def dashboard_load(client: httpx.Client, probes: list[Probe], times: int) -> dict[str, Any]:
    """Fire all panel requests of one dashboard at once, ``times`` times; time until the last answered."""
    walls: list[float] = []
    failures = 0
    with ThreadPoolExecutor(max_workers=len(probes)) as pool:
        for _ in range(times):
            started = time.perf_counter()
            answers = list(pool.map(lambda p: client.get(p.path, params=p.params).status_code, probes))
            walls.append((time.perf_counter() - started) * 1000.0)
            failures += sum(1 for status in answers if status != 200)
    return {
        "panels": len(probes),
        "loads": times,
        "failures": failures,
        "p50_ms": round(statistics.median(walls), 1),
        "p95_ms": round(percentile(walls, 0.95), 1),
        "max_ms": round(max(walls), 1),
    }


def main(argv: list[str] | None = None) -> None:
    """Seed (or reuse), serve, load every dashboard query, print and write the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=FULL_RUN_FRAMES)
    parser.add_argument("--cameras", type=int, default=FULL_RUN_CAMERAS)
    parser.add_argument("--concurrency", type=int, default=4, help="client threads per probe")
    parser.add_argument("--requests", type=int, default=200, help="most requests per probe")
    parser.add_argument("--seconds", type=float, default=15.0, help="most seconds per probe")
    parser.add_argument("--dashboard-loads", type=int, default=5)
    parser.add_argument("--reseed", action="store_true", help="rebuild the bench database")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    load_before = round(os.getloadavg()[0], 2)  # the machine may be shared: say how busy it was
    counts = seed(args.reseed, args.frames, args.cameras)
    settings = load_settings(mongo_db=DB_NAME)
    run = describe(settings, DB_NAME)
    probes = dashboard_probes(run.start, run.end, run.cameras)
    frames_probe = Probe(
        "drill-down: frames of one camera (page of 100)",
        f"/api/cameras/{run.cameras[0]}/frames",
        [("from", str(int(run.start.timestamp() * 1000))), ("to", str(int(run.end.timestamp() * 1000)))],
        concurrency=1,  # scans the large collection: on FerretDB one at a time is all it sustains
    )
    log = REPO / ".local" / "bench-serve.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    uri = settings.mongo_uri.get_secret_value()
    all_probes = [probe for group in probes.values() for probe in group] + [frames_probe]
    say(f"serving {DB_NAME} ({run.frames:,} frames, {len(run.cameras)} cameras); window sharing off")
    # per-query figures with window sharing off: each request pays its own MongoDB read
    with ApiServer(uri, DB_NAME, env={"IPSP_API_CACHE_SECONDS": "0"}, log=log) as server, http_client(server) as client:
        for probe in all_probes:  # warm-up: fills the camera cache and the OS page cache
            client.get(probe.path, params=probe.params)
        rows = []
        for probe in all_probes:
            for _ in range(3):  # latency of one request alone, before any queueing
                started = time.perf_counter()
                if client.get(probe.path, params=probe.params).status_code == 200:
                    probe.single_ms.append((time.perf_counter() - started) * 1000.0)
            probe.concurrency = probe.concurrency or args.concurrency
            load(client, probe, probe.concurrency, args.requests, args.seconds)
            rows.append(summarize(probe))
            r = rows[-1]
            say(f"{r['requests_per_s']:8.1f} req/s  p95 {r['p95_ms']} ms  ({r['requests']} req) {probe.name}")
        loads_cold = {name: dashboard_load(client, group, args.dashboard_loads) for name, group in probes.items()}
        errors_5xx = server_errors(client.get("/metrics").text)
    # whole-dashboard loads with the default sharing: panels with the same range share one window read
    with ApiServer(uri, DB_NAME, log=log) as server, http_client(server) as client:
        for group in probes.values():
            dashboard_load(client, group, 1)  # warm-up
        loads_shared = {name: dashboard_load(client, group, args.dashboard_loads) for name, group in probes.items()}
        errors_5xx += server_errors(client.get("/metrics").text)
    for name in probes:
        say(
            f"dashboard {name}: all {loads_cold[name]['panels']} panels in p50 {loads_cold[name]['p50_ms']} ms "
            f"(sharing off), {loads_shared[name]['p50_ms']} ms (window reads shared)"
        )

    server_version = "unknown"
    client_db = queries.connect(settings, timeout_ms=10_000)
    try:
        info = client_db.admin.command("buildInfo")
        ferret = info.get("ferretdbVersion")
        server_version = f"FerretDB {ferret}" if ferret else f"MongoDB {info.get('version')}"
    finally:
        client_db.close()
    result = {
        "benchmark": "serve",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1m_before": load_before,
            "load_average_1m_after": round(os.getloadavg()[0], 2),
        },
        "database": {"server": server_version, "name": DB_NAME, **counts},
        "server": "ipsp serve, one uvicorn worker, loopback",
        "load": {"concurrency": args.concurrency, "max_requests": args.requests, "max_seconds": args.seconds},
        "probes": rows,
        "dashboard_loads": {"window_sharing_off": loads_cold, "window_sharing_default": loads_shared},
        "server_errors_5xx": errors_5xx,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'probe':56s} {'alone ms':>9s} {'req/s':>7s} {'p50 ms':>8s} {'p95 ms':>8s} {'err':>4s} {'rows':>5s}")
    for r in rows:
        print(
            f"{r['name'][:56]:56s} {r['single_request_ms']!s:>9s} {r['requests_per_s']:7.1f} {r['p50_ms']!s:>8s}"
            f" {r['p95_ms']!s:>8s} {r['errors']:4d} {r['rows']:5d}"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
