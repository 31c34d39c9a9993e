"""Static checks of the Grafana provisioning: datasource, dashboards, provider, kustomization.

Grafana cannot run here, so each dashboard is checked against the provisioned
datasource and against the API's own OpenAPI spec: every panel's path and query
parameters exist, and every field a panel reads is in that route's response rows.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from dashboards_code import INFINITY_PLUGIN  # 1_infrastructure/grafana, on pytest's pythonpath
from ipsp.config import Settings
from ipsp.mongo import connect
from ipsp.serving.app import create_app
from support.dashboards import (
    GRID_COLUMNS,
    grafana_values,
    infinity_queries,
    interpolate,
    iter_panels,
    load_dashboards,
    load_datasources,
    overlapping,
    resolve_request,
)

GRAFANA = Path(__file__).resolve().parents[2] / "1_infrastructure" / "grafana"
DASHBOARDS = load_dashboards(GRAFANA / "dashboards")
DATASOURCE_FILE = GRAFANA / "datasources" / "infinity.yaml"
UID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
DASHBOARD_VARIABLES: dict[str, Any] = {"camera": ["cam_01", "cam_02"], "bucket": "5m"}


@pytest.fixture(scope="module")
def datasource() -> dict[str, Any]:
    (only,) = load_datasources(DATASOURCE_FILE)
    return only


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    with socket.socket() as sock:  # the spec needs no database: point the lazy client at a closed port
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(mongo_uri=SecretStr(f"mongodb://127.0.0.1:{port}/"))
    return create_app(settings, client=connect(settings.mongo_uri.get_secret_value(), timeout_ms=100)).openapi()


def all_queries():
    return [query for name, board in DASHBOARDS.items() for query in infinity_queries(name, board)]


def query_id(query) -> str:
    return f"{query.dashboard}:{query.panel}:{query.ref_id}"


def test_there_are_two_dashboards() -> None:
    assert set(DASHBOARDS) == {"traffic-overview.json", "pipeline-health.json"}


def test_datasource_is_infinity_on_the_api_url(datasource: dict[str, Any]) -> None:
    assert datasource["type"] == INFINITY_PLUGIN
    assert UID.match(datasource["uid"])
    assert datasource["url"] == "${TRAFFIC_API_URL}"
    assert datasource["jsonData"]["allowedHosts"] == ["${TRAFFIC_API_URL}"]
    assert datasource["secureJsonData"]["bearerToken"] == "${TRAFFIC_API_TOKEN}"
    # every IPSP_* variable must be a Settings field; Grafana's own variables must not use the prefix
    expanded = set(re.findall(r"\$\{([A-Za-z0-9_]+)\}", DATASOURCE_FILE.read_text()))
    assert expanded == {"TRAFFIC_API_URL", "TRAFFIC_API_TOKEN"}


def test_dashboard_uids_and_titles_are_unique_and_valid() -> None:
    uids = [board["uid"] for board in DASHBOARDS.values()]
    titles = [board["title"] for board in DASHBOARDS.values()]
    assert all(UID.match(uid) for uid in uids)
    assert len(set(uids)) == len(uids) and len(set(titles)) == len(titles)


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_panels_use_the_provisioned_datasource(name: str, datasource: dict[str, Any]) -> None:
    board = DASHBOARDS[name]
    expected = {"type": datasource["type"], "uid": datasource["uid"]}
    for panel in iter_panels(board):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == expected, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == expected, panel["title"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == expected, variable["name"]


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_ids_and_ref_ids_are_unique(name: str) -> None:
    panels = list(iter_panels(DASHBOARDS[name]))
    ids = [panel["id"] for panel in panels]
    assert len(set(ids)) == len(ids)
    for panel in panels:
        refs = [target["refId"] for target in panel.get("targets", [])]
        assert len(set(refs)) == len(refs) and all(refs), panel["title"]


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_grid_layout_fits_and_does_not_overlap(name: str) -> None:
    panels = list(iter_panels(DASHBOARDS[name]))
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["y"] >= 0 and grid["w"] >= 1 and grid["h"] >= 1, panel["title"]
        assert grid["x"] + grid["w"] <= GRID_COLUMNS, panel["title"]
    assert overlapping(panels) == []


def test_overlap_detection_itself() -> None:
    a = {"title": "a", "gridPos": {"x": 0, "y": 0, "w": 12, "h": 8}}
    b = {"title": "b", "gridPos": {"x": 11, "y": 7, "w": 5, "h": 5}}
    c = {"title": "c", "gridPos": {"x": 12, "y": 0, "w": 12, "h": 8}}
    assert overlapping([a, b, c]) == [("a", "b"), ("b", "c")]
    assert overlapping([a, c]) == []


def test_traffic_dashboard_has_camera_and_time_variables() -> None:
    board = DASHBOARDS["traffic-overview.json"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["camera"]["multi"] and variables["camera"]["includeAll"]
    assert {"from", "to"} <= set(board["time"])
    titles = {panel["title"] for panel in iter_panels(board)}
    assert {
        "Vehicles per camera over time", "Class mix", "Density heatmap (camera x time)", "Current status per camera",
    } <= titles  # fmt: skip


def test_pipeline_dashboard_covers_throughput_latency_dead_letters() -> None:
    titles = {panel["title"] for panel in iter_panels(DASHBOARDS["pipeline-health.json"])}
    assert {"Throughput per micro-batch", "Latency produce to MongoDB", "Dead letters by stage"} <= titles


@pytest.mark.parametrize("query", all_queries(), ids=query_id)
def test_every_query_is_a_get_on_a_known_route(query, openapi: dict[str, Any]) -> None:
    target = query.target
    assert target["type"] == "json" and target["source"] == "url" and target["parser"] == "backend"
    assert target["url_options"]["method"] == "GET"
    request = resolve_request(target, grafana_values(*_range(), DASHBOARD_VARIABLES))
    assert request.path in openapi["paths"], request.path
    operation = openapi["paths"][request.path]["get"]
    declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
    assert {key for key, _ in request.params} <= declared


@pytest.mark.parametrize("query", all_queries(), ids=query_id)
def test_every_field_a_panel_reads_is_in_the_response_rows(query, openapi: dict[str, Any]) -> None:
    request = resolve_request(query.target, grafana_values(*_range(), DASHBOARD_VARIABLES))
    schema = openapi["paths"][request.path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema["type"] == "array", "Infinity panels read flat arrays of rows"
    row = openapi["components"]["schemas"][schema["items"]["$ref"].rsplit("/", 1)[-1]]
    assert request.columns and set(request.columns) <= set(row["properties"])
    assert request.root_selector == ""


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_transformations_use_fields_the_query_reads(name: str) -> None:
    for panel in iter_panels(DASHBOARDS[name]):
        read = {c["selector"] for t in panel.get("targets", []) for c in t["columns"]}
        texts = {c["text"] for t in panel.get("targets", []) for c in t["columns"]}
        for step in panel.get("transformations", []):
            options = step.get("options", {})
            assert set(options.get("fields", [])) <= read | texts, panel["title"]
            if "byField" in options:
                assert options["byField"] in texts, panel["title"]


def test_interpolate_like_grafana() -> None:
    values = grafana_values(*_range(), {"camera": ["a", "b"], "bucket": "5m", "one": ["x"]})
    assert interpolate("${__from}-${__to}", values) == "1767596400000-1767600000000"
    assert interpolate("${__from:date:iso}", values) == "2026-01-05T07:00:00.000Z"
    assert interpolate("${camera:csv}|$bucket|[[bucket]]", values) == "a,b|5m|5m"
    assert interpolate("${camera}", values) == "{a,b}" and interpolate("${one}", values) == "x"
    with pytest.raises(KeyError, match="nope"):
        interpolate("${nope}", values)


def test_provider_and_kustomization_cover_every_file() -> None:
    provider = yaml.safe_load((GRAFANA / "providers" / "dashboards.yaml").read_text())
    (entry,) = provider["providers"]
    assert entry["type"] == "file" and entry["options"]["path"].startswith("/")
    kustomization = yaml.safe_load((GRAFANA / "kustomization.yaml").read_text())
    listed = {file for gen in kustomization["configMapGenerator"] for file in gen["files"]}
    on_disk = {str(path.relative_to(GRAFANA)) for sub in ("dashboards", "datasources", "providers")
               for path in (GRAFANA / sub).iterdir()}  # fmt: skip
    assert listed == on_disk


def test_readme_states_the_mongodb_datasource_licence() -> None:
    text = (GRAFANA / "README.md").read_text()
    assert "Enterprise" in text and "licence" in text


def _range():
    from datetime import UTC, datetime

    return datetime(2026, 1, 5, 7, 0, tzinfo=UTC), datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
