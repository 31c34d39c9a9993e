"""Detector throughput per backend and batch size on synthetic 1280x720 JPEG frames.

Frames are made from a real photo (the bus photo in the ultralytics wheel):
random 16:9 crops, flips and brightness changes, resized to 1280x720 and encoded
as JPEG (quality 90), so decode cost and image content are realistic.

Models measured (every one offline):
- ``centernet`` (shipped ONNX, 512x512, fixed batch 1: larger batches run frame by frame);
- ``yolov8n-640``: YOLOv8n built from its YAML (random weights: only the cost is
  meaningful), exported to ONNX with a dynamic batch axis, run by ONNX Runtime, and
  the same checkpoint run by the Ultralytics backend (PyTorch; CUDA when present).

Each row: frames/s over whole ``detect_bytes`` calls (decode + resize + infer + decode
+ NMS, wall clock) and the mean milliseconds per frame of each step. Writes
``benchmarks/results/detect.json``; ``make bench-detect`` runs it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ipsp.detection.detector import Detector, open_backend

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "detect.json"
CENTERNET = REPO / "4_model_training" / "models" / "centernet.onnx"


def say(text: str) -> None:
    """A timestamped progress line."""
    print(f"[bench-detect {datetime.now(UTC):%H:%M:%S}] {text}", flush=True)


def bus_photo() -> Path:
    """The bus photo from the installed ultralytics wheel (located, not imported)."""
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("bench-detect needs the 'train' extra (ultralytics): pip install -e '.[train]'")
    return Path(next(iter(spec.submodule_search_locations))) / "assets" / "bus.jpg"


def make_frames(count: int, seed: int = 0) -> list[bytes]:
    """``count`` distinct 1280x720 JPEGs: jittered 16:9 crops of the photo."""
    photo = cv2.imread(str(bus_photo()))
    h, w = photo.shape[:2]
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        cw = int(w * rng.uniform(0.8, 1.0))
        ch = min(int(cw * 9 / 16), h)
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = cv2.resize(photo[y : y + ch, x : x + cw], (1280, 720), interpolation=cv2.INTER_LINEAR)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crop = np.clip(crop.astype(np.float32) * rng.uniform(0.8, 1.2), 0, 255).astype(np.uint8)
        frames.append(cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    return frames


def yolo_models(folder: Path) -> tuple[Path, Path]:
    """A YOLOv8n checkpoint built from its YAML (random weights) and its ONNX export, cached in ``folder``."""
    pt, onnx = folder / "yolov8n-640.pt", folder / "yolov8n-640.onnx"
    if pt.is_file() and onnx.is_file():
        return pt, onnx
    from ipsp.detection.ultralytics_backend import import_ultralytics
    from ipsp.training.trainer import add_decoder_metadata

    ultralytics = import_ultralytics()
    folder.mkdir(parents=True, exist_ok=True)
    model = ultralytics.YOLO("yolov8n.yaml", task="detect")
    model.model.args = {"imgsz": 640}
    model.save(str(pt))
    exported = Path(ultralytics.YOLO(str(pt)).export(format="onnx", imgsz=640, dynamic=True, simplify=False))
    exported.replace(onnx)
    add_decoder_metadata(onnx)
    return pt, onnx


def measure(detector: Detector, frames: list[bytes], batch: int, seconds: float) -> dict[str, float]:
    """Run whole batches until ``seconds`` passed (at least one pass over the frames)."""
    detector.batch_size = batch
    detector.detect_bytes(frames[: batch * 2])  # warm-up: first runs allocate and tune
    done, started = 0, time.perf_counter()
    detector.total_timings.frames = 0
    timings = None
    while True:
        detector.detect_bytes(frames)
        t = detector.last_timings
        if timings is None:
            timings = t
        else:
            timings.add(t)
        done += len(frames)
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            break
    assert timings is not None
    per = timings.per_frame()
    return {
        "fps": round(done / elapsed, 2),
        "pre_ms": round(per["pre_ms"], 2),
        "infer_ms": round(per["infer_ms"], 2),
        "post_ms": round(per["post_ms"], 2),
        "frames": done,
        "seconds": round(elapsed, 2),
    }


def main(argv: list[str] | None = None) -> None:
    """Build the frames and models, measure every (backend, model, batch), print and write the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=48, help="distinct frames per pass")
    parser.add_argument("--batches", default="1,8,16", help="batch sizes")
    parser.add_argument("--seconds", type=float, default=6.0, help="minimum measuring time per row")
    parser.add_argument("--threads", type=int, default=0, help="inference threads (0: every core)")
    parser.add_argument("--device", default="auto", help="ultralytics backend device: cpu, cuda, auto")
    parser.add_argument("--skip", default="", help="comma list of row names to skip, e.g. ultralytics")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    os.environ.setdefault("IPSP_HOME", str(REPO / ".local"))
    skip = {s for s in args.skip.split(",") if s}
    load_before = os.getloadavg()

    say(f"making {args.frames} 1280x720 frames")
    frames = make_frames(args.frames)
    say("preparing models")
    pt, onnx = yolo_models(Path(os.environ["IPSP_HOME"]) / "bench" / "models")
    setups: list[tuple[str, str, Path, str]] = [
        ("onnx", "centernet", CENTERNET, "cpu"),
        ("onnx", "yolov8n-640", onnx, "cpu"),
        ("ultralytics", "yolov8n-640", pt, args.device),
    ]
    rows: list[dict[str, Any]] = []
    for backend, name, path, device in setups:
        if backend in skip or name in skip:
            continue
        detector = Detector(open_backend(path, backend, threads=args.threads, device=device), score_threshold=0.3)
        threads = getattr(detector.backend, "threads", args.threads)
        where = getattr(detector.backend, "device", device)
        for batch in (int(b) for b in args.batches.split(",")):
            row = {"backend": backend, "model": name, "batch": batch, **measure(detector, frames, batch, args.seconds)}
            row.update(threads=threads, device=where)
            rows.append(row)
            say(
                f"{backend:<12} {name:<12} batch {batch:>2}: {row['fps']:7.1f} frames/s  "
                f"pre {row['pre_ms']:.1f}  infer {row['infer_ms']:.1f}  post {row['post_ms']:.1f} ms/frame"
            )
    report = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "cores_usable": len(os.sched_getaffinity(0)),
            "platform": platform.platform(),
            # other work on the machine shows here: figures are only comparable at similar load
            "loadavg_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        },
        "frames": {"count": args.frames, "size": "1280x720", "format": "jpeg q90", "source": "ultralytics bus.jpg"},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    say(f"wrote {args.out}")


if __name__ == "__main__":
    main()
