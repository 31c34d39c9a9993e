"""Writing a feed: frames rendered in worker processes, bad files and duplicates, reuse of an earlier feed."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ipsp.errors import UserError
from ipsp.preprocessing.synth.footage import footage_sources
from ipsp.preprocessing.synth.photos import available_sources
from ipsp.preprocessing.synth.render import build_scene, encode_jpeg, render_frame
from ipsp.preprocessing.synth.scene import Scene, Source

META_NAME = ".synth.json"
DEFAULT_FRAMES = 11_508
DEFAULT_CAMERAS = 20
#: bad kinds -> the reject reason the packer must give them
BAD_KINDS: dict[str, str] = {
    "truncated": "truncated",
    "corrupt": "corrupt",
    "not_image": "not_image",
    "empty": "empty",
    "bomb": "too_large",
    "unreadable": "unreadable",
    "bad_name": "bad_name",
}
_CHUNK = 48  # frames per pool task: big enough to amortise the scene set-up


@dataclass
class SynthSpec:
    """Parameters that fully determine a feed (with the sources)."""

    frames: int = DEFAULT_FRAMES
    cameras: int = DEFAULT_CAMERAS
    seed: int = 0
    corrupt: int = 0
    duplicates: int = 0
    width: int = 1280
    height: int = 720
    quality: int = 85
    feed: str = "photos"  # "footage": real road clips (``footage_clips`` must be given), "photos": fallback


@dataclass
class SynthReport:
    """What ``synthesize`` wrote."""

    out: str
    spec: SynthSpec
    sources: list[str]
    frames: int
    frame_bytes: int
    bad: list[dict[str, str]] = field(default_factory=list)
    duplicates: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    workers: int = 1
    reused: bool = False

    def expected_rejects(self) -> dict[str, str]:
        """file name -> reason the packer must give, for every bad file and duplicate."""
        expected = {item["file"]: item["reason"] for item in self.bad}
        expected.update({item["file"]: "duplicate" for item in self.duplicates})
        return expected


def frame_name(camera_no: int, frame_index: int) -> str:
    """``cam_01_00544.jpg``, the user's naming."""
    return f"cam_{camera_no:02d}_{frame_index:05d}.jpg"


def frames_per_camera(frames: int, cameras: int) -> list[int]:
    """Split ``frames`` over ``cameras`` as evenly as possible (first cameras get the extra)."""
    share, extra = divmod(frames, cameras)
    return [share + (1 if c < extra else 0) for c in range(cameras)]


def synthesize(
    out: Path,
    spec: SynthSpec | None = None,
    workers: int | None = None,
    progress: bool = True,
    footage_clips: list[Path] | None = None,
) -> SynthReport:
    """Write the feed into ``out`` (created; must be empty or hold an earlier feed).

    ``spec.feed == "footage"`` plays ``footage_clips`` (fetched road clips);
    ``"photos"`` is the photo-based fallback. An earlier feed with the same spec and
    sources is reused as it is; one with a different spec is replaced. A folder
    with other content is refused.
    """
    spec = spec or SynthSpec()
    _check_spec(spec)
    if spec.feed == "footage":
        if not footage_clips:
            raise UserError("the footage feed needs the fetched clips (ipsp.preprocessing.footage.fetch_footage)")
        sources = footage_sources(footage_clips)
    else:
        sources = available_sources()
    out = out.expanduser().resolve()
    previous = _previous(out)
    if previous is not None and _same(previous, spec, sources) and _complete(out, previous):
        report = _report_from_meta(out, previous)
        report.reused = True
        return report
    _prepare(out, previous)
    workers = max(1, min(workers or (os.cpu_count() or 1), 16))
    start = time.perf_counter()
    counts = frames_per_camera(spec.frames, spec.cameras)
    jobs = [
        (camera_no, first, min(first + _CHUNK, count))
        for camera_no, count in enumerate(counts, start=1)
        for first in range(0, count, _CHUNK)
    ]
    total_bytes = 0
    with _progress(spec.frames, progress) as bar:
        for done, size in _run_jobs(jobs, out, spec, sources, workers):
            total_bytes += size
            bar.update(done)
    bad = _write_bad_files(out, spec, sources, counts)
    dups = _write_duplicates(out, spec, counts, len(bad))
    report = SynthReport(
        out=str(out),
        spec=spec,
        sources=[s.name for s in sources],
        frames=spec.frames,
        frame_bytes=total_bytes,
        bad=bad,
        duplicates=dups,
        seconds=round(time.perf_counter() - start, 3),
        workers=workers,
    )
    (out / META_NAME).write_text(json.dumps(asdict(report), indent=2, sort_keys=True) + "\n")
    return report


