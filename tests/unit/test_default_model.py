"""The default detector and its options are the fidelity table's choice, shipped with its provenance."""

from __future__ import annotations

import json
from pathlib import Path

from ipsp.config import Settings
from ipsp.storage import sha256_file

REPO = Path(__file__).resolve().parents[2]
TABLE = REPO / "benchmarks" / "results" / "fidelity.json"
MODELS = REPO / "4_model_training" / "models"


def chosen_row() -> dict[str, object]:
    rows = [row for row in json.loads(TABLE.read_text())["models"] if row["default"]]
    assert len(rows) == 1, "the table marks exactly one default row"
    return rows[0]


def test_settings_defaults_are_the_tables_choice() -> None:
    row = chosen_row()
    options = row["options"]
    assert isinstance(options, dict)
    fields = Settings.model_fields
    assert fields["model"].default == row["name"]
    assert fields["score_threshold"].default == options["score_threshold"]
    assert fields["input_size"].default == ""  # the size ships with the model (next test), not deployment-wide
    assert options["tiles"] == 0, "sliced inference has no setting: a sliced row cannot be the default"


def test_the_deployment_runs_the_tables_choice() -> None:
    row = chosen_row()
    options = row["options"]
    assert isinstance(options, dict)
    params = dict(
        line.split("=", 1)
        for line in (REPO / "1_infrastructure" / "k8s" / "base" / "params.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert params["IPSP_MODEL"] == row["name"]
    assert float(params["IPSP_SCORE_THRESHOLD"]) == options["score_threshold"]
    assert params["IPSP_INPUT_SIZE"] == ""


def test_the_chosen_model_ships_with_its_provenance_and_the_measured_bytes() -> None:
    row = chosen_row()
    record = json.loads((MODELS / f"{row['name']}.provenance.json").read_text())
    path = MODELS / record["file"]
    assert sha256_file(path) == record["sha256"] == row["model_sha256"]
    options = row["options"]
    assert isinstance(options, dict)
    assert record.get("input_size", "") == options["input_size_setting"]  # the size the table chose
