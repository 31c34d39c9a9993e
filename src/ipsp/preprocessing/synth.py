"""A 20-camera traffic feed, for when the user's 11,508 frames are not at hand.

Two feeds (``SynthSpec.feed``):

- ``footage`` (the default): real fixed-camera road footage fetched at run time
  (``ipsp.preprocessing.footage``: OpenTrafficCam's test clips from PyPI, cars, a
  truck, a cyclist at a junction). Each camera plays one clip in time order from
  its own start frame (forward, then backward at the clip's end, so vehicles keep
  moving smoothly) through its own viewpoint (crop, zoom, small rotation, mirror),
  colour balance, haze, light drift, shake and sensor noise.
- ``photos``: the offline fallback, built from real photos that installed packages
  ship (the stereo motorcycle pair of scikit-image, and ``bus.jpg`` / ``zidane.jpg``
  of ``ultralytics`` when installed) with vehicles cut from them sliding along
  lanes. It does not look like road traffic; the CLI says so loudly when it has to
  fall back to it.

Nothing third-party is committed. JPEGs land at 100-250 KB (1280x720, quality 85).

Deterministic: frame ``k`` of camera ``c`` depends only on (seed, c, k) and the
set of available sources (recorded in ``.synth.json``), never on the number of
worker processes. ``corrupt=K`` adds K files of each bad kind the packer must
reject (see ``BAD_KINDS``), ``duplicates=D`` adds D byte-identical copies of
good frames under new names.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ipsp.errors import UserError

log = logging.getLogger(__name__)

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
_MARGIN = 8  # rendered border used for camera shake


Box = tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of the photo


@dataclass(frozen=True)
class Source:
    """A real photo a package ships (``scene``: where a camera may look, ``sprite``: what may move),
    or a real video clip (``clip``: its path; the whole frame is the scene)."""

    name: str
    scene: Box | None
    sprite: Box | None
    clip: str | None = None


def footage_sources(clips: list[Path]) -> list[Source]:
    """One source per fetched road clip (``ipsp.preprocessing.footage``)."""
    return [Source(f"otvision:{clip.name}", (0.0, 0.0, 1.0, 1.0), None, str(clip)) for clip in clips]


def available_sources() -> list[Source]:
    """Photos that load offline here, in a fixed order (ultralytics ones only when installed)."""
    found = [
        Source("skimage:motorcycle_left", (0.0, 0.0, 1.0, 1.0), (0.13, 0.14, 0.93, 0.92)),
        Source("skimage:motorcycle_right", (0.0, 0.0, 1.0, 1.0), (0.08, 0.14, 0.90, 0.92)),
    ]
    if _ultralytics_assets() is not None:
        # the street and the bus; the people photo only lends pedestrians
        found.append(Source("ultralytics:bus.jpg", (0.0, 0.22, 1.0, 1.0), (0.0, 0.20, 1.0, 0.66)))
        found.append(Source("ultralytics:zidane.jpg", None, (0.62, 0.08, 0.97, 1.0)))
    return found


def _ultralytics_assets() -> Path | None:
    # find_spec locates the package without importing it (importing pulls in torch)
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "assets"
    return folder if (folder / "bus.jpg").is_file() and (folder / "zidane.jpg").is_file() else None


@lru_cache(maxsize=8)
def load_source(name: str) -> np.ndarray:
    """The photo as a BGR uint8 array."""
    import cv2

    kind, _, item = name.partition(":")
    if kind == "skimage":
        from skimage import data

        left, right, _disp = data.stereo_motorcycle()
        rgb = left if item == "motorcycle_left" else right
        return np.ascontiguousarray(rgb[:, :, ::-1])
    if kind == "ultralytics":
        folder = _ultralytics_assets()
        image = cv2.imread(str(folder / item)) if folder else None
        if image is None:
            raise UserError(f"photo {name} is not available")
        return image
    raise ValueError(f"unknown source {name!r}")


# --- scene of one camera ----------------------------------------------------------


@dataclass
class Sprite:
    """A vehicle cut from a photo, moving along a lane."""

    image: np.ndarray
    alpha: np.ndarray
    y: int
    speed: float
    phase: float


@dataclass
class Scene:
    """Everything about one camera that does not change from frame to frame."""

    camera_no: int
    base: np.ndarray  # (H + 2 margin, W + 2 margin, 3) BGR
    noise_pos: np.ndarray
    noise_neg: np.ndarray
    sprites: list[Sprite]
    light_amp: float
    light_period: float
    light_phase: float
    label: str
    clip: str | None = None  # footage feed: the clip this camera plays
    matrix: np.ndarray | None = None  # footage feed: output pixel -> clip pixel
    luts: np.ndarray | None = None  # footage feed: (3, 256) colour curves
    start: int = 0  # footage feed: the clip frame this camera starts at


def build_scene(sources: list[Source], seed: int, camera_no: int, width: int, height: int) -> Scene:
    """The fixed part of camera ``camera_no``: viewpoint, colour, noise bank, traffic lanes."""
    if any(s.clip for s in sources):
        return build_footage_scene(sources, seed, camera_no, width, height)
    rng = np.random.default_rng([seed, camera_no, 1])
    scenes = [s for s in sources if s.scene is not None]
    order = np.random.default_rng([seed, 0]).permutation(len(scenes))
    source = scenes[int(order[(camera_no - 1) % len(scenes)])]
    assert source.scene is not None
    photo = _crop(load_source(source.name), source.scene)
    base = _viewpoint(photo, rng, width + 2 * _MARGIN, height + 2 * _MARGIN)
    base = _colour(base, rng)
    sigma = float(rng.uniform(2.8, 5.0))
    noise = np.random.default_rng([seed, camera_no, 2]).normal(0.0, sigma, (height + 64, width, 3))
    noise_pos = np.clip(noise, 0, 255).astype(np.uint8)
    noise_neg = np.clip(-noise, 0, 255).astype(np.uint8)
    sprites = []
    vehicles = [s for s in sources if s.sprite is not None]
    for _ in range(int(rng.integers(2, 6))):
        donor = vehicles[int(rng.integers(len(vehicles)))]
        assert donor.sprite is not None
        donor_photo = _crop(load_source(donor.name), donor.sprite)
        y = int(rng.uniform(0.35, 0.8) * height)
        # lower in the picture = nearer = bigger, a cheap perspective; never taller than 60 %
        sprite_w = int(width * (0.10 + 0.22 * (y / height)) * rng.uniform(0.8, 1.2))
        sprite_w = min(sprite_w, int(0.6 * height * donor_photo.shape[1] / donor_photo.shape[0]))
        image, alpha = _cut_sprite(donor_photo, sprite_w, bool(rng.random() < 0.5))
        y = min(y, height - image.shape[0])
        speed = float(rng.uniform(3.0, 16.0)) * (1 if rng.random() < 0.5 else -1)
        sprites.append(Sprite(image, alpha, y, speed, float(rng.uniform(0, width))))
    return Scene(
        camera_no=camera_no,
        base=base,
        noise_pos=noise_pos,
        noise_neg=noise_neg,
        sprites=sprites,
        light_amp=float(rng.uniform(0.04, 0.16)),
        light_period=float(rng.uniform(200, 900)),
        light_phase=float(rng.uniform(0, 2 * np.pi)),
        label=f"CAM {camera_no:02d}",
    )


def build_footage_scene(sources: list[Source], seed: int, camera_no: int, width: int, height: int) -> Scene:
    """Camera ``camera_no`` of the footage feed: which clip, from which frame, through which view."""
    from ipsp.preprocessing.footage import clip_frames

    rng = np.random.default_rng([seed, camera_no, 1])
    clips = [s for s in sources if s.clip]
    source = clips[(camera_no - 1) % len(clips)]
    assert source.clip is not None
    frames = clip_frames(Path(source.clip))
    src_h, src_w = frames[0].shape[:2]
    # gentle zoom: the road must stay in view and vehicles must not get too small
    matrix = _view_matrix(src_w, src_h, rng, width, height, max_zoom=1.3, max_tilt=2.0, max_drop=0.15)
    luts = _colour_luts(rng)
    sigma = float(rng.uniform(2.0, 4.0))
    noise = np.random.default_rng([seed, camera_no, 2]).normal(0.0, sigma, (height + 64, width, 3))
    return Scene(
        camera_no=camera_no,
        base=np.zeros((0, 0, 3), np.uint8),
        noise_pos=np.clip(noise, 0, 255).astype(np.uint8),
        noise_neg=np.clip(-noise, 0, 255).astype(np.uint8),
        sprites=[],
        light_amp=float(rng.uniform(0.03, 0.10)),
        light_period=float(rng.uniform(200, 900)),
        light_phase=float(rng.uniform(0, 2 * np.pi)),
        label=f"CAM {camera_no:02d}",
        clip=source.clip,
        matrix=matrix,
        luts=luts,
        start=int(rng.integers(0, len(frames))),
    )


def clip_index(start: int, frame_index: int, length: int) -> int:
    """Clip frame shown at a camera's ``frame_index``: forward from ``start``, bouncing at both ends."""
    if length <= 1:
        return 0
    period = 2 * (length - 1)
    pos = (start + frame_index) % period
    return pos if pos < length else period - pos


