#!/usr/bin/env python
"""Export a trained SARTM to ONNX (Detectron2's deploy style) and check its parity with PyTorch.

    python tools/export_model.py --config-file configs/mfnet.yaml --format onnx --output output/onnx \\
        [--height 480 --width 640] [--dtype fp32|fp16|int8] [--modality rgbt|rgb|thermal] \\
        MODEL.WEIGHTS output/mfnet/model_final.pth

Writes ``OUTPUT/model.onnx`` (``model_fp16.onnx``, ``model_int8.onnx``; one camera ``model_rgb.onnx``,
``model_thermal_int8.onnx``, ...) and its sidecar ``model.json`` (class names, colours, input size,
thermal normalisation, config and weights, parity report; int8: the quantization). The graph takes
one raw (1, 4, H, W) R, G, B, T image in 0..255 at the exported size (one camera: (1, 3, H, W) RGB
or (1, 1, H, W) thermal) and returns ``logits`` (1, K, H, W) and ``labels`` (1, H, W), and ``trust``
(1, 2) for models that estimate it; normalisation, padding and resizes are inside it. Thermal must be
in the RGB frame already: a camera pair that is not pixel-aligned warps it first by its rig
(``sartm_d2.data.warp_thermal``; NaN where the thermal camera does not see, which the graph handles),
as the data loader does for a dataset registered with the rig (its parity images are read so).

The parity check then runs onnxruntime and the PyTorch ``--eval-only`` path (one camera: with that
input setting) on the first ``--parity-images`` images of DATASETS.TEST[0] (or of
``--parity-input``, demo-style inputs; ``--rig FILE`` when their cameras are not pixel-aligned) and
exits with status 1 below 99.9% argmax agreement (fp32; 99% fp16 and int8) or when the two mIoU_all
differ by more than 0.1 (int8: 0.5) (``sartm_d2.export.parity``). The size defaults to the first parity
image's.

int8 (``sartm_d2.export.quantize``): static QDQ quantization calibrated on ``--calibration-images``
images of DATASETS.TRAIN (or ``--calibration-input``), or ``--quantization dynamic``; layers whose
quantization breaks the gate are found by measuring each one's sensitivity and kept in fp32 (at most
``--max-fp32-layers``); the report names them with their measured sensitivity.
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
from sartm_d2.data import load_rig
from sartm_d2.export import (
    CALIBRATION_METHODS,
    QUANTIZATION_MODES,
    QuantizationSettings,
    check_parity,
    export_int8,
    export_onnx,
    load_calibration_images,
    load_parity_samples,
    update_sidecar,
)
from sartm_d2.export.exporter import check_dtype
from sartm_d2.export.runtime import require
from sartm_d2.modalities import CHANNELS, MODALITIES
from sartm_d2.utils.env import import_user_module

logger = logging.getLogger("sartm_d2.tools.export_model")



def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True, metavar="FILE", help="the model's training config")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="export format (only onnx)")
    p.add_argument("--register", action="append", default=[], metavar="MODULE",
                   help="import this module (dotted name or .py path) first: it registers your own dataset")
    p.add_argument("--output", required=True, metavar="DIR", help="folder for model.onnx and model.json")
    p.add_argument("--height", type=int, help="input height of the graph (default: the first parity image's)")
    p.add_argument("--width", type=int, help="input width of the graph (default: the first parity image's)")
    p.add_argument("--dtype", default="fp32",
                   help="fp32 (default), fp16 (converted; I/O stay fp32) or int8 (quantized, for CPUs)")
    p.add_argument("--modality", choices=list(MODALITIES), default="rgbt",
                   help="rgbt (default), or a one-camera graph: its input is that camera alone and the model "
                   "computes that stream only (for a model trained with modality dropout)")
    q = p.add_argument_group("int8")
    q.add_argument("--quantization", choices=QUANTIZATION_MODES, default="static",
                   help="static: QDQ, calibrated activations (default); dynamic: MatMul/Gemm weights only")
    q.add_argument("--calibration-images", type=int, default=32, metavar="N",
                   help="static: N images spread over DATASETS.TRAIN (default 32)")
    q.add_argument("--calibration-method", choices=CALIBRATION_METHODS, default="minmax",
                   help="static: how activation ranges come from the calibration images (default minmax)")
    q.add_argument("--calibration-input", action="append", metavar="PATH",
                   help="calibration images instead of DATASETS.TRAIN (repeatable), as --parity-input")
    q.add_argument("--max-fp32-layers", type=int, metavar="N",
                   help="most layers kept in fp32 to pass the gate (default: 10%% of the quantizable ones)")
    q.add_argument("--reduce-range", action=argparse.BooleanOptionalAction, default=True,
                   help="7-bit weights (default): right on x86 CPUs without VNNI, where 8-bit weights "
                   "saturate onnxruntime's int8 kernels; --no-reduce-range for VNNI/ARM CPUs and TensorRT")
    q.add_argument("--quantize-attention", action="store_true",
                   help="also quantize products of two activations (attention); off: no faster on the CPU, "
                   "less accurate")
    q.add_argument("--sensitivity", action="store_true",
                   help="measure and report every layer's sensitivity even when all-INT8 passes")
    p.add_argument("--parity-images", type=int, default=8, metavar="N", help="parity check images (8)")
    p.add_argument("--parity-input", action="append", metavar="PATH",
                   help="parity images instead of DATASETS.TEST[0] (repeatable): a file, a folder or a "
                   "quoted glob, as demo/demo.py --input takes them")
    p.add_argument("--rig", metavar="FILE",
                   help="the rig file of the --parity-input / --calibration-input images when their cameras "
                   "are not pixel-aligned (tools/calibrate_rig.py): their thermal images are warped by it")
    p.add_argument("--skip-parity", action="store_true",
                   help="export without the check (the sidecar then says parity null)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, e.g. MODEL.WEIGHTS path.pth")
    return p


def parity_records(cfg, inputs: list[str] | None, rig: str | None = None) -> tuple[list[dict], str]:
    """Records for the parity check and where they came from (``rig``: the inputs' rig file)."""
    if inputs:
        from sartm_d2.data.inputs import find_inputs

        extra = {} if rig is None else {"rig_file": rig}
        return [{**item.record(), **extra} for item in find_inputs(inputs)], "--parity-input"
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


def calibration_records(cfg, inputs: list[str] | None, rig: str | None = None) -> tuple[list[dict], str]:
    """Records for the INT8 calibration and where they came from (``rig``: the inputs' rig file)."""
    if inputs:
        return parity_records(cfg, inputs, rig)[0], "--calibration-input"
    if not cfg.DATASETS.TRAIN:
        raise SystemExit("DATASETS.TRAIN is empty: give --calibration-input images.")
    name = cfg.DATASETS.TRAIN[0]
    try:
        records = [r for n in cfg.DATASETS.TRAIN for r in DatasetCatalog.get(n)]
    except Exception as e:  # a registered dataset whose files are not on this machine
        raise SystemExit(
            f"The INT8 calibration reads DATASETS.TRAIN {list(cfg.DATASETS.TRAIN)}, which cannot be loaded "
            f"here ({e}). Give --calibration-input with images of the deployment (files or folders as "
            "demo/demo.py --input takes)."
        ) from e
    return records, f"DATASETS.TRAIN {', '.join(cfg.DATASETS.TRAIN)}" if len(cfg.DATASETS.TRAIN) > 1 else (
        f"DATASETS.TRAIN[0] {name}")


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    for module in args.register:
        import_user_module(module)
    if args.rig and not (args.parity_input or args.calibration_input):
        raise SystemExit("--rig belongs to --parity-input / --calibration-input images; a registered dataset "
                         "has its own rig (register_rgbt_sem_seg(..., rig=)).")
    if args.rig:
        load_rig(args.rig)  # a missing or bad file: its error, before the model is built
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
        records, source = parity_records(cfg, args.parity_input, args.rig)
        samples = load_parity_samples(records, cfg.INPUT.THERMAL_16BIT_NORM, args.parity_images, size)
        size = samples[0].image.shape[1:]
    elif size is None:
        raise SystemExit("--skip-parity needs --height and --width (no image to take the size from).")
    if args.dtype == "int8":
        return export_int8_main(args, cfg, size, samples, source)

    result = export_onnx(cfg, args.output, size[0], size[1], args.dtype, config_file=args.config_file,
                         modality=args.modality)
    channels = len(CHANNELS[args.modality])
    print(f"ONNX: {result.onnx_path} ({os.path.getsize(result.onnx_path) / 1e6:.1f} MB, {args.dtype}, "
          f"input 1x{channels}x{size[0]}x{size[1]})\nsidecar: {result.sidecar_path}")
    if args.skip_parity:
        logger.warning("Parity not checked (--skip-parity).")
        return 0
    report = check_parity(cfg, result.model, result.onnx_path, samples, args.dtype)
    update_sidecar(result.onnx_path, parity={**report.to_dict(), "source": source})
    print(f"Parity with PyTorch ({source}):\n{report.table()}")
    return 0 if report.passed else 1


def export_int8_main(args, cfg, size, samples, source) -> int:
    """--dtype int8: calibrate, quantize, gate (keeping the most sensitive layers in fp32 if needed)."""
    if args.skip_parity:
        raise SystemExit("--dtype int8 needs its parity check (the gate picks the layers kept in fp32): drop "
                         "--skip-parity.")
    settings = QuantizationSettings(
        mode=args.quantization, calibration_method=args.calibration_method,
        max_fp32_layers=args.max_fp32_layers, always_measure_sensitivity=args.sensitivity,
        reduce_range=args.reduce_range, quantize_attention=args.quantize_attention,
    )
    calibration, calibration_source = [], None
    if settings.mode == "static":
        records, calibration_source = calibration_records(cfg, args.calibration_input, args.rig)
        calibration = load_calibration_images(cfg, records, args.calibration_images, size, args.modality)
    out = export_int8(cfg, args.output, size[0], size[1], samples=samples, calibration=calibration,
                      settings=settings, modality=args.modality, config_file=args.config_file,
                      calibration_source=calibration_source)
    q = out.quantization
    update_sidecar(out.result.onnx_path, parity={**out.parity.to_dict(), "source": source})
    channels = len(CHANNELS[args.modality])
    how = (f"static QDQ, {q['calibration_method']} on {len(q['calibration_images'])} image(s) of "
           f"{calibration_source}" if settings.mode == "static" else "dynamic")
    lines = [
        f"ONNX: {out.result.onnx_path} ({q['int8_mb']:.1f} MB = {q['size_ratio']:.2f}x the fp32 graph's "
        f"{q['fp32_mb']:.1f} MB; int8, {how}; input 1x{channels}x{size[0]}x{size[1]})",
        f"sidecar: {out.result.sidecar_path}",
        f"layers quantized: {q['layers_quantized']} of {q['layers_total']}",
    ]
    for row in q["fp32_layers"]:
        lines.append(f"  kept in fp32: {row['layer']} (sensitivity rank {row['rank']}: alone "
                     f"{100 * row['agreement']:.2f}% agreement, mean |logit diff| "
                     f"{row['mean_abs_logit_diff']:.3g})")
    print("\n".join(lines))
    print(f"Parity with PyTorch fp32 ({source}):\n{out.parity.table()}")
    return 0 if out.passed else 1


if __name__ == "__main__":
    setup_logger(name="sartm_d2")
    setup_logger(name="fvcore")
    sys.exit(main())
