"""``ipsp report``: a self-contained HTML report of a run, read from MongoDB.

The report shows the same views as the Grafana dashboards (vehicles per camera
over time, class mix, density heatmap, current status per camera, pipeline
throughput and latency, dead letters), drawn with matplotlib. Each chart is
written as a PNG under ``<out>/charts/`` and embedded in ``<out>/report.html``
as base64, so the HTML file alone is the whole report (no network, no assets).
It uses the very query functions the API serves, so report and dashboards agree.
"""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pymongo.database import Database

from ipsp.contracts import TRAFFIC_STATUSES, format_time
from ipsp.errors import UserError
from ipsp.serving import queries
from ipsp.serving.models import (
    BatchRow,
    CameraStatus,
    ClassShare,
    DeadLetterRow,
    HeatCell,
    PipelineHealth,
    StageCount,
    WindowRow,
)
from ipsp.serving.params import TimeRange
from ipsp.serving.reader import ServingReader

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REPORT_FILE = "report.html"
CHARTS_DIR = "charts"
#: chart slug -> title; the HTML headings and the Chromium test use these titles
CHART_TITLES: dict[str, str] = {
    "vehicles": "Vehicles per camera over time",
    "class_mix": "Class mix",
    "heatmap": "Density heatmap (camera x time)",
    "status": "Current status per camera",
    "pipeline": "Pipeline throughput and latency",
    "dead_letters": "Dead letters",
}
STATUS_COLORS = {"Free": "#2e9e44", "Normal": "#f2a900", "Congested": "#d62728"}
#: report bucket widths to pick from, in seconds (a nice width giving at most ~120 buckets)
NICE_BUCKETS_S = (60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)


@dataclass
class ReportData:
    """Everything the report draws, fetched once."""

    span: TimeRange
    bucket: timedelta
    statuses: list[CameraStatus]
    windows: list[WindowRow]
    heat: list[HeatCell]
    mix: list[ClassShare]
    health: PipelineHealth
    batches: list[BatchRow]
    stages: list[StageCount]
    dead_letters: list[DeadLetterRow]
    frames: int
    cameras: list[str] = field(default_factory=list)


def run_extent(db: Database[dict[str, Any]]) -> TimeRange | None:
    """From the run's first window start to its last window end (event time), from the serving documents.

    The event-time extent only: batches and dead letters carry processing times
    (today), and mixing the two stretched a replay of January over a whole year.
    """
    reader = ServingReader(db, state_ttl_s=0.0)
    try:
        state = reader.state()
        cameras = reader.cameras()
        if state is None or not cameras or state.get("first_hour") is None:
            return None
        first = reader.first_window_start()
        end = max(doc["latest"]["window_end"] for doc in cameras.values())
        return TimeRange(first or state["first_hour"], end)
    finally:
        reader.close()


def pipeline_extent(state: dict[str, Any] | None) -> TimeRange | None:
    """From the first batch's start to just after the last write (processing time)."""
    if state is None:
        return None
    return TimeRange(state["first_batch_at"], state["last_batch_at"] + timedelta(seconds=1))


#: a series with at most this many points is drawn with markers
FEW_POINTS = 40


def pick_bucket(span: TimeRange, target: int = 120) -> timedelta:
    """The smallest nice bucket width that splits the range into at most ``target`` buckets."""
    for seconds in NICE_BUCKETS_S:
        if span.span.total_seconds() / seconds <= target:
            return timedelta(seconds=seconds)
    return timedelta(seconds=max(NICE_BUCKETS_S[-1], span.span.total_seconds() / target))


