"""Fine-tuning inputs: YOLO labels, the split by time, the dataset fingerprint, augmentations, targets."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ipsp.errors import UserError
from ipsp.training.augment import AugmentConfig, augment, rain_at_dusk, scale_crop, weather
from ipsp.training.dataset import Sample, label_path, load_dataset, parse_label, split_by_time
from ipsp.training.targets import STRIDE, gaussian_radius, make_targets


def write_dataset(root: Path, frames: dict[str, str]) -> Path:
    """A YOLO dataset of grey 64x32 JPEGs, one label text per frame name."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for name, label in frames.items():
        cv2.imwrite(str(root / "images" / f"{name}.jpg"), np.full((32, 64, 3), 90, np.uint8))
        (root / "labels" / f"{name}.txt").write_text(label)
    config = root / "data.yaml"
    config.write_text("train: images\nnames:\n  0: motorbike\n  1: car\n")
    return config


def test_labels_parse_to_clipped_xyxy() -> None:
    boxes, classes = parse_label("1 0.5 0.5 0.2 0.4\n\n0 0.95 0.1 0.2 0.4\n", 2, "x.txt")
    assert classes.tolist() == [1, 0]
    assert np.allclose(boxes, [[0.4, 0.3, 0.6, 0.7], [0.85, 0.0, 1.0, 0.3]])


@pytest.mark.parametrize(
    ("text", "message"),
    [("7 0.5 0.5 0.1 0.1", "class 7 is not one of the 2"), ("0 0.5 0.5", "expected 'class cx cy w h'"),
     ("0 a 0.5 0.1 0.1", "not numbers")],
)  # fmt: skip
def test_bad_label_lines_are_named(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_label(text, 2, "labels/x.txt")


def test_label_path_swaps_the_last_images_folder() -> None:
    assert label_path(Path("d/images/train/cam_01_00001.jpg")) == Path("d/labels/train/cam_01_00001.txt")


def test_split_holds_out_each_cameras_latest_frames() -> None:
    empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    names = [f"cam_01_{n:05d}" for n in (9, 1, 5, 3, 7, 2, 4, 6, 8, 10)] + [f"cam_02_{n:05d}" for n in range(1, 5)]
    samples = [Sample(Path(f"{n}.jpg"), *empty) for n in names]
    train, held = split_by_time(samples, 0.2)
    assert sorted(s.image.stem for s in held) == ["cam_01_00009", "cam_01_00010", "cam_02_00004"]
    assert len(train) + len(held) == len(samples)
    assert max(s.frame_number for s in train if s.camera == "cam_01") < 9


def test_dataset_reads_frames_and_its_fingerprint_follows_the_files(tmp_path: Path) -> None:
    config = write_dataset(tmp_path / "d", {"cam_01_00001": "1 0.5 0.5 0.2 0.2\n", "cam_01_00002": ""})
    dataset = load_dataset(config)
    assert dataset.names == {0: "motorbike", 1: "car"}
    assert [len(s.boxes) for s in dataset.samples] == [1, 0]
    before = dataset.fingerprint()
    assert before == load_dataset(config).fingerprint()
    (tmp_path / "d" / "labels" / "cam_01_00002.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    assert load_dataset(config).fingerprint() != before


def test_missing_dataset_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_dataset(tmp_path / "nope.yaml")


def frame() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(60, 200, (720, 1280, 3), dtype=np.uint8)


def test_scale_crop_keeps_boxes_in_the_window_and_drops_mostly_cut_ones() -> None:
    boxes = np.array([[600, 300, 680, 420], [0, 0, 10, 10]], np.float32)
    window, kept, keep = scale_crop(frame(), boxes, (360, 640), 1.0, np.random.default_rng(0))
    assert window.shape == (360, 640, 3)
    assert keep.tolist() == [True, True] and np.allclose(kept[0], [300, 150, 340, 210], atol=1)
    # at 2x the window shows a quarter of the frame: a box far away is dropped
    _, kept2, keep2 = scale_crop(frame(), np.array([[1200, 650, 1270, 710]], np.float32), (352, 640), 2.0,
                                 np.random.default_rng(0))  # fmt: skip
    assert keep2.tolist() == [False] and kept2.shape == (0, 4)


def test_augment_flips_boxes_with_the_image() -> None:
    cfg = AugmentConfig(scale=(1.0, 1.0), flip=1.0, weather=0.0, colour=0.0)
    image = np.zeros((720, 1280, 3), np.uint8)
    image[300:420, 100:300] = 255
    window, kept, _ = augment(image, np.array([[100, 300, 300, 420]], np.float32), (360, 640), cfg,
                              np.random.default_rng(0))  # fmt: skip
    x1, y1, x2, y2 = kept[0]
    assert np.allclose([x1, x2], [640 - 150, 640 - 50], atol=1)
    assert window[int(y1) + 5 : int(y2) - 5, int(x1) + 5 : int(x2) - 5].min() > 200  # the bright block moved too


def test_weather_keeps_the_frame_shape_and_rain_at_dusk_is_darker_and_repeatable() -> None:
    image = frame()
    out = weather(image, np.random.default_rng(3))
    assert out.shape == image.shape and out.dtype == np.uint8
    dusk = rain_at_dusk(image, seed=4)
    assert np.array_equal(dusk, rain_at_dusk(image, seed=4))
    assert dusk.mean() < image.mean()


def test_targets_peak_at_the_box_centre_cell() -> None:
    heat, box_t, weight = make_targets(np.array([[40, 20, 80, 60]], np.float32), np.array([1]), 2, (32, 32))
    cy, cx = 40 // STRIDE, 60 // STRIDE
    assert heat[1, cy, cx] == 1.0 and heat[0].max() == 0.0
    assert heat[1].sum() > 1.0  # a Gaussian, not a single cell
    assert np.allclose(box_t[:, cy, cx], [40, 20, 80, 60])
    assert weight.sum() == pytest.approx(1.0)  # one object weighs one, whatever its size


def test_a_cell_two_objects_claim_keeps_the_smaller() -> None:
    big, small = [0, 0, 120, 120], [52, 52, 68, 68]
    _, box_t, _ = make_targets(np.array([big, small], np.float32), np.array([1, 0]), 2, (32, 32))
    assert np.allclose(box_t[:, 15, 15], small)


def test_gaussian_radius_grows_with_the_box() -> None:
    assert 0 < gaussian_radius(5, 5) < gaussian_radius(20, 20)
