"""``ipsp rollups rebuild`` and ``ipsp prune``: the serving documents' migration/oracle, and retention.

``rebuild`` recomputes every serving document (``ipsp.rollups``) from what the
pipeline stored: windows from the frames in ``analysis_results`` (the same
``summarize_window`` the stream job runs), pipeline hours from
``pipeline_progress`` with each dead letter counted in the batch that was running
when it was written. It reads whole collections once: a migration for an
existing database and the tests' oracle, not a serving path.

``prune`` deletes frames, windows, progress and dead letters older than the
retention settings, by their time field (MongoDB answers that from the
contract's time indexes; FerretDB 1.x reads the collection once per prune, an
hourly job). The serving documents are kept: a camera-day keeps its totals when
the frames under it are gone.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import typer

from ipsp import mongo, rollups
from ipsp.contracts import Counts, utc_now
from ipsp.errors import ServiceUnavailable
from ipsp.mongo import DEAD_LETTERS, PROGRESS, RESULTS, WINDOWS, connect, redact
from ipsp.streaming.windows import StatusOf, status_function

log = logging.getLogger(__name__)


def window_documents(db: Any, window_seconds: int, status_of: StatusOf, now: datetime) -> list[dict[str, Any]]:
    """Every window recomputed from the stored frames (one read of ``analysis_results``)."""
    from ipsp.streaming.windows import FrameFigures, summarize_window, window_start

    grouped: dict[tuple[str, datetime], dict[str, FrameFigures]] = {}
    fields = {"camera_id": 1, "event_time": 1, "counts": 1, "density_percent": 1}
    for doc in db[RESULTS].find({}, fields):
        key = (doc["camera_id"], window_start(doc["event_time"], window_seconds))
        grouped.setdefault(key, {})[str(doc["_id"])] = FrameFigures(
            counts=Counts.model_validate(doc["counts"]), density_percent=float(doc["density_percent"])
        )
    return [
        summarize_window(
            camera, start, window_seconds, [frames[k] for k in sorted(frames)], status_of, now
        ).to_document()
        for (camera, start), frames in sorted(grouped.items())
    ]


def pipeline_documents(db: Any, now: datetime) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
    """Pipeline-hour documents from the progress documents and dead letters, and the latest progress."""
    progress = sorted(db[PROGRESS].find({}, {"durations_ms": 0}), key=lambda p: (p["finished_at"], p["_id"]))
    letters: dict[str, list[dict[str, Any]]] = {str(p["_id"]): [] for p in progress}
    for letter in db[DEAD_LETTERS].find({}, {"raw": 0, "kafka": 0}):
        owner = next(
            (p for p in progress if p["started_at"] <= letter["created_at"] <= p["finished_at"]),
            None,
        )
        if owner is not None:
            letters[str(owner["_id"])].append(letter)
    entries = [
        (key, rollups.batch_figures(p, Counter(str(d["stage"]) for d in letters[key]), letters[key]))
        for p in progress
        for key in [str(p["_id"])]
    ]
    hours: dict[str, dict[str, Any]] = {}
    for progress_id, figures in entries:
        hours.update(rollups.fold_pipeline(hours, [(progress_id, figures)], now))
    return hours, (progress[-1] if progress else None)


def pipeline_started(hours: dict[str, dict[str, Any]]) -> list[datetime]:
    """Start times of every batch entry in these pipeline-hour documents."""
    return [b["started_at"] for doc in hours.values() for b in doc["batches"].values()]


def rebuild_documents(
    db: Any, window_seconds: int, status_of: StatusOf, now: datetime | None = None
) -> dict[str, dict[str, dict[str, Any]]]:
    """Every serving document, by collection and ``_id``, recomputed from the stored frames and progress."""
    now = now or utc_now()
    windows = window_documents(db, window_seconds, status_of, now)
    hours = rollups.fold_hours({}, windows, window_seconds, now)
    days = rollups.fold_days({}, hours.values(), now)
    cameras = rollups.fold_cameras({}, days.values(), hours.values(), now)
    pipeline, last = pipeline_documents(db, now)
    out = {
        mongo.CAMERA_HOURS: hours,
        mongo.CAMERA_DAYS: days,
        mongo.CAMERAS: cameras,
        mongo.PIPELINE_HOURS: pipeline,
        mongo.STATE: {},
    }
    if last is not None:
        active = [h["hour_start"] for h in hours.values()]
        first = min(pipeline_started(pipeline), default=last["started_at"])
        state = rollups.state_document(None, last, active, now)
        out[mongo.STATE] = {rollups.STATE_ID: {**state, "first_batch_at": first}}
    return out


def rebuild(db: Any, window_seconds: int, status_of: StatusOf) -> dict[str, int]:
    """Replace every serving document with its recomputed value; returns documents written per collection."""
    documents = rebuild_documents(db, window_seconds, status_of)
    written: dict[str, int] = {}
    for collection, docs in documents.items():
        db[collection].drop()
        batch = list(docs.values())
        for start in range(0, len(batch), 500):
            db[collection].insert_many(batch[start : start + 500])
        written[collection] = len(batch)
    return written


# --- retention -------------------------------------------------------------------------------


#: what ``prune`` deletes: the collection, the time field its retention reads (indexed), the setting in days
_RETENTION = (
    (RESULTS, "event_time", "retention_frames_days"),
    (WINDOWS, "window_start", "retention_windows_days"),
    (PROGRESS, "finished_at", "retention_progress_days"),
    (DEAD_LETTERS, "created_at", "retention_dead_letters_days"),
)


def prune(db: Any, settings: Any, now: datetime | None = None) -> dict[str, int]:
    """Delete what is older than the retention settings; returns documents deleted per collection."""
    now = now or utc_now()
    deleted: dict[str, int] = {}
    for collection, time_field, setting in _RETENTION:
        days = getattr(settings, setting)
        if days > 0:
            cutoff = now - timedelta(days=days)
            deleted[collection] = db[collection].delete_many({time_field: {"$lt": cutoff}}).deleted_count
    return deleted


# --- commands ----------------------------------------------------------------------------------

rollups_app = typer.Typer(help="Serving documents (contracts v1.1) the API reads.", no_args_is_help=True)

MONGO_URI_HELP = "MongoDB URI (default: the local stack's FerretDB)."
MONGO_DB_HELP = "MongoDB database (default: traffic_db)."


def _unavailable(settings: Any, exc: Exception) -> ServiceUnavailable:
    first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
    return ServiceUnavailable(f"MongoDB at {redact(settings.mongo_uri.get_secret_value())} failed: {first}")


@contextmanager
def _database(mongo_uri: str | None, mongo_db: str | None) -> Iterator[tuple[Any, Any]]:
    """A command's settings and database; a MongoDB failure inside names the server; the client closes after."""
    from pymongo.errors import PyMongoError

    from ipsp.config import load_settings

    settings = load_settings(mongo_uri=mongo_uri, mongo_db=mongo_db)
    client = connect(settings.mongo_uri.get_secret_value(), timeout_ms=10_000)
    try:
        yield settings, client[settings.mongo_db]
    except PyMongoError as exc:
        raise _unavailable(settings, exc) from exc
    finally:
        client.close()