def _check_spec(spec: SynthSpec) -> None:
    if spec.cameras < 1 or spec.cameras > 99:
        raise UserError("--cameras must be between 1 and 99 (names are cam_01..cam_99)")
    if spec.frames < spec.cameras:
        raise UserError("--frames must be at least --cameras (every camera gets a frame)")
    if -(-spec.frames // spec.cameras) + len(BAD_KINDS) * spec.corrupt + spec.duplicates > 99_999:
        raise UserError("too many frames per camera for 5-digit frame numbers (cam_01_00000..cam_01_99999)")
    if spec.corrupt < 0 or spec.duplicates < 0 or spec.duplicates > spec.frames:
        raise UserError("--corrupt and --duplicates must be >= 0 (duplicates at most --frames)")
    if not 1 <= spec.quality <= 100:
        raise UserError("--quality must be 1..100")
    if spec.width < 64 or spec.height < 64:
        raise UserError("frames must be at least 64x64")
    if spec.feed not in ("footage", "photos"):
        raise UserError(f"unknown feed {spec.feed!r}: footage or photos")


def _previous(out: Path) -> dict[str, Any] | None:
    if not out.exists():
        return None
    if not out.is_dir():
        raise UserError(f"{out} exists and is not a folder")
    meta = out / META_NAME
    if meta.is_file():
        try:
            loaded: dict[str, Any] = json.loads(meta.read_text())
            return loaded
        except (OSError, ValueError):
            raise UserError(f"{meta} is unreadable; delete {out} and run again") from None
    if any(out.iterdir()):
        raise UserError(f"{out} is not empty and holds no synthetic feed; choose an empty or new folder")
    return None


def _same(previous: dict[str, Any], spec: SynthSpec, sources: list[Source]) -> bool:
    return previous.get("spec") == asdict(spec) and previous.get("sources") == [s.name for s in sources]


def _complete(out: Path, previous: dict[str, Any]) -> bool:
    expected = int(previous["frames"]) + len(previous["bad"]) + len(previous["duplicates"])
    return sum(1 for entry in os.scandir(out) if not entry.name.startswith(".")) == expected


def _report_from_meta(out: Path, meta: dict[str, Any]) -> SynthReport:
    values = dict(meta)
    values["spec"] = SynthSpec(**values["spec"])
    values["out"] = str(out)
    return SynthReport(**values)


def _prepare(out: Path, previous: dict[str, Any] | None) -> None:
    """Create ``out``; remove an earlier feed's files (only names this module makes)."""
    out.mkdir(parents=True, exist_ok=True)
    if previous is None:
        return
    for entry in os.scandir(out):
        if entry.name.startswith(".") and entry.name != META_NAME:
            continue
        if entry.is_dir(follow_symlinks=False):
            raise UserError(f"{out} holds a folder {entry.name!r}; refusing to clear it, use an empty folder")
        os.unlink(entry.path)


class _progress:
    """A tqdm bar on stderr (a no-op when disabled)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled
        self.bar: Any = None

    def __enter__(self) -> _progress:
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, unit="frame", desc="synth", dynamic_ncols=True)
        return self

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


# pool workers keep the last scenes they built: consecutive chunks share a camera
_SCENES: dict[int, Scene] = {}
_STATE: dict[str, Any] = {}


def _init_worker(out: str, spec: SynthSpec, sources: list[Source]) -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already
    _STATE.update(out=out, spec=spec, sources=sources)
    _SCENES.clear()


def _render_chunk(job: tuple[int, int, int]) -> tuple[int, int]:
    camera_no, first, last = job
    spec: SynthSpec = _STATE["spec"]
    out = Path(_STATE["out"])
    scene = _SCENES.get(camera_no)
    if scene is None:
        _SCENES.clear()
        scene = _SCENES[camera_no] = build_scene(_STATE["sources"], spec.seed, camera_no, spec.width, spec.height)
    size = 0
    for index in range(first, last):
        data = encode_jpeg(render_frame(scene, spec.seed, index, spec.width, spec.height), spec.quality)
        (out / frame_name(camera_no, index)).write_bytes(data)
        size += len(data)
    return last - first, size


def _run_jobs(
    jobs: list[tuple[int, int, int]], out: Path, spec: SynthSpec, sources: list[Source], workers: int
) -> Iterator[tuple[int, int]]:
    if workers == 1:
        _init_worker(str(out), spec, sources)
        for job in jobs:
            yield _render_chunk(job)
        return
    # never plain fork: a parent that already runs threads (ONNX Runtime, OpenCV, a Spark
    # gateway) can hand a held lock to the child, which then waits forever
    context = multiprocessing.get_context("forkserver" if os.name == "posix" else "spawn")
    with context.Pool(workers, initializer=_init_worker, initargs=(str(out), spec, sources)) as pool:
        yield from pool.imap(_render_chunk, jobs)


# --- bad inputs -------------------------------------------------------------------


def _write_bad_files(out: Path, spec: SynthSpec, sources: list[Source], counts: list[int]) -> list[dict[str, str]]:
    """K files of each kind in BAD_KINDS, named like real frames past each camera's last one."""
    if spec.corrupt == 0:
        return []
    rng = np.random.default_rng([spec.seed, 9])
    scene_cache: dict[int, Scene] = {}
    written: list[dict[str, str]] = []
    serial = 0
    for kind, reason in BAD_KINDS.items():
        for number in range(spec.corrupt):
            camera_no = int(rng.integers(1, spec.cameras + 1))
            frame_index = counts[camera_no - 1] + serial
            serial += 1
            name = frame_name(camera_no, frame_index)
            if kind == "bad_name":
                name = (f"IMG_{20240101 + number}_{frame_index:04d}.jpg", f"cam{camera_no:02d}-{frame_index}.jpg")[
                    number % 2
                ]
            if camera_no not in scene_cache:
                scene_cache[camera_no] = build_scene(sources, spec.seed, camera_no, spec.width, spec.height)
            good = encode_jpeg(
                render_frame(scene_cache[camera_no], spec.seed, frame_index, spec.width, spec.height), spec.quality
            )
            _write_bad(out / name, kind, good, rng)
            written.append({"file": name, "kind": kind, "reason": reason})
    return written


def _write_bad(path: Path, kind: str, good: bytes, rng: np.random.Generator) -> None:
    if kind == "truncated":
        path.write_bytes(good[: int(len(good) * rng.uniform(0.3, 0.9))])
    elif kind == "corrupt":
        # damage the tables before the first scan: no decoder can recover from that
        damaged = bytearray(good)
        start = 20
        damaged[start : start + 200] = rng.integers(0, 256, 200, dtype=np.uint8).tobytes()
        path.write_bytes(bytes(damaged))
    elif kind == "not_image":
        path.write_bytes(b"<html><head><title>404 Not Found</title></head><body>not found</body></html>\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "bomb":
        path.write_bytes(jpeg_with_size(good, 60000, 60000))
    elif kind == "unreadable":
        # a dangling link: the name lists, the bytes cannot be read (works as root too)
        path.symlink_to(f".missing/{path.name}")
    elif kind == "bad_name":
        path.write_bytes(good)
    else:  # pragma: no cover - BAD_KINDS and this function change together
        raise ValueError(kind)


def jpeg_with_size(data: bytes, width: int, height: int) -> bytes:
    """A JPEG whose frame header claims another size (a decompression-bomb header)."""
    out = bytearray(data)
    for marker in (b"\xff\xc0", b"\xff\xc2", b"\xff\xc1"):
        at = out.find(marker)
        if at >= 0:
            out[at + 5 : at + 7] = height.to_bytes(2, "big")
            out[at + 7 : at + 9] = width.to_bytes(2, "big")
            return bytes(out)
    raise ValueError("no JPEG frame header found")


def _write_duplicates(out: Path, spec: SynthSpec, counts: list[int], serial: int) -> list[dict[str, str]]:
    """D copies of good frames under new names (same camera, a frame index past the bad ones)."""
    rng = np.random.default_rng([spec.seed, 10])
    written = []
    for number in range(spec.duplicates):
        camera_no = int(rng.integers(1, spec.cameras + 1))
        original = frame_name(camera_no, int(rng.integers(0, counts[camera_no - 1])))
        name = frame_name(camera_no, counts[camera_no - 1] + serial + number)
        (out / name).write_bytes((out / original).read_bytes())
        written.append({"file": name, "duplicate_of": original, "reason": "duplicate"})
    return written
