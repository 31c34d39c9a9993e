"""``ipsp serve`` and ``ipsp report``: thin commands over the serving package.

Heavy imports (FastAPI, uvicorn, matplotlib) happen inside the commands so
``ipsp --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer

from ipsp.errors import ServiceUnavailable, UserError
from ipsp.mongo import SERVING_APPNAME, connect, redact

MONGO_URI_HELP = "MongoDB URI (default: the local stack's FerretDB)."
MONGO_DB_HELP = "MongoDB database (default: traffic_db)."
#: seconds an idle client connection stays open: longer than a dashboard's refresh (5 s at the shortest), so
#: Grafana, which keeps idle connections 90 s, reuses them instead of opening one per panel per refresh
#: (uvicorn's default, 5 s, closes them just as the next refresh comes); nginx's default, under Go's 90 s
KEEP_ALIVE_S = 75


def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 inside a container)."),
    port: int = typer.Option(8000, min=1, max=65535, help="TCP port to listen on."),
    mongo_uri: str | None = typer.Option(None, help=MONGO_URI_HELP, envvar="IPSP_MONGO_URI", show_envvar=True),
    mongo_db: str | None = typer.Option(None, help=MONGO_DB_HELP, envvar="IPSP_MONGO_DB", show_envvar=True),
    log_level: str = typer.Option("info", help="uvicorn log level (debug, info, warning, error)."),
) -> None:
    """Serve the read-only traffic API (OpenAPI at /docs, health at /healthz, metrics at /metrics).

    Auth: set IPSP_API_TOKEN to require 'Authorization: Bearer <token>' on /api routes.
    CORS: closed unless IPSP_API_CORS_ORIGINS lists origins.
    """
    import socket

    import uvicorn

    from ipsp.config import load_settings
    from ipsp.serving.app import create_app

    settings = load_settings(mongo_uri=mongo_uri, mongo_db=mongo_db)
    # a taken port would otherwise end in a uvicorn traceback-ish log; say it in one line
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UserError(f"cannot listen on {host}:{port}: {exc.strerror}; pick another --port") from exc
    app = create_app(settings)
    typer.echo(
        f"IPSP traffic API on http://{host}:{port} (docs /docs) over "
        f"{redact(settings.mongo_uri.get_secret_value())} db={settings.mongo_db}",
        err=True,
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=log_level == "debug",
        timeout_keep_alive=KEEP_ALIVE_S,
    )


def report(
    out: Path = typer.Option(..., "--out", help="Folder to write report.html and charts/*.png into."),
    from_: str | None = typer.Option(None, "--from", help="Range start (epoch ms or RFC 3339). Default: run start."),
    to: str | None = typer.Option(None, "--to", help="Range end (epoch ms or RFC 3339). Default: run end."),
    camera: list[str] = typer.Option([], "--camera", help="Camera id (repeatable or comma-separated). Default: all."),
    bucket: str | None = typer.Option(None, help="Heatmap bucket (5m, 1h ...). Default: picked for ~120 buckets."),
    mongo_uri: str | None = typer.Option(None, help=MONGO_URI_HELP, envvar="IPSP_MONGO_URI", show_envvar=True),
    mongo_db: str | None = typer.Option(None, help=MONGO_DB_HELP, envvar="IPSP_MONGO_DB", show_envvar=True),
) -> None:
    """Write a self-contained HTML report (inline PNG charts) of the run in MongoDB and print its path."""
    from pymongo.errors import ConnectionFailure
    from rich.progress import Progress

    from ipsp.config import load_settings
    from ipsp.serving import queries
    from ipsp.serving.params import BadParameter, parse_cameras, parse_duration, parse_range
    from ipsp.serving.report import CHARTS, collect, write_report

    settings = load_settings(mongo_uri=mongo_uri, mongo_db=mongo_db)
    uri = redact(settings.mongo_uri.get_secret_value())
    try:
        span = parse_range(from_, to) if from_ is not None or to is not None else None
        names = parse_cameras(camera)
        width = parse_duration(bucket) if bucket else None
    except BadParameter as exc:
        raise UserError(str(exc)) from exc
    client = connect(settings.mongo_uri.get_secret_value(), timeout_ms=5000, appname=SERVING_APPNAME)
    try:
        db = client[settings.mongo_db]
        try:
            data = collect(db, span, names, width)
        except ConnectionFailure as exc:
            raise ServiceUnavailable(f"MongoDB at {uri} does not answer; start it (ipsp stack up)") from exc
        except (BadParameter, queries.UnknownCamera) as exc:
            raise UserError(str(exc.args[0]) if exc.args else str(exc)) from exc
        out.mkdir(parents=True, exist_ok=True)
        with Progress(transient=True) as progress:
            task = progress.add_task("drawing charts", total=len(CHARTS))
            path = write_report(data, out, f"{uri} db={settings.mongo_db}", lambda _slug: progress.advance(task))
    finally:
        client.close()
    typer.echo(str(path.resolve()))
