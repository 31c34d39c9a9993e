"""Detection: one ``Detector`` (ONNX Runtime or Ultralytics backend), traffic metrics, model registry.

Public API (what the streaming job and the CLI use)::

    from ipsp.detection import load_detector, traffic_summary, load_cameras_config

    detector = load_detector("centernet")              # path, name[:version], shipped name
    results = detector.detect_bytes([jpeg_bytes, ...])  # Detections | FrameError per frame
    counts, density, status = traffic_summary(results[0], "cam_01", cameras_cfg=cfg)
    records = results[0].to_records(cfg.full_class_map())   # contract detections

Names are imported lazily (PEP 562) so that ``ipsp --help``, which imports the CLI
module of this package, does not pay for NumPy and OpenCV. Nothing here imports
torch; the Ultralytics backend does, only when chosen.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Detector": "detector",
    "ModelInfo": "detector",
    "FrameError": "errors",
    "ModelError": "errors",
    "load_detector": "loader",
    "DEFAULT_CLASS_MAP": "metrics",
    "CamerasConfig": "metrics",
    "Thresholds": "metrics",
    "TrafficSummary": "metrics",
    "count_traffic": "metrics",
    "density_percent": "metrics",
    "load_cameras_config": "metrics",
    "traffic_status": "metrics",
    "traffic_summary": "metrics",
    "ModelCard": "registry",
    "ModelRegistry": "registry",
    "Detections": "types",
    "StepTimings": "types",
}

__all__ = [
    "DEFAULT_CLASS_MAP",
    "CamerasConfig",
    "Detections",
    "Detector",
    "FrameError",
    "ModelCard",
    "ModelError",
    "ModelInfo",
    "ModelRegistry",
    "StepTimings",
    "Thresholds",
    "TrafficSummary",
    "count_traffic",
    "density_percent",
    "load_cameras_config",
    "load_detector",
    "traffic_status",
    "traffic_summary",
]

if TYPE_CHECKING:
    from ipsp.detection.detector import Detector, ModelInfo
    from ipsp.detection.errors import FrameError, ModelError
    from ipsp.detection.loader import load_detector
    from ipsp.detection.metrics import (
        DEFAULT_CLASS_MAP,
        CamerasConfig,
        Thresholds,
        TrafficSummary,
        count_traffic,
        density_percent,
        load_cameras_config,
        traffic_status,
        traffic_summary,
    )
    from ipsp.detection.registry import ModelCard, ModelRegistry
    from ipsp.detection.types import Detections, StepTimings


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ipsp.detection' has no attribute {name!r}")
    return getattr(importlib.import_module(f"ipsp.detection.{module}"), name)
