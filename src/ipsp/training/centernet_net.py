"""The shipped CenterNet as a trainable PyTorch network, its training targets, loss and ONNX export.

The shipped ``centernet.onnx`` (MobileNetV3 + CenterNet head, COCO-80, converted from
TFJS) is the pretrained starting point. Its graph is cut to the two head outputs and
converted with ``onnx2torch``:

- ``logits`` ``(B, C, H/4, W/4)``: class heatmap before the sigmoid;
- ``ltrb`` ``(B, 4, H/4, W/4)``: distances (input pixels) from the cell's point
  ``(4 * col, 4 * row)`` to the box's left, top, right and bottom sides, which is how
  the original graph decodes its boxes.

Three edits make it trainable at any batch and size: the input becomes NCHW (the
first transpose is dropped), the squeeze-excite reshapes get a free batch axis
(``[1, C, 1, 1]`` -> ``[-1, C, 1, 1]``), and the class head keeps only the pointwise
rows of the COCO classes the new classes start from (motorcycle, car, bus, truck).
The TF graph upsamples with ``asymmetric`` linear interpolation, which PyTorch lacks
(``onnx2torch`` warns and approximates it, shifting the heatmap by up to 0.47):
those three modules are replaced by an exact 2x version, so training starts from the
very outputs the shipped model gives.

The export wraps the trained network with the decode the detector expects
(``ipsp.decoder=centernet``: top-K rows of x1, y1, x2, y2, score, class), with
dynamic batch, height and width. Only the ``train`` extra (torch, onnx, onnx2torch) imports this.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper
from torch import nn

from ipsp.errors import UserError
from ipsp.training.targets import STRIDE

__all__ = ["STRIDE", "build_network", "export_onnx", "focal_loss", "giou_loss", "to_tensor"]

#: the original graph scales its size head by this before decoding
LTRB_SCALE = 16.0
TOPK = 100
#: COCO ids of the shipped model's classes that seed each traffic class's heatmap channel
COCO_SEED = {"motorbike": 3, "motorcycle": 3, "car": 2, "bus": 5, "truck": 7, "bicycle": 1, "person": 0}
LOGITS_OUTPUT = "tower_0/CenternetHead/centernet_cls_output/BiasAdd_BiasAdd__107:0"
LTRB_OUTPUT = "tower_0/mul:0"
CLS_WEIGHTS = "CenternetHead/centernet_cls_output/pointwise_weights:0"
CLS_BIASES = "CenternetHead/centernet_cls_output/biases:0"


def seed_rows(names: Mapping[int, str]) -> list[int]:
    """COCO channel each new class starts from, in class-id order; refuses a class with no COCO seed."""
    rows = []
    for cls in sorted(names):
        name = names[cls].lower()
        if name not in COCO_SEED:
            raise UserError(f"class {name!r} has no COCO class to start from (known: {', '.join(sorted(COCO_SEED))})")
        rows.append(COCO_SEED[name])
    return rows


def trunk_graph(path: Path, rows: Sequence[int]) -> onnx.ModelProto:
    """The shipped graph cut to its two head outputs, NCHW input, free batch, class head reduced to ``rows``."""
    model = onnx.load(str(path))
    graph = model.graph
    init = {t.name: t for t in graph.initializer}
    first = graph.node[0]
    if first.op_type != "Transpose" or CLS_WEIGHTS not in init:
        raise UserError(f"{path}: not the shipped CenterNet graph this trainer knows")
    for node in graph.node:
        node.input[:] = ["images" if name == first.output[0] else name for name in node.input]
        if node.op_type == "Reshape" and node.input[1] in init:
            shape = numpy_helper.to_array(init[node.input[1]])
            if shape.size == 4 and shape[0] == 1:
                free = shape.copy()
                free[0] = -1
                init[node.input[1]].CopyFrom(numpy_helper.from_array(free.astype(np.int64), node.input[1]))
    graph.node.remove(first)
    for key in (CLS_WEIGHTS, CLS_BIASES):
        kept = numpy_helper.to_array(init[key])[list(rows)]
        init[key].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(kept), key))
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, ["N", 3, "H", "W"]))
    del graph.output[:]
    for name, channels in ((LOGITS_OUTPUT, len(rows)), (LTRB_OUTPUT, 4)):
        graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, ["N", channels, "h", "w"]))
    del graph.value_info[:]
    # drop the decode tail: keep only nodes the two outputs need
    needed = {LOGITS_OUTPUT, LTRB_OUTPUT}
    keep = []
    for node in reversed(graph.node):
        if any(out in needed for out in node.output):
            keep.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    used = {name for node in graph.node for name in node.input}
    kept_init = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept_init)
    return model


class TrafficCenterNet(nn.Module):
    """The converted trunk: ``images`` (B, 3, H, W) RGB 0..255 -> ``(logits, ltrb)``."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits and side distances, both at stride 4."""
        logits, ltrb = self.trunk(images)
        return logits, ltrb


