"""``ipsp pack`` on real Spark against both stores: every bad input, read-back, re-runs, resume, refusal.

One synthetic feed (every bad kind, duplicates, a taken record key, a GIF in a
sub-folder, a hidden file) is packed to file:// and to the local S3 server,
then read back frame by frame through ShardReader.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from PIL import Image

from ipsp.config import Settings
from ipsp.errors import UserError
from ipsp.preprocessing.manifest import PackSummary, read_manifest, read_rejects
from ipsp.preprocessing.pack.job import pack
from ipsp.preprocessing.pack.options import PackOptions
from ipsp.preprocessing.synth.feed import SynthReport, SynthSpec, synthesize
from ipsp.storage import open_store
from ipsp.storage.shards import ShardReader, initial_map_size, write_shard

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

FRAMES = 60
SHARD_BYTES = 300_000  # a few frames per shard, so cameras get several shards


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], SynthReport]:
    """A feed with K=1 of every bad kind, 2 duplicates, plus the extras synth does not make."""
    root = tmp_path_factory.mktemp("feed")
    report = synthesize(
        root,
        SynthSpec(frames=FRAMES, cameras=4, seed=3, corrupt=1, duplicates=2, width=640, height=360),
        workers=2,
        progress=False,
    )
    expected = report.expected_rejects()
    shutil.copyfile(root / "cam_01_00000.jpg", root / "cam_01_00000.png")  # same record key as the .jpg
    expected["cam_01_00000.png"] = "duplicate_key"
    (root / "night").mkdir()
    gif = io.BytesIO()
    Image.new("RGB", (64, 32)).save(gif, format="GIF")
    (root / "night" / "cam_02_00999.jpg").write_bytes(gif.getvalue())
    expected["night/cam_02_00999.jpg"] = "unsupported_format"
    (root / ".DS_Store").write_bytes(b"\x00\x01")  # hidden: not an input at all
    return root, expected, report


def _options(**changes: object) -> PackOptions:
    values: dict[str, object] = {"shard_bytes": SHARD_BYTES, "progress": False}
    values.update(changes)
    return PackOptions(**values)  # type: ignore[arg-type]


def _check_dataset(dataset_uri: str, expected: dict[str, str], settings: Settings, cache: Path) -> PackSummary:
    """Every manifest row reads back with its sha256; rejects are exactly the expected ones."""
    store = open_store(dataset_uri, settings)
    rows = read_manifest(store.get("manifest.parquet"))
    summary = PackSummary.from_bytes(store.get("pack.json"))
    rejects = read_rejects(store.get("rejects.jsonl"))
    assert len(rows) == FRAMES == summary.packed
    assert {r.file: r.reason for r in rejects} == expected
    assert summary.rejected == len(expected) and summary.duplicates == 2
    assert [(r.camera_id, r.frame_index) for r in rows] == sorted((r.camera_id, r.frame_index) for r in rows)
    reader = ShardReader(cache, 64 << 20, settings, digests=summary.shard_digests())
    for row in rows:
        assert row.shard_uri.startswith(dataset_uri + "/shards/" + row.camera_id + "/")
        assert row.key == row.record_key
        data = reader.get(row.shard_uri, row.key)
        assert len(data) == row.bytes and hashlib.sha256(data).hexdigest() == row.sha256
        assert (row.width, row.height, row.format) == (640, 360, "jpeg")
    assert {s.uri for s in summary.shards} == {r.shard_uri for r in rows}
    assert all(len(s.first_key) and s.size > s.data_bytes for s in summary.shards)
    return summary


def _objects(dataset_uri: str, settings: Settings) -> dict[str, bytes]:
    store = open_store(dataset_uri, settings)
    return {info.key: store.get(info.key) for info in store.list()}


@pytest.fixture
def s3_prefix(stack_settings: Settings) -> Iterator[str]:
    """A fresh prefix in the stack's bucket, removed afterwards."""
    uri = f"s3://ipsp/it-pack-{uuid.uuid4().hex[:10]}"
    yield uri
    store = open_store(uri, stack_settings)
    for info in list(store.list()):
        store.delete(info.key)


