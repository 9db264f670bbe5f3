"""The model options of ``demo/demo.py`` and ``demo/web.py``, and the predictor they name.

One model per run: a config with ``MODEL.WEIGHTS`` in ``--opts`` (``sartm_d2.engine.RGBTPredictor``),
or an exported file (``--onnx``, ``sartm_d2.export.OnnxRGBTPredictor``; no model is built, no
config read). Both command lines import this module as their sibling (``python demo/demo.py`` puts
demo/ first on the import path), so the options and their checks are the same in both.

``--rig FILE``: the rig of a camera pair that is not pixel-aligned (``tools/calibrate_rig.py``); the
inputs are then pairs of its two sizes, the predictor warps each thermal image into the RGB frame and
the prediction is in the RGB frame. A PyTorch model defaults to the rig DATASETS.TEST[0] was
registered with (``sartm_d2.engine.predictor_rig``); an exported one has no default.
"""

from __future__ import annotations

import argparse

import torch

import sartm_d2  # noqa: F401  (compat patches + registration before detectron2)

# isort: split

from sartm_d2 import get_sartm_cfg
from sartm_d2.data.rig import Rig, load_rig
from sartm_d2.engine import RGBTPredictor, predictor_rig
from sartm_d2.export import OnnxRGBTPredictor, read_sidecar
from sartm_d2.utils.env import import_user_module

__all__ = ["add_model_options", "build_predictor", "check_model_options", "input_rig", "setup_cfg",
           "thermal_norm"]


def add_model_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--config-file, --onnx, --register, --rig, --threads and --opts (the config's 'KEY VALUE' pairs)."""
    parser.add_argument("--config-file", metavar="FILE", help="path to a config file (not with --onnx)")
    parser.add_argument(
        "--onnx", metavar="FILE",
        help="run an exported model (tools/export_model.py) with onnxruntime instead of building one; "
        "classes, input size and thermal normalisation come from its sidecar FILE.json",
    )
    parser.add_argument(
        "--register", action="append", default=[], metavar="MODULE",
        help="import this module (dotted name or .py path) first: it registers your own dataset",
    )
    parser.add_argument(
        "--rig", metavar="FILE",
        help="the rig file (tools/calibrate_rig.py) of RGB and thermal cameras that are not pixel-aligned: "
        "inputs of its two sizes, each thermal image warped into the RGB frame (default with --config-file: "
        "the rig DATASETS.TEST[0] was registered with, if any)",
    )
    parser.add_argument(
        "--threads", type=int, default=None,
        help="CPU threads: onnxruntime's intra-op threads with --onnx, else torch's (default: all cores)",
    )
    parser.add_argument(
        "--opts", default=[], nargs=argparse.REMAINDER,
        help="modify config options using the command-line 'KEY VALUE' pairs",
    )
    return parser


def check_model_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """One model: --config-file (PyTorch, MODEL.WEIGHTS in --opts) or --onnx (an exported file), not both."""
    if args.onnx and (args.config_file or args.opts):
        parser.error(
            "--onnx takes everything from the exported file and its sidecar (FILE.json): drop --config-file "
            "and --opts (the export's config is recorded in the sidecar)."
        )
    if not args.onnx and not args.config_file:
        parser.error("give --config-file (a PyTorch model, MODEL.WEIGHTS) or --onnx FILE (an exported one).")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}.")
    if args.rig:
        try:
            load_rig(args.rig)  # a missing or bad file is named now, before anything is read or built
        except (FileNotFoundError, ValueError) as e:
            parser.error(f"--rig: {e}")


def setup_cfg(args):
    """The frozen config of --config-file and --opts, after the --register modules."""
    for module in args.register:
        import_user_module(module)
    cfg = get_sartm_cfg(args.config_file, args.opts)
    cfg.freeze()
    return cfg


def thermal_norm(args, cfg) -> str:
    """INPUT.THERMAL_16BIT_NORM of the config, or of the exported model's sidecar with ``--onnx``: known
    before the model is built, so that the inputs are read and checked first."""
    return read_sidecar(args.onnx)["thermal_16bit_norm"] if args.onnx else cfg.INPUT.THERMAL_16BIT_NORM


def input_rig(args, cfg) -> Rig | None:
    """The inputs' rig: --rig, else (a PyTorch model) DATASETS.TEST[0]'s, else None (aligned pairs).
    Known before the model is built, so that the inputs are read and checked first."""
    if args.rig:
        return load_rig(args.rig)
    return None if cfg is None else predictor_rig(cfg)


def build_predictor(args, cfg) -> RGBTPredictor | OnnxRGBTPredictor:
    """``RGBTPredictor(cfg, rig)``, or ``OnnxRGBTPredictor`` with --onnx, ``rig`` being
    :func:`input_rig`'s; --threads sets the CPU threads."""
    rig = input_rig(args, cfg)
    if args.onnx:
        return OnnxRGBTPredictor(args.onnx, threads=args.threads, rig=rig)
    if args.threads:
        torch.set_num_threads(args.threads)
    return RGBTPredictor(cfg, rig=rig)
