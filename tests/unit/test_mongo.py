"""The one MongoDB module: names as CONTRACTS.md spells them, one index list, redacted URIs."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipsp import mongo
from ipsp.contracts import COLLECTIONS

DOC = Path(__file__).resolve().parents[2] / "CONTRACTS.md"


def mongodb_section() -> str:
    text = DOC.read_text(encoding="utf-8")
    return text.split("## 3. MongoDB", 1)[1].split("\n## 4.", 1)[0]


def test_every_collection_is_named_in_the_contract() -> None:
    section = mongodb_section()
    names = [mongo.RESULTS, mongo.WINDOWS, mongo.DEAD_LETTERS, mongo.PROGRESS, *mongo.SERVING_COLLECTIONS]
    assert len(set(names)) == len(names) == 9
    for name in names:
        assert f"`{name}`" in section, name


def test_indexes_cover_only_the_contract_collections() -> None:
    assert set(mongo.INDEXES) == set(COLLECTIONS)
    for specs in mongo.INDEXES.values():
        assert len({tuple(keys) for keys in specs}) == len(specs)  # no index listed twice


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("mongodb://127.0.0.1:27017/", "mongodb://127.0.0.1:27017/"),
        (
            "mongodb://app:hunter2@db.example:27017/traffic?tls=true",
            "mongodb://app:***@db.example:27017/traffic?tls=true",
        ),
        ("mongodb+srv://app:hunter2@cluster.example/", "mongodb+srv://app:***@cluster.example/"),
    ],
)
def test_redact_hides_the_password(uri: str, shown: str) -> None:
    assert mongo.redact(uri) == shown
