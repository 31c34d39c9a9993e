"""The issue's acceptance run, through the real command line.

``ipsp synth --frames 500 --cameras 20 --corrupt 3 OUT && ipsp pack OUT --to file:///...``
(and ``--to s3://...`` against the local S3 server) packs 500 frames, rejects
exactly the corrupt ones with the right reasons, and every manifest row reads
back to bytes with the recorded sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipsp.config import Settings
from ipsp.preprocessing.manifest import PackSummary, read_manifest, read_rejects
from ipsp.preprocessing.synth.feed import BAD_KINDS, META_NAME
from ipsp.storage import open_store
from ipsp.storage.shards import ShardReader

IPSP = [sys.executable, "-m", "ipsp.cli"]


def _run(args: list[str], settings: Settings) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPSP_")}
    env.update(
        IPSP_HOME=str(settings.home),
        IPSP_S3_ENDPOINT=settings.s3_endpoint,
        IPSP_S3_ACCESS_KEY=settings.s3_access_key,
        IPSP_S3_SECRET_KEY=settings.s3_secret_key.get_secret_value(),
    )
    return subprocess.run([*IPSP, *args], capture_output=True, text=True, env=env, timeout=900, check=False)


@pytest.fixture
def s3_dataset(stack_settings: Settings) -> Iterator[str]:
    uri = f"s3://ipsp/it-cli-{uuid.uuid4().hex[:10]}/datasets/demo"
    yield uri
    store = open_store(uri, stack_settings)
    for info in list(store.list()):
        store.delete(info.key)


def _verify(dataset_uri: str, expected: dict[str, str], settings: Settings, cache: Path) -> None:
    store = open_store(dataset_uri, settings)
    rows = read_manifest(store.get("manifest.parquet"))
    assert len(rows) == 500
    assert {r.file: r.reason for r in read_rejects(store.get("rejects.jsonl"))} == expected
    digests = PackSummary.from_bytes(store.get("pack.json")).shard_digests()
    reader = ShardReader(cache, 1 << 30, settings, digests)
    for row in rows:
        assert hashlib.sha256(reader.get(row.shard_uri, row.key)).hexdigest() == row.sha256


def test_synth_then_pack_to_both_stores(stack_settings: Settings, s3_dataset: str, tmp_path: Path) -> None:
    out = tmp_path / "feed"
    synth = _run(
        ["synth", str(out), "--frames", "500", "--cameras", "20", "--corrupt", "3", "--no-progress"], stack_settings
    )
    assert synth.returncode == 0, synth.stderr
    meta = json.loads((out / META_NAME).read_text())
    expected = {item["file"]: item["reason"] for item in meta["bad"]}
    assert len(expected) == 3 * len(BAD_KINDS)

    local = (tmp_path / "ds").as_uri()
    packed = _run(["pack", str(out), "--to", local, "--no-progress"], stack_settings)
    assert packed.returncode == 0, packed.stderr[-3000:]
    assert "packed 500 frames" in packed.stdout and "rejected 21 " in packed.stdout
    assert "duplicates 0" in packed.stdout
    _verify(local, expected, stack_settings, tmp_path / "cache")

    strict = _run(["pack", str(out), "--to", s3_dataset, "--strict", "--no-progress"], stack_settings)
    assert strict.returncode == 1, strict.stderr[-3000:]  # rejects present: --strict fails the run...
    assert "packed 500 frames" in strict.stdout  # ...after writing the dataset and the report
    _verify(s3_dataset, expected, stack_settings, tmp_path / "cache")

    bad_target = _run(["pack", str(out), "--to", str(out / "inside")], stack_settings)
    assert bad_target.returncode == 2 and "inside the input" in bad_target.stderr
    assert "Traceback" not in bad_target.stderr
