"""The model registry on the local S3 server: push, list, pull, sha256 check, load by name:version."""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path

import pytest

from ipsp.config import Settings
from ipsp.detection.errors import ModelError
from ipsp.detection.loader import load_detector
from ipsp.detection.registry import CARD_FILE, ModelRegistry
from ipsp.detection.types import Detections

CENTERNET = Path(__file__).resolve().parents[2] / "4_model_training" / "models" / "centernet.onnx"


def bus_photo() -> Path:
    """The bus photo inside the installed ultralytics wheel (not imported, only located)."""
    spec = importlib.util.find_spec("ultralytics")
    assert spec is not None and spec.submodule_search_locations, "the 'train' extra (ultralytics) is not installed"
    return Path(next(iter(spec.submodule_search_locations))) / "assets" / "bus.jpg"


@pytest.fixture
def s3_settings(stack_settings: Settings, tmp_path: Path) -> Settings:
    root = f"s3://ipsp/it-models-{uuid.uuid4().hex[:10]}"
    return stack_settings.model_copy(update={"model_registry_uri": root, "home": tmp_path / "home"})


def test_push_list_pull_on_s3(s3_settings: Settings, tmp_path: Path) -> None:
    registry = ModelRegistry.from_settings(s3_settings)
    card = registry.push(CENTERNET, "centernet", source="npm:@vladmandic/human@3.3.6", license="MIT")
    assert registry.store.exists(f"centernet/1/{CARD_FILE}") and registry.store.exists("centernet/1/centernet.onnx")
    assert [c.ref for c in registry.list()] == ["centernet:1"]
    path, pulled = registry.pull("centernet")
    assert pulled == card and path.read_bytes() == CENTERNET.read_bytes()
    assert path.is_relative_to(tmp_path / "home" / "cache" / "models")


def test_tampered_model_on_s3_is_refused(s3_settings: Settings) -> None:
    registry = ModelRegistry.from_settings(s3_settings)
    card = registry.push(CENTERNET, "centernet")
    registry.store.put(card.key(), CENTERNET.read_bytes()[: card.size_bytes // 2])
    with pytest.raises(ModelError, match=r"centernet:1: .*centernet\.onnx"):
        registry.pull("centernet:1")


def test_detector_loads_by_name_and_version_from_s3(s3_settings: Settings) -> None:
    registry = ModelRegistry.from_settings(s3_settings)
    registry.push(CENTERNET, "centernet")
    second = registry.push(CENTERNET, "centernet")
    detector = load_detector("centernet", s3_settings, threads=1)  # no version: the highest
    assert (detector.model_info.version, detector.model_info.sha256) == ("2", second.sha256)
    (det,) = detector.detect_bytes([bus_photo().read_bytes()])
    assert isinstance(det, Detections) and "bus" in det.class_names
    assert load_detector("centernet:1", s3_settings, threads=1).model_info.version == "1"
