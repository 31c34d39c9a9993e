"""The read-only traffic API: a FastAPI app over the MongoDB collections of the pipeline.

Read-only by construction: only GET routes are registered and no code path in
this package writes to MongoDB. Answers are flat JSON arrays of typed rows (see
``models``) so Grafana's Infinity datasource reads them as tables. Bad input is a
4xx with one clear line; MongoDB being down is a 503 on every route.
"""

from __future__ import annotations

import functools
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import TypeAdapter
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import ConnectionFailure, PyMongoError
from starlette.concurrency import run_in_threadpool

from ipsp import __version__
from ipsp.config import Settings, get_settings
from ipsp.contracts import DEAD_LETTER_STAGES, RECORD_KEY_PATTERN
from ipsp.mongo import DEAD_LETTERS, PROGRESS, SERVING_APPNAME, connect
from ipsp.serving import queries
from ipsp.serving.metrics import ApiMetrics, MetricsMiddleware
from ipsp.serving.models import (
    BatchRow,
    CameraClassMix,
    CameraStatus,
    ClassShare,
    DeadLetterRow,
    ErrorBody,
    FrameRow,
    Health,
    HeatCell,
    PipelineHealth,
    StageCount,
    Summary,
    WindowRow,
)
from ipsp.serving.params import BadParameter, TimeRange, parse_cameras, parse_duration, parse_range
from ipsp.serving.reader import CAMERAS_KEY, HOURS_UP_TO, ServingReader, round_range, rounding_for

log = logging.getLogger(__name__)
T = TypeVar("T")

FROM_HELP = "Range start: epoch milliseconds (Grafana ${__from}) or RFC 3339 with a zone. Default: to - 24h."
TO_HELP = "Range end (exclusive): epoch milliseconds (Grafana ${__to}) or RFC 3339 with a zone. Default: now."
CAMERA_HELP = "Camera ids, repeated or comma-separated (Grafana ${camera:csv}); none = all cameras."
BUCKET_HELP = "Bucket width: 30s, 5m, 1h ... (Grafana ${__interval})."
MERGE_HELP = (
    "Merge each camera's windows into buckets this wide (5m, 1h ..., Grafana ${__interval}): "
    "counts summed, density weighted by frames, the status most windows had."
)
#: formats the handlers check (with a 400 that says what is wrong), stated in the OpenAPI schema so clients
#: and schema-driven tests send what the API can answer; not enforced by validation, whose 422 says less
TIME_FORMAT = {"pattern": r"^(-?\d{1,16}|\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|z|[+-]\d{2}:\d{2}))$"}
DURATION_FORMAT = {"pattern": r"^\d+(\.\d+)?(ms|s|m|h|d|w)?$"}
_ID = RECORD_KEY_PATTERN.strip("^$")  # one camera id
CAMERAS_FORMAT = {"items": {"type": "string", "pattern": "^\\{?" + _ID + "(," + _ID + ")*\\}?$"}}  # each value
PAGE_KEY_FORMAT = {"pattern": r"^\d+,.+$"}

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Bad parameter (time range, bucket, too many rows)"},
    401: {"model": ErrorBody, "description": "Missing or wrong bearer token (when auth is on)"},
    404: {"model": ErrorBody, "description": "Unknown camera"},
    422: {"model": ErrorBody, "description": "Malformed parameter"},
    503: {"model": ErrorBody, "description": "MongoDB unavailable"},
}


@dataclass
class ApiState:
    """What the routes share: the database handle, the serving-document reader and the metrics."""

    db: Database[dict[str, Any]]
    reader: ServingReader
    metrics: ApiMetrics


