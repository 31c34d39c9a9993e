"""Traffic metrics: class mapping, cross-class suppression, ROI footprints, density, status thresholds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ipsp.contracts import Counts
from ipsp.detection.metrics import (
    DEFAULT_ROI,
    CamerasConfig,
    Thresholds,
    count_traffic,
    density_percent,
    in_roi,
    load_cameras_config,
    suppress_across_classes,
    traffic_status,
    traffic_summary,
)
from ipsp.detection.types import Detections
from ipsp.errors import UserError

COCO = {0: "person", 1: "bicycle", 2: "car", 3: "motorcycle", 5: "bus", 7: "truck", 16: "dog"}


def dets(
    rows: list[tuple[int, float, float, float, float]],
    size: tuple[int, int] = (100, 100),
    scores: list[float] | None = None,
) -> Detections:
    """Detections from (class id, x1, y1, x2, y2) rows."""
    arr = np.array([r[1:] for r in rows], np.float32).reshape(-1, 4)
    conf = np.array(scores if scores is not None else [0.9] * len(rows), np.float32)
    return Detections.from_arrays(arr, conf, [r[0] for r in rows], COCO, size)


def test_coco_classes_map_to_traffic_classes() -> None:
    d = dets([(0, 0, 0, 1, 1), (0, 0, 0, 1, 1), (1, 0, 0, 1, 1), (2, 0, 0, 1, 1), (3, 0, 0, 1, 1),
              (5, 0, 0, 1, 1), (7, 0, 0, 1, 1), (16, 0, 0, 1, 1)])  # fmt: skip
    assert count_traffic(d) == Counts(motorbike=1, car=1, bus=1, truck=1, bicycle=1, person=2, total=4)


def test_density_whole_frame_counts_only_vehicles() -> None:
    d = dets([(2, 0, 0, 10, 10), (0, 50, 50, 100, 100), (7, 10, 10, 30, 20)])  # car 100 px, person ignored, truck 200
    assert density_percent(d) == pytest.approx(3.0)


def test_density_is_the_union_of_boxes() -> None:
    d = dets([(2, 0, 0, 100, 100), (5, 0, 0, 100, 100)])
    assert density_percent(d) == 100.0
    assert density_percent(dets([])) == 0.0
    overlapping = dets([(2, 0, 0, 20, 10), (2, 10, 0, 30, 10)])  # 200 + 200 px sharing 100
    assert density_percent(overlapping) == pytest.approx(3.0)


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
        (5.0, 5, Thresholds(), "Free"),
        (15.0, 5, Thresholds(), "Normal"),
        (39.9, 5, Thresholds(), "Normal"),
        (40.0, 5, Thresholds(), "Congested"),
        (90.0, 1, Thresholds(), "Free"),  # one vehicle filling the picture is not a jam
        (90.0, 2, Thresholds(), "Free"),
        (90.0, 3, Thresholds(), "Congested"),
        (90.0, 1, Thresholds(min_vehicles=0), "Congested"),
        (1.0, 12, Thresholds(normal_vehicles=10, congested_vehicles=30), "Normal"),
        (1.0, 30, Thresholds(normal_vehicles=10, congested_vehicles=30), "Congested"),
        (50.0, 5, Thresholds(normal=60, congested=80), "Free"),
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
    # a van standing in the ROI (footprint y=60), a car above it (footprint y=10), two more cars in it
    boxes = [[0, 40, 10, 60], [0, 0, 10, 10], [50, 70, 60, 80], [70, 70, 80, 80]]
    d = Detections.from_arrays(np.array(boxes, np.float32), [0.9] * 4, [9, 2, 2, 2], names, (100, 100))
    counts, density, status, kept = traffic_summary(d, "cam_01", 100, 100, cfg)
    assert counts.car == 3 and counts.total == 3 and len(kept) == 4
    assert density == pytest.approx(6.0) and status == "Congested"  # (100 + 100 + 100) px of 5,000
    other = traffic_summary(d, "cam_02", cameras_cfg=cfg)  # default ROI (below the top quarter)
    assert other.counts.total == 3 and other.density_percent == pytest.approx(400 / 75, abs=1e-3)
    assert other.status == "Normal"


def test_default_config_counts_below_the_top_quarter() -> None:
    summary = traffic_summary(dets([(2, 0, 0, 50, 100)]), "cam_07")
    assert summary.counts == Counts(car=1, total=1)
    assert summary.density_percent == pytest.approx(50.0) and summary.status == "Free"
    assert load_cameras_config(None) == CamerasConfig()
    assert CamerasConfig().camera("cam_07")[:2] == (DEFAULT_ROI, "fraction")


# --- hand-made road scenes at 1280x720 with the default config -------------------------


def _car(x: float, y: float, w: float, h: float) -> tuple[int, float, float, float, float]:
    return (2, x, y, x + w, y + h)


@pytest.mark.parametrize(
    ("name", "rows", "total", "status"),
    [
        ("empty road", [], 0, "Free"),
        ("one car far away", [_car(600, 250, 60, 40)], 1, "Free"),
        ("one car close to the lens", [_car(300, 300, 700, 420)], 1, "Free"),
        (
            "a few cars spread out",
            [_car(100, 400, 180, 110), _car(700, 300, 120, 80), _car(1000, 550, 200, 130)],
            3,
            "Free",
        ),
        ("dense but moving", [_car(x, y, 220, 140) for x in (40, 520, 1000) for y in (220, 500)], 6, "Normal"),
        (
            "a queue filling the road",
            [_car(x, y, 250, 160) for x in range(0, 1280, 230) for y in range(200, 720, 150)],
            24,
            "Congested",
        ),
        ("cars parked on the roofline", [_car(x, 20, 80, 60) for x in range(0, 1200, 100)], 0, "Free"),
    ],
)
def test_hand_made_road_scenes(name: str, rows: list[tuple[int, float, float, float, float]], total: int,
                               status: str) -> None:  # fmt: skip
    summary = traffic_summary(dets(rows, size=(1280, 720)), "cam_01")
    assert (summary.counts.total, summary.status) == (total, status), name


# --- one object, one count --------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "scores", "kept_classes"),
    [
        # a car and a truck box on one object: the higher score wins, label and all
        ([(2, 10, 10, 50, 40), (7, 11, 10, 51, 41)], [0.8, 0.6], ["car"]),
        ([(2, 10, 10, 50, 40), (7, 11, 10, 51, 41)], [0.5, 0.7], ["truck"]),
        # bus and truck and car on one object
        ([(5, 0, 0, 60, 40), (7, 1, 1, 60, 41), (2, 2, 0, 61, 40)], [0.4, 0.9, 0.3], ["truck"]),
        # two cars side by side barely touching: both stay
        ([(2, 0, 0, 40, 30), (2, 35, 0, 75, 30)], [0.9, 0.8], ["car", "car"]),
        # a person on a motorbike: the person is not a vehicle and stays
        ([(3, 10, 20, 40, 60), (0, 12, 5, 38, 55)], [0.9, 0.9], ["motorcycle", "person"]),
        # car and truck far apart: both stay
        ([(2, 0, 0, 20, 20), (7, 60, 60, 90, 90)], [0.9, 0.9], ["car", "truck"]),
    ],
)
def test_suppression_across_vehicle_classes(
    rows: list[tuple[int, float, float, float, float]], scores: list[float], kept_classes: list[str]
) -> None:
    kept = suppress_across_classes(dets(rows, scores=scores))
    assert sorted(kept.class_names) == sorted(kept_classes)


def test_one_object_scored_twice_counts_once_in_the_summary() -> None:
    d = dets([(2, 10, 40, 50, 80), (7, 10, 41, 50, 80)], scores=[0.9, 0.6])
    summary = traffic_summary(d, "cam_01")
    assert summary.counts == Counts(car=1, total=1)
    assert summary.detections.class_names == ["car"]


@pytest.mark.parametrize(
    ("box", "inside"),
    [
        ((10, 10, 30, 40), False),  # footprint (20, 40) above the ROI's top edge at y=50
        ((10, 30, 30, 60), True),  # the top sticks out, the wheels stand in it
        ((60, 80, 90, 130), True),  # footprint below the frame edge is clipped into it
        ((-20, 60, 6, 90), False),  # boxes are clipped to the frame: footprint x=3, left of the ROI
    ],
)
def test_footprint_decides_whether_a_box_is_in_the_roi(box: tuple[float, float, float, float], inside: bool) -> None:
    roi = [(5, 50), (100, 50), (100, 100), (5, 100)]
    assert in_roi(dets([(2, *box)]), roi).tolist() == [inside]


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


def test_a_rider_adds_no_person_and_keeps_the_motorbike() -> None:
    # rider box over the motorbike: feet (bottom middle, 50, 70) inside the motorbike box
    rider = (0, 40, 30, 60, 70)
    bike = (3, 35, 50, 65, 90)
    pedestrian = (0, 80, 40, 90, 80)  # feet at (85, 80): beside the bike, not on it
    summary = traffic_summary(dets([rider, bike, pedestrian]), "cam")
    assert (summary.counts.motorbike, summary.counts.person, summary.counts.total) == (1, 1, 1)
    assert sorted(summary.detections.class_names) == ["motorcycle", "person"]


def test_a_cyclist_is_one_bicycle() -> None:
    summary = traffic_summary(dets([(0, 40, 30, 60, 70), (1, 38, 50, 62, 90)]), "cam")
    assert (summary.counts.bicycle, summary.counts.person, summary.counts.total) == (1, 0, 0)
