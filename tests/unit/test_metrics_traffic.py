"""Traffic metrics: class mapping, counts, density in a region of interest, status thresholds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ipsp.contracts import Counts
from ipsp.detection.metrics import (
    CamerasConfig,
    Thresholds,
    count_traffic,
    density_percent,
    load_cameras_config,
    traffic_status,
    traffic_summary,
)
from ipsp.detection.types import Detections
from ipsp.errors import UserError

COCO = {0: "person", 1: "bicycle", 2: "car", 3: "motorcycle", 5: "bus", 7: "truck", 16: "dog"}


def dets(rows: list[tuple[int, float, float, float, float]], size: tuple[int, int] = (100, 100)) -> Detections:
    """Detections from (class id, x1, y1, x2, y2) rows."""
    arr = np.array([r[1:] for r in rows], np.float32).reshape(-1, 4)
    return Detections.from_arrays(arr, np.full(len(rows), 0.9), [r[0] for r in rows], COCO, size)


def test_coco_classes_map_to_traffic_classes() -> None:
    d = dets([(0, 0, 0, 1, 1), (0, 0, 0, 1, 1), (1, 0, 0, 1, 1), (2, 0, 0, 1, 1), (3, 0, 0, 1, 1),
              (5, 0, 0, 1, 1), (7, 0, 0, 1, 1), (16, 0, 0, 1, 1)])  # fmt: skip
    assert count_traffic(d) == Counts(motorbike=1, car=1, bus=1, truck=1, bicycle=1, person=2, total=4)


def test_density_whole_frame_counts_only_vehicles() -> None:
    d = dets([(2, 0, 0, 10, 10), (0, 50, 50, 100, 100), (7, 10, 10, 30, 20)])  # car 100 px, person ignored, truck 200
    assert density_percent(d) == pytest.approx(3.0)


def test_density_is_clipped_to_100() -> None:
    d = dets([(2, 0, 0, 100, 100), (5, 0, 0, 100, 100)])
    assert density_percent(d) == 100.0
    assert density_percent(dets([])) == 0.0


def test_density_inside_a_pixel_roi() -> None:
    roi = [(0, 50), (100, 50), (100, 100), (0, 100)]  # the bottom half: 5,000 px
    d = dets([(2, 0, 40, 10, 60)])  # 200 px box, 100 px of it inside
    assert density_percent(d, roi) == pytest.approx(2.0)
    assert density_percent(dets([(2, 0, 0, 10, 10)]), roi) == 0.0  # entirely outside


def test_density_roi_in_fractions_matches_pixels() -> None:
    d = dets([(3, 20, 20, 60, 60)], size=(200, 100))
    pixels = density_percent(d, [(0, 0), (100, 0), (100, 100), (0, 100)])
    fraction = density_percent(d, [(0, 0), (0.5, 0), (0.5, 1), (0, 1)], units="fraction")
    assert pixels == pytest.approx(fraction) == pytest.approx(16.0)


@pytest.mark.parametrize(
    ("density", "vehicles", "thresholds", "status"),
    [
        (5.0, 0, Thresholds(), "Free"),
        (15.0, 0, Thresholds(), "Normal"),
        (34.9, 0, Thresholds(), "Normal"),
        (35.0, 0, Thresholds(), "Congested"),
        (1.0, 12, Thresholds(normal_vehicles=10, congested_vehicles=30), "Normal"),
        (1.0, 30, Thresholds(normal_vehicles=10, congested_vehicles=30), "Congested"),
        (50.0, 0, Thresholds(normal=60, congested=80), "Free"),
    ],
)
def test_status_thresholds(density: float, vehicles: int, thresholds: Thresholds, status: str) -> None:
    assert traffic_status(density, vehicles, thresholds) == status


def test_thresholds_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="congested"):
        Thresholds(normal=40, congested=20)


def test_cameras_yaml_per_camera_roi_thresholds_and_class_map(tmp_path: Path) -> None:
    cfg_file = tmp_path / "cameras.yaml"
    cfg_file.write_text(
        "defaults:\n  thresholds: {normal: 1, congested: 50}\n"
        "class_map: {van: car}\n"
        "cameras:\n"
        "  cam_01:\n    roi: [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]\n    roi_units: fraction\n"
        "    thresholds: {normal: 1, congested: 3}\n"
    )
    cfg = load_cameras_config(cfg_file)
    names = {**COCO, 9: "van"}
    d = Detections.from_arrays(np.array([[0, 40, 10, 60], [0, 0, 10, 10]], np.float32), [0.9, 0.9], [9, 2], names,
                               (100, 100))  # fmt: skip
    counts, density, status = traffic_summary(d, "cam_01", 100, 100, cfg)
    assert counts.car == 2 and counts.total == 2
    assert density == pytest.approx(2.0) and status == "Normal"  # 100 px of 5,000 inside the ROI
    other = traffic_summary(d, "cam_02", cameras_cfg=cfg)  # defaults: whole frame, thresholds 1/50
    assert other.density_percent == pytest.approx(3.0) and other.status == "Normal"


def test_default_config_is_whole_frame() -> None:
    summary = traffic_summary(dets([(2, 0, 0, 50, 100)]), "cam_07")
    assert summary == (Counts(car=1, total=1), 50.0, "Congested")
    assert load_cameras_config(None) == CamerasConfig()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("cameras: [1, 2", "not valid YAML"),
        ("cameras:\n  cam_01:\n    roi: [[0, 0], [1, 1]]\n", "at least 3 vertices"),
        ("class_map: {van: lorry}\n", "not traffic classes"),
        ("cameras:\n  cam_01:\n    thresholds: {normal: 50, congested: 10}\n", "congested"),
        ("unknown_key: 1\n", "unknown_key"),
    ],
)
def test_bad_cameras_config_is_one_clear_line(tmp_path: Path, text: str, words: str) -> None:
    cfg_file = tmp_path / "cameras.yaml"
    cfg_file.write_text(text)
    with pytest.raises(UserError, match=words) as info:
        load_cameras_config(cfg_file)
    assert str(cfg_file) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(UserError, match="cannot read"):
        load_cameras_config(tmp_path / "missing.yaml")
