"""Manifest reading: locations, columns, types, nulls, duplicates - clear one-line errors."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ipsp.contracts import ManifestRow
from ipsp.errors import UserError
from ipsp.producer.manifest import load_manifest, manifest_uri, parse_manifest
from support.producer_synthetic import synthetic_frames, write_manifest


@pytest.fixture
def dataset(tmp_path):
    frames = synthetic_frames(cameras=2, frames_per_camera=3)
    write_manifest(frames, tmp_path / "ds" / "manifest.parquet")
    return tmp_path / "ds", frames


def test_reads_by_file_folder_and_file_uri(dataset):
    folder, frames = dataset
    for location in (str(folder), str(folder / "manifest.parquet"), folder.as_uri(),
                     (folder / "manifest.parquet").as_uri()):  # fmt: skip
        uri, rows = load_manifest(location)
        assert uri == (folder / "manifest.parquet").as_uri()
        assert rows == frames


def test_s3_location_names_the_manifest():
    assert manifest_uri("s3://bucket/datasets/d1") == "s3://bucket/datasets/d1/manifest.parquet"
    assert manifest_uri("s3://bucket/datasets/d1/") == "s3://bucket/datasets/d1/manifest.parquet"
    assert manifest_uri("s3://bucket/x/other.parquet") == "s3://bucket/x/other.parquet"


def test_unknown_scheme():
    with pytest.raises(UserError, match="use a local path"):
        manifest_uri("ftp://host/manifest.parquet")


def test_missing_manifest(tmp_path):
    with pytest.raises(UserError, match="manifest not found: file://"):
        load_manifest(str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="manifest not found"):
        load_manifest(str(tmp_path))  # a folder without manifest.parquet


def test_not_parquet(tmp_path):
    path = tmp_path / "manifest.parquet"
    path.write_text("record_key,camera_id\ncam_01_00000,cam_01\n")
    with pytest.raises(UserError, match="is not a readable Parquet file"):
        load_manifest(str(path))


def table_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def good_table() -> pa.Table:
    frames = synthetic_frames(cameras=1, frames_per_camera=2)
    return pa.table({name: [getattr(f, name) for f in frames] for name in ManifestRow.PARQUET_COLUMNS})


def test_missing_columns_are_named():
    table = good_table().drop_columns(["sha256", "width"])
    with pytest.raises(UserError, match=r"lacks column\(s\) width, sha256"):
        parse_manifest(table_bytes(table))


def test_wrong_column_type():
    table = good_table()
    table = table.set_column(table.column_names.index("width"), "width", pa.array(["1280", "1280"]))
    with pytest.raises(UserError, match="column width has type string, expected integer"):
        parse_manifest(table_bytes(table))
    table = good_table()
    table = table.set_column(table.column_names.index("camera_id"), "camera_id", pa.array([1, 2]))
    with pytest.raises(UserError, match="column camera_id has type int64, expected string"):
        parse_manifest(table_bytes(table))


def test_dictionary_encoded_strings_are_accepted():
    table = good_table()
    index = table.column_names.index("camera_id")
    table = table.set_column(index, "camera_id", table.column("camera_id").dictionary_encode())
    assert len(parse_manifest(table_bytes(table))) == 2


def test_nulls_are_rejected():
    table = good_table()
    table = table.set_column(table.column_names.index("key"), "key", pa.array(["a", None]))
    with pytest.raises(UserError, match=r"column key has 1 empty \(null\) value"):
        parse_manifest(table_bytes(table))


def test_empty_manifest():
    with pytest.raises(UserError, match="has no rows"):
        parse_manifest(table_bytes(good_table().slice(0, 0)))


def test_duplicate_record_keys():
    table = good_table()
    doubled = pa.concat_tables([table, table.slice(0, 1)])
    with pytest.raises(UserError, match="record_key 'cam_01_00000' appears twice"):
        parse_manifest(table_bytes(doubled))


def test_extra_columns_are_ignored():
    table = good_table().append_column("note", pa.array(["x", "y"]))
    assert len(parse_manifest(table_bytes(table))) == 2
