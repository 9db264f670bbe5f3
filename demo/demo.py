"""SARTM demo in Detectron2's style: segment RGB-thermal pairs and draw RGB | thermal | prediction.

Examples::

    # one pair
    python demo/demo.py --config-file configs/pst900.yaml --input rgb/0001.png --thermal thermal/0001.png \\
        --output output/demo --opts MODEL.WEIGHTS output/pst900/model_final.pth
    # a folder of pairs (rgb/ + thermal/, or FMB's Visible/ + Infrared/)
    python demo/demo.py --config-file configs/fmb.yaml --input datasets/FMB/test --output output/demo \\
        --opts MODEL.WEIGHTS output/fmb/model_final.pth
    # MFNet 4-channel RGBT PNGs (files, a folder, or a quoted glob pattern)
    python demo/demo.py --config-file configs/mfnet.yaml --input "datasets/MFNet/images/*D.png" \\
        --output output/demo --opts MODEL.WEIGHTS output/mfnet/model_final.pth

Writes ``<output>/<name>.png`` per input (three panels side by side, each of the input's size).
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import cv2
from predictor import RGBTPredictor, draw_panel, find_inputs, load_pair

import sartm_d2  # noqa: F401  (compat patches + registration before detectron2)

# isort: split
from detectron2.utils.logger import setup_logger

from sartm_d2 import get_sartm_cfg

logger = logging.getLogger("sartm_d2.demo")


def setup_cfg(args):
    cfg = get_sartm_cfg(args.config_file, args.opts)
    cfg.freeze()
    return cfg


def get_parser():
    parser = argparse.ArgumentParser(description="SARTM RGB-T semantic segmentation demo")
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to a config file")
    parser.add_argument(
        "--input",
        nargs="+",
        required=True,
        help="RGB images (with --thermal), 4-channel RGBT PNGs, folders of pairs (rgb/ + thermal/ or "
        "Visible/ + Infrared/) or of RGBT PNGs, or a quoted glob pattern",
    )
    parser.add_argument(
        "--thermal", nargs="+", default=None, help="thermal images, one per --input image, in the same order"
    )
    parser.add_argument("--output", required=True, help="folder for the <name>.png panels (created)")
    parser.add_argument(
        "--opts",
        default=[],
        nargs=argparse.REMAINDER,
        help="modify config options using the command-line 'KEY VALUE' pairs",
    )
    return parser


def main(argv=None) -> list[str]:
    """Run the demo; return the written PNG paths. Inputs are all checked before the model is built."""
    args = get_parser().parse_args(argv)
    cfg = setup_cfg(args)
    items = find_inputs(args.input, args.thermal)
    predictor = RGBTPredictor(cfg)
    os.makedirs(args.output, exist_ok=True)
    written = []
    for i, item in enumerate(items, 1):
        start = time.perf_counter()
        rgb, thermal = load_pair(item, cfg.INPUT.THERMAL_16BIT_NORM)
        pred = predictor(rgb, thermal).argmax(dim=0)
        panel = draw_panel(rgb, thermal, pred, predictor.metadata)
        path = os.path.join(args.output, f"{item.name}.png")
        if not cv2.imwrite(path, panel[:, :, ::-1]):
            raise OSError(f"Could not write {path!r}: check that the --output folder is writable.")
        written.append(path)
        logger.info(f"[{i}/{len(items)}] {item.name}: {time.perf_counter() - start:.2f}s -> {path}")
    return written


if __name__ == "__main__":
    setup_logger(name="fvcore")
    setup_logger(name="sartm_d2")
    setup_logger()
    main()
