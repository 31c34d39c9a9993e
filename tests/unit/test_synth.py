"""The synthetic feed: names, the split over cameras, determinism, bad files, reuse."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from ipsp.errors import UserError
from ipsp.preprocessing.synth.feed import BAD_KINDS, META_NAME, SynthSpec, frame_name, frames_per_camera, synthesize
from ipsp.preprocessing.synth.photos import available_sources, load_source
from ipsp.preprocessing.synth.render import build_scene, encode_jpeg, render_frame
from ipsp.preprocessing.validate import InvalidInput, check_image

SMALL = {"width": 320, "height": 180}


def _digests(folder: Path) -> dict[str, str]:
    return {
        entry.name: hashlib.sha256(Path(entry.path).read_bytes()).hexdigest()
        for entry in os.scandir(folder)
        if entry.is_file() and not entry.name.startswith(".")
    }


def test_names_and_split() -> None:
    assert frame_name(1, 544) == "cam_01_00544.jpg"
    assert frames_per_camera(11_508, 20) == [576] * 8 + [575] * 12
    assert sum(frames_per_camera(11_508, 20)) == 11_508


def test_sources_load_offline() -> None:
    sources = available_sources()
    assert [s.name for s in sources][:2] == ["skimage:motorcycle_left", "skimage:motorcycle_right"]
    for source in sources:
        image = load_source(source.name)
        assert image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) >= 300


def test_full_size_frames_look_like_the_users(tmp_path: Path) -> None:
    sources = available_sources()
    sizes = []
    for camera in (1, 2, 3):
        scene = build_scene(sources, 0, camera, 1280, 720)
        data = encode_jpeg(render_frame(scene, 0, 10, 1280, 720), 85)
        checked = check_image(data)
        assert (checked.width, checked.height, checked.format) == (1280, 720, "jpeg")
        sizes.append(len(data))
    assert all(100_000 <= size <= 250_000 for size in sizes), sizes


def test_same_seed_same_bytes_whatever_the_workers(tmp_path: Path) -> None:
    spec = SynthSpec(frames=12, cameras=3, seed=5, **SMALL)
    one = synthesize(tmp_path / "one", spec, workers=1, progress=False)
    two = synthesize(tmp_path / "two", spec, workers=2, progress=False)
    assert one.frames == two.frames == 12
    assert _digests(tmp_path / "one") == _digests(tmp_path / "two")
    synthesize(tmp_path / "other", SynthSpec(frames=12, cameras=3, seed=6, **SMALL), 1, progress=False)
    assert _digests(tmp_path / "other") != _digests(tmp_path / "one")
    assert len(set(_digests(tmp_path / "one").values())) == 12  # consecutive frames differ


def test_bad_files_fail_with_the_expected_reason(tmp_path: Path) -> None:
    spec = SynthSpec(frames=6, cameras=2, corrupt=2, duplicates=2, **SMALL)
    report = synthesize(tmp_path / "feed", spec, workers=1, progress=False)
    assert len(report.bad) == 2 * len(BAD_KINDS) and len(report.duplicates) == 2
    for item in report.bad:
        path = tmp_path / "feed" / item["file"]
        if item["kind"] == "unreadable":
            assert path.is_symlink() and not path.exists()
            continue
        if item["kind"] == "bad_name":
            assert check_image(path.read_bytes()).format == "jpeg"
            continue
        with pytest.raises(InvalidInput) as info:
            check_image(path.read_bytes())
        assert info.value.reason == item["reason"], item
    for item in report.duplicates:
        assert (tmp_path / "feed" / item["file"]).read_bytes() == (
            tmp_path / "feed" / item["duplicate_of"]
        ).read_bytes()
    assert set(report.expected_rejects()) == {i["file"] for i in report.bad + report.duplicates}


def test_an_earlier_feed_is_reused_or_replaced(tmp_path: Path) -> None:
    out = tmp_path / "feed"
    spec = SynthSpec(frames=4, cameras=2, **SMALL)
    synthesize(out, spec, workers=1, progress=False)
    assert (out / META_NAME).is_file()
    assert synthesize(out, spec, workers=1, progress=False).reused
    bigger = synthesize(out, SynthSpec(frames=6, cameras=2, **SMALL), workers=1, progress=False)
    assert not bigger.reused and len(_digests(out)) == 6


def test_a_foreign_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(UserError, match="not empty"):
        synthesize(tmp_path, SynthSpec(frames=2, cameras=1, **SMALL), workers=1, progress=False)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    "spec",
    [SynthSpec(frames=1, cameras=2), SynthSpec(cameras=0), SynthSpec(quality=0), SynthSpec(corrupt=-1)],
)
def test_bad_specs_are_user_errors(tmp_path: Path, spec: SynthSpec) -> None:
    with pytest.raises(UserError):
        synthesize(tmp_path / "x", spec, workers=1, progress=False)
