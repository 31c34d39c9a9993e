"""Train -> validate -> export -> push -> pull -> detect, for real, on the synthetic labelled set.

One short CPU run (``ipsp train --synthetic 160``: 160 training and 40 held-out
images of 160 px, yolov8n built from its YAML, 10 epochs at imgsz 128) is shared
by the tests of this module. Seen on 2 shared cores: 2-4 minutes, mAP50 0.97.

Stated bounds:
- mAP50 on the held-out split >= 0.5 (the run reaches ~0.97; 0.6 already after 6 epochs);
- the pulled model, run by ``ipsp detect`` at score 0.25 on the held-out images,
  recovers >= 60 % of the labelled objects (IoU >= 0.5, right class) with precision
  >= 60 % (a run at mAP50 0.97 gives 83 %, the same as Ultralytics' own predict);
- ONNX Runtime and Ultralytics (PyTorch) backends on the same trained model: the
  same detections (class, and conf >= 0.3 on either side), boxes within 1 px,
  confidences within 0.01.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from ipsp.config import Settings
from ipsp.detection.detector import Detector, open_backend
from ipsp.detection.errors import ModelError
from ipsp.detection.types import Detections
from ipsp.training.synthetic import CLASS_NAMES, Box, read_labels

MAP50_BOUND = 0.5
RECALL_BOUND = 0.6
PRECISION_BOUND = 0.6
BOX_TOLERANCE_PX = 1.0
CONF_TOLERANCE = 0.01
IMAGE_SIZE = 160

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Trained:
    """What the shared training run left behind."""

    run: Path
    home: Path
    registry: str
    env: dict[str, str]
    result: dict[str, object]


def ipsp(args: list[str], env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ipsp.cli", *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def trained(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """Run ``ipsp train`` once, pushing to a fresh registry prefix on the local S3 server."""
    base = tmp_path_factory.mktemp("train")
    registry = f"s3://ipsp/it-train-{uuid.uuid4().hex[:10]}/models"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IPSP_", "YOLO_"))}
    env.update(
        IPSP_HOME=str(base / "home"),
        IPSP_S3_ENDPOINT=stack_settings.s3_endpoint,
        IPSP_S3_ACCESS_KEY=stack_settings.s3_access_key,
        IPSP_S3_SECRET_KEY=stack_settings.s3_secret_key.get_secret_value(),
        IPSP_MODEL_REGISTRY_URI=registry,
    )
    run = base / "run"
    done = ipsp(
        ["train", "--synthetic", "160", "--epochs", "10", "--out", str(run), "--name", "tiny-traffic"], env, 1200
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "pushed tiny-traffic:1" in done.stdout
    result = json.loads((run / "result.json").read_text())
    return Trained(run, base / "home", registry, env, result)


def test_training_reaches_the_stated_map50(trained: Trained) -> None:
    metrics = trained.result["metrics"]
    assert isinstance(metrics, dict)
    assert metrics["mAP50"] >= MAP50_BOUND, metrics
    assert 0 < metrics["mAP50-95"] <= metrics["mAP50"]
    assert trained.result["names"] == {str(i): n for i, n in enumerate(CLASS_NAMES)}


def test_registry_holds_the_export_with_its_card(trained: Trained) -> None:
    listed = ipsp(["model", "list", "tiny-traffic", "--format", "json"], trained.env)
    assert listed.returncode == 0, listed.stderr
    (card,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (card["version"], card["backend"], card["decoder"]) == ("1", "onnx", "yolov8")
    assert card["class_names"] == {str(i): n for i, n in enumerate(CLASS_NAMES)}
    assert card["input_size"] == [128, 128] and card["metrics"]["mAP50"] == trained.result["metrics"]["mAP50"]  # type: ignore[index]
    pulled = ipsp(["model", "pull", "tiny-traffic:1"], trained.env)
    assert pulled.returncode == 0 and f"sha256={card['sha256']}" in pulled.stdout


def iou(a: Box, b: list[float]) -> float:
    """IoU of a label box and a detection's ``box_xywh``."""
    ax2, ay2, bx2, by2 = a.x + a.w, a.y + a.h, b[0] + b[2], b[1] + b[3]
    inter = max(0.0, min(ax2, bx2) - max(a.x, b[0])) * max(0.0, min(ay2, by2) - max(a.y, b[1]))
    return inter / (a.w * a.h + b[2] * b[3] - inter)


def test_pulled_model_detects_the_held_out_objects(trained: Trained) -> None:
    val_images = trained.run / "dataset" / "images" / "val"
    args = ["detect", str(val_images), "--model", "tiny-traffic:1", "--format", "jsonl", "--no-progress"]
    done = ipsp([*args, "--score", "0.25"], trained.env)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(records) == len(list(val_images.glob("*.jpg")))
    found = labelled = predicted = 0
    for record in records:
        image = Path(record["path"])
        truth = read_labels(image.parents[2] / "labels" / "val" / f"{image.stem}.txt", IMAGE_SIZE)
        labelled += len(truth)
        predicted += len(record["detections"])
        for box in truth:
            found += any(
                d["cls"] == CLASS_NAMES[box.cls] and iou(box, d["box_xywh"]) >= 0.5 for d in record["detections"]
            )
    assert found / labelled >= RECALL_BOUND, (found, labelled)
    assert found / max(predicted, 1) >= PRECISION_BOUND, (found, predicted)


def confident(det: Detections, floor: float = 0.3) -> Detections:
    """Detections above ``floor``, highest confidence first (so two backends can be paired)."""
    keep = np.nonzero(det.confidence >= floor)[0]
    return det.select(keep[np.argsort(-det.confidence[keep], kind="stable")])


def test_onnx_and_ultralytics_backends_agree(trained: Trained) -> None:
    weights = trained.run / "run" / "weights"
    onnx = Detector(open_backend(weights / "best.onnx", threads=2), score_threshold=0.25, batch_size=8)
    torch = Detector(open_backend(weights / "best.pt", threads=2, device="cpu"), score_threshold=0.25, batch_size=8)
    assert (onnx.backend.name, torch.backend.name) == ("onnx", "ultralytics")
    assert onnx.names == torch.names and onnx.spec.input_size == torch.spec.input_size
    frames = [p.read_bytes() for p in sorted((trained.run / "dataset" / "images" / "val").glob("*.jpg"))]
    compared = 0
    for a, b in zip(onnx.detect_bytes(frames), torch.detect_bytes(frames), strict=True):
        assert isinstance(a, Detections) and isinstance(b, Detections)
        a, b = confident(a), confident(b)
        assert a.class_id.tolist() == b.class_id.tolist()
        if len(a):
            assert np.abs(a.xyxy - b.xyxy).max() <= BOX_TOLERANCE_PX
            assert np.abs(a.confidence - b.confidence).max() <= CONF_TOLERANCE
        compared += len(a)
    assert compared >= 40  # the comparison covered real detections, not empty frames


def test_model_whose_outputs_do_not_match_its_names_is_refused(trained: Trained, tmp_path: Path) -> None:
    import onnx

    model = onnx.load(str(trained.run / "run" / "weights" / "best.onnx"))
    for prop in model.metadata_props:
        if prop.key == "names":
            prop.value = "{0: 'car', 1: 'bus'}"  # 2 names for a 4-class head
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    with pytest.raises(ModelError, match=r"unknown outputs.*2 classes") as info:
        open_backend(broken)
    assert str(broken) in str(info.value)
