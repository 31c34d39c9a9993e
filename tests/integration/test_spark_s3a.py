"""Spark reads a packed dataset's manifest through s3a:// from the local S3 server.

s3a (hadoop-aws with the AWS SDK v2) sends the SDK's flexible-checksum headers by
default, like boto3; the stack's S3 server must accept them. The manifest is made
by the packer itself, then read back by Spark and compared with the packer's reader.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ipsp.config import Settings
from ipsp.preprocessing.manifest import read_manifest
from ipsp.preprocessing.pack.job import pack
from ipsp.preprocessing.pack.options import PackOptions
from ipsp.preprocessing.synth.feed import SynthSpec, synthesize
from ipsp.storage import open_store

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


@pytest.fixture
def dataset(spark: SparkSession, stack_settings: Settings, tmp_path: Path) -> Iterator[str]:
    """A small feed packed to a fresh prefix of the stack's bucket (removed afterwards)."""
    feed = tmp_path / "feed"
    synthesize(feed, SynthSpec(frames=24, cameras=2, seed=5, width=320, height=180), workers=1, progress=False)
    uri = f"s3://ipsp/it-s3a-{uuid.uuid4().hex[:10]}"
    pack(str(feed), f"{uri}/ds", PackOptions(progress=False), stack_settings, spark=spark)
    yield uri
    store = open_store(uri, stack_settings)
    for info in list(store.list()):
        store.delete(info.key)


def test_spark_reads_the_manifest_through_s3a(spark: SparkSession, stack_settings: Settings, dataset: str) -> None:
    expected = read_manifest(open_store(f"{dataset}/ds", stack_settings).get("manifest.parquet"))
    s3a = "s3a" + dataset[len("s3") :]

    frame = spark.read.parquet(f"{s3a}/ds/manifest.parquet")
    rows = frame.orderBy("camera_id", "frame_index").collect()

    assert len(rows) == len(expected) == 24
    assert [(r.record_key, r.shard_uri, r.sha256) for r in rows] == [
        (e.record_key, e.shard_uri, e.sha256) for e in expected
    ]

    per_camera = {r.camera_id: r["count"] for r in frame.groupBy("camera_id").count().collect()}
    assert per_camera == {"cam_01": 12, "cam_02": 12}  # synth numbers cameras from 1
