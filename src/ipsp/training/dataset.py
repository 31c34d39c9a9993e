"""A YOLO-format labelled dataset read for fine-tuning, split by time, fingerprinted.

A dataset is a ``data.yaml`` (Ultralytics style: ``names``, ``train``, optional
``path``) whose ``train`` folder holds the images and whose sibling ``labels``
folder holds one ``class cx cy w h`` line per object (normalised). Frames of one
camera are consecutive video frames, so neighbours are near-copies: the held-out
part is the *latest* frames by number (``cam_01_00998.jpg`` -> 998), never a
random sample. Only ``train`` is read; other splits a data.yaml may name stay
unread (a source's reserved frames are its owner's check, not ours).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from ipsp.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
#: the trailing number of a frame's file name (its time order within a camera)
FRAME_NUMBER = re.compile(r"(\d+)$")


@dataclass(frozen=True)
class Sample:
    """One labelled frame: image path, boxes ``(N, 4)`` xyxy in 0..1 and class ids ``(N,)``."""

    image: Path
    boxes: np.ndarray
    classes: np.ndarray

    @property
    def camera(self) -> str:
        """Camera id from the name (``cam_01_00544`` -> ``cam_01``; the whole stem when unnumbered)."""
        stem = self.image.stem
        match = FRAME_NUMBER.search(stem)
        return stem[: match.start()].rstrip("_-") if match else stem

    @property
    def frame_number(self) -> int:
        """Frame number from the name, ``-1`` when it has none."""
        match = FRAME_NUMBER.search(self.image.stem)
        return int(match.group(1)) if match else -1


@dataclass(frozen=True)
class Dataset:
    """Every labelled frame of a data.yaml, its class names and its fingerprint."""

    config: Path
    names: dict[int, str]
    samples: list[Sample]

    def fingerprint(self) -> str:
        """sha256 over the sorted ``relative path + file sha256`` of every image and label file read."""
        digest = hashlib.sha256()
        root = self.config.parent
        for sample in sorted(self.samples, key=lambda s: s.image.name):
            for path in (sample.image, label_path(sample.image)):
                rel = path.relative_to(root) if path.is_relative_to(root) else path
                digest.update(f"{rel}\0{_file_sha256(path)}\n".encode())
        return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "absent"


def label_path(image: Path) -> Path:
    """The label file of an image: the last ``images`` folder of its path replaced by ``labels``."""
    parts = list(image.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def parse_label(text: str, nc: int, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (xyxy in 0..1, clipped) and class ids of one YOLO label file's text."""
    boxes, classes = [], []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            raise UserError(f"{source}:{number}: expected 'class cx cy w h', got {line!r}")
        try:
            cls, cx, cy, w, h = int(fields[0]), *map(float, fields[1:])
        except ValueError:
            raise UserError(f"{source}:{number}: not numbers: {line!r}") from None
        if not 0 <= cls < nc:
            raise UserError(f"{source}:{number}: class {cls} is not one of the {nc} classes in data.yaml")
        if w <= 0 or h <= 0:
            continue  # a degenerate box teaches nothing
        boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        classes.append(cls)
    arr = np.clip(np.asarray(boxes, np.float32).reshape(-1, 4), 0.0, 1.0)
    return arr, np.asarray(classes, np.int64)


def read_names(config: dict[str, object], source: str) -> dict[int, str]:
    """Class names from a data.yaml's ``names`` (a list or an ``{id: name}`` mapping)."""
    names = config.get("names")
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not names:
        raise UserError(f"{source}: no class 'names' in the dataset config")
    return {int(k): str(v) for k, v in names.items()}


def load_dataset(config_path: Path) -> Dataset:
    """Read every image of the ``train`` folder and its labels (a frame without a label file has no objects)."""
    if not config_path.is_file():
        raise UserError(f"dataset config {config_path} does not exist (a YOLO data.yaml)")
    try:
        config = yaml.safe_load(config_path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{config_path}: not valid YAML ({exc})") from None
    names = read_names(config, str(config_path))
    root = config_path.parent / str(config.get("path", "."))
    folder = root / str(config.get("train", "images"))
    if not folder.is_dir():
        raise UserError(f"{config_path}: train folder {folder} does not exist")
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise UserError(f"{config_path}: no images in {folder}")
    samples = []
    for image in images:
        label = label_path(image)
        text = label.read_text() if label.is_file() else ""
        boxes, classes = parse_label(text, len(names), str(label))
        samples.append(Sample(image, boxes, classes))
    return Dataset(config_path, names, samples)


def split_by_time(samples: list[Sample], holdout: float) -> tuple[list[Sample], list[Sample]]:
    """Hold out the latest ``holdout`` share of each camera's frames (by frame number) for validation."""
    if not 0.0 < holdout < 1.0:
        raise UserError(f"the held-out share must be between 0 and 1, got {holdout}")
    by_camera: dict[str, list[Sample]] = {}
    for sample in samples:
        by_camera.setdefault(sample.camera, []).append(sample)
    train, held = [], []
    for frames in by_camera.values():
        frames.sort(key=lambda s: (s.frame_number, s.image.name))
        cut = len(frames) - max(1, round(len(frames) * holdout))
        train.extend(frames[:cut])
        held.extend(frames[cut:])
    if not train:
        raise UserError(f"only {len(samples)} frames: nothing left to train on after holding out {holdout:.0%}")
    return train, held
