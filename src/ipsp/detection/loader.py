"""Build a ready ``Detector`` from settings and a model reference (path, ``name[:version]``)."""

from __future__ import annotations

from pathlib import Path

from ipsp.config import Settings, get_settings
from ipsp.detection.detector import Detector, ModelInfo, open_backend
from ipsp.detection.registry import resolve_model
from ipsp.storage import sha256_file


def load_detector(
    model: str | Path | None = None,
    settings: Settings | None = None,
    *,
    backend: str = "auto",
    device: str = "auto",
    threads: int | None = None,
    batch_size: int | None = None,
    score_threshold: float | None = None,
    iou_threshold: float | None = None,
    input_size: str | None = None,
) -> Detector:
    """Load a detector once (the streaming job keeps one per Python worker).

    ``model`` defaults to ``IPSP_MODEL``; it is a file path, a registry ``name[:version]``
    (pulled, sha256-verified, cached) or the name of a shipped model. Explicit
    arguments override the settings (threads: ``IPSP_INTRA_OP_THREADS``, 0 = the
    cores this process may use; input size: ``IPSP_INPUT_SIZE``, ``WIDTHxHEIGHT``,
    for models whose graph leaves the size free).
    """
    s = settings or get_settings()
    path, card = resolve_model(model or s.model, s)
    chosen = card.backend if card is not None and backend == "auto" else backend
    engine = open_backend(path, chosen, threads=s.intra_op_threads if threads is None else threads, device=device)
    size = s.input_size if input_size is None else input_size
    if not size and input_size is None and card is not None:
        size = str(card.provenance.get("input_size", ""))  # the run size a shipped model's record names
    if size:
        width, height = (int(v) for v in size.lower().split("x"))
        engine.set_input_size((height, width))
    if card is not None:
        info = ModelInfo(card.name, card.version, card.sha256, path)
    else:
        info = ModelInfo(path.stem, "file", sha256_file(path), path)
    return Detector(
        engine,
        score_threshold=s.score_threshold if score_threshold is None else score_threshold,
        iou_threshold=iou_threshold,
        batch_size=batch_size or s.batch_size,
        model_info=info,
    )