class Upsample2x(nn.Module):
    """2x linear upsampling with TF's ``asymmetric`` sampling: ``out[2i] = x[i]``, ``out[2i+1]`` the mean of
    ``x[i]`` and ``x[i+1]`` (the last row and column repeat)."""

    def forward(self, x: torch.Tensor, *_: Any) -> torch.Tensor:
        """Upsample the last two axes of ``x``; the Resize node's other inputs are ignored."""
        if torch.onnx.is_in_onnx_export():
            return _AsymmetricResize.apply(x)
        return self.exact(x)

    @classmethod
    def exact(cls, x: torch.Tensor) -> torch.Tensor:
        """The upsampling in plain tensor operations (trainable, and what the export's Resize computes)."""
        return cls._double(cls._double(x, 3), 2)

    @staticmethod
    def _double(x: torch.Tensor, axis: int) -> torch.Tensor:
        following = torch.cat([x.narrow(axis, 1, x.shape[axis] - 1), x.narrow(axis, x.shape[axis] - 1, 1)], axis)
        pairs = torch.stack([x, (x + following) / 2], axis + 1)
        shape = list(x.shape)
        shape[axis] *= 2
        return pairs.reshape(shape)


class _AsymmetricResize(torch.autograd.Function):
    """Exports as one ONNX ``Resize`` (linear, ``asymmetric``), as the shipped graph had it, instead of the
    traced narrow/concat/stack/reshape chain (same outputs within 3e-5; 632 graph nodes instead of 923)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        """The exact values (what training computed)."""
        return Upsample2x.exact(x)

    @staticmethod
    def symbolic(g: Any, x: Any) -> Any:
        """The ONNX node."""
        roi = g.op("Constant", value_t=torch.tensor([], dtype=torch.float32))
        scales = g.op("Constant", value_t=torch.tensor([1.0, 1.0, 2.0, 2.0], dtype=torch.float32))
        return g.op("Resize", x, roi, scales, coordinate_transformation_mode_s="asymmetric", mode_s="linear")


def build_network(base: Path, names: Mapping[int, str]) -> TrafficCenterNet:
    """The pretrained network with one heatmap channel per class of ``names``, seeded from COCO."""
    from onnx2torch import convert

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its asymmetric-resize warning: those modules are replaced below
        trunk = convert(trunk_graph(base, seed_rows(names)))
    for name, module in list(trunk.named_children()):
        if type(module).__name__ == "OnnxResize":
            setattr(trunk, name, Upsample2x())
    return TrafficCenterNet(trunk)


def focal_loss(logits: torch.Tensor, heat: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, normalised by the number of objects.

    Written with log-sigmoids rather than a clamped sigmoid: a clamp has no gradient,
    so a saturated heatmap (every score at the clamp) could never recover.
    """
    pred = torch.sigmoid(logits)
    pos = heat.eq(1).float()
    pos_loss = F.logsigmoid(logits) * (1 - pred) ** 2 * pos
    neg_loss = F.logsigmoid(-logits) * pred**2 * (1 - heat) ** 4 * (1 - pos)
    return -(pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1)


