"""Train a YOLO detector with Ultralytics, validate it, export ONNX, register it.

Everything runs offline: the model is built from an architecture YAML shipped in
the ultralytics wheel (``yolov8n.yaml``: no weights download), plots are off (no
font download), AMP is off unless asked (its check downloads a model), and
``YOLO_OFFLINE`` stops update checks. Requires the ``train`` extra.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ipsp.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Knobs of one training run; defaults are Ultralytics' usual ones for a real dataset."""

    data: Path
    out: Path
    model: str = "yolov8n.yaml"
    epochs: int = 50
    imgsz: int = 640
    batch: int = 16
    device: str = "cpu"
    workers: int = 0
    seed: int = 0
    patience: int = 100
    amp: bool = False
    mosaic: float = 1.0
    warmup_epochs: float = 3.0
    nbs: int = 64
    lrf: float = 0.01
    extra: dict[str, Any] = field(default_factory=dict)

    def ultralytics_args(self) -> dict[str, Any]:
        """The knobs Ultralytics' ``train`` takes under the same names: every field but these four."""
        own = {"data", "out", "model", "extra"}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in own}


def quick_config(data: Path, out: Path, epochs: int = 10, imgsz: int = 128, batch: int = 8) -> TrainConfig:
    """A short CPU run that still learns (the synthetic set, tests, demos).

    Ultralytics' defaults assume long runs: gradients accumulate to a nominal batch of
    64 and the first >= 100 iterations are warm-up, which would swallow a 200-step run
    whole. Here every batch is an optimizer step, there is no warm-up, no mosaic (the
    scenes are already small) and the learning rate only decays to 10 % (not 1 %).
    """
    return TrainConfig(
        data=data, out=out, epochs=epochs, imgsz=imgsz, batch=batch,
        mosaic=0.0, warmup_epochs=0.0, nbs=batch, lrf=0.1, patience=epochs,
    )  # fmt: skip


@dataclass
class TrainResult:
    """What a run produced: weights, the ONNX export and validation metrics."""

    weights: Path
    onnx: Path
    metrics: dict[str, float]
    names: dict[int, str]
    imgsz: int
    epochs: int

    def to_json(self) -> str:
        """JSON summary (paths as strings)."""
        d = asdict(self)
        d["weights"], d["onnx"] = str(self.weights), str(self.onnx)
        return json.dumps(d, indent=2)


def _yolo(model: str) -> Any:
    from ipsp.detection.ultralytics_backend import import_ultralytics

    ultralytics = import_ultralytics()
    return ultralytics.YOLO(model, task="detect")


def train(cfg: TrainConfig) -> Path:
    """Train and return the path of the best weights (``.pt``)."""
    if not cfg.data.is_file():
        raise UserError(f"dataset config {cfg.data} does not exist (a YOLO data.yaml)")
    yolo = _yolo(cfg.model)
    run_dir = cfg.out / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    yolo.train(
        data=str(cfg.data.resolve()),
        **cfg.ultralytics_args(),
        deterministic=True,
        close_mosaic=min(10, cfg.epochs // 3) if cfg.mosaic else 0,
        pretrained=False,
        plots=False,
        val=False,  # validation runs once, on the final weights, in validate()
        project=str(cfg.out.resolve()),
        name="run",
        exist_ok=True,
        verbose=False,
        **cfg.extra,
    )
    weights = run_dir / "weights"
    best = weights / "best.pt" if (weights / "best.pt").is_file() else weights / "last.pt"
    if not best.is_file():
        raise UserError(f"training finished without weights in {weights}")
    return best


def validate(weights: Path, data: Path, imgsz: int, device: str = "cpu", batch: int = 16) -> dict[str, float]:
    """mAP50, mAP50-95, precision and recall of ``weights`` on the dataset's ``val`` split."""
    yolo = _yolo(str(weights))
    res = yolo.val(data=str(data.resolve()), imgsz=imgsz, batch=batch, device=device, plots=False,
                   split="val", workers=0, verbose=False)  # fmt: skip
    box = res.box
    return {
        "mAP50": round(float(box.map50), 4),
        "mAP50-95": round(float(box.map), 4),
        "precision": round(float(box.mp), 4),
        "recall": round(float(box.mr), 4),
    }


def export_onnx(weights: Path, imgsz: int, opset: int = 17) -> Path:
    """Export to ONNX with a dynamic batch axis and Ultralytics' metadata (names, imgsz, task)."""
    yolo = _yolo(str(weights))
    out = yolo.export(format="onnx", imgsz=imgsz, dynamic=True, simplify=False, opset=opset, device="cpu")
    path = Path(out)
    add_decoder_metadata(path)
    return path


def add_decoder_metadata(path: Path) -> None:
    """Add our explicit ``ipsp.decoder`` key next to the export's own metadata."""
    import onnx

    from ipsp.detection.spec import decoder_from_metadata

    model = onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props}
    decoder = decoder_from_metadata(meta, str(path))
    if meta.get("ipsp.decoder") != decoder:
        prop = model.metadata_props.add()
        prop.key, prop.value = "ipsp.decoder", decoder
        onnx.save(model, str(path))


def run(cfg: TrainConfig) -> TrainResult:
    """Train, validate on the held-out split, export ONNX."""
    best = train(cfg)
    metrics = validate(best, cfg.data, cfg.imgsz, cfg.device, cfg.batch)
    onnx_path = export_onnx(best, cfg.imgsz)
    from ipsp.detection.registry import inspect_model

    names = dict(inspect_model(onnx_path).names)
    result = TrainResult(best, onnx_path, metrics, names, cfg.imgsz, cfg.epochs)
    (cfg.out / "result.json").write_text(result.to_json())
    log.info("trained %s: %s", best, metrics)
    return result


def push(result: TrainResult, name: str, registry_uri: str | None = None, fmt: str = "onnx") -> Any:
    """Register the ONNX export (or the ``.pt`` with ``fmt='pt'``) with its metrics."""
    from ipsp.config import load_settings
    from ipsp.detection.registry import ModelRegistry

    registry = ModelRegistry.from_settings(load_settings(model_registry_uri=registry_uri))
    file = result.onnx if fmt == "onnx" else result.weights
    return registry.push(
        file,
        name,
        source=f"ipsp train ({result.epochs} epochs, imgsz {result.imgsz})",
        license="AGPL-3.0 (Ultralytics YOLO architecture)",
        description="YOLO trained with ipsp train",
        metrics=result.metrics,
    )
