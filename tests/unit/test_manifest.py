"""manifest.parquet, rejects.jsonl and pack.json: exact columns, deterministic bytes, round trips."""

from __future__ import annotations

import hashlib
import io

import pyarrow.parquet as pq

from ipsp.contracts import ManifestRow, Reject
from ipsp.preprocessing.manifest import (
    PackOptionsRecord,
    PackSummary,
    ShardEntry,
    manifest_bytes,
    read_manifest,
    read_rejects,
    rejects_bytes,
)
from ipsp.producer.manifest import parse_manifest


def _rows(count: int = 5) -> list[ManifestRow]:
    return [
        ManifestRow(
            record_key=f"cam_01_{i:05d}",
            camera_id="cam_01",
            frame_index=i,
            shard_uri="s3://ipsp/datasets/demo/shards/cam_01/cam_01-0000.lmdb",
            key=f"cam_01_{i:05d}",
            width=1280,
            height=720,
            format="jpeg",
            bytes=150_000 + i,
            sha256=hashlib.sha256(str(i).encode()).hexdigest(),
        )
        for i in range(count)
    ]


def test_manifest_columns_are_exactly_the_contract() -> None:
    table = pq.read_table(io.BytesIO(manifest_bytes(_rows())))
    assert tuple(table.column_names) == ManifestRow.PARQUET_COLUMNS
    assert all(not field.nullable for field in table.schema)
    assert table.schema.metadata is None or b"pandas" not in table.schema.metadata


def test_manifest_round_trip_and_same_bytes_each_time() -> None:
    rows = _rows()
    data = manifest_bytes(rows)
    assert data == manifest_bytes(list(rows))
    assert read_manifest(data) == rows


def test_the_producer_accepts_the_manifest() -> None:
    frames = parse_manifest(manifest_bytes(_rows(3)))
    assert [f.record_key for f in frames] == ["cam_01_00000", "cam_01_00001", "cam_01_00002"]


def test_rejects_round_trip() -> None:
    rejects = [
        Reject(file="a.jpg", reason="truncated", detail="no end-of-image marker after the last scan"),
        Reject(file="b.jpg", reason="duplicate", detail="same bytes", duplicate_of="a.jpg"),
    ]
    data = rejects_bytes(rejects)
    assert data.count(b"\n") == 2
    assert read_rejects(data) == rejects


def test_pack_summary_round_trip_is_stable() -> None:
    summary = PackSummary(
        source="file:///data/in",
        dataset_uri="file:///data/out",
        inputs=3,
        packed=2,
        rejected=1,
        duplicates=0,
        reasons={"empty": 1},
        data_bytes=300,
        options=PackOptionsRecord(name_pattern="x", shard_target_bytes=10, max_side=5, max_pixels=25),
        shards=[
            ShardEntry(
                uri="file:///data/out/shards/cam_01/cam_01-0000.lmdb",
                camera_id="cam_01",
                frames=2,
                first_key="cam_01_00000",
                last_key="cam_01_00001",
                data_bytes=300,
                size=8192,
                sha256="ab" * 32,
            )
        ],
    )
    data = summary.to_bytes()
    assert PackSummary.from_bytes(data) == summary
    assert PackSummary.from_bytes(data).to_bytes() == data
    assert summary.shard_digests() == {"file:///data/out/shards/cam_01/cam_01-0000.lmdb": "ab" * 32}
