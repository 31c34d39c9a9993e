"""The synthetic labelled set: YOLO layout, exact boxes inside the image, reproducible."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml

from ipsp.training.synthetic import CLASS_NAMES, read_labels, scene, vehicle, write_dataset


def test_dataset_layout_and_labels(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "ds", train=6, val=3, size=96, seed=1)
    cfg = yaml.safe_load(data.read_text())
    assert cfg["names"] == dict(enumerate(CLASS_NAMES)) and Path(cfg["path"]) == (tmp_path / "ds").resolve()
    for split, n in (("train", 6), ("val", 3)):
        images = sorted((tmp_path / "ds" / "images" / split).glob("*.jpg"))
        labels = sorted((tmp_path / "ds" / "labels" / split).glob("*.txt"))
        assert len(images) == len(labels) == n
        assert [p.stem for p in images] == [p.stem for p in labels]
        for label in labels:
            boxes = read_labels(label, 96)
            assert boxes and all(0 <= b.cls < 4 for b in boxes)
            assert all(b.x >= 0 and b.y >= 0 and b.x + b.w <= 96 and b.y + b.h <= 96 for b in boxes)


def test_boxes_are_exact_and_objects_do_not_overlap() -> None:
    rng = np.random.default_rng(5)
    for cls in range(len(CLASS_NAMES)):
        for w, h in ((6, 9), (13, 20), (24, 70), (31, 31)):
            drawn = vehicle(cls, w, h, rng).any(axis=2)  # black = not drawn
            # the object reaches every edge of its box, so the label is the exact extent
            assert drawn[0].any() and drawn[-1].any() and drawn[:, 0].any() and drawn[:, -1].any(), (cls, w, h)
    _, boxes = scene(np.random.default_rng(5), 160, 5)
    for i, box in enumerate(boxes):
        assert not any(box.overlaps(other, margin=0) for other in boxes[i + 1 :])


def test_same_seed_same_dataset(tmp_path: Path) -> None:
    write_dataset(tmp_path / "a", train=2, val=1, size=64, seed=3)
    write_dataset(tmp_path / "b", train=2, val=1, size=64, seed=3)
    for name in ("train_00000", "train_00001"):
        a = cv2.imread(str(tmp_path / "a" / "images" / "train" / f"{name}.jpg"))
        b = cv2.imread(str(tmp_path / "b" / "images" / "train" / f"{name}.jpg"))
        assert np.array_equal(a, b)
