"""The HTML report's drawing and assembly, from rows shaped by the serving helpers (no database)."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ipsp.serving import queries
from ipsp.serving.params import TimeRange
from ipsp.serving.report import CHART_TITLES, REPORT_FILE, ReportData, pick_bucket, write_report
from ipsp.serving.synthetic import build_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data() -> ReportData:
    run = build_run(frames=400, cameras=5, frames_per_second=1.0, batch_rows=100, dead_letter_every=80)
    span = TimeRange(run.results[0].event_time, run.results[-1].event_time + timedelta(minutes=5))
    bucket = pick_bucket(span)
    latest = {w.camera_id: w for w in run.windows}  # windows are sorted: the last one per camera wins
    statuses = [queries.camera_status(w.to_document(), 80) for _, w in sorted(latest.items())]
    window_docs = [w.to_document() for w in run.windows]
    sums = {name: sum(getattr(r.counts, name) for r in run.results) for name in queries.CLASSES}
    progress = [p.to_document() for p in run.progress]
    return ReportData(
        span=span,
        bucket=bucket,
        statuses=statuses,
        windows=[queries.window_row(doc) for doc in window_docs],
        heat=queries.heat_cells(window_docs, bucket),
        mix=queries.class_shares(sums),
        health=queries.health_from({"results": 400}, progress[0], progress[-1], progress[-1], 5),
        batches=[queries.batch_row(doc) for doc in progress],
        stages=[],
        dead_letters=[queries.dead_letter_row(d.to_document()) for d in run.dead_letters],
        frames=400,
        cameras=sorted(latest),
    )


def test_pick_bucket_gives_nice_widths() -> None:
    start = datetime(2026, 1, 5, tzinfo=UTC)
    assert pick_bucket(TimeRange(start, start + timedelta(minutes=96))) == timedelta(minutes=1)
    assert pick_bucket(TimeRange(start, start + timedelta(hours=6))) == timedelta(minutes=5)
    assert pick_bucket(TimeRange(start, start + timedelta(days=30))) == timedelta(hours=6)


def test_report_is_self_contained_with_every_chart(data: ReportData, tmp_path: Path) -> None:
    path = write_report(data, tmp_path, "mongodb://example/ db=traffic_db")
    assert path == tmp_path / REPORT_FILE
    html = path.read_text()
    for slug, title in CHART_TITLES.items():
        assert f"<h2>{title}</h2>" in html
        png = (tmp_path / "charts" / f"{slug}.png").read_bytes()
        assert png.startswith(PNG_MAGIC) and len(png) > 5_000, slug
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == len(CHART_TITLES)
    assert all(base64.b64decode(image).startswith(PNG_MAGIC) for image in images)
    # nothing is fetched from elsewhere: no external src/href at all
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "cam_01" in html and "traffic-metadata:" in html


def test_empty_sections_still_draw(data: ReportData, tmp_path: Path) -> None:
    empty = ReportData(
        span=data.span, bucket=data.bucket, statuses=[], windows=[], heat=[], mix=queries.class_shares({}),
        health=queries.health_from({}, None, None, None, 0), batches=[], stages=[], dead_letters=[], frames=0,
    )  # fmt: skip
    html = write_report(empty, tmp_path, "x").read_text()
    assert "No dead letters in this range." in html
    assert len(re.findall(r"data:image/png;base64,", html)) == len(CHART_TITLES)
