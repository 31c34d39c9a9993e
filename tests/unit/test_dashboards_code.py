"""The provisioned dashboards are what 1_infrastructure/grafana/dashboards_code.py generates.

The JSON files are checked in (Grafana provisions files), so a hand edit of a file,
or a change of the code without ``make dashboards``, fails here. The requests the
generated panels make are checked against the API by tests/unit/test_dashboards.py
(OpenAPI routes and fields) and tests/integration/test_dashboard_queries.py (sent).
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

import dashboards_code  # 1_infrastructure/grafana, on pytest's pythonpath
from dashboards_code import INFINITY_PLUGIN
from support.dashboards import grafana_values, infinity_queries, iter_panels, resolve_request

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "1_infrastructure" / "grafana"
FOLDER = GRAFANA / "dashboards"


@pytest.fixture(scope="module")
def generated() -> dict[str, dict[str, object]]:
    return dashboards_code.generate()


def test_code_writes_to_the_provisioned_folder() -> None:
    assert dashboards_code.DEFAULT_FOLDER == FOLDER


def test_checked_in_files_are_what_the_code_generates(generated: dict[str, dict[str, object]]) -> None:
    assert sorted(path.name for path in FOLDER.glob("*.json")) == sorted(generated)
    for name, board in generated.items():
        on_disk = (FOLDER / name).read_text(encoding="utf-8")
        assert on_disk == dashboards_code.render(board), f"{name} differs from the code: run `make dashboards`"
    assert dashboards_code.stale_files(FOLDER) == []


def test_generation_is_deterministic(generated: dict[str, dict[str, object]]) -> None:
    again = dashboards_code.generate()
    assert {name: dashboards_code.render(b) for name, b in again.items()} == {
        name: dashboards_code.render(b) for name, b in generated.items()
    }


def test_check_fails_on_a_hand_edit_and_write_repairs_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert dashboards_code.main(["--write", "--folder", str(tmp_path)]) == 0
    assert dashboards_code.main(["--check", "--folder", str(tmp_path)]) == 0
    edited = tmp_path / "pipeline-health.json"
    board = json.loads(edited.read_text(encoding="utf-8"))
    board["panels"][0]["title"] = "edited by hand"
    edited.write_text(json.dumps(board, indent=2) + "\n", encoding="utf-8")
    (tmp_path / "traffic-overview.json").unlink()
    capsys.readouterr()
    assert dashboards_code.main(["--check", "--folder", str(tmp_path)]) == 1
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and "pipeline-health.json" in message and "traffic-overview.json" in message
    assert dashboards_code.main(["--write", "--folder", str(tmp_path)]) == 0
    assert dashboards_code.main(["--check", "--folder", str(tmp_path)]) == 0


def test_every_panel_has_an_infinity_target_on_the_provisioned_datasource(
    generated: dict[str, dict[str, object]],
) -> None:
    expected = {"type": INFINITY_PLUGIN, "uid": dashboards_code.DATASOURCE_UID}
    for board in generated.values():
        for panel in iter_panels(board):
            targets = panel["targets"]
            assert targets and all(t["datasource"] == expected and t["url"].startswith("/api/") for t in targets)


def test_infinity_target_builder_makes_the_request_resolve_request_reads() -> None:
    query = (
        dashboards_code.InfinityTarget("/api/windows")
        .ref_id("B")
        .params(dashboards_code.TIME_RANGE_PARAMS)
        .param("camera", "${camera:csv}")
        .column("time", "Time", "timestamp")
        .column("vehicles_per_frame", "vehicles")
        .build()
        .to_json()
    )
    assert query["refId"] == "B" and query["type"] == "json" and query["parser"] == "backend"
    values = grafana_values(datetime(2026, 1, 5, 7, tzinfo=UTC), datetime(2026, 1, 5, 8, tzinfo=UTC), {"camera": ["a"]})
    request = resolve_request(query, values)
    assert request.path == "/api/windows"
    assert request.params == [("from", "1767596400000"), ("to", "1767600000000"), ("camera", "a")]
    assert request.columns == ["time", "vehicles_per_frame"] and request.root_selector == ""


def test_camera_variable_is_an_infinity_query(generated: dict[str, dict[str, object]]) -> None:
    queries = list(infinity_queries("traffic-overview.json", generated["traffic-overview.json"]))
    (variable,) = [q for q in queries if q.ref_id == "variable"]
    assert variable.panel == "variable camera" and variable.target["url"] == "/api/cameras"
    assert "datasource" not in variable.target  # the variable's own datasource applies


def test_the_api_does_not_import_the_sdk() -> None:
    # grafana-foundation-sdk is a dev extra: `ipsp serve` must start without it
    code = (
        "import sys, ipsp.cli, ipsp.serving.app; "
        "sys.exit(any(name.startswith('grafana_foundation_sdk') for name in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_no_runtime_module_names_the_sdk() -> None:
    # the generator is a dev tool beside the files it writes; the ipsp package never imports the SDK
    naming = [path for path in (REPO / "src" / "ipsp").rglob("*.py") if "grafana_foundation_sdk" in path.read_text()]
    assert naming == []


def test_make_dashboards_runs_the_generator_as_a_script(tmp_path: Path) -> None:
    script = GRAFANA / "dashboards_code.py"
    assert f"$(BIN)/python {script.relative_to(REPO)} --write" in (REPO / "Makefile").read_text()
    done = subprocess.run(
        [sys.executable, str(script), "--check", "--folder", str(FOLDER)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
