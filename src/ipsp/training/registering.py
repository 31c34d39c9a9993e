"""Register a fine-tuned model: its ONNX export and a model card that says where it comes from.

The card records what a reader of the model needs to trust or redo it: the base
weights and their licence, the dataset (its folder, the README's provenance line and
the sha256 of its file list), the split, the command, the training time and every
held-out figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ipsp.detection.registry import ModelCard, ModelRegistry
from ipsp.training.finetune import BASE_LICENSE, FinetuneResult


def dataset_provenance(config: Path) -> str:
    """The dataset README's provenance paragraph (first line starting 'Provenance'), if it has one."""
    readme = config.parent / "README.md"
    if not readme.is_file():
        return ""
    for paragraph in readme.read_text().split("\n\n"):
        if paragraph.lstrip().lower().startswith("provenance"):
            return " ".join(paragraph.split())
    return ""


def card_provenance(result: FinetuneResult) -> dict[str, Any]:
    """The model card's provenance block."""
    cfg = result.config
    return {
        "base_weights": {"file": Path(str(cfg["base"])).name, "license": BASE_LICENSE},
        "dataset": {
            "name": Path(str(cfg["data"])).parent.name,
            "file_list_sha256": result.dataset_sha256,
            "provenance": dataset_provenance(Path(str(cfg["data"]))),
            "split": f"latest {cfg['holdout']:.0%} of each camera's frames by frame number held out",
            "train_frames": result.train_frames,
            "heldout_frames": result.heldout_frames,
        },
        "command": cfg.get("command", ""),
        "input_size": "{1}x{0}".format(*cfg["run_hw"]),  # the size to run it at (WIDTHxHEIGHT)
        "training_seconds": result.seconds,
        "settings": {k: cfg[k] for k in ("epochs", "batch", "input_hw", "lr", "seed", "device")},
        "metrics": result.metrics,
    }


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """``{split}.{figure}`` numbers for the card's metrics field."""
    flat: dict[str, float] = {}
    for split, figures in metrics.items():
        for key in ("precision", "recall", "count_mae"):
            flat[f"{split}.{key}"] = float(figures[key])
    return flat


def push_finetuned(result: FinetuneResult, name: str, registry_uri: str | None = None) -> ModelCard:
    """Push the export with its card as the next version of ``name``."""
    from ipsp.config import load_settings

    registry = ModelRegistry.from_settings(load_settings(model_registry_uri=registry_uri))
    return registry.push(
        result.onnx,
        name,
        source=f"ipsp train: CenterNet fine-tuned on {Path(str(result.config['data'])).parent.name}",
        license=BASE_LICENSE,
        description="CenterNet (MobileNetV3) fine-tuned for traffic counting: motorbike, car, bus, truck",
        metrics=flat_metrics(result.metrics),
        provenance=card_provenance(result),
    )
