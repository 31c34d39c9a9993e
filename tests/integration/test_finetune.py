"""Fine-tuning the shipped CenterNet: the conversion is exact, the export decodes as the detector expects,
and ``ipsp train`` -> registry -> ``ipsp model promote`` -> load by name works end to end.

Needs the train extra (torch, onnx, onnx2torch), no services: the registry is a
``file://`` folder. The run is a smoke run on the product's own synthetic labelled set
(8 frames, one epoch): it proves the path, not the model's quality, which
``make bench-fidelity`` measures.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from ipsp.config import load_settings
from ipsp.detection import load_detector
from ipsp.detection.registry import bundled_dir
from ipsp.training.synthetic import CLASS_NAMES, write_dataset

torch = pytest.importorskip("torch", reason="the train extra (torch) is not installed")

import onnx  # noqa: E402  (the train extra)

from ipsp.training.centernet_net import build_network, export_onnx  # noqa: E402

pytestmark = pytest.mark.slow
SHIPPED = bundled_dir(load_settings()) / "centernet.onnx"
VEHICLES = {0: "motorbike", 1: "car", 2: "bus", 3: "truck"}
COCO_IDS = [3, 2, 5, 7]  # motorcycle, car, bus, truck: the channels each class starts from


def bus_photo() -> np.ndarray:
    spec = importlib.util.find_spec("ultralytics")
    assert spec is not None and spec.submodule_search_locations
    image = cv2.imread(str(Path(next(iter(spec.submodule_search_locations))) / "assets" / "bus.jpg"))
    assert image is not None
    return image


def test_converted_network_gives_the_shipped_models_outputs() -> None:
    rgb = cv2.resize(cv2.cvtColor(bus_photo(), cv2.COLOR_BGR2RGB), (512, 512)).astype(np.float32)
    session = ort.InferenceSession(str(SHIPPED))
    names = [o.name for o in session.get_outputs()]
    outputs = session.run(None, {session.get_inputs()[0].name: rgb[None]})
    heat = outputs[names.index("tower_0/keypoints")][0][:, :, COCO_IDS]
    ltrb = outputs[names.index("tower_0/wh")][0]
    net = build_network(SHIPPED, VEHICLES).eval()
    with torch.no_grad():
        logits, sides = net(torch.from_numpy(rgb).permute(2, 0, 1)[None])
    assert np.abs(torch.sigmoid(logits)[0].permute(1, 2, 0).numpy() - heat).max() < 1e-4
    assert np.abs(sides[0].permute(1, 2, 0).numpy() - ltrb).max() < 0.05  # pixels, of sides up to ~250


def test_untrained_export_detects_what_the_shipped_model_does(tmp_path: Path) -> None:
    net = build_network(SHIPPED, VEHICLES).eval()
    path = export_onnx(net, tmp_path / "start.onnx", VEHICLES, (512, 512), {})
    # the exact upsampling exports as the shipped graph's three linear Resize nodes, not traced tensor shuffles
    resizes = [n for n in onnx.load(str(path)).graph.node if n.op_type == "Resize"]
    assert len(resizes) == 3
    # a square frame: the export letterboxes, the shipped model stretches; at 512x512 both are the same resize
    ok, jpeg = cv2.imencode(".jpg", cv2.resize(bus_photo(), (512, 512)))
    assert ok
    mine = load_detector(path, batch_size=1, input_size="").detect_bytes([jpeg.tobytes()])[0]  # its own 512x512
    shipped = load_detector("centernet", batch_size=1).detect_bytes([jpeg.tobytes()])[0]
    coco_to_mine = {"motorcycle": "motorbike", "car": "car", "bus": "bus", "truck": "truck"}
    keep = [n in coco_to_mine for n in shipped.class_names]
    assert len(mine) == sum(keep) > 0
    assert [coco_to_mine[n] for n, k in zip(shipped.class_names, keep, strict=True) if k] == mine.class_names
    assert np.abs(shipped.xyxy[keep] - mine.xyxy).max() < 1.0
    # the export leaves height and width free: the same file runs at another size
    wide = load_detector(path, batch_size=1, input_size="640x352")
    assert wide.spec.input_size == (352, 640)
    assert len(wide.detect_bytes([jpeg.tobytes()])) == 1


def ipsp(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ipsp.cli", *args], capture_output=True, text=True, env=env,
                          timeout=900, check=False)  # fmt: skip


def test_train_registers_and_promote_ships_the_model(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "dataset", train=12, val=2)
    registry = (tmp_path / "registry").as_uri()
    models = tmp_path / "models"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPSP_")}
    env.update(IPSP_HOME=str(tmp_path / "home"), IPSP_MODEL_REGISTRY_URI=registry)
    args = ["train", "--data", str(data), "--epochs", "1", "--limit", "8", "--batch", "4", "--imgsz", "160x160",
            "--run-size", "192x160", "--out", str(tmp_path / "run"), "--name", "tiny-traffic"]  # fmt: skip
    done = ipsp(args, env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "pushed tiny-traffic:1" in done.stdout and "heldout: P=" in done.stdout
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["train_frames"] == 8 and result["heldout_frames"] == 2  # latest 15 % of 12 frames, by number
    listed = ipsp(["model", "list", "tiny-traffic", "--format", "json"], env)
    (card,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert card["decoder"] == "centernet" and card["class_names"] == {str(i): n for i, n in enumerate(CLASS_NAMES)}
    provenance = card["provenance"]
    assert provenance["dataset"]["file_list_sha256"] == result["dataset_sha256"]
    assert provenance["command"].startswith("ipsp train --data")
    assert "MIT" in provenance["base_weights"]["license"]
    assert set(provenance["metrics"]) == {"heldout", "heldout_rain_dusk"}
    assert provenance["input_size"] == "192x160"  # scored at, and recorded to run at, the run size
    from_registry = load_detector("tiny-traffic", load_settings(home=tmp_path / "home", model_registry_uri=registry))
    assert from_registry.spec.input_size == (160, 192)

    promoted = ipsp(["model", "promote", "tiny-traffic:1", "--models-dir", str(models)], env)
    assert promoted.returncode == 0, promoted.stderr
    record = json.loads((models / "tiny-traffic.provenance.json").read_text())
    assert record["sha256"] == card["sha256"] and (models / record["file"]).is_file()
    assert record["input_size"] == "192x160"  # the card's run size carries into the shipped record
    # a fresh home and no registry: the shipped copy loads by name
    offline = {**env, "IPSP_HOME": str(tmp_path / "fresh"), "IPSP_MODEL_REGISTRY_URI": (tmp_path / "none").as_uri(),
               "IPSP_MODELS_DIR": str(models)}  # fmt: skip
    photo = tmp_path / "frame.jpg"
    cv2.imwrite(str(photo), cv2.imread(str(next((tmp_path / "dataset" / "images" / "val").glob("*.jpg")))))
    detected = ipsp(["detect", str(photo), "--model", "tiny-traffic", "--no-progress"], offline)
    assert detected.returncode == 0, detected.stderr
    assert "tiny-traffic:1" in detected.stdout  # the table names the model it loaded: the shipped copy


def test_train_refuses_a_missing_dataset_in_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPSP_")}
    env["IPSP_HOME"] = str(tmp_path / "home")
    done = ipsp(["train", "--data", str(tmp_path / "nope.yaml"), "--no-push"], env)
    assert done.returncode != 0
    assert "does not exist" in done.stderr and "Traceback" not in done.stderr