@rollups_app.command("rebuild")
def rebuild_command(
    mongo_uri: str | None = typer.Option(None, help=MONGO_URI_HELP, envvar="IPSP_MONGO_URI", show_envvar=True),
    mongo_db: str | None = typer.Option(None, help=MONGO_DB_HELP, envvar="IPSP_MONGO_DB", show_envvar=True),
) -> None:
    """Recompute every serving document from the stored frames, progress and dead letters."""
    with _database(mongo_uri, mongo_db) as (settings, db):
        typer.echo(f"rebuilding the serving documents of {settings.mongo_db} (reads every stored frame once) ...")
        written = rebuild(db, settings.window_seconds, status_function(settings.cameras_config))
    typer.echo("written: " + ", ".join(f"{name} {count}" for name, count in written.items()))


def prune_command(
    mongo_uri: str | None = typer.Option(None, help=MONGO_URI_HELP, envvar="IPSP_MONGO_URI", show_envvar=True),
    mongo_db: str | None = typer.Option(None, help=MONGO_DB_HELP, envvar="IPSP_MONGO_DB", show_envvar=True),
) -> None:
    """Delete frames, windows, progress and dead letters past their retention (IPSP_RETENTION_*_DAYS)."""
    with _database(mongo_uri, mongo_db) as (settings, db):
        deleted = prune(db, settings)
    typer.echo(
        "deleted: " + (", ".join(f"{name} {count}" for name, count in deleted.items()) or "nothing (retention off)")
    )
