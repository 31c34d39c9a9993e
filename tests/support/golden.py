"""Golden snapshots of what a stream run writes: every collection, timestamps and timings aside.

The redesign of the stream task must leave the documents unchanged. The stream
test stores, once, what the job wrote on the test feed (``GOLDEN_WRITE=1``)
and from then on compares each run with that file. Normalized away, because they
differ from run to run by nature: wall-clock times, durations and rates, the
run epoch, and the random names the test gives its topic, database and dataset.
Floats compare within a small tolerance (ONNX Runtime's sums may differ in the
last bits between thread layouts).
"""

from __future__ import annotations

import json
import math
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "golden"

#: fields whose value is a wall-clock time, a duration, a rate or a latency
VOLATILE = frozenset(
    {
        "processed_at",
        "created_at",
        "updated_at",
        "closed_at",
        "started_at",
        "finished_at",
        "first_batch_at",
        "last_batch_at",
        "written_at",
        "time",
        "durations_ms",
        "latency",
        "latency_ms",
        "inference_ms",
        "input_rows_per_s",
        "processed_rows_per_s",
    }
)
#: collections keyed by the wall-clock hour of their batches: compared as their batch entries, merged
#: (a run that crosses an hour would otherwise split them differently)
BY_WALL_CLOCK = {"serving_pipeline_hours": "batches"}
#: lists ordered by wall-clock time (newest first): compared in the order of the given field instead
BY_TIME_ORDER = {"latest_dead_letters": "id"}
#: ISO times inside raw Kafka values (the bad records carry the time they were made)
_ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?")
#: the run epoch in progress ids (``<db>/<query>/<epoch>``)
_EPOCH = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}")


def snapshot(db: Any, names: dict[str, str]) -> dict[str, list[Any]]:
    """Every collection of ``db`` as sorted, normalized documents; ``names`` maps volatile strings to labels."""
    out: dict[str, list[Any]] = {}
    for collection in sorted(db.list_collection_names()):
        if collection.startswith("system."):
            continue
        docs = [normalize(doc, names) for doc in db[collection].find({})]
        if collection in BY_WALL_CLOCK:
            field = BY_WALL_CLOCK[collection]
            docs = [{"_id": key, **entry} for doc in docs for key, entry in doc[field].items()]
        out[collection] = sorted(docs, key=lambda d: json.dumps(d.get("_id"), sort_keys=True))
    return out


def normalize(value: Any, names: dict[str, str], raw: bool = False) -> Any:
    """``value`` with volatile fields dropped, times as ISO text and test names as labels.

    ``raw``: a Kafka value as the dead letter keeps it, whose embedded times are wall-clock times.
    """
    if isinstance(value, dict):
        out = {normalize(k, names): normalize(v, names, raw=k == "raw") for k, v in value.items() if k not in VOLATILE}
        for key, field in BY_TIME_ORDER.items():
            if isinstance(out.get(key), list):
                out[key] = sorted(out[key], key=lambda entry: str(entry[field]))
        return out
    if isinstance(value, list):
        return [normalize(v, names) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        for text, label in sorted(names.items(), key=lambda kv: -len(kv[0])):
            value = value.replace(text, label)
        return _EPOCH.sub("<epoch>", _ISO_TIME.sub("<time>", value) if raw else value)
    return value


def differences(expected: Any, actual: Any, where: str = "") -> list[str]:
    """Where ``actual`` differs from ``expected`` (floats within 1e-6 relative or 1e-4 absolute)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = [f"{where}.{k}: missing" for k in expected if k not in actual]
        out += [f"{where}.{k}: unexpected" for k in actual if k not in expected]
        for key in expected.keys() & actual.keys():
            out += differences(expected[key], actual[key], f"{where}.{key}")
        return out
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{where}: {len(actual)} items, expected {len(expected)}"]
        return [
            d for i, (e, a) in enumerate(zip(expected, actual, strict=True)) for d in differences(e, a, f"{where}[{i}]")
        ]
    if isinstance(expected, float) or isinstance(actual, float):
        both_numbers = isinstance(expected, int | float) and isinstance(actual, int | float)
        if both_numbers and math.isclose(expected, actual, rel_tol=1e-6, abs_tol=1e-4):
            return []
    elif expected == actual:
        return []
    return [f"{where}: {actual!r}, expected {expected!r}"]


def check_golden(name: str, actual: dict[str, list[Any]]) -> list[str]:
    """Differences from the stored golden ``name`` (written instead when ``GOLDEN_WRITE=1``)."""
    path = GOLDEN_DIR / f"{name}.json"
    if os.environ.get("GOLDEN_WRITE") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(actual, indent=1, sort_keys=True) + "\n")
        return []
    expected = json.loads(path.read_text())
    return differences(expected, json.loads(json.dumps(actual)))
