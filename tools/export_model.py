#!/usr/bin/env python
"""Export a trained SARTM to ONNX (Detectron2's deploy style) and check its parity with PyTorch.

    python tools/export_model.py --config-file configs/mfnet.yaml --format onnx --output output/onnx \\
        [--height 480 --width 640] [--dtype fp32|fp16] MODEL.WEIGHTS output/mfnet/model_final.pth

Writes ``OUTPUT/model.onnx`` (``model_fp16.onnx`` for fp16) and its sidecar ``model.json`` (class
names, colours, input size, thermal normalisation, config and weights, parity report). The graph
takes one raw (1, 4, H, W) R, G, B, T image in 0..255 at the exported size and returns ``logits``
(1, K, H, W) and ``labels`` (1, H, W); normalisation, padding and resizes are inside it.

The parity check then runs onnxruntime and the PyTorch ``--eval-only`` path on the first
``--parity-images`` images of DATASETS.TEST[0] (or of ``--parity-input``, demo-style inputs) and
exits with status 1 below 99.9% argmax agreement (fp32; 99% fp16) or when the two mIoU_all differ by
more than 0.1 (``sartm_d2.export.parity``). The size defaults to the first parity image's.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import sartm_d2  # noqa: F401  (first: detectron2 compatibility fixes and registrations)

# isort: split
from detectron2.data import DatasetCatalog
from detectron2.utils.logger import setup_logger

from sartm_d2 import get_sartm_cfg
from sartm_d2.export import check_parity, export_onnx, load_parity_samples, update_sidecar
from sartm_d2.export.exporter import check_dtype
from sartm_d2.export.runtime import require

logger = logging.getLogger("sartm_d2.tools.export_model")

DEMO_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "demo")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True, metavar="FILE", help="the model's training config")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="export format (only onnx)")
    p.add_argument("--output", required=True, metavar="DIR", help="folder for model.onnx and model.json")
    p.add_argument("--height", type=int, help="input height of the graph (default: the first parity image's)")
    p.add_argument("--width", type=int, help="input width of the graph (default: the first parity image's)")
    p.add_argument("--dtype", default="fp32", help="fp32 (default) or fp16 (converted; I/O stay fp32)")
    p.add_argument("--parity-images", type=int, default=8, metavar="N", help="parity check images (8)")
    p.add_argument("--parity-input", action="append", metavar="PATH",
                   help="parity images instead of DATASETS.TEST[0] (repeatable): a file, a folder or a "
                   "quoted glob, as demo/demo.py --input takes them")
    p.add_argument("--skip-parity", action="store_true",
                   help="export without the check (the sidecar then says parity null)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, e.g. MODEL.WEIGHTS path.pth")
    return p


def parity_records(cfg, inputs: list[str] | None) -> tuple[list[dict], str]:
    """Records for the parity check and where they came from."""
    if inputs:
        sys.path.insert(0, DEMO_DIR)
        from predictor import find_inputs

        return [item.record() for item in find_inputs(inputs)], "--parity-input"
    if not cfg.DATASETS.TEST:
        raise SystemExit("DATASETS.TEST is empty: give --parity-input images (or --skip-parity).")
    name = cfg.DATASETS.TEST[0]
    try:
        records = DatasetCatalog.get(name)
    except Exception as e:  # a registered dataset whose files are not on this machine
        raise SystemExit(
            f"The parity check reads DATASETS.TEST[0] {name!r}, which cannot be loaded here ({e}). Give "
            "--parity-input with images of the deployment (files or folders as demo/demo.py --input takes), "
            "or --skip-parity."
        ) from e
    return records, f"DATASETS.TEST[0] {name}"


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    if (args.height is None) != (args.width is None):
        raise SystemExit("Give both --height and --width, or neither (then the first parity image's size).")
    check_dtype(args.dtype)
    require("onnx")
    require("onnxruntime")
    cfg = get_sartm_cfg(args.config_file, args.opts)
    if not cfg.MODEL.WEIGHTS:
        raise SystemExit("MODEL.WEIGHTS is empty: end the command with MODEL.WEIGHTS path/to/model_final.pth")
    size = (args.height, args.width) if args.height is not None else None
    samples, source = [], None
    if not args.skip_parity:
        if args.parity_images < 1:
            raise SystemExit("--parity-images must be >= 1 (or use --skip-parity).")
        records, source = parity_records(cfg, args.parity_input)
        samples = load_parity_samples(records, cfg.INPUT.THERMAL_16BIT_NORM, args.parity_images, size)
        size = samples[0].image.shape[1:]
    elif size is None:
        raise SystemExit("--skip-parity needs --height and --width (no image to take the size from).")

    result = export_onnx(cfg, args.output, size[0], size[1], args.dtype, config_file=args.config_file)
    print(f"ONNX: {result.onnx_path} ({os.path.getsize(result.onnx_path) / 1e6:.1f} MB, {args.dtype}, "
          f"input 1x4x{size[0]}x{size[1]})\nsidecar: {result.sidecar_path}")
    if args.skip_parity:
        logger.warning("Parity not checked (--skip-parity).")
        return 0
    report = check_parity(cfg, result.model, result.onnx_path, samples, args.dtype)
    update_sidecar(result.onnx_path, parity={**report.to_dict(), "source": source})
    print(f"Parity with PyTorch ({source}):\n{report.table()}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    setup_logger(name="sartm_d2")
    setup_logger(name="fvcore")
    sys.exit(main())
