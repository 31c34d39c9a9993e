"""``ipsp demo``: the main job end to end on the local stack, in one command.

Steps, each the same ``ipsp`` subcommand a user would run by hand (printed as it
starts, so the path can be replayed step by step):

1. ``ipsp stack up``: local Kafka, FerretDB and S3 server (fetched on first use);
2. ``ipsp synth``: the 20-camera feed from real road footage fetched on first use
   (``--feed footage``); when the fetch fails, the photo-based fallback
   (``--feed photos``) with a loud line saying so (skipped with ``--images DIR``);
3. ``ipsp pack``: LMDB shards + manifest on the local S3 server
   (``s3://ipsp/datasets/demo-...``; re-packing the same input is verified and skipped);
4. ``ipsp produce``: the manifest into a fresh Kafka topic, as fast as possible, with
   a camera's frames ``--frame-interval`` seconds apart on the event clock so that
   every camera spans at least ``MIN_WINDOWS`` windows;
5. ``ipsp stream --available-now``: Spark Structured Streaming until drained;
6. a per-camera summary read back from MongoDB, the HTML report (``ipsp report``)
   and where to look next.

Re-running is harmless: results are upserted by event (camera, event time) with the same fixed
event clock, so a second run rewrites the same documents and windows. The summary therefore
selects this run's events by their event times (the fixed clock's span for this feed), not by
replay id: an event already stored keeps the replay id of the run that first wrote it.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import typer

from ipsp.errors import UserError

#: the demo's fixed event clock: a re-run lands in the same windows
EVENT_START = "2026-01-01T08:00:00Z"
DEFAULT_FRAMES = 600
DEFAULT_CAMERAS = 20
VEHICLES = ("motorbike", "car", "bus", "truck")
#: every camera's frames span at least this many event-time windows (one more for margin)
MIN_WINDOWS = 10


@dataclass
class CameraRow:
    """One camera's line of the summary table."""

    camera_id: str
    frames: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*VEHICLES, "person", "total"), 0))
    density_sum: float = 0.0
    status: str = "-"
    dead_letters: int = 0

    @property
    def density_mean(self) -> float:
        """Mean density percent over the camera's frames."""
        return self.density_sum / self.frames if self.frames else 0.0


@dataclass
class DemoRun:
    """Names of one demo run."""

    dataset: str
    dataset_uri: str
    topic: str
    replay_id: str
    source: Path


def child_env() -> dict[str, str]:
    """Environment of the steps: ours, minus pandas' noisy FutureWarning in Spark's Python workers."""
    env = dict(os.environ)
    env.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    return env


def step(title: str, *args: str, capture: bool = False) -> str:
    """Run one ``ipsp`` subcommand, echoing it; a failure stops the demo with the step named."""
    typer.secho(f"\n==> {title}: ipsp {shlex.join(args)}", fg=typer.colors.CYAN, bold=True)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "ipsp.cli", *args],
        env=child_env(),
        stdout=subprocess.PIPE if capture else None,
        text=True,
    )
    if capture and proc.stdout:
        typer.echo(proc.stdout.rstrip())
    if proc.returncode != 0:
        raise UserError(f"demo step '{title}' failed (exit {proc.returncode}); its message is above")
    typer.secho(f"    done in {time.monotonic() - started:.0f} s", dim=True)
    return proc.stdout or ""


def shown(path: Path | str) -> str:
    """A path as the user should see it: relative to the working folder when inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def frame_interval(frames: int, cameras: int, window_seconds: int, windows: int = MIN_WINDOWS) -> float:
    """Seconds between a camera's frames so that they span ``windows`` windows (plus one for margin).

    ``n`` frames ``dt`` apart starting on a window boundary touch ``floor((n - 1) dt / W) + 1``
    windows; never less than the 1 s of the original footage.
    """
    per_camera = math.ceil(frames / cameras)
    if per_camera < 2:
        return float(window_seconds)
    return float(max(1, math.ceil(windows * window_seconds / (per_camera - 1))))


def choose_feed(home: Path) -> str:
    """``footage`` when the real road clips are here or can be fetched, else ``photos`` (said loudly)."""
    from ipsp.preprocessing.footage import footage_or_fallback

    footage = footage_or_fallback(
        home,
        "\n!!! FALLBACK FEED: real road footage unavailable ({exc}).\n"
        "!!! The demo runs on the photo-based feed, which does NOT look like road traffic.",
    )
    if footage is None:
        return "photos"
    prov = footage.provenance
    typer.echo(f"    feed: real road footage, {prov['package']} {prov['version']} from {prov['registry']} "
               f"({prov['licence']}), provenance in {shown(footage.folder / 'provenance.json')}")  # fmt: skip
    return "footage"


def dataset_name(images: Path | None, frames: int, cameras: int, feed: str = "footage") -> str:
    """A stable dataset name: the same input packs to the same place (so a re-run verifies, not re-packs)."""
    if images is None:
        return f"demo-{'road' if feed == 'footage' else 'photos'}-{frames}f-{cameras}c"
    slug = re.sub(r"[^a-z0-9]+", "-", images.name.lower()).strip("-")[:32] or "images"
    digest = hashlib.sha256(str(images.resolve()).encode()).hexdigest()[:8]
    return f"demo-{slug}-{digest}"


def plan_run(images: Path | None, frames: int, cameras: int, home: Path, feed: str = "footage") -> DemoRun:
    """Names and paths of this run (a fresh topic and replay id each time)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = dataset_name(images, frames, cameras, feed)
    source = images.resolve() if images is not None else home / "demo" / name
    return DemoRun(
        dataset=name,
        dataset_uri=f"s3://ipsp/datasets/{name}",
        topic=f"{name}-{stamp}".lower(),
        replay_id=f"demo-{stamp}",
        source=source,
    )


