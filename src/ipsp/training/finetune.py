"""Fine-tune the shipped CenterNet on a labelled traffic dataset, evaluate it as the pipeline counts, export it.

The run, in order:

1. read the YOLO-format dataset and hold out the latest frames of each camera
   (``holdout``, by frame number: neighbouring video frames are near-copies);
2. build the pretrained network (``centernet_net``), each class's heatmap seeded from
   its COCO class; freeze the first backbone stages (generic edges and textures, and
   the most expensive to back-propagate at full resolution);
3. train with AdamW, a short warm-up and a cosine decay, on augmented windows
   (scale, crop, flip, colour, weather: ``augment``), saving a checkpoint each epoch;
4. export ONNX (dynamic batch, the ``centernet`` decoder's output, metadata);
5. score the export through the product's own detector and counting on the held-out
   frames as they are and rendered as rain at dusk (``ipsp.detection.fidelity``).

The same command runs on a GPU (``--device cuda``) with nothing else changed.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ipsp.errors import UserError
from ipsp.training.augment import AugmentConfig, augment, rain_at_dusk
from ipsp.training.dataset import Dataset, Sample, load_dataset, split_by_time
from ipsp.training.targets import STRIDE, make_targets

log = logging.getLogger(__name__)

#: trunk modules (in graph order) before this prefix stay frozen: the stem and the stride-2/4 blocks
FREEZE_BEFORE = "tower_0/MobilenetV3/expanded_conv_3"
BASE_LICENSE = (
    "MIT (npm @vladmandic/human 3.3.6, CenterNet MobileNetV3 COCO weights; upstream mobilenetv3_centernet "
    "states no licence: check before a commercial release)"
)


@dataclass
class FinetuneConfig:
    """Knobs of one fine-tuning run; the defaults are the run that trained the shipped model."""

    data: Path
    out: Path
    base: Path
    epochs: int = 7
    batch: int = 8
    input_hw: tuple[int, int] = (352, 640)
    #: the size the export is scored at and recorded to run at (bench-fidelity's choice for this model)
    run_hw: tuple[int, int] = (448, 768)
    lr: float = 5e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 30
    holdout: float = 0.15
    box_weight: float = 2.0
    seed: int = 0
    device: str = "cpu"
    threads: int = 0
    limit: int = 0  # train on at most this many frames (0: all); for smoke runs
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class FinetuneResult:
    """What a run produced."""

    onnx: Path
    checkpoint: Path
    metrics: dict[str, Any]
    names: dict[int, str]
    dataset_sha256: str
    train_frames: int
    heldout_frames: int
    seconds: float
    config: dict[str, Any]

    def to_json(self) -> str:
        """JSON summary."""
        d = asdict(self)
        d["onnx"], d["checkpoint"] = str(self.onnx), str(self.checkpoint)
        return json.dumps(d, indent=2, default=str)


def read_rgb(path: Path) -> np.ndarray:
    """Decode a frame to RGB uint8 (a frame that does not decode stops the run with its name)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise UserError(f"{path}: not a decodable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def training_batch(
    samples: list[Sample], cfg: FinetuneConfig, nc: int, rng: np.random.Generator
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Augmented windows and their heatmap, box and weight targets."""

    h, w = cfg.input_hw
    images, heats, boxes_t, weights = [], [], [], []
    for sample in samples:
        image = read_rgb(sample.image)
        ih, iw = image.shape[:2]
        boxes = sample.boxes * np.asarray([iw, ih, iw, ih], np.float32)
        window, kept, keep = augment(image, boxes, cfg.input_hw, cfg.augment, rng)
        heat, box_t, weight = make_targets(kept, sample.classes[keep], nc, (h // STRIDE, w // STRIDE))
        images.append(window)
        heats.append(heat)
        boxes_t.append(box_t)
        weights.append(weight)
    return images, np.stack(heats), np.stack(boxes_t), np.stack(weights)


def learning_rate(step: int, total: int, cfg: FinetuneConfig) -> float:
    """Linear warm-up, then cosine decay to 5 % of the peak."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(total - cfg.warmup_steps, 1)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def freeze_early(net: Any) -> int:
    """Freeze the trunk's parameters up to ``FREEZE_BEFORE``; returns how many tensors were frozen."""
    frozen = 0
    for name, param in net.trunk.named_parameters():
        if name.replace("/", "_").startswith(FREEZE_BEFORE.replace("/", "_")):
            break
        if "CenternetHead" in name:
            continue
        param.requires_grad_(False)
        frozen += 1
    return frozen


def train_network(cfg: FinetuneConfig, dataset: Dataset, train: list[Sample]) -> tuple[Any, Path]:
    """The training loop; returns the trained network and the last checkpoint."""
    import torch
    from tqdm import tqdm

    from ipsp.training.centernet_net import build_network, focal_loss, giou_loss, to_tensor

    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    net = build_network(cfg.base, dataset.names).to(device)
    frozen = freeze_early(net)
    params = [p for p in net.parameters() if p.requires_grad]
    log.info("network: %d trainable tensors, %d frozen", len(params), frozen)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    steps_per_epoch = max(len(train) // cfg.batch, 1)
    total = steps_per_epoch * cfg.epochs
    checkpoint = cfg.out / "checkpoint.pt"
    step = 0
    net.train()
    for epoch in range(cfg.epochs):
        order = rng.permutation(len(train))
        # a log file (not a terminal) still gets a line every half minute
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", file=sys.stderr,
                   mininterval=0.5 if sys.stderr.isatty() else 30.0)  # fmt: skip
        running = 0.0
        for i in bar:
            chosen = [train[j] for j in order[i * cfg.batch : (i + 1) * cfg.batch]]
            images, heat, box_t, weight = training_batch(chosen, cfg, len(dataset.names), rng)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total, cfg)
            logits, ltrb = net(to_tensor(images).to(device))
            heat_loss = focal_loss(logits, torch.from_numpy(heat).to(device))
            box_loss = giou_loss(ltrb, torch.from_numpy(box_t).to(device), torch.from_numpy(weight).to(device))
            loss = heat_loss + cfg.box_weight * box_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            optimizer.step()
            step += 1
            running = 0.9 * running + 0.1 * loss.item() if i else loss.item()
            bar.set_postfix(loss=f"{running:.3f}", heat=f"{float(heat_loss):.3f}", box=f"{float(box_loss):.3f}")
        torch.save({"state_dict": net.state_dict(), "epoch": epoch + 1, "names": dataset.names}, checkpoint)
        log.info("epoch %d/%d: loss %.3f, checkpoint %s", epoch + 1, cfg.epochs, running, checkpoint)
    net.eval()
    return net, checkpoint