def cell_points(h: int, w: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Input-pixel coordinates ``(4 * col, 4 * row)`` the size head measures from."""
    ys = torch.arange(h, dtype=torch.float32, device=device) * STRIDE
    xs = torch.arange(w, dtype=torch.float32, device=device) * STRIDE
    return xs.view(1, w).expand(h, w), ys.view(h, 1).expand(h, w)


def ltrb_to_boxes(ltrb: torch.Tensor) -> torch.Tensor:
    """``(B, 4, h, w)`` side distances -> ``(B, 4, h, w)`` xyxy input pixels."""
    _, _, h, w = ltrb.shape
    px, py = cell_points(h, w, ltrb.device)
    return torch.stack([px - ltrb[:, 0], py - ltrb[:, 1], px + ltrb[:, 2], py + ltrb[:, 3]], dim=1)


def giou_loss(ltrb: torch.Tensor, box_t: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Generalised-IoU loss of the predicted boxes on the weighted cells, normalised by the weight."""
    mask = weight > 0
    if not bool(mask.any()):
        return ltrb.sum() * 0.0
    pred = ltrb_to_boxes(ltrb).permute(0, 2, 3, 1)[mask]
    target = box_t.permute(0, 2, 3, 1)[mask]
    wts = weight[mask]
    px1, py1, px2, py2 = pred.unbind(1)
    tx1, ty1, tx2, ty2 = target.unbind(1)
    pa = (px2 - px1).clamp(min=0) * (py2 - py1).clamp(min=0)
    ta = (tx2 - tx1) * (ty2 - ty1)
    iw = (torch.min(px2, tx2) - torch.max(px1, tx1)).clamp(min=0)
    ih = (torch.min(py2, ty2) - torch.max(py1, ty1)).clamp(min=0)
    inter = iw * ih
    union = pa + ta - inter + 1e-6
    enclose = (torch.max(px2, tx2) - torch.min(px1, tx1)) * (torch.max(py2, ty2) - torch.min(py1, ty1)) + 1e-6
    giou = inter / union - (enclose - union) / enclose
    return ((1 - giou) * wts).sum() / wts.sum().clamp(min=1e-6)


class ExportWrapper(nn.Module):
    """NHWC RGB 0..255 in, ``(B, K, 6)`` rows of x1, y1, x2, y2, score, class out (the ``centernet`` decoder)."""

    def __init__(self, net: TrafficCenterNet, topk: int = TOPK) -> None:
        super().__init__()
        self.net = net
        self.topk = topk

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Heatmap peaks (3x3 max-pool), top-K over classes and cells, boxes from the size head."""
        logits, ltrb = self.net(images.permute(0, 3, 1, 2))
        heat = torch.sigmoid(logits)
        peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat).to(heat.dtype)
        b, _, h, w = heat.shape
        scores, index = peaks.reshape(b, -1).topk(self.topk, dim=1)
        cls = torch.div(index, h * w, rounding_mode="floor")
        cell = index - cls * (h * w)
        boxes = ltrb_to_boxes(ltrb).reshape(b, 4, h * w)
        picked = torch.gather(boxes, 2, cell.unsqueeze(1).expand(b, 4, self.topk))
        return torch.cat([picked.permute(0, 2, 1), scores.unsqueeze(2), cls.unsqueeze(2).to(scores.dtype)], dim=2)


def export_onnx(
    net: TrafficCenterNet, out: Path, names: Mapping[int, str], input_hw: tuple[int, int], extra: Mapping[str, str]
) -> Path:
    """Write the decoded model with the metadata the detector reads.

    Batch, height and width are dynamic axes (the network is fully convolutional):
    ``imgsz`` names the size it was trained for, and ``IPSP_INPUT_SIZE`` may run it at another.
    """
    wrapper = ExportWrapper(net).eval()
    h, w = input_hw
    sample = torch.zeros(1, h, w, 3)
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shape arithmetic and constant folding
        axes = {"images": {0: "batch", 1: "height", 2: "width"}, "detections": {0: "batch"}}
        torch.onnx.export(
            wrapper, (sample,), str(out), input_names=["images"], output_names=["detections"],
            dynamic_axes=axes, opset_version=17, dynamo=False,
        )  # fmt: skip
    model = onnx.load(str(out))
    meta = {
        "ipsp.decoder": "centernet",
        "names": json.dumps({str(k): v for k, v in sorted(names.items())}),
        "imgsz": json.dumps([h, w]),
        "ipsp.input_layout": "NHWC",
        "ipsp.input_range": "0-255",
        "ipsp.channel_order": "RGB",
        # letterbox keeps a 4:3 camera's vehicles the shape the 16:9 training frames showed (bench-fidelity:
        # footage recall 0.87 -> 0.95 at 768x448, score 0.3); on 16:9 frames it is the same as a stretch
        "ipsp.resize": "letterbox",
        "task": "detect",
        **extra,
    }
    for key, value in meta.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save(model, str(out))
    return out


def to_tensor(batch: list[np.ndarray]) -> torch.Tensor:
    """RGB uint8 HWC images of one size -> float NCHW 0..255."""
    return torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float().contiguous()
