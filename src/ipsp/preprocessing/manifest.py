"""The packer's outputs besides the shards: ``manifest.parquet``, ``rejects.jsonl``, ``pack.json``.

All three are written deterministically (fixed schema, fixed row order, no
timestamps), so re-packing the same input gives the same bytes and a re-run can
compare instead of guessing.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

from ipsp.contracts import ManifestRow, Reject

MANIFEST_NAME = "manifest.parquet"
REJECTS_NAME = "rejects.jsonl"
SUMMARY_NAME = "pack.json"
SHARDS_PREFIX = "shards/"
PACK_FORMAT = "1"


def manifest_schema():  # type: ignore[no-untyped-def]
    """Arrow schema of ``manifest.parquet``: exactly ``ManifestRow.PARQUET_COLUMNS``, no nulls."""
    import pyarrow as pa

    types = {
        "record_key": pa.string(),
        "camera_id": pa.string(),
        "frame_index": pa.int64(),
        "shard_uri": pa.string(),
        "key": pa.string(),
        "width": pa.int32(),
        "height": pa.int32(),
        "format": pa.string(),
        "bytes": pa.int64(),
        "sha256": pa.string(),
    }
    return pa.schema([pa.field(name, types[name], nullable=False) for name in ManifestRow.PARQUET_COLUMNS])


def manifest_bytes(rows: Iterable[ManifestRow]) -> bytes:
    """Serialize rows to Parquet, in the order given (the packer sorts by camera, frame)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = manifest_schema()
    records = [row.model_dump() for row in rows]
    table = pa.Table.from_pylist(records, schema=schema)
    out = io.BytesIO()
    # no pandas metadata and one row group: the bytes depend only on the rows
    pq.write_table(table, out, compression="zstd", row_group_size=max(1, len(records)), write_statistics=True)
    return out.getvalue()


def read_manifest(data: bytes) -> list[ManifestRow]:
    """Parse ``manifest.parquet`` bytes back into validated rows (file order)."""
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(data), columns=list(ManifestRow.PARQUET_COLUMNS))
    return [ManifestRow.model_validate(record) for record in table.to_pylist()]


def rejects_bytes(rejects: Iterable[Reject]) -> bytes:
    """``rejects.jsonl``: one Reject per line, in the order given (sorted by file)."""
    return b"".join(reject.to_json().encode() + b"\n" for reject in rejects)


def read_rejects(data: bytes) -> list[Reject]:
    """Parse ``rejects.jsonl`` bytes."""
    return [Reject.from_json(line) for line in data.splitlines() if line.strip()]


class ShardEntry(BaseModel):
    """One shard in ``pack.json``."""

    model_config = ConfigDict(extra="forbid")

    uri: str = Field(description="absolute URI of the shard object")
    camera_id: str
    frames: int = Field(ge=1)
    first_key: str
    last_key: str
    data_bytes: int = Field(ge=0, description="sum of the frames' byte sizes")
    size: int = Field(ge=0, description="size of the LMDB file")
    sha256: str = Field(description="sha256 of the LMDB file")


class PackOptionsRecord(BaseModel):
    """The options a pack ran with, as recorded in ``pack.json``."""

    model_config = ConfigDict(extra="forbid")

    name_pattern: str
    shard_target_bytes: int
    max_side: int
    max_pixels: int
    fit: str | None = None
    quality: int | None = None


class PackSummary(BaseModel):
    """``pack.json``: what a pack produced; identical bytes for identical input and options."""

    model_config = ConfigDict(extra="forbid")

    format: str = PACK_FORMAT
    source: str = Field(description="the input folder or s3:// prefix, as given")
    dataset_uri: str = Field(description="where the dataset lives (the --to URI)")
    inputs: int = Field(ge=0, description="input files seen (hidden files excluded)")
    packed: int = Field(ge=0)
    rejected: int = Field(ge=0, description="rejects of every reason, duplicates included")
    duplicates: int = Field(ge=0)
    reasons: dict[str, int] = Field(description="rejects per reason")
    data_bytes: int = Field(ge=0, description="sum of the packed frames' sizes")
    options: PackOptionsRecord
    shards: list[ShardEntry]

    def to_bytes(self) -> bytes:
        """Pretty, key-ordered JSON with a trailing newline."""
        return (json.dumps(self.model_dump(), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> PackSummary:
        """Parse ``pack.json``."""
        return cls.model_validate_json(data)

    def shard_digests(self) -> dict[str, str]:
        """shard URI -> sha256, what ShardReader verifies downloads against."""
        return {shard.uri: shard.sha256 for shard in self.shards}