def _crop(photo: np.ndarray, box: Box) -> np.ndarray:
    h, w = photo.shape[:2]
    return photo[int(box[1] * h) : int(box[3] * h), int(box[0] * w) : int(box[2] * w)]


def _viewpoint(photo: np.ndarray, rng: np.random.Generator, out_w: int, out_h: int) -> np.ndarray:
    """Crop at 16:9 with a random zoom, centre and tilt, mirror half the time, resize to out."""
    import cv2

    src_h, src_w = photo.shape[:2]
    matrix = _view_matrix(src_w, src_h, rng, out_w, out_h)
    return cv2.warpAffine(
        photo,
        matrix,
        (out_w, out_h),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REFLECT,
    )


def _view_matrix(
    src_w: int, src_h: int, rng: np.random.Generator, out_w: int, out_h: int, max_zoom: float = 1.5,
    max_tilt: float = 3.0, max_drop: float = 1.0,
) -> np.ndarray:  # fmt: skip
    """Inverse affine map (output pixel -> source pixel) of a random 16:9 view of the source.

    ``max_drop`` limits how far below the top the view may start, as a share of the
    room there is (the road clips have their traffic in the upper part).
    """
    aspect = out_w / out_h
    crop_w = min(src_w, src_h * aspect) / rng.uniform(1.0, max_zoom)
    crop_h = crop_w / aspect
    cx = rng.uniform(crop_w / 2, src_w - crop_w / 2)
    cy = rng.uniform(crop_h / 2, crop_h / 2 + max_drop * (src_h - crop_h))
    angle = np.deg2rad(rng.uniform(-max_tilt, max_tilt))
    scale = crop_w / out_w
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
    flip = -1.0 if rng.random() < 0.5 else 1.0
    # output pixel (u, v) -> source (x, y): centre + R * S * (u - out centre)
    return np.array(
        [
            [flip * cos, -sin, cx - flip * cos * out_w / 2 + sin * out_h / 2],
            [flip * sin, cos, cy - flip * sin * out_w / 2 - cos * out_h / 2],
        ]
    )


