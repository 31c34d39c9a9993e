"""The HTML report's drawing and assembly, from rows shaped by the serving helpers (no database)."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ipsp import rollups
from ipsp.contracts import Counts, DeadLetter, KafkaCoordinates, PipelineProgress, TrafficWindow, window_id
from ipsp.serving import queries
from ipsp.serving.params import TimeRange
from ipsp.serving.report import CHART_TITLES, REPORT_FILE, ReportData, pick_bucket, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


T0 = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)


def _window(camera: str, minute: int) -> dict:
    start = T0 + timedelta(minutes=minute)
    cars = (minute * 7 + len(camera)) % 13
    return TrafficWindow(
        id=window_id(camera, start), camera_id=camera, window_start=start, window_end=start + timedelta(minutes=1),
        frames=60, counts=Counts.of({"car": cars, "motorbike": 2 * cars, "person": 1}), density_mean=float(cars),
        density_max=float(cars) + 1.0, traffic_status="Normal", updated_at=T0,
    ).to_document()  # fmt: skip


def _progress(batch_id: int) -> dict:
    finished = T0 + timedelta(minutes=batch_id + 1)
    return PipelineProgress(
        id=f"q:{batch_id}", query="q", batch_id=batch_id, rows=101, results=100, dead_letters=1,
        input_rows_per_s=50.0 + batch_id, processed_rows_per_s=55.0, durations_ms={},
        latency={"p50_ms": 200.0, "p95_ms": 300.0, "max_ms": 400.0},
        started_at=finished - timedelta(seconds=2), finished_at=finished,
    ).to_document()  # fmt: skip


@pytest.fixture(scope="module")
def data() -> ReportData:
    cameras = [f"cam_0{i}" for i in range(1, 6)]
    hours = rollups.fold_hours({}, [_window(c, m) for c in cameras for m in range(8)], 60, T0)
    days = rollups.fold_days({}, hours.values(), T0)
    docs = rollups.fold_cameras({}, days.values(), hours.values(), T0)
    span = TimeRange(T0, T0 + timedelta(minutes=8))
    bucket = pick_bucket(span)
    rows = rollups.windows_of_hours(hours.values(), span.start, span.end)
    letter = DeadLetter(id="traffic-metadata:0:5", stage="parse", reason="bad", raw="x", created_at=T0,
                        kafka=KafkaCoordinates(topic="traffic-metadata", partition=0, offset=5))  # fmt: skip
    batches = [
        {**rollups.batch_figures(_progress(i), {"parse": 1}, [letter.to_document()] if i == 0 else []), "_id": f"q:{i}"}
        for i in range(4)
    ]
    return ReportData(
        span=span,
        bucket=bucket,
        statuses=[queries.camera_status_of(docs[c]) for c in cameras],
        windows=[queries.window_row(doc) for doc in rows],
        heat=queries.heat_cells(rows, bucket),
        mix=queries.class_mix_of(rows),
        health=queries.health_of(batches),
        batches=[queries.batch_row(doc) for doc in batches],
        stages=queries.stages_of(batches),
        dead_letters=queries.latest_dead_letters(batches, span, 20),
        frames=sum(w.frames for w in [queries.window_row(doc) for doc in rows]),
        cameras=cameras,
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