def evaluate(
    onnx_path: Path, frames: list[Sample], names: dict[int, str], run_hw: tuple[int, int], weather: bool = False
) -> dict[str, Any]:
    """Score the exported model at its run size on labelled frames through the product's detector and counting."""
    from ipsp.detection import load_detector
    from ipsp.detection.fidelity import Score, counted_vehicles, reference_vehicles
    from ipsp.detection.metrics import CamerasConfig
    from ipsp.detection.types import Detections

    detector = load_detector(onnx_path, batch_size=1, input_size=f"{run_hw[1]}x{run_hw[0]}")
    cfg = CamerasConfig()
    score = Score()
    for number, sample in enumerate(frames):
        rgb = read_rgb(sample.image)
        if weather:
            rgb = rain_at_dusk(rgb, seed=number)
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise UserError(f"{sample.image}: cannot re-encode")
        det = detector.detect_bytes([jpeg.tobytes()], [sample.image.name])[0]
        if not isinstance(det, Detections):
            raise UserError(f"{sample.image}: {det}")
        h, w = rgb.shape[:2]
        scale = np.asarray([w, h, w, h], np.float32)
        ref = Detections.from_arrays(sample.boxes * scale, np.ones(len(sample.boxes)), sample.classes, names, (w, h))
        pred, pred_classes = counted_vehicles(det, "heldout", cfg)
        sure, sure_classes = reference_vehicles(ref, "heldout", cfg)
        score.add(pred, pred_classes, sure, sure_classes)
    return score.result()


def run(cfg: FinetuneConfig, command: str = "") -> FinetuneResult:
    """Train, export and evaluate; writes ``result.json`` into the run folder."""
    from ipsp.training.centernet_net import export_onnx

    started = time.perf_counter()
    dataset = load_dataset(cfg.data)
    train, held = split_by_time(dataset.samples, cfg.holdout)
    if cfg.limit:
        train = train[: cfg.limit]
    cfg.out.mkdir(parents=True, exist_ok=True)
    log.info("dataset %s: %d train frames, %d held out (latest %.0f%% by frame number)",
             cfg.data, len(train), len(held), cfg.holdout * 100)  # fmt: skip
    net, checkpoint = train_network(cfg, dataset, train)
    fingerprint = dataset.fingerprint()
    extra = {
        "ipsp.source": f"ipsp train: fine-tuned {cfg.base.name} on {cfg.data.parent.name}",
        "ipsp.license": BASE_LICENSE,
        "ipsp.dataset_sha256": fingerprint,
    }
    onnx_path = export_onnx(net.cpu(), cfg.out / "model.onnx", dataset.names, cfg.input_hw, extra)
    metrics = {
        "heldout": evaluate(onnx_path, held, dataset.names, cfg.run_hw),
        "heldout_rain_dusk": evaluate(onnx_path, held, dataset.names, cfg.run_hw, weather=True),
    }
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    config["command"] = command
    result = FinetuneResult(
        onnx_path, checkpoint, metrics, dataset.names, fingerprint, len(train), len(held),
        round(time.perf_counter() - started, 1), config,
    )  # fmt: skip
    (cfg.out / "result.json").write_text(result.to_json())
    return result
