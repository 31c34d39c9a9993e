"""``ipsp detect`` and ``ipsp model push|list|pull``.

Heavy imports (NumPy, OpenCV, ONNX Runtime) happen inside the commands so that
``ipsp --help`` stays instant.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from ipsp.errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}

model_app = typer.Typer(help="Model registry on the object store: push, list, pull.", no_args_is_help=True)


class OutputFormat(StrEnum):
    """How results are printed."""

    table = "table"
    jsonl = "jsonl"


class BackendChoice(StrEnum):
    """Inference backend (auto: from the model file's metadata)."""

    auto = "auto"
    onnx = "onnx"
    ultralytics = "ultralytics"


def register(app: typer.Typer) -> None:
    """Add ``detect`` and the ``model`` group to the main app."""
    app.command("detect")(detect)
    app.add_typer(model_app, name="model")


def find_images(paths: list[Path]) -> list[Path]:
    """Image files among ``paths`` (folders are searched recursively, sorted)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            found.append(path)
        else:
            raise UserError(f"{path}: no such file or folder")
    if not found:
        raise UserError(f"no image files in {', '.join(map(str, paths))} (looked for {sorted(IMAGE_SUFFIXES)})")
    return found


def detect(
    paths: list[Path] = typer.Argument(..., help="Image files or folders (searched recursively)."),
    model: str | None = typer.Option(
        None, "--model", "-m", envvar="IPSP_MODEL", help="Model: file path, registry name[:version] or shipped name."
    ),
    output: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f", help="table, or jsonl on stdout."),
    backend: BackendChoice = typer.Option(BackendChoice.auto, help="Inference backend."),
    device: str = typer.Option("auto", help="cpu, cuda, or auto (a GPU when the backend can use one)."),
    batch_size: int | None = typer.Option(
        None, "--batch-size", "-b", min=1, envvar="IPSP_BATCH_SIZE", help="Frames per inference batch."
    ),
    score: float | None = typer.Option(
        None, "--score", min=0.0, max=1.0, envvar="IPSP_SCORE_THRESHOLD", help="Minimum detection score."
    ),
    threads: int | None = typer.Option(
        None, min=0, envvar="IPSP_INTRA_OP_THREADS", help="Inference threads (0: all cores of this process)."
    ),
    camera: str = typer.Option("default", help="Camera id whose ROI and thresholds apply (table output)."),
    cameras_config: Path | None = typer.Option(
        None, envvar="IPSP_CAMERAS_CONFIG", help="YAML with per-camera ROI and thresholds."
    ),
    progress: bool = typer.Option(True, help="Show a progress bar on stderr."),
) -> None:
    """Run the detector on images; print a table or one JSON object per image (--format jsonl)."""
    from tqdm import tqdm

    from ipsp.config import load_settings
    from ipsp.detection.loader import load_detector
    from ipsp.detection.metrics import load_cameras_config, traffic_summary
    from ipsp.detection.types import Detections

    settings = load_settings(model=model, cameras_config=cameras_config)
    files = find_images(paths)
    detector = load_detector(
        settings=settings, backend=backend.value, device=device, threads=threads,
        batch_size=batch_size, score_threshold=score,
    )  # fmt: skip
    cfg = load_cameras_config(settings.cameras_config)
    class_map = cfg.full_class_map()
    failed = 0
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(files), unit="img", desc="detect", disable=not progress, file=sys.stderr)
    for path, result in detector.detect_files(files):
        bar.update(1)
        if not isinstance(result, Detections):
            failed += 1
            bar.write(f"error: {result}", file=sys.stderr)
            continue
        summary = traffic_summary(result, camera, cameras_cfg=cfg)
        record = {
            "path": str(path),
            "detections": summary.detections.to_records(class_map),
            "counts": summary.counts.model_dump(),
        }
        if output is OutputFormat.jsonl:
            sys.stdout.write(json.dumps(record) + "\n")
            sys.stdout.flush()
        else:
            rows.append({**record, "density": summary.density_percent, "status": summary.status})
    bar.close()
    if output is OutputFormat.table:
        print_table(rows, detector.model_info.name, detector.model_info.version)
        t = detector.total_timings.per_frame()
        typer.echo(
            f"{detector.total_timings.frames} frames, per frame: pre {t['pre_ms']:.1f} ms, "
            f"infer {t['infer_ms']:.1f} ms, post {t['post_ms']:.1f} ms", err=True,
        )  # fmt: skip
    if failed:
        raise UserError(f"{failed} of {len(files)} images could not be processed (see the errors above)")


def print_table(rows: list[dict[str, Any]], model: str, version: str) -> None:
    """Human-readable results, one row per image."""
    from rich.table import Table

    table = Table(title=f"detections ({model}:{version})")
    for col in ("image", "objects", "motorbike", "car", "bus", "truck", "bicycle", "person", "density %", "status"):
        table.add_column(col, justify="left" if col in ("image", "status") else "right")
    for row in rows:
        c = row["counts"]
        table.add_row(
            Path(row["path"]).name, str(len(row["detections"])),
            *(str(c[k]) for k in ("motorbike", "car", "bus", "truck", "bicycle", "person")),
            f"{row['density']:.1f}", row["status"],
        )  # fmt: skip
    console().print(table)


def console() -> Any:
    """A rich console; wide when piped (rich assumes 80 columns there and would cut the tables)."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)


def _registry(registry: str | None) -> Any:
    from ipsp.config import load_settings
    from ipsp.detection.registry import ModelRegistry

    return ModelRegistry.from_settings(load_settings(model_registry_uri=registry))


REGISTRY_OPTION = typer.Option(None, "--registry", envvar="IPSP_MODEL_REGISTRY_URI", help="Registry root URI.")


@model_app.command("push")
def push(
    file: Path = typer.Argument(..., help="Model file (.onnx export or Ultralytics .pt)."),
    name: str = typer.Option(..., "--name", "-n", help="Model name (lower case)."),
    version: str | None = typer.Option(None, "--version", "-v", help="Version (default: next integer)."),
    source: str = typer.Option("", help="Where the weights come from."),
    license: str = typer.Option("", "--license", help="Licence of the weights."),
    description: str = typer.Option("", help="Free text."),
    metrics: str = typer.Option("", help="Validation metrics as JSON, e.g. '{\"mAP50\": 0.9}'."),
    registry: str | None = REGISTRY_OPTION,
) -> None:
    """Upload a model file and its card (names, input size, backend, sha256) as a new version."""
    try:
        parsed = {str(k): float(v) for k, v in json.loads(metrics).items()} if metrics else {}
    except (ValueError, AttributeError) as exc:
        raise UserError(f"--metrics must be a JSON object of numbers ({exc})") from exc
    card = _registry(registry).push(file, name, version, source, license, description, parsed)
    typer.echo(
        f"pushed {card.ref} sha256={card.sha256} ({card.backend}, {card.decoder}, {len(card.class_names)} classes)"
    )


@model_app.command("list")
def list_models(
    name: str | None = typer.Argument(None, help="Only this model's versions."),
    output: str = typer.Option("table", "--format", "-f", help="table or json."),
    registry: str | None = REGISTRY_OPTION,
) -> None:
    """List model versions in the registry."""
    from ipsp.detection.registry import iter_versions

    cards = _registry(registry).list(name)
    if output == "json":
        for card in cards:
            typer.echo(card.model_dump_json())
        return
    from rich.table import Table

    rows = iter_versions(cards)
    if not rows:
        typer.echo("no models in the registry", err=True)
        return
    table = Table(title="models")
    for col in ("name", "version", "backend", "decoder", "classes", "input", "size_mb", "sha256", "created_at"):
        table.add_column(col)
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    console().print(table)


@model_app.command("pull")
def pull(
    ref: str = typer.Argument(..., help="name[:version] (default: highest version)."),
    dest: Path | None = typer.Option(None, help="Write the file here instead of the local cache."),
    registry: str | None = REGISTRY_OPTION,
) -> None:
    """Download a model (sha256-verified) into the local cache or DEST; print its path."""
    path, card = _registry(registry).pull(ref, dest)
    typer.echo(f"{card.ref} sha256={card.sha256} -> {path}")


@model_app.command("promote")
def promote(
    ref: str = typer.Argument(..., help="name[:version] in the registry (default: highest version)."),
    as_name: str | None = typer.Option(
        None, "--as", help="Shipped name to write (default: the model's own name, e.g. traffic)."
    ),
    models_dir: Path | None = typer.Option(
        None, "--models-dir", envvar="IPSP_MODELS_DIR", help="Shipped models folder (default: 4_model_training/models)."
    ),
    input_size: str = typer.Option(
        "", "--input-size", help="WIDTHxHEIGHT to run it at by default (the fidelity table's choice)."
    ),
    registry: str | None = REGISTRY_OPTION,
) -> None:
    """Ship a registry model: copy it (sha256-verified) with its card into the shipped models folder.

    A shipped model is what every command loads by name when no registry has it (a
    fresh clone, no network); ``IPSP_MODEL`` names the default.
    """
    from ipsp.config import load_settings
    from ipsp.detection.registry import bundled_dir, ship_model

    settings = load_settings(model_registry_uri=registry, models_dir=models_dir)
    path, record = ship_model(_registry(registry), ref, bundled_dir(settings), as_name, input_size)
    typer.echo(f"shipped {ref} as {record['name']}: {shown_path(path)} (+ {record['name']}.provenance.json)")
    if record["name"] != settings.model:
        typer.echo(f"it is the default where IPSP_MODEL={record['name']} (now: {settings.model})")


def shown_path(path: Path) -> str:
    """A path relative to the working folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
