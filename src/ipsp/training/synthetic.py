"""A small synthetic, exactly labelled traffic-like dataset in YOLO format.

No real labelled traffic set is reachable here, so the train -> export -> push ->
detect loop is tested on drawn scenes: a grey road with lane marks and noise, and
top-down "vehicles" of the four traffic classes, each with its own shape and
colour family so a tiny model can learn them in a few epochs:

- ``motorbike``: small ellipse with a rider dot,
- ``car``: rounded rectangle with a windscreen,
- ``bus``: long rectangle with a row of windows,
- ``truck``: cargo box plus a separate cab.

Boxes are exact (computed from the drawn geometry). Layout (what Ultralytics reads)::

    <root>/images/{train,val}/*.jpg   <root>/labels/{train,val}/*.txt   <root>/data.yaml

Each label line is ``class cx cy w h`` normalised to 0..1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

CLASS_NAMES: tuple[str, ...] = ("motorbike", "car", "bus", "truck")

# (width, height) ranges as fractions of the image side, per class
SIZES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "motorbike": ((0.08, 0.12), (0.12, 0.18)),
    "car": ((0.14, 0.22), (0.22, 0.32)),
    "bus": ((0.18, 0.24), (0.50, 0.70)),
    "truck": ((0.18, 0.26), (0.38, 0.52)),
}
# BGR colour families, so colour is a cue as well as shape
COLOURS: dict[str, tuple[int, int, int]] = {
    "motorbike": (40, 160, 40),
    "car": (40, 40, 200),
    "bus": (30, 200, 230),
    "truck": (200, 90, 30),
}


@dataclass(frozen=True)
class Box:
    """One labelled object in pixels (top-left x, y, width, height) and its class id."""

    cls: int
    x: int
    y: int
    w: int
    h: int

    def yolo(self, size: int) -> str:
        """The YOLO label line (class, normalised centre and size)."""
        cx, cy = (self.x + self.w / 2) / size, (self.y + self.h / 2) / size
        return f"{self.cls} {cx:.6f} {cy:.6f} {self.w / size:.6f} {self.h / size:.6f}"

    def overlaps(self, other: Box, margin: int = 2) -> bool:
        """True when the two boxes touch (with a small margin)."""
        return not (
            self.x + self.w + margin <= other.x
            or other.x + other.w + margin <= self.x
            or self.y + self.h + margin <= other.y
            or other.y + other.h + margin <= self.y
        )


def _jitter(rng: np.random.Generator, colour: tuple[int, int, int], amount: int = 35) -> tuple[int, int, int]:
    c = np.clip(np.array(colour) + rng.integers(-amount, amount + 1, 3), 0, 255)
    return int(c[0]), int(c[1]), int(c[2])


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A grey road with dashed lane marks, a lighting gradient and sensor noise."""
    base = int(rng.integers(70, 130))
    img = np.full((size, size, 3), base, np.uint8)
    lanes = int(rng.integers(2, 5))
    for i in range(1, lanes):
        x = int(size * i / lanes)
        for y in range(0, size, 16):
            cv2.line(img, (x, y), (x, y + 8), (220, 220, 220), 1)
    gradient = np.linspace(-25, 25, size, dtype=np.float32)[None, :, None] * rng.uniform(-1, 1)
    noise = rng.normal(0, 8, img.shape).astype(np.float32)
    return np.clip(img.astype(np.float32) + gradient + noise, 0, 255).astype(np.uint8)


def vehicle(cls: int, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """A ``h x w`` patch with one top-down vehicle drawn upright on black (black = transparent)."""
    name = CLASS_NAMES[cls]
    colour = _jitter(rng, COLOURS[name])
    dark = (25, 25, 25)
    img = np.zeros((h, w, 3), np.uint8)
    x1, y1 = w - 1, h - 1
    if name == "motorbike":
        cv2.ellipse(img, (((w - 1) / 2, (h - 1) / 2), (w - 1, h - 1), 0), colour, -1)
        cv2.circle(img, (w // 2, h // 2), max(w // 5, 1), dark, -1)
    elif name == "car":
        cv2.rectangle(img, (0, 0), (x1, y1), colour, -1)
        cv2.rectangle(img, (w // 6, h // 5), (x1 - w // 6, h // 3), dark, -1)
    elif name == "bus":
        cv2.rectangle(img, (0, 0), (x1, y1), colour, -1)
        step = max(h // 8, 3)
        for y in range(step // 2, y1 - step // 2, step):
            cv2.rectangle(img, (2, y), (max(w // 5, 2), y + step // 2), dark, -1)
            cv2.rectangle(img, (x1 - max(w // 5, 2), y), (x1 - 2, y + step // 2), dark, -1)
    else:  # truck: a narrower cab, a gap, then the grey cargo box
        cab = max(h // 4, 3)
        cv2.rectangle(img, (w // 8, 0), (x1 - w // 8, cab), colour, -1)
        cv2.rectangle(img, (0, cab + 2), (x1, y1), _jitter(rng, (170, 170, 170), 20), -1)
    return img


def scene(rng: np.random.Generator, size: int, max_objects: int) -> tuple[np.ndarray, list[Box]]:
    """One image and its exact boxes (objects never overlap)."""
    img = background(rng, size)
    boxes: list[Box] = []
    wanted = int(rng.integers(1, max_objects + 1))
    for _ in range(wanted * 10):  # rejection sampling for free space
        if len(boxes) == wanted:
            break
        cls = int(rng.integers(len(CLASS_NAMES)))
        (wmin, wmax), (hmin, hmax) = SIZES[CLASS_NAMES[cls]]
        w = max(int(rng.uniform(wmin, wmax) * size), 4)
        h = max(int(rng.uniform(hmin, hmax) * size), 4)
        if rng.random() < 0.5:  # half of them drive across the image
            w, h = h, w
        box = Box(cls, int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1)), w, h)
        if not any(box.overlaps(b) for b in boxes):
            boxes.append(box)
    for box in boxes:
        upright = box.h >= box.w
        patch = vehicle(box.cls, box.w, box.h, rng) if upright else np.rot90(vehicle(box.cls, box.h, box.w, rng))
        region = img[box.y : box.y + box.h, box.x : box.x + box.w]
        mask = patch.any(axis=2)
        region[mask] = patch[mask]
    return img, boxes


def write_dataset(
    root: Path, train: int = 160, val: int = 40, size: int = 160, max_objects: int = 5, seed: int = 0
) -> Path:
    """Write a YOLO-format dataset under ``root``; return the path of its ``data.yaml``."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("val", val)):
        images, labels = root / "images" / split, root / "labels" / split
        images.mkdir(parents=True, exist_ok=True)
        labels.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            img, boxes = scene(rng, size, max_objects)
            stem = f"{split}_{i:05d}"
            cv2.imwrite(str(images / f"{stem}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
            (labels / f"{stem}.txt").write_text("".join(b.yolo(size) + "\n" for b in boxes))
    data = root / "data.yaml"
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(CLASS_NAMES))
    data.write_text(f"path: {root.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return data


def read_labels(label_file: Path, size: int) -> list[Box]:
    """Boxes of one label file back in pixels (tests compare detections with them)."""
    boxes = []
    for line in label_file.read_text().splitlines():
        cls, cx, cy, w, h = line.split()
        bw, bh = float(w) * size, float(h) * size
        x, y = float(cx) * size - bw / 2, float(cy) * size - bh / 2
        boxes.append(Box(int(cls), round(x), round(y), round(bw), round(bh)))
    return boxes
