"""The JSON examples in CONTRACTS.md are valid and round-trip through the models."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ipsp import contracts, rollups

DOC = Path(__file__).resolve().parents[2] / "CONTRACTS.md"
EXAMPLE = re.compile(r"<!-- example: (\w+) -->\s*```json\n(.*?)```", re.DOTALL)


def examples() -> list[tuple[str, str]]:
    return EXAMPLE.findall(DOC.read_text())


def test_every_contract_has_an_example() -> None:
    names = {name for name, _ in examples()}
    assert {"FrameMessage", "AnalysisResult", "TrafficWindow", "DeadLetter", "PipelineProgress"} <= names


@pytest.mark.parametrize(("name", "body"), examples(), ids=[n for n, _ in examples()])
def test_example_round_trips(name: str, body: str) -> None:
    model = getattr(contracts, name, None) or getattr(rollups, name)
    parsed = model.from_json(body)
    assert json.loads(parsed.to_json()) == json.loads(body)


def test_serving_documents_have_examples() -> None:
    names = {name for name, _ in examples()}
    assert {"CameraHour", "CameraDay", "CameraServing", "PipelineHour", "ServingState"} <= names


def test_mongo_collections_have_examples() -> None:
    names = {name for name, _ in examples()}
    assert {model.__name__ for model in contracts.COLLECTIONS.values()} <= names
