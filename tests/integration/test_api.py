"""The traffic API over HTTP (`ipsp serve` in a subprocess) against documents in the local FerretDB.

Expected values are computed in the test from the raw documents read back with
pymongo, never from how the database was seeded, so the same tests hold for
documents written by the real pipeline.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from pymongo.database import Database

from ipsp.config import Settings
from ipsp.contracts import format_time
from ipsp.mongo import connect
from support.serving import ApiServer, SeededRun, drop_database, free_port, seed_traffic_db

DB_NAME = "ipsp_test_serving_api"
CLASSES = ("motorbike", "car", "bus", "truck", "bicycle", "person")


def ms(moment: datetime) -> str:
    return str(int(moment.timestamp() * 1000))


@pytest.fixture(scope="module")
def seeded(stack_settings: Settings) -> Iterator[SeededRun]:
    run = seed_traffic_db(stack_settings, DB_NAME)
    yield run
    drop_database(stack_settings, DB_NAME)


@pytest.fixture(scope="module")
def db(stack_settings: Settings, seeded: SeededRun) -> Iterator[Database[dict[str, Any]]]:
    client = connect(stack_settings.mongo_uri.get_secret_value(), timeout_ms=10_000)
    yield client[seeded.db_name]
    client.close()


@pytest.fixture(scope="module")
def api(seeded: SeededRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with (
        ApiServer(seeded.mongo_uri, seeded.db_name, log=log) as server,
        httpx.Client(base_url=server.url, timeout=60.0) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def whole(seeded: SeededRun) -> dict[str, str]:
    return {"from": ms(seeded.start), "to": ms(seeded.end)}


# --- health, metrics, spec ---------------------------------------------------------


def test_healthz_pings_mongo(api: httpx.Client) -> None:
    response = api.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "mongo": "up", "detail": ""}


def test_openapi_is_served(api: httpx.Client) -> None:
    spec = api.get("/openapi.json").json()
    assert spec["info"]["title"] == "IPSP traffic API" and "/api/windows" in spec["paths"]


# --- cameras -----------------------------------------------------------------------


def test_cameras_and_latest_status(api: httpx.Client, db: Database[dict[str, Any]], seeded: SeededRun) -> None:
    windows = list(db["traffic_windows"].find({}))
    rows = api.get("/api/cameras").json()
    assert [row["camera_id"] for row in rows] == seeded.cameras
    assert sum(row["frames"] for row in rows) == sum(doc["frames"] for doc in windows) == seeded.frames
    for row in rows:
        mine = [doc for doc in windows if doc["camera_id"] == row["camera_id"]]
        latest = max(mine, key=lambda doc: doc["window_start"])
        assert row["frames"] == sum(doc["frames"] for doc in mine)
        assert row["time"] == format_time(latest["window_start"])
        assert row["traffic_status"] == latest["traffic_status"]
        assert row["total"] == latest["counts"]["total"] and row["density_mean"] == latest["density_mean"]


def test_cameras_filter_and_single_camera(api: httpx.Client, seeded: SeededRun) -> None:
    pair = seeded.cameras[:2]
    rows = api.get("/api/cameras", params={"camera": ",".join(pair)}).json()
    assert [row["camera_id"] for row in rows] == pair
    one = api.get(f"/api/cameras/{pair[1]}").json()
    assert one == rows[1]


# --- frames ------------------------------------------------------------------------


def test_frames_are_paged_in_time_order(
    api: httpx.Client, db: Database[dict[str, Any]], seeded: SeededRun, whole: dict[str, str]
) -> None:
    camera = seeded.cameras[0]
    expected = db["analysis_results"].count_documents({"camera_id": camera})
    assert expected > 100  # several pages
    seen: list[dict[str, Any]] = []
    after: str | None = None
    pages = 0
    while pages == 0 or after is not None:
        params = {**whole, "limit": 37, **({"after": after} if after else {})}
        response = api.get(f"/api/cameras/{camera}/frames", params=params)
        assert response.status_code == 200
        page = response.json()
        assert len(page) <= 37
        seen.extend(page)
        after = response.headers.get("x-next-after")
        pages += 1
    assert len(seen) == expected and pages == -(-expected // 37)
    assert len({row["record_key"] for row in seen}) == expected
    assert [row["time"] for row in seen] == sorted(row["time"] for row in seen)
    assert all(row["camera_id"] == camera and row["detections"] is None for row in seen)


def test_frames_range_is_half_open(api: httpx.Client, db: Database[dict[str, Any]], seeded: SeededRun) -> None:
    camera = seeded.cameras[1]
    start = seeded.start + timedelta(minutes=3)
    end = start + timedelta(minutes=4)
    expected = db["analysis_results"].count_documents({"camera_id": camera, "event_time": {"$gte": start, "$lt": end}})
    rows = api.get(f"/api/cameras/{camera}/frames", params={"from": ms(start), "to": ms(end), "limit": 1000}).json()
    assert len(rows) == expected > 0
    assert all(format_time(start) <= row["time"] < format_time(end) for row in rows)


def test_frames_descending_with_detections(api: httpx.Client, seeded: SeededRun, whole: dict[str, str]) -> None:
    camera = seeded.cameras[2]
    rows = api.get(
        f"/api/cameras/{camera}/frames", params={**whole, "limit": 5, "order": "desc", "include_detections": "true"}
    ).json()
    assert len(rows) == 5
    assert [row["time"] for row in rows] == sorted((row["time"] for row in rows), reverse=True)
    with_boxes = [row for row in rows if row["detections"]]
    assert with_boxes and all(len(d["box_xywh"]) == 4 for d in with_boxes[0]["detections"])


def test_frames_past_the_end_is_an_empty_page(api: httpx.Client, seeded: SeededRun, whole: dict[str, str]) -> None:
    past = f"{ms(seeded.end)},zzz"
    response = api.get(f"/api/cameras/{seeded.cameras[0]}/frames", params={**whole, "after": past})
    assert response.status_code == 200 and response.json() == [] and "x-next-after" not in response.headers


# --- windows, heatmap, class mix ---------------------------------------------------


def test_windows_per_camera_with_class_counts(
    api: httpx.Client, db: Database[dict[str, Any]], seeded: SeededRun, whole: dict[str, str]
) -> None:
    docs = {doc["_id"]: doc for doc in db["traffic_windows"].find({})}
    rows = api.get("/api/windows", params=whole).json()
    assert len(rows) == len(docs)
    assert [(r["time"], r["camera_id"]) for r in rows] == sorted((r["time"], r["camera_id"]) for r in rows)
    for row in rows:
        doc = docs[f"{row['camera_id']}|{row['time'][:19]}Z"]
        assert {name: row[name] for name in (*CLASSES, "total")} == {
            name: doc["counts"][name] for name in (*CLASSES, "total")
        }
        assert row["frames"] == doc["frames"] and row["density_mean"] == doc["density_mean"]
    camera = seeded.cameras[3]
    one = api.get(f"/api/cameras/{camera}/windows", params=whole).json()
    assert one == [row for row in rows if row["camera_id"] == camera]
    two = api.get("/api/windows", params={**whole, "camera": seeded.cameras[:2]}).json()  # repeated parameter
    assert {row["camera_id"] for row in two} == set(seeded.cameras[:2])


def test_rfc3339_and_epoch_ms_ranges_agree(api: httpx.Client, seeded: SeededRun) -> None:
    epoch = api.get("/api/windows", params={"from": ms(seeded.start), "to": ms(seeded.end)}).json()
    rfc = api.get("/api/windows", params={"from": format_time(seeded.start), "to": format_time(seeded.end)}).json()
    assert epoch == rfc and epoch


def test_heatmap_cells_cover_every_window(
    api: httpx.Client, db: Database[dict[str, Any]], seeded: SeededRun, whole: dict[str, str]
) -> None:
    cells = api.get("/api/heatmap", params={**whole, "bucket": "5m"}).json()
    assert {cell["camera_id"] for cell in cells} == set(seeded.cameras)
    assert sum(cell["frames"] for cell in cells) == sum(d["frames"] for d in db["traffic_windows"].find({}))
    assert all(cell["time"][14:16] in {f"{m:02d}" for m in range(0, 60, 5)} for cell in cells)
    hourly = api.get("/api/heatmap", params={**whole, "bucket": "1h"}).json()
    assert len(hourly) < len(cells)


def test_class_mix_sums_the_windows(
    api: httpx.Client, db: Database[dict[str, Any]], seeded: SeededRun, whole: dict[str, str]
) -> None:
    windows = list(db["traffic_windows"].find({}))
    expected = {name: sum(doc["counts"][name] for doc in windows) for name in CLASSES}
    rows = api.get("/api/class-mix", params=whole).json()
    assert {row["class_name"]: row["count"] for row in rows} == expected
    assert abs(sum(row["share_percent"] for row in rows) - 100.0) < 0.1
    per_camera = api.get("/api/class-mix/cameras", params=whole).json()
    assert [row["camera_id"] for row in per_camera] == seeded.cameras
    for row in per_camera:
        mine = [doc for doc in windows if doc["camera_id"] == row["camera_id"]]
        assert row["car"] == sum(doc["counts"]["car"] for doc in mine)
        assert row["frames"] == sum(doc["frames"] for doc in mine)


def test_window_routes_agree_on_whole_and_edge_hours(
    api: httpx.Client, db: Database[dict[str, Any]], seeded: SeededRun
) -> None:
    """A range holding the seeded hour whole (its kept per-hour partial) or cutting it (an edge hour) sums the same
    windows the database holds; asking the whole hour again, after other ranges, reuses the partial unchanged."""
    windows = list(db["traffic_windows"].find({}))
    hour = seeded.start.replace(minute=0, second=0, microsecond=0)
    # ranges on 5-minute marks, so the API's rounding to whole steps leaves them as asked
    ranges = [
        (hour - timedelta(minutes=30), hour + timedelta(minutes=90)),
        (hour + timedelta(minutes=5), hour + timedelta(minutes=10)),
        (hour - timedelta(minutes=30), hour + timedelta(minutes=10)),
        (hour - timedelta(minutes=30), hour + timedelta(minutes=90)),
    ]
    for start, end in ranges:
        params = {"from": ms(start), "to": ms(end)}
        inside = [w for w in windows if start <= w["window_start"].replace(tzinfo=start.tzinfo) < end]
        assert inside, (start, end)
        mix = {row["class_name"]: row["count"] for row in api.get("/api/class-mix", params=params).json()}
        assert mix == {name: sum(w["counts"][name] for w in inside) for name in CLASSES}, (start, end)
        per_camera = {row["camera_id"]: row for row in api.get("/api/class-mix/cameras", params=params).json()}
        for camera, row in per_camera.items():
            assert row["frames"] == sum(w["frames"] for w in inside if w["camera_id"] == camera), (start, end)
        cells = api.get("/api/heatmap", params={**params, "bucket": "5m"}).json()
        assert sum(cell["frames"] for cell in cells) == sum(w["frames"] for w in inside), (start, end)
        rows = api.get("/api/windows", params=params).json()
        assert len(rows) == len(inside), (start, end)


# --- pipeline health and dead letters ------------------------------------------------


def test_pipeline_health_totals(api: httpx.Client, db: Database[dict[str, Any]], whole: dict[str, str]) -> None:
    batches = list(db["pipeline_progress"].find({}))
    (health,) = api.get("/api/pipeline/health", params=whole).json()
    assert health["batches"] == len(batches)
    assert health["results"] == sum(b["results"] for b in batches)
    assert health["rows"] == sum(b["rows"] for b in batches)
    assert health["dead_letters_stored"] == db["dead_letters"].count_documents({})
    assert health["worst_latency_p95_ms"] == max(b["latency"]["p95_ms"] for b in batches)
    assert health["throughput_rows_per_s"] > 0


def test_pipeline_batches_latest_first_limited(
    api: httpx.Client, db: Database[dict[str, Any]], whole: dict[str, str]
) -> None:
    rows = api.get("/api/pipeline/batches", params=whole).json()
    assert len(rows) == db["pipeline_progress"].count_documents({})
    assert [row["batch_id"] for row in rows] == sorted(row["batch_id"] for row in rows)
    last_two = api.get("/api/pipeline/batches", params={**whole, "limit": 2}).json()
    assert last_two == rows[-2:]


def test_dead_letters_and_stages(api: httpx.Client, db: Database[dict[str, Any]], whole: dict[str, str]) -> None:
    rows = api.get("/api/dead-letters", params=whole).json()
    assert len(rows) == db["dead_letters"].count_documents({}) > 0
    assert [row["time"] for row in rows] == sorted((row["time"] for row in rows), reverse=True)
    parse_only = api.get("/api/dead-letters", params={**whole, "stage": "parse"}).json()
    assert parse_only and {row["stage"] for row in parse_only} == {"parse"}
    stages = {row["stage"]: row["count"] for row in api.get("/api/dead-letters/stages", params=whole).json()}
    assert stages["parse"] == len(parse_only) and sum(stages.values()) == len(rows)


def test_summary(api: httpx.Client, db: Database[dict[str, Any]], seeded: SeededRun) -> None:
    summary = api.get("/api/summary").json()
    assert summary["frames"] == seeded.frames and summary["cameras"] == len(seeded.cameras)
    assert summary["first_window_start"] == format_time(min(d["window_start"] for d in db["traffic_windows"].find({})))
    assert summary["windows"] == db["traffic_windows"].count_documents({})


# --- bad input: 4xx with a clear message, never 500 ---------------------------------

BAD = [
    ("/api/cameras/cam_99", {}, 404, "unknown camera(s): cam_99"),
    ("/api/cameras", {"camera": "cam_01,cam_99"}, 404, "cam_99"),
    ("/api/cameras/cam_99/frames", {}, 404, "unknown camera"),
    ("/api/cameras/cam_99/windows", {}, 404, "unknown camera"),
    ("/api/windows", {"camera": "cam_99"}, 404, "known cameras: cam_01"),
    ("/api/heatmap", {"camera": "cam_99"}, 404, "unknown camera"),
    ("/api/class-mix", {"camera": "cam_99"}, 404, "unknown camera"),
    ("/api/class-mix/cameras", {"camera": "nope!"}, 400, "not a valid camera id"),
    ("/api/windows", {"from": "1767600000000", "to": "1767596400000"}, 400, "inverted"),
    ("/api/pipeline/health", {"from": "1767596400000", "to": "1767596400000"}, 400, "inverted or empty"),
    ("/api/windows", {"from": "0", "to": "4102444800000"}, 400, "too long"),
    ("/api/dead-letters", {"from": "99999999999999999"}, 400, "'from'"),
    ("/api/pipeline/batches", {"to": "next tuesday"}, 400, "'to'"),
    ("/api/heatmap", {"bucket": "fortnight"}, 400, "not a duration"),
    ("/api/heatmap", {"from": "0", "to": "31536000000", "bucket": "30s"}, 400, "buckets"),
    ("/api/cameras/cam_01/frames", {"limit": "5000"}, 422, "parameter 'limit'"),
    ("/api/cameras/cam_01/frames", {"limit": "lots"}, 422, "parameter 'limit'"),
    ("/api/cameras/cam_01/frames", {"after": "yesterday"}, 400, "page key"),
    ("/api/cameras/cam_01/frames", {"include_detections": "perhaps"}, 422, "include_detections"),
    ("/api/pipeline/batches", {"limit": "-3"}, 422, "parameter 'limit'"),
    ("/api/dead-letters", {"stage": "warp"}, 400, "unknown stage"),
]


@pytest.mark.parametrize(("path", "params", "status", "fragment"), BAD, ids=[f"{p}-{s}" for p, _, s, _ in BAD])
def test_bad_input(api: httpx.Client, path: str, params: dict[str, str], status: int, fragment: str) -> None:
    response = api.get(path, params=params)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and fragment in detail


def test_writes_are_refused(api: httpx.Client) -> None:
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert api.request(method, "/api/windows").status_code == 405


def test_no_server_errors_were_counted(api: httpx.Client) -> None:
    # runs after the tests above in this module: every answer so far was 2xx or 4xx
    text = api.get("/metrics").text
    assert 'ipsp_api_requests_total{method="GET",route="/api/windows",status="200"}' in text
    assert 'status="5' not in text


# --- auth, CORS, MongoDB down on a real server ---------------------------------------


def test_bearer_token_on_a_real_server(seeded: SeededRun) -> None:
    env = {"IPSP_API_TOKEN": "integration-token", "IPSP_API_CORS_ORIGINS": "https://grafana.example"}
    with (
        ApiServer(seeded.mongo_uri, seeded.db_name, env=env) as server,
        httpx.Client(base_url=server.url, timeout=60.0) as http,
    ):
        assert http.get("/api/cameras").status_code == 401
        assert http.get("/api/cameras", headers={"Authorization": "Bearer nope"}).status_code == 401
        ok = http.get(
            "/api/cameras", headers={"Authorization": "Bearer integration-token", "Origin": "https://grafana.example"}
        )
        assert ok.status_code == 200 and len(ok.json()) == len(seeded.cameras)
        assert ok.headers["access-control-allow-origin"] == "https://grafana.example"
        assert http.get("/healthz").status_code == 200


def test_cors_closed_on_a_real_server(api: httpx.Client) -> None:
    response = api.get("/api/cameras", headers={"Origin": "https://grafana.example"})
    assert response.status_code == 200 and "access-control-allow-origin" not in response.headers


def test_mongo_down_answers_503(seeded: SeededRun) -> None:
    dead = f"mongodb://127.0.0.1:{free_port()}/"
    with ApiServer(dead, seeded.db_name) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        health = http.get("/healthz")
        assert health.status_code == 503 and health.json()["mongo"] == "down"
        for path in ("/api/cameras", "/api/windows", "/api/pipeline/health", "/api/dead-letters"):
            response = http.get(path)
            assert response.status_code == 503, path
            assert response.json()["detail"].startswith("MongoDB is unavailable")
        # bad input is still reported as such, without waiting on MongoDB
        assert http.get("/api/windows", params={"from": "2", "to": "1"}).status_code == 400
