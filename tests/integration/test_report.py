"""`ipsp report` over documents in FerretDB, opened in headless Chromium.

The report is written by the real command, then Chromium (Debian's `chromium`
package) loads the file: the screenshot must not be blank and the DOM must carry
every chart title and report that every chart image decoded.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from ipsp.config import Settings
from ipsp.serving.report import CHART_TITLES
from support.serving import SeededRun, drop_database, free_port, seed_traffic_db

DB_NAME = "ipsp_test_serving_report"
WINDOW = (1280, 3600)


@pytest.fixture(scope="module")
def seeded(stack_settings: Settings) -> Iterator[SeededRun]:
    run = seed_traffic_db(stack_settings, DB_NAME)
    yield run
    drop_database(stack_settings, DB_NAME)


def ipsp(*args: str, mongo_uri: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IPSP_MONGO_URI": mongo_uri}
    return subprocess.run(
        [sys.executable, "-m", "ipsp.cli", *args], env=env, capture_output=True, text=True, timeout=300
    )


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "headless Chromium is needed: apt-get install -y chromium"
    return path


def chromium_args(profile: Path) -> list[str]:
    return [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
        f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}", "--virtual-time-budget=5000",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def report(seeded: SeededRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    done = ipsp("report", "--out", str(out), "--mongo-db", seeded.db_name, mongo_uri=seeded.mongo_uri)
    assert done.returncode == 0, done.stderr
    path = Path(done.stdout.strip().splitlines()[-1])
    assert path == (out / "report.html").resolve() and path.is_file()
    return path


def test_report_writes_html_and_pngs(report: Path) -> None:
    html = report.read_text()
    for slug, title in CHART_TITLES.items():
        assert f"<h2>{title}</h2>" in html
        assert (report.parent / "charts" / f"{slug}.png").stat().st_size > 5_000
    assert not re.search(r'(src|href)="(https?:)?//', html), "the report must not load anything from elsewhere"


def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    done = subprocess.run(
        [*chromium_args(tmp_path / "profile-shot"), f"--screenshot={shot}", report.as_uri()],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == WINDOW
    gray = image.convert("L")
    assert ImageStat.Stat(gray).stddev[0] > 20, "screenshot looks blank"
    histogram = gray.histogram()
    non_white = 1 - sum(histogram[245:]) / (image.size[0] * image.size[1])
    assert non_white > 0.05, f"only {non_white:.1%} of the screenshot is not white"
    # colour, not just text: the heatmap and status bars put saturated pixels on the page
    hsv = image.convert("HSV")
    saturated = sum(hsv.getchannel("S").histogram()[100:])
    assert saturated > 20_000, f"only {saturated} saturated pixels: charts did not render"
    keep = os.environ.get("REPORT_SCREENSHOT_DIR")  # test-only knob (IPSP_* names are reserved for Settings)
    if keep:
        shutil.copy(shot, Path(keep) / "report-screenshot.png")


def test_report_dom_has_titles_and_decoded_charts(report: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [*chromium_args(tmp_path / "profile-dom"), "--dump-dom", report.as_uri()],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    for title in CHART_TITLES.values():
        assert f"<h2>{title}</h2>" in dom
    assert f'data-charts-loaded="{len(CHART_TITLES)}"' in dom, "not every chart image decoded in Chromium"


def test_report_on_an_empty_database_says_so(seeded: SeededRun, tmp_path: Path) -> None:
    done = ipsp("report", "--out", str(tmp_path), "--mongo-db", "ipsp_test_nothing_here", mongo_uri=seeded.mongo_uri)
    assert done.returncode == 2
    assert "no windows in database 'ipsp_test_nothing_here'" in done.stderr and "Traceback" not in done.stderr


def test_report_bad_input_is_one_line(seeded: SeededRun, tmp_path: Path) -> None:
    for args, fragment in (
        (("--camera", "cam_99"), "unknown camera(s): cam_99"),
        (("--from", "2026-01-05T08:00:00Z", "--to", "2026-01-05T07:00:00Z"), "inverted"),
        (("--bucket", "often"), "not a duration"),
    ):
        done = ipsp("report", "--out", str(tmp_path), "--mongo-db", seeded.db_name, *args, mongo_uri=seeded.mongo_uri)
        assert done.returncode == 2, args
        assert fragment in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_report_with_mongo_down(tmp_path: Path) -> None:
    done = ipsp("report", "--out", str(tmp_path), mongo_uri=f"mongodb://127.0.0.1:{free_port()}/")
    assert done.returncode == 3
    assert "does not answer" in done.stderr and "Traceback" not in done.stderr


def test_report_range_is_the_runs_own(report: Path, seeded: SeededRun) -> None:
    # the event-time extent of the run's windows: not stretched to the processing-time clock
    from ipsp.contracts import format_time

    html = report.read_text()
    assert f"{format_time(seeded.start)} to " in html
