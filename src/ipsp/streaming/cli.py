"""``ipsp stream``: run the Structured Streaming job (flags only; the work is in ``job``)."""

from __future__ import annotations

import logging

import typer

from ipsp.errors import UserError

STARTING = ("earliest", "latest")


def stream(
    topic: str | None = typer.Option(
        None, "--topic", "-t", envvar="IPSP_KAFKA_TOPIC", help="Kafka topic to read (default: traffic-metadata)."
    ),
    available_now: bool = typer.Option(
        False, "--available-now", help="Process everything in the topic now (in bounded batches), then exit."
    ),
    once: bool = typer.Option(False, "--once", help="Process everything in the topic as ONE batch, then exit."),
    query: str = typer.Option(
        "traffic-stream", "--query", help="Query name; the checkpoint is <database>/<query>-<topic>."
    ),
    checkpoint: str | None = typer.Option(
        None,
        "--checkpoint",
        help="Checkpoint URI or path (default: <IPSP_CHECKPOINT_URI>/<database>/<query>-<topic>). Restarts resume "
        "from it; a new one starts a new run epoch.",
    ),
    starting_offsets: str = typer.Option(
        "earliest",
        "--starting-offsets",
        help="Where a NEW query starts: earliest, latest or Spark's JSON per partition (ignored on restart).",
    ),
    trigger_seconds: float | None = typer.Option(
        None, "--trigger-seconds", min=0.0, envvar="IPSP_TRIGGER_SECONDS", help="Micro-batch interval (default 2)."
    ),
    max_offsets: int | None = typer.Option(
        None,
        "--max-offsets-per-trigger",
        min=1,
        envvar="IPSP_MAX_OFFSETS_PER_TRIGGER",
        help="Kafka records per micro-batch at most (default 0: --batch-seconds of the throughput measured at start).",
    ),
    batch_seconds: float = typer.Option(
        8.0,
        "--batch-seconds",
        min=0.5,
        help="Seconds of work per micro-batch when --max-offsets-per-trigger is not given (default 8).",
    ),
    task_rows: int = typer.Option(
        0,
        "--task-rows",
        min=0,
        help="Kafka records per Spark task at most; partitions are split to get there "
        "(0: on local[N] one per slot, round-robin; on a cluster one per partition).",
    ),
    mongo_db: str | None = typer.Option(
        None, "--mongo-db", envvar="IPSP_MONGO_DB", help="MongoDB database (default: traffic_db)."
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        envvar="IPSP_MODEL",
        help="Model: registry name[:version], a shipped name or a file (default: traffic).",
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=1, envvar="IPSP_BATCH_SIZE", help="Frames per inference batch (default 8)."
    ),
    retry_seconds: float = typer.Option(
        60.0, "--sink-retry-seconds", min=0.0, help="How long a MongoDB write is retried before the batch fails."
    ),
    no_ui: bool = typer.Option(False, "--no-ui", help="Do not start the Spark UI."),
    verbose: bool = typer.Option(True, "--verbose/--quiet", help="Per-batch log lines on stderr."),
) -> None:
    """Kafka -> fetch frames from LMDB shards -> batched detection -> MongoDB, exactly once in effect.

    Runs until stopped (SIGTERM/Ctrl-C finish the current batch first), or with
    --available-now until the topic is drained. Restarted, it resumes from its
    checkpoint: nothing is lost or written twice.
    """
    from ipsp.config import load_settings
    from ipsp.streaming.job import StreamOptions, run_stream

    if available_now and once:
        raise UserError("choose one of --available-now and --once")
    if starting_offsets not in STARTING and not starting_offsets.lstrip().startswith("{"):
        raise UserError(f"--starting-offsets {starting_offsets!r}: use earliest, latest or a JSON object")
    settings = load_settings(
        kafka_topic=topic,
        trigger_seconds=trigger_seconds,
        max_offsets_per_trigger=max_offsets,
        mongo_db=mongo_db,
        model=model,
        batch_size=batch_size,
    )
    if verbose:
        logging.getLogger("ipsp").setLevel(logging.INFO)
    options = StreamOptions(
        topic=settings.kafka_topic,
        query=query,
        checkpoint=checkpoint or "",
        starting_offsets=starting_offsets,
        mode="available-now" if available_now else "once" if once else "continuous",
        trigger_seconds=settings.trigger_seconds,
        max_offsets_per_trigger=settings.max_offsets_per_trigger,
        task_rows=task_rows,
        batch_seconds=batch_seconds,
        retry_seconds=retry_seconds,
        ui=not no_ui,
    )
    report = run_stream(settings, options)
    typer.echo(report.line() + (" (stopped by signal)" if report.stopped_by_signal else ""))
