#!/usr/bin/env python
"""Evaluate an exported model on DATASETS.TEST: the same loader, evaluator and table as ``--eval-only``.

    python tools/eval_onnx.py --config-file configs/mfnet.yaml --onnx output/onnx/model.onnx \\
        [--output DIR] [--provider CPUExecutionProvider] [KEY VALUE ...]

The config names the datasets and the evaluation protocol (DATASETS.*, TEST.*); the model, its
classes, input size and thermal normalisation come from the .onnx file and its sidecar. Results go
to ``DIR/<dataset>/`` (default OUTPUT_DIR/inference_onnx), next to nothing ``--eval-only`` writes.
"""

from __future__ import annotations

import argparse

import sartm_d2  # noqa: F401  (first: detectron2 compatibility fixes and registrations)

# isort: split
from detectron2.utils.logger import setup_logger

from sartm_d2 import get_sartm_cfg
from sartm_d2.export import evaluate_onnx


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True, metavar="FILE", help="config naming DATASETS.TEST")
    p.add_argument("--onnx", required=True, metavar="FILE", help="exported model (with its .json sidecar)")
    p.add_argument("--output", metavar="DIR", help="result folder (default: OUTPUT_DIR/inference_onnx)")
    p.add_argument("--provider", dest="providers", action="append", metavar="NAME",
                   help="onnxruntime execution provider, repeatable, in order of preference (default: "
                   "CPUExecutionProvider)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides (KEY VALUE pairs)")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = get_parser().parse_args(argv)
    cfg = get_sartm_cfg(args.config_file, args.opts)
    cfg.freeze()
    return evaluate_onnx(cfg, args.onnx, args.output, args.providers)


if __name__ == "__main__":
    setup_logger(name="sartm_d2")
    setup_logger(name="fvcore")
    setup_logger()
    main()
