"""``ipsp train``: fine-tune a detector on labelled traffic frames, evaluate, export ONNX, register it.

Two paths, one command:

- default (``--data data.yaml``): fine-tune the shipped CenterNet on a YOLO-format
  dataset on the CPU or a GPU (``finetune``), frames held out by time, scored the
  way the pipeline counts;
- Ultralytics (``--weights model.pt``, ``--model yolov8n.yaml`` or ``--synthetic N``):
  train a YOLO model for users who bring weights (and usually a GPU).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import typer

from ipsp.errors import UserError


def register(app: typer.Typer) -> None:
    """Add ``train`` to the main app."""
    app.command("train")(train)


def train(
    data: Path | None = typer.Option(None, "--data", help="YOLO dataset config (data.yaml)."),
    synthetic: int = typer.Option(
        0, "--synthetic", min=0, help="Ultralytics: generate N synthetic images (+N/4 validation) and train on them."
    ),
    out: Path | None = typer.Option(None, "--out", help="Run folder (default: <IPSP_HOME>/train/<name>)."),
    weights: Path | None = typer.Option(None, "--weights", help="Ultralytics: fine-tune these YOLO weights (.pt)."),
    model: str | None = typer.Option(None, help="Ultralytics: architecture YAML to train from scratch."),
    base: str = typer.Option("centernet", help="Fine-tuning: shipped model (or .onnx file) to start from."),
    epochs: int | None = typer.Option(None, min=1, help="Epochs (fine-tuning 7; Ultralytics 50, 10 synthetic)."),
    imgsz: str | None = typer.Option(
        None, help="Input size: 'WxH' for fine-tuning (default 640x352), one side for Ultralytics (640)."
    ),
    run_size: str | None = typer.Option(
        None, "--run-size", help="Fine-tuning: 'WxH' to score the export at and record as its run size (768x448)."
    ),
    batch: int | None = typer.Option(None, min=1, help="Batch size (default 8; Ultralytics 16)."),
    holdout: float = typer.Option(0.15, min=0.01, max=0.9, help="Fine-tuning: latest share of frames held out."),
    limit: int = typer.Option(0, min=0, help="Fine-tuning: train on at most N frames (0: all; smoke runs)."),
    device: str = typer.Option("cpu", help="cpu, cuda (fine-tuning) or 0 (Ultralytics' first GPU)."),
    name: str = typer.Option("traffic", "--name", "-n", help="Registry name of the trained model."),
    push: bool = typer.Option(True, help="Push the ONNX export to the model registry."),
    registry: str | None = typer.Option(
        None, "--registry", envvar="IPSP_MODEL_REGISTRY_URI", help="Registry root URI."
    ),
    min_map50: float = typer.Option(0.0, min=0.0, max=1.0, help="Ultralytics: fail (push nothing) below this mAP50."),
) -> None:
    """Train a detector, report its held-out figures, export ONNX, push it to the model registry."""
    from ipsp.config import load_settings

    if (data is None) == (synthetic == 0):
        raise UserError("give exactly one of --data data.yaml or --synthetic N")
    settings = load_settings(model_registry_uri=registry)
    folder = out or settings.home / "train" / name
    if synthetic or weights is not None or model is not None:
        _train_ultralytics(data, synthetic, folder, weights, model, epochs, imgsz, batch, device, name, push,
                           settings, min_map50)  # fmt: skip
        return
    assert data is not None
    import logging

    from ipsp.detection.registry import resolve_model
    from ipsp.training.finetune import FinetuneConfig, run

    base_path, _ = resolve_model(base, settings)
    cfg = FinetuneConfig(data=data, out=folder, base=base_path, holdout=holdout, limit=limit, device=device)
    cfg.epochs = epochs or cfg.epochs
    cfg.batch = batch or cfg.batch
    if imgsz:
        cfg.input_hw = parse_size(imgsz)
    if run_size:
        cfg.run_hw = parse_size(run_size)
    logging.getLogger("ipsp.training").setLevel(logging.INFO)  # one line per epoch, also into a log file
    command = "ipsp " + shlex.join(sys.argv[1:])
    result = run(cfg, command)
    for split, m in result.metrics.items():
        typer.echo(f"{split}: P={m['precision']:.3f} R={m['recall']:.3f} count error={m['count_mae']:.2f}/frame "
                   f"({m['reference_per_frame']} reference vehicles/frame, {m['frames']} frames)")  # fmt: skip
    typer.echo(f"onnx: {result.onnx}  ({result.seconds / 60:.1f} min)")
    if push:
        from ipsp.training.registering import push_finetuned

        card = push_finetuned(result, name, settings.model_registry_uri)
        typer.echo(f"pushed {card.ref} sha256={card.sha256} to {settings.model_registry_uri}")
        typer.echo(f"make it the shipped default: ipsp model promote {card.ref}")


def parse_size(text: str) -> tuple[int, int]:
    """``'640x352'`` -> ``(352, 640)`` (height, width), both multiples of 32."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"input size {text!r}: expected WIDTHxHEIGHT, e.g. 640x352") from None
    if width % 32 or height % 32 or width <= 0 or height <= 0:
        raise UserError(f"input size {text!r}: width and height must be positive multiples of 32")
    return height, width


def _train_ultralytics(
    data: Path | None, synthetic: int, folder: Path, weights: Path | None, model: str | None,
    epochs: int | None, imgsz: str | None, batch: int | None, device: str, name: str, push: bool,
    settings: Any, min_map50: float,
) -> None:  # fmt: skip
    """The Ultralytics path (train extra): YOLO from a YAML or from the user's weights."""
    from ipsp.detection.ultralytics_backend import offline_environment

    offline_environment(verbose=True)
    from ipsp.training.trainer import TrainConfig, quick_config, run
    from ipsp.training.trainer import push as push_model

    size = int(imgsz) if imgsz else None
    if synthetic:
        from ipsp.training.synthetic import write_dataset

        data = write_dataset(folder / "dataset", train=synthetic, val=max(synthetic // 4, 1))
        cfg = quick_config(data, folder, epochs or 10, size or 128, batch or 8)
    else:
        assert data is not None
        cfg = TrainConfig(data=data, out=folder, epochs=epochs or 50, imgsz=size or 640, batch=batch or 16)
    cfg.model = str(weights) if weights is not None else (model or "yolov8n.yaml")
    cfg.device = device
    result = run(cfg)
    m = result.metrics
    typer.echo(f"validation: mAP50={m['mAP50']:.3f} mAP50-95={m['mAP50-95']:.3f} "
               f"P={m['precision']:.3f} R={m['recall']:.3f}")  # fmt: skip
    typer.echo(f"weights: {result.weights}\nonnx: {result.onnx}")
    if m["mAP50"] < min_map50:
        raise UserError(f"mAP50 {m['mAP50']:.3f} is below --min-map50 {min_map50}; nothing pushed")
    if push:
        card = push_model(result, name, settings.model_registry_uri)
        typer.echo(f"pushed {card.ref} sha256={card.sha256} to {settings.model_registry_uri}")
