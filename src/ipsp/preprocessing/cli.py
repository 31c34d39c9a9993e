"""``ipsp synth`` and ``ipsp pack``: flags only; the work is in ``synth`` and ``pack``."""

from __future__ import annotations

from pathlib import Path

import typer

from ipsp.errors import UserError


class RejectsFound(UserError):
    """``pack --strict`` found inputs it could not pack (the dataset and report are written)."""

    exit_code = 1


def synth(
    out: Path = typer.Argument(..., help="Folder to write the frames into (created; empty or an earlier feed)."),
    frames: int = typer.Option(11_508, "--frames", "-n", min=1, help="Good frames in total."),
    cameras: int = typer.Option(20, "--cameras", "-c", min=1, max=99, help="Cameras cam_01..cam_NN."),
    seed: int = typer.Option(0, "--seed", help="Random seed; same seed and sources give the same bytes."),
    corrupt: int = typer.Option(
        0,
        "--corrupt",
        min=0,
        help="Also write this many bad files of EACH kind: truncated, corrupt, not an image, empty, "
        "absurd dimensions, unreadable (dangling link), bad name.",
    ),
    duplicates: int = typer.Option(0, "--duplicates", min=0, help="Also write this many copies of good frames."),
    quality: int = typer.Option(85, "--quality", min=1, max=100, help="JPEG quality."),
    size: str = typer.Option("1280x720", "--size", help="Frame size WIDTHxHEIGHT."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Processes (default: all cores)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    feed: str = typer.Option(
        "auto",
        "--feed",
        help="footage: real road clips fetched into <IPSP_HOME>/footage (fails without network); "
        "photos: the offline photo-based fallback; auto: footage, else the fallback with a warning.",
    ),
) -> None:
    """Write a 20-camera traffic feed from real road footage (fetched on first use) or the photo fallback.

    An earlier feed in OUT with the same options is reused; one with other options is replaced.
    """
    from ipsp.preprocessing.synth.feed import SynthSpec, synthesize
    from ipsp.preprocessing.validate import parse_fit

    if feed not in ("auto", "footage", "photos"):
        raise UserError(f"--feed {feed!r}: choose auto, footage or photos")
    clips = _footage_clips(feed)

    try:
        width, height = parse_fit(size)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    spec = SynthSpec(
        frames=frames,
        cameras=cameras,
        seed=seed,
        corrupt=corrupt,
        duplicates=duplicates,
        width=width,
        height=height,
        quality=quality,
        feed="footage" if clips else "photos",
    )
    report = synthesize(out, spec, workers=workers, progress=progress, footage_clips=clips)
    verb = "reused" if report.reused else f"wrote in {report.seconds:.1f} s"
    typer.echo(
        f"{verb}: {report.frames} frames ({report.frame_bytes / 1e6:.1f} MB, "
        f"{report.frame_bytes / max(1, report.frames) / 1e3:.0f} KB each) over {spec.cameras} cameras, "
        f"{len(report.bad)} bad files, {len(report.duplicates)} duplicates -> {report.out} "
        f"(sources: {', '.join(report.sources)})"
    )


def _footage_clips(feed: str) -> list[Path] | None:
    """The real road clips for ``--feed`` (fetched on first use), or None for the photo fallback."""
    if feed == "photos":
        return None
    from ipsp.config import load_settings
    from ipsp.preprocessing.footage import footage_or_fallback

    footage = footage_or_fallback(
        Path(load_settings().home),
        "FALLBACK FEED: real road footage unavailable ({exc}); writing the photo-based feed instead, "
        "which does NOT look like road traffic",
        required=feed == "footage",
    )
    if footage is None:
        return None
    typer.echo(f"footage: {footage.provenance['package']} {footage.provenance['version']} "
               f"({footage.provenance['registry']}, {footage.provenance['licence']}) in {footage.folder}")  # fmt: skip
    return list(footage.clips)


def pack(
    source: str = typer.Argument(..., help="Input folder (local path or file:///...) or s3://bucket/prefix."),
    to: str | None = typer.Option(
        None,
        "--to",
        "-t",
        help="Dataset location: file:///abs/path, s3://bucket/prefix or a local path "
        "(default: <IPSP_STORAGE_URI>/datasets/<name of the input folder>).",
    ),
    name_pattern: str | None = typer.Option(
        None,
        "--name-pattern",
        help="Regular expression for file names, with named groups camera_id and frame_index "
        r"(default: (?P<camera_id>cam_\d+)_(?P<frame_index>\d+)\.(?:jpe?g|png), case-insensitive).",
    ),
    shard_mb: float = typer.Option(128.0, "--shard-mb", min=0.01, help="Target shard size in MB (MiB)."),
    fit: str | None = typer.Option(
        None, "--fit", help="Re-encode frames to fit inside WIDTHxHEIGHT (aspect kept, never enlarged)."
    ),
    quality: int | None = typer.Option(
        None, "--quality", min=1, max=100, help="Re-encode frames as JPEG at this quality (default: keep bytes)."
    ),
    max_side: int = typer.Option(16384, "--max-side", min=1, help="Reject images wider or taller than this."),
    max_pixels: int = typer.Option(50_000_000, "--max-pixels", min=1, help="Reject images with more pixels."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when any input was rejected (output is written)."),
    partitions: int | None = typer.Option(None, "--partitions", min=1, help="Spark tasks for validation."),
    work_dir: str | None = typer.Option(
        None, "--work-dir", help="Local folder for shards being written (default: SPARK_LOCAL_DIRS or temp)."
    ),
    spark_master: str | None = typer.Option(
        None, "--spark-master", envvar="IPSP_SPARK_MASTER", help="Spark master URL (default: local[2])."
    ),
    storage_uri: str | None = typer.Option(
        None, "--storage-uri", envvar="IPSP_STORAGE_URI", help="Storage root for the default --to."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Validate the images under SOURCE and pack them into LMDB shards, a manifest and a rejects report."""
    from ipsp.config import load_settings
    from ipsp.preprocessing.pack.inputs import normalize_uri
    from ipsp.preprocessing.pack.job import pack as run_pack
    from ipsp.preprocessing.pack.options import PackOptions
    from ipsp.preprocessing.validate import DEFAULT_NAME_PATTERN, Checks, parse_fit
    from ipsp.storage.shards import MIB

    settings = load_settings(spark_master=spark_master, storage_uri=storage_uri)
    try:
        fit_size = parse_fit(fit) if fit else None
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if to is None:
        name = normalize_uri(source).rstrip("/").rsplit("/", 1)[-1]
        to = f"{settings.storage_uri.rstrip('/')}/datasets/{name}"
    options = PackOptions(
        name_pattern=name_pattern or DEFAULT_NAME_PATTERN,
        shard_bytes=int(shard_mb * MIB),
        checks=Checks(max_side=max_side, max_pixels=max_pixels, fit=fit_size, quality=quality),
        strict=strict,
        partitions=partitions,
        work_dir=work_dir,
        progress=progress,
    )
    result = run_pack(source, to, options, settings)
    typer.echo(result.line())
    if strict and result.summary.rejected:
        # an error, not typer.Exit: the ipsp entry point runs click in non-standalone mode
        raise RejectsFound(
            f"--strict: {result.summary.rejected} input file(s) rejected; "
            f"see {result.summary.dataset_uri}/rejects.jsonl"
        )
