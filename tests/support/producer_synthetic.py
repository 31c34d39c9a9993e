"""Synthetic manifests for tests and the benchmark (the frames need not exist to be replayed).

The rows follow the manifest contract exactly; only the shard objects they point
to are imaginary, which the producer never opens.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from ipsp.contracts import ManifestRow
from ipsp.producer.manifest import Frame


def synthetic_frames(
    cameras: int = 3,
    frames_per_camera: int | Sequence[int] = 10,
    shard_root: str = "file:///tmp/ipsp-synthetic/shards",
    frames_per_shard: int = 1000,
    first_index: int = 0,
) -> list[Frame]:
    """Rows for cameras ``cam_01``..; ``frames_per_camera`` may differ per camera."""
    counts = [frames_per_camera] * cameras if isinstance(frames_per_camera, int) else list(frames_per_camera)
    frames: list[Frame] = []
    serial = 0
    for number, count in enumerate(counts, start=1):
        camera = f"cam_{number:02d}"
        for index in range(first_index, first_index + count):
            record_key = f"{camera}_{index:05d}"
            frames.append(
                Frame(
                    record_key=record_key,
                    camera_id=camera,
                    frame_index=index,
                    shard_uri=f"{shard_root}/shard-{serial // frames_per_shard:05d}.lmdb",
                    key=f"{camera}/{index:05d}.jpg",
                    width=1280,
                    height=720,
                    format="jpeg",
                    bytes=100_000 + index,
                    sha256=hashlib.sha256(record_key.encode()).hexdigest(),
                )
            )
            serial += 1
    return frames


def write_manifest(frames: Sequence[Frame], path: Path) -> Path:
    """Write rows as ``manifest.parquet`` with the contract's columns and types."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {name: [getattr(f, name) for f in frames] for name in ManifestRow.PARQUET_COLUMNS}
    int_columns = {"frame_index", "width", "height", "bytes"}
    table = pa.table(
        {
            name: pa.array(values, type=pa.int64() if name in int_columns else pa.string())
            for name, values in columns.items()
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path