def collect(
    db: Database[dict[str, Any]],
    span: TimeRange | None = None,
    cameras: list[str] | None = None,
    bucket: timedelta | None = None,
) -> ReportData:
    """Read everything the report shows (serving documents only); UserError when the database holds no run.

    Traffic charts use ``span`` (default: the run's own event-time extent); the
    pipeline charts use the same ``span`` when given, else the batches' own
    processing-time extent.
    """
    reader = ServingReader(db, state_ttl_s=0.0)
    try:
        known = reader.cameras()
        if not known:
            raise UserError(f"no windows in database '{db.name}': run the pipeline (or point --mongo-db elsewhere)")
        missing = [name for name in cameras or [] if name not in known]
        if missing:
            raise queries.UnknownCamera(f"unknown camera(s): {', '.join(missing)}; known: {', '.join(sorted(known))}")
        names = list(cameras) if cameras else sorted(known)
        traffic = span or run_extent(db)
        if traffic is None:
            raise UserError(f"database '{db.name}' holds no serving documents: run `ipsp rollups rebuild`")
        pipeline = span or pipeline_extent(reader.state()) or traffic
        bucket = bucket or pick_bucket(traffic)
        queries.check_buckets(traffic, bucket)
        rows = reader.window_rows(names, traffic)  # one read feeds three views
        batches = reader.batch_rows(pipeline)
        return ReportData(
            span=traffic,
            bucket=bucket,
            statuses=[queries.camera_status_of(known[name]) for name in names],
            windows=[queries.window_row(doc) for doc in rows],
            heat=queries.heat_cells(rows, bucket),
            mix=queries.class_mix_of(rows),
            health=queries.health_of(batches),
            batches=[queries.batch_row(doc) for doc in batches[-queries.MAX_LIST_ROWS :]],
            stages=queries.stages_of(batches),
            dead_letters=queries.latest_dead_letters(batches, pipeline, 20),
            frames=sum(sum(int(d["frames"]) for d in known[name]["days"].values()) for name in names),
            cameras=names,
        )
    finally:
        reader.close()


# --- charts --------------------------------------------------------------------------


def _figure(width: float = 11.0, height: float = 4.2) -> Figure:
    from matplotlib.figure import Figure

    # a bare Figure (no pyplot) needs no GUI backend and holds no global state
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=13, color="#777777", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _time_axis(ax: Any) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(tz=UTC)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))
    ax.set_xlabel("event time (UTC)")


