"""``ipsp detect`` and ``ipsp model`` as a user runs them (subprocess, shipped CenterNet, file:// registry)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from ipsp.contracts import Counts, Detection
from ipsp.training.synthetic import scene

CENTERNET = Path(__file__).resolve().parents[2] / "4_model_training" / "models" / "centernet.onnx"


def ipsp(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPSP_")}
    env["IPSP_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "ipsp.cli", *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images" / "nested"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        img, _ = scene(rng, 256, 3)
        cv2.imwrite(str(folder / f"f{i}.jpg"), img)
    return tmp_path / "images"


def test_detect_jsonl_prints_one_contract_object_per_image(images: Path, tmp_path: Path) -> None:
    done = ipsp(["detect", str(images), "--format", "jsonl", "--score", "0.05", "--threads", "1"], tmp_path / "h")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [Path(r["path"]).name for r in lines] == ["f0.jpg", "f1.jpg", "f2.jpg"]
    for record in lines:
        assert set(record) == {"path", "detections", "counts"}
        Counts.model_validate(record["counts"])
        for det in record["detections"]:
            Detection.model_validate(det)


def test_a_bad_image_fails_alone_with_its_name(images: Path, tmp_path: Path) -> None:
    bad = images / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    done = ipsp(["detect", str(images), "--format", "jsonl", "--no-progress"], tmp_path / "h")
    assert done.returncode == 2
    assert len(done.stdout.splitlines()) == 3  # the good images still come out
    assert f"error: {bad}: not a decodable image" in done.stderr
    assert "1 of 4 images could not be processed" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["detect", "/no/such/folder"], "/no/such/folder: no such file or folder"),
        (["detect", ".", "--model", "/no/model.onnx"], "model file /no/model.onnx does not exist"),
        (["detect", ".", "--model", "nothing:3"], "model nothing:3 not in registry"),
        (["model", "pull", "Bad Name"], "invalid model name"),
    ],
)
def test_bad_input_is_one_line(args: list[str], words: str, images: Path, tmp_path: Path) -> None:
    args = [str(images) if a == "." else a for a in args]
    done = ipsp(args, tmp_path / "h")
    assert done.returncode == 2 and words in done.stderr and "Traceback" not in done.stderr


def test_model_push_list_pull(tmp_path: Path) -> None:
    home = tmp_path / "h"
    pushed = ipsp(["model", "push", str(CENTERNET), "--name", "centernet", "--metrics", '{"mAP50": 0.4}'], home)
    assert pushed.returncode == 0, pushed.stderr
    assert "pushed centernet:1" in pushed.stdout
    listed = ipsp(["model", "list", "--format", "json"], home)
    card = json.loads(listed.stdout.splitlines()[0])
    assert card["name"] == "centernet" and card["metrics"] == {"mAP50": 0.4} and card["input_size"] == [512, 512]
    dest = tmp_path / "pulled.onnx"
    pulled = ipsp(["model", "pull", "centernet", "--dest", str(dest)], home)
    assert pulled.returncode == 0 and dest.read_bytes() == CENTERNET.read_bytes()
