"""Step 3 of detection: raw model output -> boxes, scores, classes (NumPy only).

Two output layouts are understood:

- ``yolov8``: YOLOv8 / YOLO11 heads, ``(B, 4 + nc, N)`` with centre-x, centre-y,
  width, height in input pixels followed by one score per class; needs a
  confidence filter and a same-class NMS.
- ``centernet`` and ``end2end``: ``(B, K, 6)`` rows of x1, y1, x2, y2 (input pixels),
  score, class id, already top-K; CenterNet still needs a same-class NMS to drop
  duplicates, NMS-free (end2end) heads do not.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ipsp.detection.errors import ModelError

#: class offset for batched same-class NMS: boxes of different classes never overlap
CLASS_OFFSET = 7680.0
#: candidates kept before NMS, highest scores first (bounds NMS cost on noisy frames)
MAX_CANDIDATES = 30000

Boxes = tuple[np.ndarray, np.ndarray, np.ndarray]


def iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with each of ``boxes``."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = (x2 - x1).clip(min=0) * (y2 - y1).clip(min=0)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy NMS; returns kept indices, highest score first."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        if order.size == 1:
            break
        rest = order[1:]
        order = rest[iou_one_to_many(boxes[best], boxes[rest]) <= iou]
    return np.asarray(keep, np.int64)


def class_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float, max_det: int) -> np.ndarray:
    """Same-class NMS in one pass by shifting each class's boxes apart; returns kept indices."""
    if iou >= 1.0 or len(boxes) == 0:
        return np.argsort(-scores, kind="stable")[:max_det]
    shifted = boxes + (classes.astype(np.float32) * CLASS_OFFSET)[:, None]
    return nms(shifted, scores, iou)[:max_det]


def decode_yolov8(out: np.ndarray, conf: float, iou: float, max_det: int, nc: int) -> list[Boxes]:
    """Decode a ``(B, 4 + nc, N)`` YOLOv8/YOLO11 head output, per image."""
    if out.ndim != 3 or out.shape[1] != 4 + nc:
        raise ModelError(
            f"YOLO output has shape {tuple(out.shape)}, expected (batch, 4 + {nc} classes, anchors); "
            "the class names in the metadata do not match the head"
        )
    results = []
    for pred in out:
        scores_all = pred[4:]
        cls = scores_all.argmax(axis=0)
        score = scores_all[cls, np.arange(pred.shape[1])]
        idx = np.nonzero(score > conf)[0]
        if idx.size > MAX_CANDIDATES:
            idx = idx[np.argsort(-score[idx])[:MAX_CANDIDATES]]
        cx, cy, w, h = pred[0, idx], pred[1, idx], pred[2, idx], pred[3, idx]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        keep = class_nms(boxes, score[idx], cls[idx], iou, max_det)
        results.append((boxes[keep], score[idx][keep], cls[idx][keep]))
    return results


def decode_topk(out: np.ndarray, conf: float, iou: float, max_det: int) -> list[Boxes]:
    """Decode ``(B, K, 6)`` rows of x1, y1, x2, y2, score, class (CenterNet, NMS-free heads)."""
    if out.ndim != 3 or out.shape[2] != 6:
        raise ModelError(f"detector output has shape {tuple(out.shape)}, expected (batch, K, 6)")
    results = []
    for rows in out:
        rows = rows[rows[:, 4] > conf]
        boxes = rows[:, :4].astype(np.float32)
        cls = rows[:, 5].round().astype(np.int64)
        keep = class_nms(boxes, rows[:, 4], cls, iou, max_det)
        results.append((boxes[keep], rows[keep, 4].astype(np.float32), cls[keep]))
    return results


#: NanoDet head: strides and the bins of each box side's distribution (GFL, reg_max 10)
NANODET_STRIDES = (8, 16, 32)
NANODET_BINS = 11


@lru_cache(maxsize=4)
def nanodet_grid(cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Cell centres ``(N, 2)`` and strides ``(N,)`` of the NanoDet head for ``cells`` rows in total."""
    # cells = sum over strides of (side / stride)^2: solve for the input side
    unit = sum((1 / s) ** 2 for s in NANODET_STRIDES)
    side = round((cells / unit) ** 0.5)
    centres, strides = [], []
    for stride in NANODET_STRIDES:
        n = side // stride
        ys, xs = np.divmod(np.arange(n * n), n)
        centres.append(np.stack([(xs + 0.5) * stride, (ys + 0.5) * stride], axis=1))
        strides.append(np.full(n * n, stride, np.float32))
    centre, stride_all = np.concatenate(centres).astype(np.float32), np.concatenate(strides)
    if len(centre) != cells:
        raise ModelError(f"NanoDet output has {cells} cells, which no square input with strides 8/16/32 gives")
    return centre, stride_all


def decode_nanodet(out: np.ndarray, conf: float, iou: float, max_det: int, nc: int) -> list[Boxes]:
    """Decode a ``(B, N, nc + 44)`` NanoDet output: sigmoid scores, then 4 sides x 11 bin logits.

    Each side's distance from the cell centre is the expected bin (softmax over the
    bins) times the stride, as the GFL head was trained.
    """
    if out.ndim != 3 or out.shape[2] != nc + 4 * NANODET_BINS:
        raise ModelError(f"NanoDet output has shape {tuple(out.shape)}, expected (batch, cells, {nc} + 44)")
    centre, stride = nanodet_grid(out.shape[1])
    results = []
    for pred in out:
        scores = pred[:, :nc]
        cls = scores.argmax(axis=1)
        score = scores[np.arange(len(pred)), cls]
        idx = np.nonzero(score > conf)[0]
        if idx.size > MAX_CANDIDATES:
            idx = idx[np.argsort(-score[idx])[:MAX_CANDIDATES]]
        logits = pred[idx, nc:].reshape(-1, 4, NANODET_BINS)
        prob = np.exp(logits - logits.max(axis=2, keepdims=True))
        prob /= prob.sum(axis=2, keepdims=True)
        dist = (prob * np.arange(NANODET_BINS, dtype=np.float32)).sum(axis=2) * stride[idx, None]
        c = centre[idx]
        boxes = np.concatenate([c - dist[:, :2], c + dist[:, 2:]], axis=1).astype(np.float32)
        keep = class_nms(boxes, score[idx], cls[idx], iou, max_det)
        results.append((boxes[keep], score[idx][keep].astype(np.float32), cls[idx][keep]))
    return results


def decode(out: np.ndarray, decoder: str, conf: float, iou: float, max_det: int, nc: int) -> list[Boxes]:
    """Dispatch on the decoder named by the model's metadata."""
    if decoder == "yolov8":
        return decode_yolov8(out, conf, iou, max_det, nc)
    if decoder == "nanodet":
        return decode_nanodet(out, conf, iou, max_det, nc)
    if decoder in ("centernet", "end2end"):
        return decode_topk(out, conf, iou, max_det)
    raise ModelError(f"unknown decoder {decoder!r}")
