"""The Detector with the shipped CenterNet model: fixed steps, batches, bad frames fail alone."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from ipsp.detection.detector import Detector, open_backend
from ipsp.detection.errors import FrameError
from ipsp.detection.registry import verify_file
from ipsp.detection.types import Detections
from ipsp.training.synthetic import scene

MODELS = Path(__file__).resolve().parents[2] / "4_model_training" / "models"
CENTERNET = MODELS / "centernet.onnx"


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector(open_backend(CENTERNET, threads=1), score_threshold=0.05, batch_size=2)


def frames(n: int) -> list[bytes]:
    rng = np.random.default_rng(3)
    out = []
    for _ in range(n):
        img, _ = scene(rng, 320, 4)
        out.append(cv2.imencode(".jpg", cv2.resize(img, (640, 360)))[1].tobytes())
    return out


def test_shipped_model_matches_its_provenance() -> None:
    record = json.loads((MODELS / "centernet.provenance.json").read_text())
    verify_file(CENTERNET, record["sha256"], "shipped model")
    assert record["source"]["package"] == "@vladmandic/human" and record["source"]["version"] == "3.3.6"
    assert record["conversion_output_sha256"] != record["sha256"]  # metadata was added after conversion


def test_spec_comes_from_the_model_metadata(detector: Detector) -> None:
    spec = detector.spec
    assert (spec.decoder, spec.layout, spec.resize, spec.input_size, spec.batch) == (
        "centernet", "NHWC", "stretch", (512, 512), 1,
    )  # fmt: skip
    assert len(spec.names) == 80 and spec.names[0] == "person" and spec.names[3] == "motorcycle"


def test_bad_frames_fail_alone_and_keep_their_slot(detector: Detector) -> None:
    good = frames(3)
    batch = [good[0], b"", good[1], b"garbage", good[2][:-400]]
    results = detector.detect_bytes(batch, labels=[f"cam_01_{i:05d}" for i in range(5)])
    kinds = [type(r).__name__ for r in results]
    assert kinds == ["Detections", "FrameError", "Detections", "FrameError", "FrameError"]
    assert str(results[1]) == "cam_01_00001: empty frame (0 bytes)"
    assert isinstance(results[4], FrameError) and results[4].reason == "corrupt"
    assert all(r.image_size == (640, 360) for r in results if isinstance(r, Detections))


def test_batch_size_does_not_change_results(detector: Detector) -> None:
    data = frames(5)
    one = Detector(detector.backend, score_threshold=0.05, batch_size=1).detect_bytes(data)
    many = Detector(detector.backend, score_threshold=0.05, batch_size=4).detect_bytes(data)
    for a, b in zip(one, many, strict=True):
        assert isinstance(a, Detections) and isinstance(b, Detections)
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-3)
        assert a.class_id.tolist() == b.class_id.tolist()


def test_timings_count_each_step(detector: Detector) -> None:
    detector.detect_bytes(frames(3))
    t = detector.last_timings
    assert t.frames == 3 and t.batches == 2  # batch_size 2: chunks of 2 and 1
    assert t.pre_ms > 0 and t.infer_ms > 0 and t.post_ms > 0


def test_empty_batch_and_decoded_images(detector: Detector) -> None:
    assert detector.detect_bytes([]) == []
    img = cv2.imdecode(np.frombuffer(frames(1)[0], np.uint8), cv2.IMREAD_COLOR)
    (det,) = detector.detect_images([img])
    assert det.image_size == (640, 360)


def test_detect_files_names_unreadable_files(detector: Detector, tmp_path: Path) -> None:
    good = tmp_path / "a.jpg"
    good.write_bytes(frames(1)[0])
    folder = tmp_path / "not_a_file.jpg"
    folder.mkdir()
    results = dict(detector.detect_files([good, folder]))
    assert isinstance(results[good], Detections)
    assert isinstance(results[folder], FrameError) and str(folder) in str(results[folder])