def _colour(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-camera white balance, gamma and haze (a lookup table per channel)."""
    return _apply_luts(image, _colour_luts(rng))


def _apply_luts(image: np.ndarray, luts: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.merge([cv2.LUT(image[:, :, c], luts[c]) for c in range(3)])


def _colour_luts(rng: np.random.Generator) -> np.ndarray:
    """``(3, 256)`` uint8 curves: white balance, gamma and haze of one camera."""
    gains = rng.uniform(0.86, 1.14, 3)
    gamma = rng.uniform(0.8, 1.25)
    haze = rng.uniform(0.0, 0.18)
    haze_level = rng.uniform(150, 220)
    ramp = np.arange(256) / 255.0
    curves = []
    for c in range(3):
        curve = (ramp**gamma) * 255.0 * gains[c]
        curve = curve * (1 - haze) + haze_level * haze
        curves.append(np.clip(curve, 0, 255).astype(np.uint8))
    return np.stack(curves)


def _cut_sprite(crop: np.ndarray, width: int, mirror: bool) -> tuple[np.ndarray, np.ndarray]:
    """A vehicle crop resized to ``width`` and a feathered elliptical alpha mask (uint16, 0..256)."""
    import cv2

    height = max(8, int(crop.shape[0] * width / crop.shape[1]))
    crop = cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA)
    if mirror:
        crop = crop[:, ::-1]
    ellipse = np.zeros((height, width), np.float32)
    cv2.ellipse(ellipse, (width // 2, height // 2), (int(width * 0.47), int(height * 0.47)), 0, 0, 360, 1.0, -1)
    soft = cv2.GaussianBlur(ellipse, (0, 0), max(1.0, width / 30))
    alpha = (soft * 256).astype(np.uint16)[:, :, None]
    return np.ascontiguousarray(crop), alpha


def render_frame(scene: Scene, seed: int, frame_index: int, width: int, height: int) -> np.ndarray:
    """Frame ``frame_index`` of a scene as a BGR image."""
    import cv2

    rng = np.random.default_rng([seed, scene.camera_no, 3, frame_index])
    dx, dy = (int(v) for v in rng.integers(-3, 4, 2))
    if scene.clip is not None:
        frame = _footage_frame(scene, frame_index, dx, dy, width, height)
    else:
        frame = np.ascontiguousarray(
            scene.base[_MARGIN + dy : _MARGIN + dy + height, _MARGIN + dx : _MARGIN + dx + width]
        )
    for sprite in scene.sprites:
        _paste(frame, sprite, frame_index)
    light = 1.0 + scene.light_amp * np.sin(2 * np.pi * frame_index / scene.light_period + scene.light_phase)
    light += float(rng.normal(0.0, 0.01))
    frame = cv2.convertScaleAbs(frame, alpha=light, beta=0.0)
    row = int(rng.integers(0, scene.noise_pos.shape[0] - height))
    frame = cv2.add(frame, scene.noise_pos[row : row + height])
    frame = cv2.subtract(frame, scene.noise_neg[row : row + height])
    text = f"{scene.label}  #{frame_index:05d}"
    cv2.putText(frame, text, (24, 44), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 4, cv2.LINE_AA)
    cv2.putText(frame, text, (24, 44), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2, cv2.LINE_AA)
    return frame


def _footage_frame(scene: Scene, frame_index: int, dx: int, dy: int, width: int, height: int) -> np.ndarray:
    """The clip frame this camera shows now, through its view (shifted by the shake) and colours."""
    import cv2

    from ipsp.preprocessing.footage import clip_frames

    assert scene.clip is not None and scene.matrix is not None and scene.luts is not None
    frames = clip_frames(Path(scene.clip))
    source = frames[clip_index(scene.start, frame_index, len(frames))]
    matrix = scene.matrix.copy()
    matrix[:, 2] += matrix[:, :2] @ np.array([dx, dy], np.float64)  # the shake moves the view
    view = cv2.warpAffine(
        source, matrix, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT
    )
    return _apply_luts(view, scene.luts)


def _paste(frame: np.ndarray, sprite: Sprite, frame_index: int) -> None:
    width = frame.shape[1]
    sh, sw = sprite.image.shape[:2]
    span = width + sw
    x = int((sprite.phase + sprite.speed * frame_index) % span) - sw
    left, right = max(0, x), min(width, x + sw)
    if right <= left:
        return
    patch = sprite.image[:, left - x : right - x].astype(np.uint16)
    alpha = sprite.alpha[:, left - x : right - x]
    region = frame[sprite.y : sprite.y + sh, left:right]
    blended = (patch * alpha + region.astype(np.uint16) * (256 - alpha)) >> 8
    frame[sprite.y : sprite.y + sh, left:right] = blended.astype(np.uint8)


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    """Baseline JPEG bytes (OpenCV's libjpeg-turbo, deterministic for a given build)."""
    import cv2

    ok, buffer = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buffer.tobytes()


# --- the feed ---------------------------------------------------------------------


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