def create_app(
    settings: Settings | None = None,
    client: MongoClient[dict[str, Any]] | None = None,
    camera_ttl_s: float = 10.0,
) -> FastAPI:
    """Build the API for ``settings`` (default: the process settings), over ``client`` if given."""
    settings = settings or get_settings()
    owns_client = client is None
    # 2 s to find the server: a route answers 503 quickly instead of hanging while MongoDB is down
    uri = settings.mongo_uri.get_secret_value()
    mongo = client if client is not None else connect(uri, timeout_ms=2000, appname=SERVING_APPNAME)
    db = mongo[settings.mongo_db]
    state = ApiState(db, ServingReader(db, state_ttl_s=min(camera_ttl_s, settings.api_cache_seconds)), ApiMetrics())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if settings.api_warm_hours:
            threading.Thread(target=_warm, args=(state.reader, settings.api_warm_hours), daemon=True).start()
        yield
        state.reader.close()
        if owns_client:
            mongo.close()

    app = FastAPI(
        title="IPSP traffic API",
        version=__version__,
        description=(
            "Read-only view of the traffic pipeline's MongoDB collections, shaped for Grafana's "
            "Infinity datasource: the routes panels read answer flat JSON arrays of rows with RFC 3339 times."
        ),
        lifespan=lifespan,
    )
    app.state.serving = state
    _add_error_handlers(app)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    origins = [origin.strip() for origin in settings.api_cors_origins.split(",") if origin.strip()]
    if origins:  # closed by default: no CORS headers at all unless origins are configured
        app.add_middleware(
            CORSMiddleware, allow_origins=origins, allow_methods=["GET"], allow_headers=["Authorization"]
        )
    _add_ops_routes(app, state)
    app.include_router(_api_router(state, settings.api_token.get_secret_value(), settings.window_seconds))
    return app


# --- errors --------------------------------------------------------------------------


