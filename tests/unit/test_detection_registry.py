"""Model registry on a file:// store: push/list/pull, versions, sha256 checks, cache, resolution."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ipsp.config import load_settings
from ipsp.detection.errors import ModelError
from ipsp.detection.loader import load_detector
from ipsp.detection.registry import ModelCard, ModelRegistry, parse_ref, resolve_model, version_key

MODELS = Path(__file__).resolve().parents[2] / "4_model_training" / "models"
CENTERNET = MODELS / "centernet.onnx"


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry((tmp_path / "store" / "models").as_uri(), tmp_path / "cache")


def test_push_writes_file_and_card_under_name_and_version(registry: ModelRegistry, tmp_path: Path) -> None:
    card = registry.push(CENTERNET, "centernet", source="npm:@vladmandic/human@3.3.6", metrics={"mAP50": 0.5})
    assert card.ref == "centernet:1" and card.backend == "onnx" and card.decoder == "centernet"
    assert card.input_size == (512, 512) and card.class_names[3] == "motorcycle" and len(card.class_names) == 80
    root = tmp_path / "store" / "models" / "centernet" / "1"
    assert sorted(p.name for p in root.iterdir()) == ["card.json", "centernet.onnx"]
    stored = ModelCard.model_validate_json((root / "card.json").read_text())
    assert stored == card and '"0": "person"' in (root / "card.json").read_text()


def test_versions_increment_are_listed_in_order_and_never_overwritten(registry: ModelRegistry) -> None:
    registry.push(CENTERNET, "centernet")
    registry.push(CENTERNET, "centernet", version="10")
    registry.push(CENTERNET, "centernet")  # next integer after 10
    assert [c.version for c in registry.list("centernet")] == ["1", "10", "11"]
    assert registry.card("centernet").version == "11"
    with pytest.raises(ModelError, match="centernet:10 already exists"):
        registry.push(CENTERNET, "centernet", version="10")


def test_pull_verifies_caches_and_works_offline_for_pinned_versions(registry: ModelRegistry, tmp_path: Path) -> None:
    registry.push(CENTERNET, "centernet")
    path, _ = registry.pull("centernet:1")
    assert (
        path == tmp_path / "cache" / "centernet" / "1" / "centernet.onnx"
        and path.read_bytes() == CENTERNET.read_bytes()
    )
    shutil.rmtree(tmp_path / "store")  # the store is gone: a pinned, cached version still loads
    again, _ = registry.pull("centernet:1")
    assert again == path


def test_pull_refuses_a_file_whose_sha256_does_not_match(registry: ModelRegistry, tmp_path: Path) -> None:
    card = registry.push(CENTERNET, "centernet")
    stored = tmp_path / "store" / "models" / card.key()
    stored.write_bytes(stored.read_bytes()[:-10] + b"tampered!!")
    with pytest.raises(ModelError, match=r"centernet:1.*sha256") as info:
        registry.pull("centernet")
    assert "centernet.onnx" in str(info.value)
    assert not (tmp_path / "cache" / "centernet" / "1" / "centernet.onnx").exists()


def test_missing_models_and_bad_refs_are_clear(registry: ModelRegistry) -> None:
    with pytest.raises(ModelError, match="'nothing' not in registry"):
        registry.pull("nothing")
    registry.push(CENTERNET, "centernet")
    with pytest.raises(ModelError, match=r"centernet:7 not in registry .*versions: 1"):
        registry.pull("centernet:7")
    with pytest.raises(ModelError, match="invalid model name"):
        parse_ref("Bad Name")
    with pytest.raises(ModelError, match="does not exist"):
        registry.push(Path("/no/such/model.onnx"), "x")


def test_version_sort_is_natural() -> None:
    assert sorted(["10", "2", "1.10", "1.2", "1"], key=version_key) == ["1", "1.2", "1.10", "2", "10"]


def test_resolution_order_file_then_registry_then_shipped(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home", storage_uri=(tmp_path / "store").as_uri())
    path, card = resolve_model("centernet", settings)  # empty registry: the shipped model
    assert path == CENTERNET and card is not None and card.version == "1"
    ModelRegistry.from_settings(settings).push(CENTERNET, "centernet", version="5")
    _, card = resolve_model("centernet", settings)
    assert card is not None and card.version == "5"  # the registry wins once it has the model
    assert resolve_model(str(CENTERNET), settings) == (CENTERNET, None)
    with pytest.raises(ModelError, match="centernet:2 not in registry"):
        resolve_model("centernet:2", settings)
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(str(tmp_path / "gone.onnx"), settings)


def test_load_detector_by_name_records_the_model_identity(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home", storage_uri=(tmp_path / "store").as_uri(), batch_size=4)
    card = ModelRegistry.from_settings(settings).push(CENTERNET, "centernet")
    detector = load_detector("centernet:1", settings, threads=1)
    info = detector.model_info
    assert (info.name, info.version, info.sha256) == ("centernet", "1", card.sha256)
    assert detector.batch_size == 4 and detector.score_threshold == settings.score_threshold