def event_span(per_camera: int, interval: float) -> tuple[datetime, datetime]:
    """First and last event time of a feed whose cameras send ``per_camera`` frames ``interval`` s apart."""
    start = datetime.fromisoformat(EVENT_START.replace("Z", "+00:00"))
    return start, start + timedelta(seconds=max(per_camera - 1, 0) * interval)


def frames_per_camera(images: Path) -> int:
    """The most frames any one camera has in a folder of ``cam_XX_NNNNN.jpg`` frames."""
    counts: dict[str, int] = {}
    for path in images.iterdir():
        camera = re.sub(r"_\d+$", "", path.stem)
        counts[camera] = counts.get(camera, 0) + 1
    return max(counts.values(), default=0)


def summarize(settings: Any, run: DemoRun, span: tuple[datetime, datetime]) -> tuple[list[CameraRow], dict[str, int]]:
    """Per-camera rows for this run's events (event times within ``span``), and the collection sizes."""
    from ipsp import mongo

    client = mongo.connect(settings.mongo_uri.get_secret_value())
    try:
        db = client[settings.mongo_db]
        rows: dict[str, CameraRow] = {}
        fields = {"camera_id": 1, "counts": 1, "density_percent": 1}
        events = {"event_time": {"$gte": span[0], "$lte": span[1]}}
        for doc in db[mongo.RESULTS].find(events, fields):
            row = rows.setdefault(doc["camera_id"], CameraRow(doc["camera_id"]))
            row.frames += 1
            row.density_sum += float(doc["density_percent"])
            for key in row.counts:
                row.counts[key] += int(doc["counts"].get(key, 0))
        for doc in db[mongo.DEAD_LETTERS].find({"kafka.topic": run.topic}, {"camera_id": 1}):
            camera = doc.get("camera_id") or "(unknown)"
            rows.setdefault(camera, CameraRow(camera)).dead_letters += 1
        for row in rows.values():
            latest = list(
                db[mongo.WINDOWS]
                .find({"camera_id": row.camera_id}, {"traffic_status": 1})
                .sort("window_start", -1)
                .limit(1)
            )
            row.status = latest[0]["traffic_status"] if latest else "-"
        sizes = {name: db[name].count_documents({}) for name in sorted(db.list_collection_names())}
    finally:
        client.close()
    return sorted(rows.values(), key=lambda r: r.camera_id), sizes