def _add_error_handlers(app: FastAPI) -> None:
    async def bad_parameter(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    async def unknown_camera(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc.args[0]) if exc.args else str(exc)}, status_code=404)

    async def mongo_down(_: Request, exc: Exception) -> JSONResponse:
        log.warning("MongoDB unavailable: %s", exc)
        return JSONResponse({"detail": f"MongoDB is unavailable: {_first_line(exc)}"}, status_code=503)

    async def invalid_request(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return JSONResponse({"detail": validation_message(exc)}, status_code=422)

    app.add_exception_handler(BadParameter, bad_parameter)
    app.add_exception_handler(queries.UnknownCamera, unknown_camera)
    app.add_exception_handler(ConnectionFailure, mongo_down)
    app.add_exception_handler(RequestValidationError, invalid_request)


def validation_message(exc: RequestValidationError) -> str:
    """FastAPI's list of validation errors as one readable line."""
    parts = []
    for error in exc.errors():
        location = [str(item) for item in error.get("loc", ()) if item not in ("query", "path", "body")]
        where = f"parameter '{'.'.join(location)}'" if location else "request"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


# --- operational routes --------------------------------------------------------------


def _add_ops_routes(app: FastAPI, state: ApiState) -> None:
    @app.get("/healthz", response_model=Health, tags=["ops"], responses={503: {"model": Health}})
    def healthz() -> Any:
        """Ping MongoDB: 200 when it answers, 503 when it does not."""
        try:
            state.db.command("ping")
        except ConnectionFailure as exc:
            state.metrics.mongo_up.set(0)
            body = Health(status="unavailable", mongo="down", detail=f"MongoDB is unavailable: {_first_line(exc)}")
            return JSONResponse(body.model_dump(), status_code=503)
        state.metrics.mongo_up.set(1)
        return Health(status="ok", mongo="up")

    @app.get("/metrics", tags=["ops"], response_class=Response)
    def metrics() -> Response:
        """Prometheus text exposition of the API's metrics."""
        return state.metrics.render()


# --- data routes ---------------------------------------------------------------------


def _auth_dependency(token: str) -> Any:
    bearer = HTTPBearer(auto_error=False, description="Set when the API runs with IPSP_API_TOKEN.")

    # async: a string comparison needs no worker thread (sync dependencies each cost a hop to one)
    async def check(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if not token:
            return
        given = credentials.credentials if credentials is not None else ""
        if not secrets.compare_digest(given.encode(), token.encode()):
            raise HTTPException(
                status_code=401,
                detail="missing or wrong bearer token (send 'Authorization: Bearer <IPSP_API_TOKEN>')",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check


def _warm(reader: ServingReader, hours: int) -> None:
    """Read the latest hours' serving documents into the cache, so the first dashboard load finds them there."""
    started = time.perf_counter()
    try:
        read = reader.warm(hours)
    except PyMongoError as exc:  # the first request will say what is wrong; starting must not fail on it
        log.warning("cache warm-up skipped: %s", exc)
        return
    log.info("cache warm-up: %d serving documents in %.2f s", read, time.perf_counter() - started)


@functools.cache
def _adapter(model: Any) -> TypeAdapter[Any]:
    # building an adapter compiles a serializer: once per response model, not per answer
    return TypeAdapter(model)


def _json(rows: Any, model: Any) -> bytes:
    """Serialized by pydantic-core's Rust encoder once per cached answer; the route's model stays in OpenAPI."""
    return _adapter(model).dump_json(rows)


def _send(body: bytes) -> Response:
    """A fresh response around cached bytes (responses are not shared between requests)."""
    return Response(content=body, media_type="application/json")


async def _at_hand(value: T | None, fetch: Callable[[], T]) -> T:
    """``value`` when the cache held it, else ``fetch()`` in a worker thread (it may wait on MongoDB).

    The data routes are async so that a cached answer costs no hop to a worker thread
    and back (each hop costs about as much as the rest of such a request); only a
    cache miss or a stale state, which may read MongoDB, leaves the event loop.
    """
    return value if value is not None else await run_in_threadpool(fetch)


async def _known(reader: ServingReader) -> dict[str, dict[str, Any]]:
    """Every camera's serving document by id (from the cache when at hand)."""
    return await _at_hand(reader.ready(CAMERAS_KEY), reader.cameras)


@dataclass(frozen=True)
class WindowQuery:
    """A window route's cameras, range and bucket: checked once, the range widened to whole steps."""

    names: tuple[str, ...]
    span: TimeRange
    width: timedelta | None
    #: the width of the rows stored for this range: the stream job's windows up to 36 h, hours beyond
    rows_width: timedelta

    def key(self, route: str) -> tuple[Any, ...]:
        """The cache key of this question to ``route``."""
        return (route, self.names, self.span.start, self.span.end, self.width)


def _window_queries(state: ApiState, window_seconds: int) -> tuple[Any, Any, Any]:
    """The window routes' dependencies: without a bucket, with an optional one (merge), with one (heatmap)."""

    def rows_width(span: TimeRange) -> timedelta:
        return timedelta(seconds=window_seconds) if span.span <= HOURS_UP_TO else timedelta(hours=1)

    async def finish(span: TimeRange, cameras: list[str], bucket: str | None) -> WindowQuery:
        width = parse_duration(bucket) if bucket else None
        if width is not None:
            queries.check_buckets(span, width)
        # the parameters are checked before MongoDB is asked
        names = tuple(_require(await _known(state.reader), cameras))
        span = round_range(span, rounding_for(span, max(width or timedelta(0), rows_width(span))))
        return WindowQuery(names, span, width, rows_width(span))

    # async, like every dependency here: parsing needs no worker thread (see _at_hand)
    async def asked(
        from_: str | None = Query(None, alias="from", description=FROM_HELP, json_schema_extra=TIME_FORMAT),
        to: str | None = Query(None, description=TO_HELP, json_schema_extra=TIME_FORMAT),
        camera: list[str] = Query([], description=CAMERA_HELP, json_schema_extra=CAMERAS_FORMAT),
    ) -> tuple[TimeRange, list[str]]:
        return parse_range(from_, to), parse_cameras(camera)

    async def plain(range_cameras: tuple[TimeRange, list[str]] = Depends(asked)) -> WindowQuery:
        return await finish(*range_cameras, None)

    async def merged(
        range_cameras: tuple[TimeRange, list[str]] = Depends(asked),
        bucket: str | None = Query(None, description=MERGE_HELP, json_schema_extra=DURATION_FORMAT),
    ) -> WindowQuery:
        return await finish(*range_cameras, bucket)

    async def heat(
        range_cameras: tuple[TimeRange, list[str]] = Depends(asked),
        bucket: str = Query("5m", description=BUCKET_HELP, json_schema_extra=DURATION_FORMAT),
    ) -> WindowQuery:
        return await finish(*range_cameras, bucket)

    return plain, merged, heat


async def _minute_range(
    from_: str | None = Query(None, alias="from", description=FROM_HELP, json_schema_extra=TIME_FORMAT),
    to: str | None = Query(None, description=TO_HELP, json_schema_extra=TIME_FORMAT),
) -> TimeRange:
    """The pipeline routes' range, widened to whole minutes."""
    span = parse_range(from_, to)
    return round_range(span, rounding_for(span, timedelta(minutes=1)))


def _api_router(state: ApiState, token: str, window_seconds: int) -> APIRouter:
    router = APIRouter(prefix="/api", dependencies=[Depends(_auth_dependency(token))], responses=ERRORS)
    reader = state.reader
    plain, merged, heat = _window_queries(state, window_seconds)

    async def answer(key: Hashable, build: Callable[[], bytes]) -> Response:
        return _send(await _at_hand(reader.ready(key), lambda: reader.cached(key, build)))

    def by_hour(q: WindowQuery) -> bool:
        # window rows come from camera-hours, each hour's partial kept (see ServingReader.hourly)
        return q.span.span <= HOURS_UP_TO

    def read_rows(q: WindowQuery) -> list[dict[str, Any]]:
        if by_hour(q):
            return [row for part in reader.hourly("rows", list(q.names), q.span, list) for row in part]
        return reader.window_rows(list(q.names), q.span)

    def rows_for(q: WindowQuery) -> list[dict[str, Any]]:
        # one read shared by the window panels of a dashboard (same cameras, same widened range)
        key = ("rows", q.names, q.span.start, q.span.end)
        rows = reader.cached(key, lambda: read_rows(q))
        if len(rows) > queries.MAX_WINDOW_ROWS:
            raise BadParameter(
                f"more than {queries.MAX_WINDOW_ROWS} windows in this range; narrow the range or name fewer cameras"
            )
        return rows

    def sums_for(q: WindowQuery) -> queries.CameraSums:
        if by_hour(q):
            return queries.add_sums(reader.hourly("sums", list(q.names), q.span, queries.sum_counts))
        return queries.sum_counts(rows_for(q))

    def window_rows(q: WindowQuery) -> bytes:
        rows = rows_for(q)
        if q.width is not None and q.width > q.rows_width:
            rows = queries.merge_windows(rows, q.width)
        return _json([queries.window_row(doc) for doc in rows], list[WindowRow])

    @router.get("/cameras", response_model=list[CameraStatus], tags=["cameras"])
    async def cameras(
        camera: list[str] = Query([], description=CAMERA_HELP, json_schema_extra=CAMERAS_FORMAT),
    ) -> Any:
        """Cameras (all, or those named) with frame counts and the status of their latest window."""
        asked = parse_cameras(camera)
        names = _require(await _known(reader), asked)

        def build() -> bytes:
            docs = reader.cameras()
            return _json([queries.camera_status_of(docs[name]) for name in names if name in docs], list[CameraStatus])

        return await answer(("cameras", tuple(names)), build)

    @router.get("/cameras/{camera_id}", response_model=CameraStatus, tags=["cameras"])
    def camera(camera_id: str) -> Any:
        """One camera's status (its latest window); 404 for an unknown camera."""
        asked = _one_camera(camera_id)  # checked before MongoDB is asked
        docs = reader.cameras()
        return _send(_json(queries.camera_status_of(docs[_require(docs, asked)[0]]), CameraStatus))

    @router.get("/cameras/{camera_id}/frames", response_model=list[FrameRow], tags=["cameras"])
    def frames(
        response: Response,
        camera_id: str,
        from_: str | None = Query(None, alias="from", description=FROM_HELP, json_schema_extra=TIME_FORMAT),
        to: str | None = Query(None, description=TO_HELP, json_schema_extra=TIME_FORMAT),
        limit: int = Query(100, ge=1, le=queries.MAX_PAGE_SIZE, description="Page size."),
        after: str | None = Query(
            None,
            description="Continue after this page key (the X-Next-After header of the previous page).",
            json_schema_extra=PAGE_KEY_FORMAT,
        ),
        order: str = Query("asc", pattern="^(asc|desc)$", description="Event-time order."),
        include_detections: bool = Query(False, description="Add each frame's detections."),
    ) -> Any:
        """A page of one camera's frames in the range, keyed by time; header X-Next-After when more follow."""
        span = parse_range(from_, to)
        asked = _one_camera(camera_id)
        name = _require(reader.cameras(), asked)[0]
        rows, more = queries.frames_page(state.db, name, span, limit, after, order == "desc", include_detections)
        if more and rows:
            response.headers["X-Next-After"] = queries.page_key(rows[-1])
        return rows

    @router.get("/cameras/{camera_id}/windows", response_model=list[WindowRow], tags=["windows"])
    async def camera_windows(
        camera_id: str,
        from_: str | None = Query(None, alias="from", description=FROM_HELP, json_schema_extra=TIME_FORMAT),
        to: str | None = Query(None, description=TO_HELP, json_schema_extra=TIME_FORMAT),
    ) -> Any:
        """One camera's windows in the range with counts per class (hour rows for ranges over 36 h)."""
        span, asked = parse_range(from_, to), _one_camera(camera_id)
        q = await plain((span, _require(await _known(reader), asked)))
        return await answer(q.key("windows"), lambda: window_rows(q))

    @router.get("/windows", response_model=list[WindowRow], tags=["windows"])
    async def windows(q: WindowQuery = Depends(merged)) -> Any:
        """Windows of the cameras in the range (one row per camera and window, or per bucket; hour rows over 36 h)."""
        return await answer(q.key("windows"), lambda: window_rows(q))

    @router.get("/heatmap", response_model=list[HeatCell], tags=["windows"])
    async def heatmap(q: WindowQuery = Depends(heat)) -> Any:
        """Density heatmap: one row per camera and time bucket that holds windows."""
        assert q.width is not None
        width = q.width

        def build() -> bytes:
            if by_hour(q):
                parts = reader.hourly(("heat", width), list(q.names), q.span, lambda r: queries.heat_sums(r, width))
                return _json(queries.heat_cells_of(queries.add_heat(parts)), list[HeatCell])
            return _json(queries.heat_cells(rows_for(q), width), list[HeatCell])

        return await answer(q.key("heatmap"), build)

    @router.get("/class-mix", response_model=list[ClassShare], tags=["windows"])
    async def class_mix(q: WindowQuery = Depends(plain)) -> Any:
        """Objects per traffic class over the range, with shares (every class listed)."""
        return await answer(q.key("class-mix"), lambda: _json(queries.class_mix_from(sums_for(q)), list[ClassShare]))

    @router.get("/class-mix/cameras", response_model=list[CameraClassMix], tags=["windows"])
    async def class_mix_cameras(q: WindowQuery = Depends(plain)) -> Any:
        """Objects per traffic class for each camera over the range."""
        return await answer(
            q.key("class-mix-cameras"),
            lambda: _json(queries.class_mix_by_camera_from(sums_for(q)), list[CameraClassMix]),
        )

    @router.get("/pipeline/health", response_model=list[PipelineHealth], tags=["pipeline"])
    async def pipeline_health(span: TimeRange = Depends(_minute_range)) -> Any:
        """Streaming job over the range: batches, rows, throughput, latency, dead letters (one row)."""
        return await answer(
            ("pipeline-health", span.start, span.end),
            lambda: _json([queries.health_of(reader.batch_rows(span))], list[PipelineHealth]),
        )

    @router.get("/pipeline/batches", response_model=list[BatchRow], tags=["pipeline"])
    async def pipeline_batches(
        span: TimeRange = Depends(_minute_range),
        limit: int = Query(500, ge=1, le=queries.MAX_LIST_ROWS, description="Latest batches to return."),
    ) -> Any:
        """The latest micro-batches that finished in the range (oldest first): rates and latency."""
        return await answer(
            ("pipeline-batches", span.start, span.end, limit),
            lambda: _json([queries.batch_row(doc) for doc in reader.batch_rows(span)[-limit:]], list[BatchRow]),
        )

    @router.get("/dead-letters", response_model=list[DeadLetterRow], tags=["pipeline"])
    async def dead_letters(
        span: TimeRange = Depends(_minute_range),
        limit: int = Query(100, ge=1, le=queries.MAX_LIST_ROWS, description="Latest dead letters to return."),
        stage: list[str] = Query([], description="Only these stages (repeated or comma-separated)."),
    ) -> Any:
        """The latest dead letters created in the range, newest first (up to 20 listed per micro-batch)."""
        stages = _stages(stage)
        return await answer(
            ("dead-letters", span.start, span.end, limit, tuple(sorted(stages))),
            lambda: _json(
                queries.latest_dead_letters(reader.batch_rows(span), span, limit, stages), list[DeadLetterRow]
            ),
        )

    @router.get("/dead-letters/stages", response_model=list[StageCount], tags=["pipeline"])
    async def dead_letter_stages(span: TimeRange = Depends(_minute_range)) -> Any:
        """Dead letters per pipeline stage over the range (every stage listed), from the batches' figures."""
        return await answer(
            ("dead-letter-stages", span.start, span.end),
            lambda: _json(queries.stages_of(reader.batch_rows(span)), list[StageCount]),
        )

    @router.get("/summary", response_model=Summary, tags=["ops"])
    async def summary() -> Any:
        """What the database holds: frames and cameras in windows, time extent, batches."""

        def build() -> bytes:
            batches = state.db[PROGRESS].estimated_document_count()
            letters = state.db[DEAD_LETTERS].estimated_document_count()
            return _json(queries.summary_of(reader.cameras(), reader.first_window_start(), batches, letters), Summary)

        return await answer(("summary",), build)

    return router


def _require(known: dict[str, dict[str, Any]], names: list[str]) -> list[str]:
    """The cameras asked for (all ``known`` ones when none), or UnknownCamera naming the missing ones."""
    if not names:
        return sorted(known)
    missing = [name for name in names if name not in known]
    if missing:
        listed = ", ".join(sorted(known)[:25]) or "none yet"
        raise queries.UnknownCamera(f"unknown camera(s): {', '.join(missing)}; known cameras: {listed}")
    return names


def _one_camera(camera_id: str) -> list[str]:
    """The one camera a path names, as a list for :func:`_require` (not yet checked against the known ones)."""
    names = parse_cameras([camera_id])
    if len(names) != 1:
        raise BadParameter(f"camera {camera_id!r} must name exactly one camera")
    return names


def _stages(values: list[str]) -> list[str]:
    stages = [part.strip() for raw in values for part in raw.strip("{}").split(",") if part.strip()]
    unknown = sorted(set(stages) - set(DEAD_LETTER_STAGES))
    if unknown:
        raise BadParameter(f"unknown stage(s): {', '.join(unknown)}; stages: {', '.join(DEAD_LETTER_STAGES)}")
    return stages
