#!/usr/bin/env python
"""Evaluate an exported model on DATASETS.TEST: the same loader, evaluator and table as ``--eval-only``.

    python tools/eval_onnx.py --config-file configs/mfnet.yaml --onnx output/onnx/model.onnx \\
        [--output DIR] [--provider CPUExecutionProvider] [--threads N] [KEY VALUE ...]

The config names the datasets and the evaluation protocol (DATASETS.*, TEST.*); the model, its
classes, input size and thermal normalisation come from the .onnx file and its sidecar. Results go
to ``DIR/<dataset>/`` (default OUTPUT_DIR/inference_onnx), next to nothing ``--eval-only`` writes.
Every exported file works: fp32, fp16, int8, and one-camera graphs (which read their camera from the
loader's images; compare with ``--eval-only TEST.MODALITIES "('rgb',)"`` or thermal). A two-camera
graph runs every setting of TEST.MODALITIES that has both cameras (e.g. ``TEST.MODALITIES
"('all',)"``: rgbt and the degraded ones, with ``--eval-only``'s settings table).
"""

from __future__ import annotations

import argparse

import sartm_d2  # noqa: F401  (first: detectron2 compatibility fixes and registrations)

# isort: split
from detectron2.utils.logger import setup_logger

from sartm_d2 import get_sartm_cfg
from sartm_d2.export import evaluate_onnx
from sartm_d2.export.runtime import cpu_threads
from sartm_d2.utils.env import import_user_module


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True, metavar="FILE", help="config naming DATASETS.TEST")
    p.add_argument("--onnx", required=True, metavar="FILE", help="exported model (with its .json sidecar)")
    p.add_argument("--register", action="append", default=[], metavar="MODULE",
                   help="import this module (dotted name or .py path) first: it registers your own dataset")
    p.add_argument("--output", metavar="DIR", help="result folder (default: OUTPUT_DIR/inference_onnx)")
    p.add_argument("--provider", dest="providers", action="append", metavar="NAME",
                   help="onnxruntime execution provider, repeatable, in order of preference (default: "
                   "CPUExecutionProvider)")
    p.add_argument("--threads", type=int, default=cpu_threads(), metavar="N",
                   help="onnxruntime intra-op threads (default: all cores this process may use)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides (KEY VALUE pairs)")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = get_parser().parse_args(argv)
    for module in args.register:
        import_user_module(module)
    cfg = get_sartm_cfg(args.config_file, args.opts)
    cfg.freeze()
    if args.threads < 1:
        raise SystemExit(f"--threads must be >= 1, got {args.threads}.")
    return evaluate_onnx(cfg, args.onnx, args.output, args.providers, args.threads)


if __name__ == "__main__":
    setup_logger(name="sartm_d2")
    setup_logger(name="fvcore")
    setup_logger()
    main()
