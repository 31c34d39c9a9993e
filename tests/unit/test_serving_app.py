"""The API's shape and its answers that need no database: routes, OpenAPI, auth, CORS, bad input.

The app is built over a MongoDB client pointed at a closed loopback port: the
driver is lazy, so routes that fail before touching MongoDB answer at once, and
routes that do reach it show the real driver's failure as a 503.
"""

from __future__ import annotations

import socket

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from ipsp.config import Settings
from ipsp.mongo import connect
from ipsp.serving.app import create_app

DATA_ROUTES = {
    "/api/cameras", "/api/cameras/{camera_id}", "/api/cameras/{camera_id}/frames",
    "/api/cameras/{camera_id}/windows", "/api/windows", "/api/heatmap", "/api/class-mix",
    "/api/class-mix/cameras", "/api/pipeline/health", "/api/pipeline/batches", "/api/dead-letters",
    "/api/dead-letters/stages", "/api/summary",
}  # fmt: skip
RANGE = {"from": "1767596400000", "to": "1767600000000"}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_client(**overrides: object) -> TestClient:
    settings = Settings(mongo_uri=SecretStr(f"mongodb://127.0.0.1:{closed_port()}/"), **overrides)  # type: ignore[arg-type]
    app = create_app(settings, client=connect(settings.mongo_uri.get_secret_value(), timeout_ms=200))
    return TestClient(app)


@pytest.fixture(scope="module")
def client() -> TestClient:
    return make_client()


def test_only_get_routes(client: TestClient) -> None:
    methods = {m for route in client.app.routes for m in getattr(route, "methods", set())}  # type: ignore[attr-defined]
    assert methods <= {"GET", "HEAD"}


def test_openapi_lists_every_route_with_typed_answers(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    assert DATA_ROUTES | {"/healthz", "/metrics"} <= set(paths)
    for path in DATA_ROUTES:
        operation = paths[path]["get"]
        assert set(paths[path]) == {"get"}
        schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert schema.get("type") == "array" or "$ref" in schema, path
        assert {"400", "404", "422", "503"} <= set(operation["responses"]), path


def test_openapi_states_the_formats_the_routes_check(client: TestClient) -> None:
    """Schema-valid requests are answerable: time, bucket and camera formats are in the schema."""
    import re

    paths = client.get("/openapi.json").json()["paths"]

    def params(path: str) -> dict[str, dict[str, object]]:
        return {p["name"]: p for p in paths[path]["get"].get("parameters", [])}

    windows = params("/api/windows")
    assert set(windows) == {"from", "to", "camera", "bucket"}
    time_pattern = str(windows["from"]["schema"]["pattern"])
    assert re.match(time_pattern, RANGE["from"]) and re.match(time_pattern, "2026-01-05T07:00:00+07:00")
    assert not re.match(time_pattern, "yesterday") and not re.match(time_pattern, "2026-01-05T07:00:00")
    camera_pattern = str(windows["camera"]["schema"]["items"]["pattern"])  # each repeated value
    assert re.match(camera_pattern, "cam_01,cam_02") and not re.match(camera_pattern, "cam 01")
    assert re.match(str(windows["bucket"]["schema"]["pattern"]), "5m")
    assert not re.match(str(windows["bucket"]["schema"]["pattern"]), "soon")
    assert params("/api/heatmap")["bucket"]["schema"]["default"] == "5m"
    assert set(params("/api/class-mix")) == {"from", "to", "camera"}  # no bucket where none applies
    assert set(params("/api/pipeline/health")) == {"from", "to"}


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_writes_are_not_allowed(client: TestClient, method: str) -> None:
    assert getattr(client, method)("/api/cameras").status_code == 405


@pytest.mark.parametrize(
    ("path", "params", "status", "fragment"),
    [
        ("/api/windows", {"from": "1767600000000", "to": "1767596400000"}, 400, "inverted"),
        ("/api/windows", {"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, 400, "too long"),
        ("/api/windows", {"from": "yesterday"}, 400, "'from'"),
        ("/api/windows", {"from": "2026-01-05T07:00:00"}, 400, "time zone"),
        ("/api/windows", {**RANGE, "camera": "cam 01"}, 400, "not a valid camera id"),
        ("/api/heatmap", {**RANGE, "bucket": "soon"}, 400, "not a duration"),
        ("/api/heatmap", {"from": "0", "to": "31536000000", "bucket": "1m"}, 400, "buckets"),
        ("/api/cameras/cam_01/frames", {**RANGE, "limit": "1001"}, 422, "parameter 'limit'"),
        ("/api/cameras/cam_01/frames", {**RANGE, "limit": "ten"}, 422, "parameter 'limit'"),
        ("/api/cameras/cam_01/frames", {**RANGE, "limit": "0"}, 422, "parameter 'limit'"),
        ("/api/cameras/cam_01/frames", {**RANGE, "order": "sideways"}, 422, "parameter 'order'"),
        ("/api/cameras/cam_01/frames", {"from": "1767600000000", "to": "1"}, 400, "inverted"),
        ("/api/pipeline/batches", {**RANGE, "limit": "0"}, 422, "parameter 'limit'"),
        ("/api/dead-letters", {**RANGE, "stage": "teleport"}, 400, "unknown stage"),
    ],
)
def test_bad_input_is_a_clear_4xx(client: TestClient, path: str, params: dict, status: int, fragment: str) -> None:
    response = client.get(path, params=params)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and fragment in detail


def test_unknown_path_is_404(client: TestClient) -> None:
    assert client.get("/api/nothing-here").status_code == 404


def test_mongo_down_is_503_with_message(client: TestClient) -> None:
    response = client.get("/api/cameras")
    assert response.status_code == 503
    assert response.json()["detail"].startswith("MongoDB is unavailable")
    health = client.get("/healthz")
    assert health.status_code == 503 and health.json()["mongo"] == "down"


def test_metrics_are_prometheus_text(client: TestClient) -> None:
    client.get("/api/windows", params={"from": "x"})
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'ipsp_api_requests_total{method="GET",route="/api/windows",status="400"}' in text
    assert "ipsp_api_request_duration_seconds_bucket" in text and "ipsp_api_mongo_up" in text


def test_metrics_label_unmatched_paths_once(client: TestClient) -> None:
    for n in range(3):
        client.get(f"/random-{n}")
    text = client.get("/metrics").text
    assert 'route="unmatched"' in text and "random-1" not in text


def test_bearer_token_guards_api_routes() -> None:
    guarded = make_client(api_token=SecretStr("s3cret"))
    bad = {**RANGE, "to": "1"}  # an inverted range: answered without MongoDB once past auth
    assert guarded.get("/api/windows", params=bad).status_code == 401
    response = guarded.get("/api/windows", params=bad, headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert "bearer token" in response.json()["detail"]
    ok = guarded.get("/api/windows", params=bad, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 400
    assert guarded.get("/metrics").status_code == 200  # scrapes and probes stay open
    assert guarded.get("/healthz").status_code == 503


def test_cors_is_closed_by_default(client: TestClient) -> None:
    preflight = client.options(
        "/api/windows", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert "access-control-allow-origin" not in preflight.headers
    simple = client.get("/metrics", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in simple.headers


def test_cors_allows_only_configured_origins() -> None:
    open_client = make_client(api_cors_origins="https://grafana.example, https://ops.example")
    allowed = open_client.options(
        "/api/windows", headers={"Origin": "https://grafana.example", "Access-Control-Request-Method": "GET"}
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://grafana.example"
    assert "POST" not in allowed.headers["access-control-allow-methods"]
    denied = open_client.get("/metrics", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in denied.headers
