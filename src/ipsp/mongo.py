"""MongoDB in one place: collection names, the one index list, ``connect``, retries and ``redact``.

The stream job (writer), the API and the report (readers), ``ipsp rollups``
(rebuild, prune) and the tests all name a collection through this module, so a
name or an index is written down once. It sits on the lowest floor (it imports
nothing of ``ipsp`` but :mod:`ipsp.errors`): ``contracts``, ``streaming`` and
``serving`` can all import it. pymongo is imported where a client is made.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ipsp.errors import ServiceUnavailable

if TYPE_CHECKING:
    from pymongo import MongoClient

log = logging.getLogger(__name__)

T = TypeVar("T")

# --- collections (CONTRACTS.md) -----------------------------------------------------------

#: one document per event (contracts v1.0)
RESULTS = "analysis_results"
#: one document per camera and window
WINDOWS = "traffic_windows"
#: one document per Kafka record the pipeline could not process
DEAD_LETTERS = "dead_letters"
#: one document per micro-batch
PROGRESS = "pipeline_progress"

# the serving documents the API reads by ``_id`` (contracts v1.1, shapes in ``ipsp.rollups``)
CAMERA_HOURS = "serving_camera_hours"
CAMERA_DAYS = "serving_camera_days"
CAMERAS = "serving_cameras"
PIPELINE_HOURS = "serving_pipeline_hours"
STATE = "serving_state"
#: every serving collection (rebuild drops and rewrites exactly these)
SERVING_COLLECTIONS: tuple[str, ...] = (CAMERA_HOURS, CAMERA_DAYS, CAMERAS, PIPELINE_HOURS, STATE)

#: every index besides ``_id``: CONTRACTS.md's, plus the time fields ``ipsp prune`` deletes by
#: (``traffic_windows.window_start``, ``pipeline_progress.finished_at``). The stream job creates
#: them when it starts; 1_infrastructure/k8s/base/mongodb/setup.js creates the same list (the
#: API's read-only user cannot), and tests/unit/test_k8s.py checks the two are equal.
INDEXES: dict[str, list[list[tuple[str, int]]]] = {
    RESULTS: [[("camera_id", 1), ("event_time", 1)], [("event_time", 1)]],
    WINDOWS: [[("camera_id", 1), ("window_start", 1)], [("window_start", 1)]],
    DEAD_LETTERS: [[("created_at", 1)], [("stage", 1)]],
    PROGRESS: [[("query", 1), ("batch_id", 1)], [("finished_at", 1)]],
}

# --- clients -------------------------------------------------------------------------------

#: default time a write keeps retrying a server that does not answer
DEFAULT_RETRY_SECONDS = 60.0
MAX_BACKOFF_SECONDS = 8.0
#: the name the API and the report give their connections (seen in the server's logs)
SERVING_APPNAME = "ipsp-serve"


def connect(
    uri: str,
    timeout_ms: int = 5000,
    query_timeout_ms: int | None = None,
    appname: str | None = None,
    listeners: Sequence[Any] = (),
) -> MongoClient[dict[str, Any]]:
    """A pymongo client that fails fast on an absent server (callers retry or answer 503 instead of hanging).

    ``timeout_ms`` bounds finding and connecting to the server;
    ``query_timeout_ms`` bounds waiting for one answer (default: six times
    ``timeout_ms``, at least 30 s; seeding a large run on FerretDB needs more).
    Datetimes come back aware, in UTC. Writes are not retried by the driver:
    :func:`with_retries` decides what is safe to repeat. ``listeners`` are
    pymongo command listeners (a test counts the statements a batch sends).
    """
    from pymongo import MongoClient

    return MongoClient(
        uri,
        tz_aware=True,
        tzinfo=UTC,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=query_timeout_ms if query_timeout_ms is not None else max(timeout_ms * 6, 30000),
        retryWrites=False,
        appname=appname,
        event_listeners=list(listeners),
    )


def redact(uri: str) -> str:
    """The URI without its password, for messages."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def ensure_indexes(db: Any, retry_seconds: float = DEFAULT_RETRY_SECONDS) -> None:
    """Create every index of :data:`INDEXES` in ``db`` (a no-op for those that exist)."""
    for collection, indexes in INDEXES.items():
        for keys in indexes:

            def create(c: str = collection, k: list[tuple[str, int]] = keys) -> str:
                return str(db[c].create_index(k))

            with_retries(create, f"create_index on {collection}", retry_seconds)


# --- retries -------------------------------------------------------------------------------


class SinkUnavailable(ServiceUnavailable):
    """MongoDB did not accept a write within the retry deadline."""


def _transient_errors() -> tuple[type[BaseException], ...]:
    from pymongo import errors

    return (errors.AutoReconnect, errors.ConnectionFailure, errors.NetworkTimeout, errors.ServerSelectionTimeoutError)


def _only_duplicate_keys(exc: BaseException) -> bool:
    # two upserts of one _id can race to insert; the loser gets 11000 and simply retries
    from pymongo.errors import BulkWriteError, DuplicateKeyError

    if isinstance(exc, DuplicateKeyError):
        return True
    if isinstance(exc, BulkWriteError):
        errors = exc.details.get("writeErrors", [])
        return bool(errors) and all(e.get("code") == 11000 for e in errors)
    return False


def with_retries(action: Callable[[], T], what: str, retry_seconds: float = DEFAULT_RETRY_SECONDS) -> T:
    """Run ``action``; on a transient MongoDB error retry with backoff until ``retry_seconds`` passed.

    Past the deadline :class:`SinkUnavailable` is raised, so a caller fails
    loudly instead of skipping data.
    """
    deadline = time.monotonic() + retry_seconds
    delay = 0.5
    attempt = 1
    while True:
        try:
            return action()
        except Exception as exc:
            if not (isinstance(exc, _transient_errors()) or _only_duplicate_keys(exc)):
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                raise SinkUnavailable(
                    f"MongoDB did not accept {what} after {attempt} attempts over {retry_seconds:.0f}s: "
                    f"{_one_line(exc)}"
                ) from exc
            log.warning("MongoDB %s failed (attempt %d, retrying in %.1fs): %s", what, attempt, delay, _one_line(exc))
            time.sleep(min(delay, left))
            delay = min(delay * 2, MAX_BACKOFF_SECONDS)
            attempt += 1


def _one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:300]