def print_table(rows: list[CameraRow]) -> None:
    """The per-camera summary as a table on the terminal."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Per-camera summary (this run)", title_justify="left")
    for name in ("camera", "frames", *VEHICLES, "vehicles", "person", "mean density %", "status", "dead letters"):
        table.add_column(name, justify="left" if name in ("camera", "status") else "right")
    total = CameraRow("all")
    for row in rows:
        table.add_row(
            row.camera_id, str(row.frames), *(str(row.counts[c]) for c in VEHICLES), str(row.counts["total"]),
            str(row.counts["person"]), f"{row.density_mean:.1f}", row.status, str(row.dead_letters),
        )  # fmt: skip
        total.frames += row.frames
        total.density_sum += row.density_sum
        total.dead_letters += row.dead_letters
        for key in total.counts:
            total.counts[key] += row.counts[key]
    table.add_section()
    table.add_row(
        "all", str(total.frames), *(str(total.counts[c]) for c in VEHICLES), str(total.counts["total"]),
        str(total.counts["person"]), f"{total.density_mean:.1f}", "", str(total.dead_letters),
    )  # fmt: skip
    console = Console()
    if not console.is_terminal:  # piped or logged: do not squeeze the table to 80 columns
        console = Console(width=200)
    console.print(table)


def run_demo(frames: int, cameras: int, images: Path | None, report: bool) -> None:
    """The whole demo; see the module docstring."""
    from ipsp.config import get_settings, load_settings
    from ipsp.localstack import stack

    started = time.monotonic()
    if images is not None and not images.is_dir():
        raise UserError(f"--images {images}: not a folder")
    settings = load_settings()
    typer.secho("==> local stack: ipsp stack up", fg=typer.colors.CYAN, bold=True)
    status = stack.up(settings, say=lambda msg: typer.echo(f"    {msg}"))
    get_settings.cache_clear()
    settings = load_settings()  # picks up the stack's generated settings (credentials)
    typer.echo(f"    Kafka {status.kafka_bootstrap}, MongoDB {status.mongo_uri}, S3 {status.s3_endpoint}")

    feed = choose_feed(Path(settings.home)) if images is None else "images"
    run = plan_run(images, frames, cameras, Path(settings.home), feed)
    if images is None:
        step(
            "synthesize the feed",
            "synth", shown(run.source), "--frames", str(frames), "--cameras", str(cameras), "--feed", feed,
        )  # fmt: skip
    step("pack into LMDB shards on S3", "pack", shown(run.source), "--to", run.dataset_uri)
    interval = frame_interval(frames, cameras, settings.window_seconds)
    step(
        "produce to a fresh topic",
        "produce", run.dataset_uri, "--topic", run.topic, "--as-fast-as-possible",
        "--event-start", EVENT_START, "--replay-id", run.replay_id, "--frame-interval", f"{interval:g}",
    )  # fmt: skip
    step("stream until drained", "stream", "--topic", run.topic, "--available-now")

    per_camera = frames_per_camera(images) if images is not None else math.ceil(frames / cameras)
    rows, sizes = summarize(settings, run, event_span(per_camera, interval))
    typer.echo("")
    print_table(rows)
    if feed == "photos":
        typer.secho("!!! These numbers come from the FALLBACK photo feed, not from road footage.", fg=typer.colors.RED,
                    bold=True)  # fmt: skip
    report_path = make_report(settings) if report else None
    where_next(settings, run, sizes, report_path, time.monotonic() - started)


def make_report(settings: Any) -> str | None:
    """Write the HTML report when ``ipsp report`` is available; its path, or None."""
    out = Path(settings.home) / "demo" / "report"
    try:
        text = step("HTML report", "report", "--out", shown(out), capture=True)
    except UserError as exc:
        typer.secho(f"    report skipped: {exc}", fg=typer.colors.YELLOW)
        return None
    found = re.findall(r"\S+\.html", text)
    return shown(found[-1] if found else out / "report.html")


def where_next(settings: Any, run: DemoRun, sizes: dict[str, int], report: str | None, seconds: float) -> None:
    """Where the results are and what to run next."""
    typer.secho(f"\nDemo finished in {seconds / 60:.1f} min. Where to look next:", bold=True)
    mongo = settings.mongo_uri.get_secret_value()
    typer.echo(f"  MongoDB   {mongo} database {settings.mongo_db}:")
    for name, count in sizes.items():
        typer.echo(f"              {name}: {count} documents")
    typer.echo(f"  Dataset   {run.dataset_uri} (manifest.parquet, shards/, rejects.jsonl)")
    typer.echo(f"  Topic     {run.topic} (replay id {run.replay_id})")
    if report:
        typer.echo(f"  Report    {report}")
    typer.echo("  API       ipsp serve   then open http://127.0.0.1:8000/docs")
    typer.echo(f"  By hand   ipsp stream --topic {run.topic} --available-now   (resumes; nothing new to do)")
    typer.echo("  Bigger    make demo FRAMES=11508   (the full feed)")
    typer.echo("  Stop      make down")


def demo(
    frames: int = typer.Option(DEFAULT_FRAMES, "--frames", "-n", min=1, help="Synthetic frames to run."),
    cameras: int = typer.Option(DEFAULT_CAMERAS, "--cameras", "-c", min=1, max=99, help="Synthetic cameras."),
    images: Path | None = typer.Option(
        None, "--images", help="Use your own folder of frames (cam_XX_NNNNN.jpg) instead of a synthetic feed."
    ),
    report: bool = typer.Option(True, "--report/--no-report", help="Also write the HTML report."),
) -> None:
    """Run the whole pipeline on the local stack: synth -> pack -> produce -> stream -> summary.

    Brings the local stack up first (fetching it on first use). Each step is an
    ipsp subcommand, printed as it runs, so you can replay any of them by hand.
    """
    run_demo(frames, cameras, images, report)
