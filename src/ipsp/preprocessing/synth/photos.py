"""The photos feed, the offline fallback: vehicles cut from shipped photos slide along lanes."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

from ipsp.errors import UserError
from ipsp.preprocessing.synth.scene import MARGIN, Box, Scene, Source, Sprite, apply_luts, colour_luts, view_matrix


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


def build_photo_scene(sources: list[Source], seed: int, camera_no: int, width: int, height: int) -> Scene:
    """Camera ``camera_no`` of the photos feed: viewpoint, colour, noise bank, traffic lanes."""
    rng = np.random.default_rng([seed, camera_no, 1])
    scenes = [s for s in sources if s.scene is not None]
    order = np.random.default_rng([seed, 0]).permutation(len(scenes))
    source = scenes[int(order[(camera_no - 1) % len(scenes)])]
    assert source.scene is not None
    photo = _crop(load_source(source.name), source.scene)
    base = _viewpoint(photo, rng, width + 2 * MARGIN, height + 2 * MARGIN)
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


def photo_frame(scene: Scene, dx: int, dy: int, width: int, height: int) -> np.ndarray:
    """The camera's fixed view, shifted by the shake."""
    return np.ascontiguousarray(scene.base[MARGIN + dy : MARGIN + dy + height, MARGIN + dx : MARGIN + dx + width])


def _crop(photo: np.ndarray, box: Box) -> np.ndarray:
    h, w = photo.shape[:2]
    return photo[int(box[1] * h) : int(box[3] * h), int(box[0] * w) : int(box[2] * w)]


def _viewpoint(photo: np.ndarray, rng: np.random.Generator, out_w: int, out_h: int) -> np.ndarray:
    """Crop at 16:9 with a random zoom, centre and tilt, mirror half the time, resize to out."""
    import cv2

    src_h, src_w = photo.shape[:2]
    matrix = view_matrix(src_w, src_h, rng, out_w, out_h)
    return cv2.warpAffine(
        photo,
        matrix,
        (out_w, out_h),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REFLECT,
    )


def _colour(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-camera white balance, gamma and haze (a lookup table per channel)."""
    return apply_luts(image, colour_luts(rng))


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


def paste_sprite(frame: np.ndarray, sprite: Sprite, frame_index: int) -> None:
    """Blend ``sprite`` into ``frame`` where its lane puts it at ``frame_index``."""
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
