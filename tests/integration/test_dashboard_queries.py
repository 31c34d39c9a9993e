"""Every Grafana panel's own request, sent to a running `ipsp serve` over documents in FerretDB.

Grafana cannot run here; what a panel shows is decided by the request its
Infinity query makes and the fields it reads from the answer. For each panel
target and query variable of every provisioned dashboard, the request is built
as Grafana builds it (``${__from}``, ``${__to}``, ``${camera:csv}`` ...
substituted), sent over HTTP, and the answer must be a non-empty array whose
rows carry every field the panel reads, with at least one non-null value each.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ipsp.config import Settings
from support.dashboards import grafana_values, infinity_queries, load_dashboards, resolve_request
from support.serving import ApiServer, SeededRun, drop_database, seed_traffic_db

GRAFANA = Path(__file__).resolve().parents[2] / "1_infrastructure" / "grafana"
DASHBOARDS = load_dashboards(GRAFANA / "dashboards")
QUERIES = [query for name, board in DASHBOARDS.items() for query in infinity_queries(name, board)]
DB_NAME = "ipsp_test_serving_dashboards"


@pytest.fixture(scope="module")
def seeded(stack_settings: Settings) -> Iterator[SeededRun]:
    run = seed_traffic_db(stack_settings, DB_NAME)
    yield run
    drop_database(stack_settings, DB_NAME)


@pytest.fixture(scope="module")
def api(seeded: SeededRun) -> Iterator[httpx.Client]:
    with (
        ApiServer(seeded.mongo_uri, seeded.db_name) as server,
        httpx.Client(base_url=server.url, timeout=60.0) as client,
    ):
        yield client


def selections(seeded: SeededRun) -> dict[str, dict[str, Any]]:
    """Variable values to try: Grafana's 'All' (expands to every camera) and one camera."""
    return {
        "all": {"camera": seeded.cameras, "bucket": "5m"},
        "one": {"camera": [seeded.cameras[-1]], "bucket": "1m"},
    }


def check_answer(rows: Any, columns: list[str], where: str) -> None:
    assert isinstance(rows, list), f"{where}: Infinity panels read a JSON array"
    assert rows, f"{where}: empty answer"
    for column in columns:
        assert all(column in row for row in rows), f"{where}: field {column!r} missing from rows"
        assert any(row[column] is not None for row in rows), f"{where}: field {column!r} is always null"


@pytest.mark.parametrize("selection", ["all", "one"])
@pytest.mark.parametrize("query", QUERIES, ids=lambda q: f"{q.dashboard}:{q.panel}:{q.ref_id}")
def test_panel_request_answers_with_the_fields_it_reads(
    api: httpx.Client, seeded: SeededRun, query: Any, selection: str
) -> None:
    values = grafana_values(seeded.start, seeded.end, selections(seeded)[selection])
    request = resolve_request(query.target, values)
    response = api.get(request.path, params=request.params)
    where = f"{query.dashboard} / {query.panel} -> GET {response.request.url}"
    assert response.status_code == 200, f"{where}: {response.status_code} {response.text[:300]}"
    check_answer(response.json(), request.columns, where)
    if selection == "one" and any(key == "camera" for key, _ in request.params):
        cameras = {row["camera_id"] for row in response.json() if "camera_id" in row}
        assert cameras <= {seeded.cameras[-1]}, where


def test_every_dashboard_was_exercised() -> None:
    assert {query.dashboard for query in QUERIES} == set(DASHBOARDS)
    assert sum(1 for query in QUERIES if query.ref_id == "variable") >= 1
