"""``ipsp produce``: replay a manifest into Kafka (flags only; the work is in ``replay``)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from ipsp.errors import ServiceUnavailable, UserError

#: exit codes of a run stopped by a signal (128 + signal number, as shells report)
SIGNAL_EXIT = {"SIGINT": 130, "SIGTERM": 143}
COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")


def produce(
    manifest: str = typer.Argument(
        ...,
        help="manifest.parquet or its dataset folder: a local path, file:///... or s3://bucket/prefix.",
        show_default=False,
    ),
    topic: str | None = typer.Option(
        None, "--topic", "-t", envvar="IPSP_KAFKA_TOPIC", help="Kafka topic (default: traffic-metadata)."
    ),
    partitions: int | None = typer.Option(
        None,
        "--partitions",
        min=1,
        envvar="IPSP_KAFKA_PARTITIONS",
        help="Partitions when the topic is created (default: 4).",
    ),
    bootstrap: str | None = typer.Option(
        None,
        "--bootstrap",
        envvar="IPSP_KAFKA_BOOTSTRAP",
        help="Kafka bootstrap servers (default: 127.0.0.1:9092).",
    ),
    rate: float | None = typer.Option(None, "--rate", help="Messages per second overall."),
    per_camera_fps: float | None = typer.Option(
        None, "--per-camera-fps", help="Frames per second for every camera (all cameras together)."
    ),
    speedup: float | None = typer.Option(
        None, "--speedup", help="Replay speed against the original cadence (--frame-interval). Default pacing: 1."
    ),
    frame_interval: float = typer.Option(
        1.0, "--frame-interval", help="Seconds between a camera's frames in the original footage (event clock)."
    ),
    as_fast_as_possible: bool = typer.Option(False, "--as-fast-as-possible", help="No pacing at all."),
    loop: int = typer.Option(1, "--loop", min=0, help="Passes over the manifest (0: until interrupted)."),
    cameras: str | None = typer.Option(None, "--cameras", help="Only these cameras, e.g. cam_01,cam_02."),
    limit: int | None = typer.Option(None, "--limit", min=0, help="Send at most this many messages."),
    start_after: str | None = typer.Option(
        None,
        "--start-after",
        help="Resume after this point, <loop>:<record_key> as a previous run printed (bare key: loop 0).",
    ),
    replay_id: str | None = typer.Option(
        None, "--replay-id", help="Replay id carried by every message (default: replay-<UTC time>-<random>)."
    ),
    event_start: str | None = typer.Option(
        None,
        "--event-start",
        help="Event time of the replay's tick 0, RFC 3339 (default: the first frame sent is 'now').",
    ),
    max_in_flight: int = typer.Option(
        10_000, "--max-in-flight", min=1, help="Unacknowledged messages allowed before waiting for the oldest."
    ),
    delivery_timeout: float = typer.Option(
        30.0, "--delivery-timeout", min=1.0, help="Seconds a message may take to be acknowledged, retries included."
    ),
    connect_timeout: float = typer.Option(10.0, "--connect-timeout", min=0.5, help="Seconds to reach the broker."),
    linger_ms: int = typer.Option(5, "--linger-ms", min=0, help="Producer batching delay (ms)."),
    batch_size: int = typer.Option(256 * 1024, "--batch-size", min=1024, help="Producer batch size (bytes)."),
    compression: str = typer.Option("none", "--compression", help=f"One of {', '.join(COMPRESSIONS)}."),
    report: Path | None = typer.Option(None, "--report", help="Also write the run's report as JSON here."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar (the summary line stays)."),
) -> None:
    """Replay a packed dataset's manifest into Kafka, one contract message per frame, paced.

    Frames go in frame order within each camera, cameras interleaved round-robin,
    key = camera_id. Pacing: one of --rate, --per-camera-fps, --speedup,
    --as-fast-as-possible (default: the original cadence, --speedup 1). Event time
    = --event-start + tick x --frame-interval, where tick counts a camera's frames
    across loops. An interrupted or failed run prints the flags that resume it.
    """
    from ipsp.config import load_settings
    from ipsp.producer.broker import ProducerTuning
    from ipsp.producer.pacing import resolve_pacing
    from ipsp.producer.plan import ResumePoint, parse_cameras, parse_time
    from ipsp.producer.replay import ReplayOptions, write_report
    from ipsp.producer.replay import produce as run

    if compression not in COMPRESSIONS:
        raise UserError(f"--compression {compression!r}: use one of {', '.join(COMPRESSIONS)}")
    settings = load_settings(kafka_bootstrap=bootstrap)
    if settings.log_level.upper() != "DEBUG":
        # kafka-python logs every refused connection; our errors already say what failed, once
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    options = ReplayOptions(
        manifest=manifest,
        topic=topic or settings.kafka_topic,
        pacing=resolve_pacing(rate, per_camera_fps, speedup, frame_interval, as_fast_as_possible),
        partitions=partitions or settings.kafka_partitions,
        frame_interval_s=frame_interval,
        loops=loop,
        cameras=parse_cameras(cameras),
        limit=limit,
        start_after=ResumePoint.parse(start_after) if start_after else None,
        replay_id=replay_id,
        event_start=parse_time(event_start) if event_start else None,
        max_in_flight=max_in_flight,
        tuning=ProducerTuning(
            linger_ms=linger_ms,
            batch_size=batch_size,
            compression=None if compression == "none" else compression,
            delivery_timeout_s=delivery_timeout,
            connect_timeout_s=connect_timeout,
        ),
        quiet=quiet,
    )
    result = run(options, settings)
    if report is not None:
        write_report(result, report)
    typer.echo(result.summary())
    if result.error:
        raise ServiceUnavailable(
            f"{result.error}; sent {result.sent} (acknowledged), failed {result.failed}; "
            f"resume with: {result.resume_flags()}"
        )
    if result.stopped_by:
        typer.secho(f"stopped by {result.stopped_by}; resume with: {result.resume_flags()}", err=True)
        # SystemExit keeps the code whether click runs in standalone mode or not (typer.Exit does not)
        raise SystemExit(SIGNAL_EXIT.get(result.stopped_by, 1))
