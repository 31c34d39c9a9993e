"""Read ``manifest.parquet`` from a local path or an object-store URI and check its shape.

The manifest is the packing stage's output: one row per frame with the columns
``ManifestRow.PARQUET_COLUMNS``. Here only the table's shape is checked (columns,
types, nulls, unique record keys); each row's values are validated against the
Kafka contract when its message template is built (see ``encode``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from ipsp.config import Settings
from ipsp.contracts import ManifestRow
from ipsp.errors import UserError

MANIFEST_NAME = "manifest.parquet"
STRING_COLUMNS = ("record_key", "camera_id", "shard_uri", "key", "format", "sha256")
INT_COLUMNS = ("frame_index", "width", "height", "bytes")


@dataclass(frozen=True, slots=True)
class Frame:
    """One manifest row as plain values (cheap to hold by the tens of thousands)."""

    record_key: str
    camera_id: str
    frame_index: int
    shard_uri: str
    key: str
    width: int
    height: int
    format: str
    bytes: int
    sha256: str


def manifest_uri(location: str) -> str:
    """The manifest object's URI for a local path or URI, of the file or of its dataset folder."""
    parsed = urlparse(location)
    if parsed.scheme in ("", "file"):
        path = Path(unquote(parsed.path) if parsed.scheme == "file" else location).expanduser().resolve()
        if path.is_dir():
            path = path / MANIFEST_NAME
        return path.as_uri()
    if parsed.scheme == "s3":
        if location.rstrip("/").endswith(".parquet"):
            return location
        return location.rstrip("/") + "/" + MANIFEST_NAME
    raise UserError(f"manifest location {location!r}: use a local path, file:///... or s3://bucket/...")


def read_manifest_bytes(uri: str, settings: Settings | None = None) -> bytes:
    """The manifest file's bytes, with a one-line error when it is absent or unreadable."""
    from ipsp.storage import ObjectNotFound, StorageError, resolve

    try:
        store, key = resolve(uri, settings)
        return store.get(key)
    except ObjectNotFound:
        raise UserError(f"manifest not found: {uri}") from None
    except StorageError as exc:
        raise UserError(f"cannot read manifest {uri}: {exc}") from None


def parse_manifest(data: bytes, source: str = "manifest") -> list[Frame]:
    """Check a Parquet manifest's columns, types, nulls and keys; return its rows in file order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(_arrow_reader(data)).read(use_threads=False)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"{source} is not a readable Parquet file: {_first_line(exc)}") from None
    missing = [c for c in ManifestRow.PARQUET_COLUMNS if c not in table.column_names]
    if missing:
        raise UserError(
            f"{source} lacks column(s) {', '.join(missing)} (expected {', '.join(ManifestRow.PARQUET_COLUMNS)})"
        )
    columns: dict[str, list[object]] = {}
    for name in ManifestRow.PARQUET_COLUMNS:
        column = table.column(name)
        _check_type(source, name, column.type)
        if column.null_count:
            raise UserError(f"{source}: column {name} has {column.null_count} empty (null) value(s)")
        columns[name] = column.to_pylist()
    if table.num_rows == 0:
        raise UserError(f"{source} has no rows")
    frames = [Frame(*values) for values in zip(*columns.values(), strict=True)]  # type: ignore[arg-type]
    _check_unique(source, frames)
    return frames


def load_manifest(location: str, settings: Settings | None = None) -> tuple[str, list[Frame]]:
    """Read and check the manifest at a local path or URI; return (its URI, its rows)."""
    uri = manifest_uri(location)
    return uri, parse_manifest(read_manifest_bytes(uri, settings), source=f"manifest {uri}")


def _arrow_reader(data: bytes) -> Any:
    """A reader over an Arrow-owned copy of the bytes.

    Handing pyarrow a Python file object (BytesIO) lets a reader thread drop the last
    reference to it during interpreter shutdown and abort the process ("terminate called
    without an active exception", apache/arrow#34314; ~1 exit in 10 here with pyarrow 26).
    An Arrow-owned buffer has no Python object to release.
    """
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    sink.write(data)
    return pa.BufferReader(sink.getvalue())


def _check_type(source: str, name: str, arrow_type: object) -> None:
    import pyarrow as pa

    value_type = arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type  # type: ignore[attr-defined]
    if name in STRING_COLUMNS:
        ok = pa.types.is_string(value_type) or pa.types.is_large_string(value_type)
        expected = "string"
    else:
        ok = pa.types.is_integer(value_type)
        expected = "integer"
    if not ok:
        raise UserError(f"{source}: column {name} has type {arrow_type}, expected {expected}")


def _check_unique(source: str, frames: list[Frame]) -> None:
    # record_key becomes the MongoDB _id downstream, so two rows with one key would overwrite
    seen: set[str] = set()
    for number, frame in enumerate(frames):
        if frame.record_key in seen:
            raise UserError(f"{source}: record_key {frame.record_key!r} appears twice (row {number})")
        seen.add(frame.record_key)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
