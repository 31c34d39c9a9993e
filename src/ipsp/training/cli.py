"""``ipsp train``: train a YOLO detector, validate, export ONNX and push it to the model registry."""

from __future__ import annotations

from pathlib import Path

import typer

from ipsp.errors import UserError


def register(app: typer.Typer) -> None:
    """Add ``train`` to the main app."""
    app.command("train")(train)


def train(
    data: Path | None = typer.Option(None, "--data", help="YOLO dataset config (data.yaml)."),
    synthetic: int = typer.Option(
        0, "--synthetic", min=0, help="Generate N synthetic training images (+N/4 validation) and train on them."
    ),
    out: Path | None = typer.Option(None, "--out", help="Run folder (default: <IPSP_HOME>/train/<name>)."),
    model: str = typer.Option("yolov8n.yaml", help="Architecture YAML (from scratch) or a .pt to fine-tune."),
    epochs: int | None = typer.Option(None, min=1, help="Epochs (default 50; 10 with --synthetic)."),
    imgsz: int | None = typer.Option(None, min=32, help="Square input size (default 640; 128 with --synthetic)."),
    batch: int | None = typer.Option(None, min=1, help="Batch size (default 16; 8 with --synthetic)."),
    device: str = typer.Option("cpu", help="cpu, 0 (first GPU), ..."),
    name: str = typer.Option("yolo-traffic", "--name", "-n", help="Registry name of the trained model."),
    push: bool = typer.Option(True, help="Push the ONNX export to the model registry."),
    registry: str | None = typer.Option(
        None, "--registry", envvar="IPSP_MODEL_REGISTRY_URI", help="Registry root URI."
    ),
    min_map50: float = typer.Option(0.0, min=0.0, max=1.0, help="Fail (and push nothing) below this mAP50."),
) -> None:
    """Train YOLO with Ultralytics, report mAP50 / mAP50-95 on the validation split, export ONNX, push it."""
    from ipsp.config import load_settings
    from ipsp.detection.ultralytics_backend import offline_environment

    offline_environment(verbose=True)
    from ipsp.training.trainer import TrainConfig, quick_config, run
    from ipsp.training.trainer import push as push_model

    if (data is None) == (synthetic == 0):
        raise UserError("give exactly one of --data data.yaml or --synthetic N")
    settings = load_settings(model_registry_uri=registry)
    folder = out or settings.home / "train" / name
    if synthetic:
        from ipsp.training.synthetic import write_dataset

        data = write_dataset(folder / "dataset", train=synthetic, val=max(synthetic // 4, 1))
        cfg = quick_config(data, folder, epochs or 10, imgsz or 128, batch or 8)
    else:
        assert data is not None
        cfg = TrainConfig(data=data, out=folder, epochs=epochs or 50, imgsz=imgsz or 640, batch=batch or 16)
    cfg.model, cfg.device = model, device
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