def chart_vehicles(data: ReportData) -> Figure:
    """Vehicles per frame for each camera, one line per camera, averaged per report bucket."""
    fig = _figure(11.0, 4.8)
    ax = fig.add_subplot()
    totals: dict[str, dict[datetime, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for row in data.windows:
        acc = totals[row.camera_id][queries.bucket_start(row.time, data.bucket)]
        acc[0] += row.total
        acc[1] += row.frames
    if not totals:
        _empty(ax, "no windows in this range")
        return fig
    colors = _camera_colors(sorted(totals))
    for camera in sorted(totals):
        points = sorted(totals[camera].items())
        ax.plot(
            _dates([moment for moment, _ in points]),
            [acc[0] / acc[1] if acc[1] else 0.0 for _, acc in points],
            label=camera,
            color=colors[camera],
            linewidth=1.3,
            marker="o" if len(points) <= FEW_POINTS else None,  # a short run's few points stay visible
            markersize=3,
        )
    ax.set_ylabel("vehicles per frame")
    ax.grid(alpha=0.3)
    _time_axis(ax)
    ax.legend(ncol=2 if len(totals) > 10 else 1, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def _dates(moments: list[datetime]) -> Any:
    import matplotlib.dates as mdates

    return mdates.date2num(moments)


def _camera_colors(cameras: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    return {camera: cmap(index % 20) for index, camera in enumerate(cameras)}


def chart_class_mix(data: ReportData) -> Figure:
    """Objects per class over the range, bars labelled with their share."""
    fig = _figure(11.0, 3.6)
    ax = fig.add_subplot()
    if not any(row.count for row in data.mix):
        _empty(ax, "no objects counted in this range")
        return fig
    names = [row.class_name for row in data.mix]
    bars = ax.barh(names, [row.count for row in data.mix], color="#4c72b0")
    for bar, row in zip(bars, data.mix, strict=True):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f"  {row.count:,} ({row.share_percent:.1f}%)",
                va="center", fontsize=9)  # fmt: skip
    ax.invert_yaxis()
    ax.set_xlabel("objects counted")
    ax.margins(x=0.18)
    ax.grid(axis="x", alpha=0.3)
    return fig


def chart_heatmap(data: ReportData) -> Figure:
    """Mean density per camera (rows) and time bucket (columns)."""
    import matplotlib.dates as mdates
    import numpy as np

    cameras = sorted({cell.camera_id for cell in data.heat})
    fig = _figure(11.0, max(3.0, 0.28 * len(cameras) + 1.6))
    ax = fig.add_subplot()
    if not cameras:
        _empty(ax, "no windows in this range")
        return fig
    first = queries.bucket_start(data.span.start, data.bucket)
    columns = int((data.span.end - first) / data.bucket) + 1
    grid = np.full((len(cameras), columns), np.nan)
    row_of = {camera: index for index, camera in enumerate(cameras)}
    for cell in data.heat:
        grid[row_of[cell.camera_id], int((cell.time - first) / data.bucket)] = cell.density_mean
    left = mdates.date2num(first)
    right = mdates.date2num(first + columns * data.bucket)
    image = ax.imshow(
        np.ma.masked_invalid(grid), aspect="auto", cmap="YlOrRd", vmin=0.0, vmax=max(50.0, float(np.nanmax(grid))),
        extent=(left, right, len(cameras) - 0.5, -0.5), interpolation="nearest",
    )  # fmt: skip
    ax.set_yticks(range(len(cameras)), cameras, fontsize=8)
    ax.xaxis_date(tz=UTC)
    _time_axis(ax)
    fig.colorbar(image, ax=ax, label="mean density (%)", pad=0.01)
    return fig


def chart_status(data: ReportData) -> Figure:
    """Latest density per camera, coloured by the latest traffic status."""
    from matplotlib.patches import Patch

    fig = _figure(11.0, max(3.0, 0.28 * len(data.statuses) + 1.4))
    ax = fig.add_subplot()
    if not data.statuses:
        _empty(ax, "no cameras")
        return fig
    names = [row.camera_id for row in data.statuses]
    ax.barh(
        names,
        [row.density_mean for row in data.statuses],
        color=[STATUS_COLORS[row.traffic_status] for row in data.statuses],
    )
    for index, row in enumerate(data.statuses):
        label = f"  {row.traffic_status}, {row.vehicles_per_frame:.1f} vehicles/frame"
        ax.text(row.density_mean, index, label, va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("mean density in the latest window (%)")
    ax.margins(x=0.25)
    ax.tick_params(axis="y", labelsize=8)
    handles = [Patch(color=STATUS_COLORS[s], label=s) for s in TRAFFIC_STATUSES]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def chart_pipeline(data: ReportData) -> Figure:
    """Rows per second of each micro-batch (left) and its latency percentiles (right)."""
    fig = _figure(11.0, 3.8)
    rate_ax, latency_ax = fig.subplots(1, 2)
    if not data.batches:
        _empty(rate_ax, "no micro-batches in this range")
        _empty(latency_ax, "no micro-batches in this range")
        return fig
    times = _dates([row.time for row in data.batches])
    rate_ax.plot(times, [row.input_rows_per_s for row in data.batches], marker=".", label="input rows/s")
    rate_ax.plot(times, [row.processed_rows_per_s for row in data.batches], marker=".", label="processed rows/s")
    rate_ax.set_ylabel("rows per second")
    rate_ax.set_ylim(bottom=0)
    rate_ax.legend(fontsize=8)
    rate_ax.grid(alpha=0.3)
    _time_axis(rate_ax)
    for name, label in (("latency_p50_ms", "p50"), ("latency_p95_ms", "p95"), ("latency_max_ms", "max")):
        values = [getattr(row, name) for row in data.batches]
        latency_ax.plot(times, [float("nan") if v is None else v for v in values], marker=".", label=label)
    latency_ax.set_ylabel("produce -> Mongo latency (ms)")
    latency_ax.set_ylim(bottom=0)
    latency_ax.legend(fontsize=8)
    latency_ax.grid(alpha=0.3)
    _time_axis(latency_ax)
    return fig


def chart_dead_letters(data: ReportData) -> Figure:
    """Dead letters per pipeline stage over the range."""
    fig = _figure(11.0, 3.0)
    ax = fig.add_subplot()
    counts = [row.count for row in data.stages]
    bars = ax.bar([row.stage for row in data.stages], counts, color="#8c564b")
    for bar, count in zip(bars, counts, strict=True):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), str(count), ha="center", va="bottom", fontsize=9)
    ax.set_ylabel("dead letters")
    ax.set_ylim(0, max([*counts, 1]) * 1.25)
    ax.grid(axis="y", alpha=0.3)
    return fig


CHARTS = {
    "vehicles": chart_vehicles,
    "class_mix": chart_class_mix,
    "heatmap": chart_heatmap,
    "status": chart_status,
    "pipeline": chart_pipeline,
    "dead_letters": chart_dead_letters,
}


def png_bytes(fig: Figure) -> bytes:
    """Render a figure to PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", facecolor="white")
    return buffer.getvalue()


# --- HTML ----------------------------------------------------------------------------


def render_html(data: ReportData, charts: dict[str, bytes], generated_at: datetime, source: str) -> str:
    """The whole report as one HTML page with the charts inlined as base64 PNGs."""
    esc = html.escape
    health = data.health
    facts = [
        ("Database", source),
        ("Range (UTC)", f"{format_time(data.span.start)} to {format_time(data.span.end)}"),
        ("Cameras", str(len(data.cameras))),
        ("Frames", f"{data.frames:,}"),
        ("Windows", f"{len(data.windows):,}"),
        ("Micro-batches", f"{health.batches:,}"),
        ("Throughput", f"{health.throughput_rows_per_s:,.2f} frames/s"),
        ("Worst batch p95 latency", _ms(health.worst_latency_p95_ms)),
        ("Dead letters", f"{health.dead_letters_stored:,}"),
        ("Heatmap bucket", f"{data.bucket.total_seconds():g} s"),
    ]  # fmt: skip
    sections = []
    for slug, title in CHART_TITLES.items():
        encoded = base64.b64encode(charts[slug]).decode("ascii")
        sections.append(
            f'<section class="chart" id="{slug}"><h2>{esc(title)}</h2>'
            f'<img alt="{esc(title)}" src="data:image/png;base64,{encoded}"></section>'
        )
        if slug == "status":
            sections.append(_status_table(data.statuses))
        if slug == "dead_letters":
            sections.append(_dead_letter_table(data.dead_letters))
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>IPSP traffic report</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1160px;
       color: #222; background: #fff; }}
h1 {{ margin-bottom: 4px; }} .sub {{ color: #666; margin-top: 0; }}
table {{ border-collapse: collapse; margin: 8px 0 20px; font-size: 14px; }}
th, td {{ border: 1px solid #ddd; padding: 4px 10px; text-align: left; }}
th {{ background: #f5f5f5; }}
section.chart img {{ max-width: 100%; border: 1px solid #eee; }}
.Free {{ color: {STATUS_COLORS["Free"]}; }} .Normal {{ color: {STATUS_COLORS["Normal"]}; }}
.Congested {{ color: {STATUS_COLORS["Congested"]}; }}
</style></head>
<body data-charts="{len(charts)}">
<h1>IPSP traffic report</h1>
<p class="sub">Generated {esc(format_time(generated_at))} from MongoDB. Same views as the Grafana dashboards.</p>
<table class="facts">{rows}</table>
{"".join(sections)}
<script>
// records how many charts decoded, so a headless browser check can read it from the DOM
window.addEventListener("load", function () {{
  var ok = Array.prototype.filter.call(document.images, function (i) {{ return i.complete && i.naturalWidth > 0; }});
  document.body.setAttribute("data-charts-loaded", String(ok.length));
}});
</script>
</body></html>
"""


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def _status_table(statuses: list[CameraStatus]) -> str:
    esc = html.escape
    rows = "".join(
        f'<tr><td>{esc(s.camera_id)}</td><td class="{s.traffic_status}">{s.traffic_status}</td>'
        f"<td>{s.density_mean:.1f}</td><td>{s.vehicles_per_frame:.1f}</td><td>{s.frames:,}</td>"
        f"<td>{format_time(s.time)}</td></tr>"
        for s in statuses
    )
    return (
        '<table class="status"><tr><th>Camera</th><th>Status</th><th>Mean density %</th><th>Vehicles/frame</th>'
        f"<th>Frames</th><th>Latest window (UTC)</th></tr>{rows}</table>"
    )


def _dead_letter_table(letters: list[DeadLetterRow]) -> str:
    esc = html.escape
    if not letters:
        return "<p>No dead letters in this range.</p>"
    rows = "".join(
        f"<tr><td>{format_time(d.time)}</td><td>{esc(d.stage)}</td><td>{esc(d.reason)}</td>"
        f"<td>{esc(d.record_key or '-')}</td><td>{esc(d.topic)}:{d.partition}:{d.offset}</td></tr>"
        for d in letters
    )
    return (
        '<table class="dead-letters"><tr><th>Created (UTC)</th><th>Stage</th><th>Reason</th><th>Record</th>'
        f"<th>Kafka</th></tr>{rows}</table>"
    )


def write_report(data: ReportData, out_dir: Path, source: str, progress: Any = None) -> Path:
    """Draw every chart, write the PNGs and the HTML under ``out_dir``; return the HTML path."""
    charts_dir = out_dir / CHARTS_DIR
    charts_dir.mkdir(parents=True, exist_ok=True)
    charts: dict[str, bytes] = {}
    for slug, draw in CHARTS.items():
        charts[slug] = png_bytes(draw(data))
        (charts_dir / f"{slug}.png").write_bytes(charts[slug])
        if progress is not None:
            progress(slug)
    path = out_dir / REPORT_FILE
    path.write_text(render_html(data, charts, datetime.now(UTC), source), encoding="utf-8")
    return path