def test_pack_to_file_then_rerun_resume_and_refuse(
    spark: SparkSession, stack_settings: Settings, feed: tuple[Path, dict[str, str], SynthReport], tmp_path: Path
) -> None:
    source, expected, _ = feed
    target = (tmp_path / "ds").as_uri()
    first = pack(str(source), target, _options(), stack_settings, spark=spark)
    assert first.written == len(first.summary.shards) > 4 and first.skipped == 0
    summary = _check_dataset(target, expected, stack_settings, tmp_path / "cache")
    store = open_store(target)
    for shard in summary.shards:
        key = shard.uri[len(target) + 1 :]
        assert hashlib.sha256(store.get(key)).hexdigest() == shard.sha256
    before = _objects(target, stack_settings)

    # re-run: nothing rewritten, every output byte-identical
    again = pack(str(source), target, _options(), stack_settings, spark=spark)
    assert (again.written, again.skipped) == (0, len(summary.shards))
    assert again.timings["decodes_skipped"] == FRAMES  # packed frames are hashed, not decoded again
    assert _objects(target, stack_settings) == before

    # resume after a crash: a shard and the manifest are gone; only that shard is written again
    lost = sorted(k for k in before if k.startswith("shards/"))[1]
    store.delete(lost)
    store.delete("manifest.parquet")
    resumed = pack(str(source), target, _options(), stack_settings, spark=spark)
    assert (resumed.written, resumed.skipped) == (1, len(summary.shards) - 1)
    assert _objects(target, stack_settings) == before  # same shard bytes, same manifest bytes

    # other options would produce another dataset: refused before anything is written
    with pytest.raises(UserError, match="different dataset"):
        pack(str(source), target, _options(shard_bytes=SHARD_BYTES * 4), stack_settings, spark=spark)
    assert _objects(target, stack_settings) == before

    # a shard holding other data (and no manifest yet) is never overwritten
    victim = sorted(k for k in before if k.startswith("shards/"))[0]
    fake = tmp_path / "fake.lmdb"
    write_shard(fake, lambda: [("cam_01_00000", b"not the frame")], initial_map_size([13]))
    store.upload_file(fake, victim)
    store.delete("manifest.parquet")
    with pytest.raises(UserError, match="different data"):
        pack(str(source), target, _options(), stack_settings, spark=spark)
    assert store.get(victim) == fake.read_bytes()


def test_pack_to_s3_and_read_back_through_a_small_cache(
    spark: SparkSession,
    stack_settings: Settings,
    feed: tuple[Path, dict[str, str], SynthReport],
    s3_prefix: str,
    tmp_path: Path,
) -> None:
    source, expected, _ = feed
    target = f"{s3_prefix}/datasets/demo"
    result = pack(str(source), target, _options(), stack_settings, spark=spark)
    assert result.written == len(result.summary.shards)
    summary = _check_dataset(target, expected, stack_settings, tmp_path / "cache")
    again = pack(str(source), target, _options(), stack_settings, spark=spark)
    assert (again.written, again.skipped) == (0, len(summary.shards))

    # the reader's cache under pressure: room for about two shards
    largest = max(s.size for s in summary.shards)
    reader = ShardReader(tmp_path / "small-cache", int(largest * 2.5), stack_settings, summary.shard_digests())
    rows = read_manifest(open_store(target, stack_settings).get("manifest.parquet"))
    for row in rows + rows[:3]:
        assert hashlib.sha256(reader.get(row.shard_uri, row.key)).hexdigest() == row.sha256
        assert reader.cached_bytes() <= reader.max_bytes
    assert reader.stats.evictions >= len(summary.shards) - 2
    assert reader.stats.hits > len(rows) - len(summary.shards)  # frames of an open shard reuse it
    missing = reader.get_many(rows[0].shard_uri.replace("-0000.lmdb", "-9999.lmdb"), ["x"])
    assert type(missing["x"]).__name__ == "ShardNotFound"


def test_pack_from_an_s3_prefix(
    spark: SparkSession,
    stack_settings: Settings,
    feed: tuple[Path, dict[str, str], SynthReport],
    s3_prefix: str,
    tmp_path: Path,
) -> None:
    source, expected, _ = feed
    inputs = open_store(f"{s3_prefix}/incoming", stack_settings)
    for path in sorted(source.rglob("*")):
        if path.is_file() and not path.name.startswith("."):  # a dangling link cannot be uploaded
            inputs.upload_file(path, path.relative_to(source).as_posix())
    readable = {f: r for f, r in expected.items() if r != "unreadable"}
    target = (tmp_path / "from-s3").as_uri()
    pack(f"{s3_prefix}/incoming", target, _options(), stack_settings, spark=spark)
    _check_dataset(target, readable, stack_settings, tmp_path / "cache")


def test_nothing_to_pack_and_bad_options_are_clear_errors(
    spark: SparkSession, stack_settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no input files"):
        pack(str(tmp_path / "empty"), (tmp_path / "out").as_uri(), _options(), stack_settings, spark=spark)
    with pytest.raises(UserError, match="does not exist"):
        pack(str(tmp_path / "absent"), (tmp_path / "out").as_uri(), _options(), stack_settings, spark=spark)
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "notes.txt").write_text("not a frame")
    with pytest.raises(UserError, match="bucket 'no-such-bucket-ipsp' does not exist"):
        pack(str(tmp_path / "one"), "s3://no-such-bucket-ipsp/ds", _options(), stack_settings, spark=spark)
    with pytest.raises(UserError, match="frame_index"):
        pack(
            str(tmp_path / "empty"),
            (tmp_path / "out").as_uri(),
            _options(name_pattern=r"(?P<camera_id>\w+)\.jpg"),
            stack_settings,
            spark=spark,
        )
