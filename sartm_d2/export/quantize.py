"""INT8 export: the fp32 graph quantized (``int8_graph``), checked by the parity gate, and, when the gate
fails, the most sensitive layers kept in fp32 (``sensitivity``).

``export_int8`` makes ``model_int8.onnx`` (``model_<camera>_int8.onnx`` for a one-camera graph) from the
fp32 graph of ``sartm_d2.export.exporter``:

1. The fp32 graph is pre-processed by onnxruntime's ``quant_pre_process`` (``int8_graph.preprocess``).
2. Static (default): activation ranges are calibrated on training images read by the test mapper
   (``calibration``), then QDQ is written; dynamic: onnxruntime's ``quantize_dynamic`` of the
   MatMul/Gemm weights. What is quantized and how: ``int8_graph``.
3. The gate: ``check_parity`` against the PyTorch fp32 ``--eval-only`` path (``INT8_MIN_AGREEMENT``
   argmax agreement, mIoU_all within ``INT8_MAX_MIOU_DIFF``). When the fully quantized graph fails it,
   every layer's sensitivity is measured and the most sensitive layers are kept in fp32, the fewest
   that make the graph pass, up to ``max_fp32_layers``; past that the export fails, naming them.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..modalities import select_channels
from .calibration import CALIBRATION_METHODS, CalibrationImage
from .exporter import (
    ExportResult,
    build_export_module,
    export_cfg,
    export_file_name,
    update_sidecar,
    write_onnx,
    write_sidecar,
)
from .int8_graph import QuantizationPlan, plan_quantization, preprocess, quantize_onnx
from .parity import ParityReport, ParitySample, check_parity, read_ground_truth
from .runtime import OnnxSegmenter, require, sidecar_path
from .sensitivity import (
    describe_layers,
    dynamic_evaluator,
    measure_sensitivity,
    search_fp32_layers,
    static_evaluator,
)

__all__ = ["QUANTIZATION_MODES", "Int8Export", "QuantizationSettings", "export_int8"]

logger = logging.getLogger(__name__)

QUANTIZATION_MODES = ("static", "dynamic")
STATIC_OP_TYPES = ("MatMul", "Gemm", "Conv")
# onnxruntime's dynamic Conv (ConvInteger) takes uint8 weights only, not the symmetric int8 ones.
DYNAMIC_OP_TYPES = ("MatMul", "Gemm")
TOP_LAYERS_NAMED = 5  # how many of the most sensitive layers a failure names


@dataclass
class QuantizationSettings:
    """What ``export_int8`` does (the command line's --quantization, --calibration-*, --max-fp32-layers).

    ``max_fp32_layers`` None: 10% of the quantizable layers (rounded up), so that an INT8 graph stays
    one; 0 forbids keeping any layer in fp32. ``always_measure_sensitivity`` measures and reports it
    even when the fully quantized graph passes.

    ``reduce_range`` (default on): weights use 7 of the 8 bits. Without it, onnxruntime's int8 kernels
    on x86 CPUs without VNNI (AVX2, AVX-512 without VNNI) saturate their 16-bit intermediate sums, so
    the fused graph drifts far from its own simulated (unfused) quantization; with 7-bit weights the
    two agree. 7-bit weights are still int8 with zero point 0 (TensorRT reads them).

    ``quantize_attention`` (default off): also quantize the products of two activations (attention's
    q k^T and its product with v, and the mask decoder's): no faster on the CPU, and further from fp32.
    The figures behind both defaults are in benchmarks/RESULTS.md (INT8).
    """

    mode: str = "static"
    calibration_method: str = "minmax"
    per_channel: bool = True
    reduce_range: bool = True
    quantize_attention: bool = False
    max_fp32_layers: int | None = None
    sensitivity_images: int = 4
    always_measure_sensitivity: bool = False

    def __post_init__(self):
        if self.mode not in QUANTIZATION_MODES:
            raise ValueError(f"--quantization must be one of {list(QUANTIZATION_MODES)}, got {self.mode!r}.")
        if self.calibration_method not in CALIBRATION_METHODS:
            raise ValueError(f"--calibration-method must be one of {list(CALIBRATION_METHODS)}, got "
                             f"{self.calibration_method!r}.")
        if self.max_fp32_layers is not None and self.max_fp32_layers < 0:
            raise ValueError(f"--max-fp32-layers must be >= 0, got {self.max_fp32_layers}.")
        if self.sensitivity_images < 1:
            raise ValueError(f"sensitivity_images must be >= 1, got {self.sensitivity_images}.")

    @property
    def op_types(self) -> tuple[str, ...]:
        return STATIC_OP_TYPES if self.mode == "static" else DYNAMIC_OP_TYPES

    def fp32_layer_cap(self, layers: int) -> int:
        """The most of ``layers`` quantizable layers that may stay fp32 (``max_fp32_layers``)."""
        if self.max_fp32_layers is None:
            return math.ceil(0.1 * layers)
        return min(self.max_fp32_layers, layers)


@dataclass
class Int8Export:
    result: ExportResult
    parity: ParityReport
    quantization: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.parity.passed


def export_int8(
    cfg,
    output: str,
    height: int,
    width: int,
    *,
    samples: Sequence[ParitySample],
    calibration: Sequence[CalibrationImage] = (),
    settings: QuantizationSettings | None = None,
    modality: str = "rgbt",
    config_file: str | None = None,
    calibration_source: str | None = None,
    threads: int | None = None,
) -> Int8Export:
    """Export the model of ``cfg`` + MODEL.WEIGHTS as an INT8 graph that passes the parity gate.

    ``samples`` are the parity images (the gate and the sensitivity), ``calibration`` the static
    calibration inputs (``load_calibration_images``; unused by dynamic quantization). The file and its
    sidecar are written even when the gate fails (``Int8Export.passed`` False; the sidecar's parity
    says so, and which layers are the most sensitive).
    """
    onnx = require("onnx")
    settings = settings or QuantizationSettings()
    if settings.mode == "static" and not calibration:
        raise ValueError("Static INT8 quantization needs calibration images (--calibration-images N).")
    if not samples:
        raise ValueError("The INT8 export needs parity images: its gate is the parity check.")
    cfg = export_cfg(cfg)
    model, module = build_export_module(cfg, height, width, modality)
    path = os.path.join(output, export_file_name("int8", modality))
    os.makedirs(output, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sartm_int8_", dir=output) as work:
        fp32_path, pre_path = os.path.join(work, "fp32.onnx"), os.path.join(work, "pre.onnx")
        write_onnx(module, fp32_path)
        fp32_mb = os.path.getsize(fp32_path) / 1e6
        preprocessed = preprocess(fp32_path, pre_path)
        plan = plan_quantization(onnx.load(pre_path), settings)
        if not plan.layers:
            raise ValueError(f"The graph has no {'/'.join(settings.op_types)} node to quantize.")
        cap = settings.fp32_layer_cap(len(plan.layers))
        search: list[dict] = []
        images = [c.image for c in calibration]
        cache = os.path.join(work, "calibration.json") if settings.mode == "static" else None

        def build(excluded: Sequence[str]) -> ParityReport:
            """Quantize without the layers ``excluded`` into ``path`` and run the gate on it."""
            nonlocal images
            tmp = os.path.join(work, "candidate.onnx")
            t0 = time.perf_counter()
            quantize_onnx(pre_path, tmp, settings, plan, plan.nodes(excluded), cache=cache,
                          calibration=images)
            images = []  # calibrated once: later candidates read the cached ranges
            quantize_s = time.perf_counter() - t0
            onnx.checker.check_model(tmp)
            os.replace(tmp, path)
            if not search:  # the first candidate: the sidecar the gate's session reads
                write_sidecar(path, cfg, module.geometry, "int8", config_file=config_file,
                              num_classes=len(model.class_names), trust=module.has_trust, modality=modality)
            report = check_parity(cfg, model, OnnxSegmenter(path, threads=threads), samples, "int8")
            search.append({"fp32_layers": len(excluded), "real": True, "agreement": report.pixel_agreement,
                           "miou_diff": abs(report.miou_torch["mIoU_all"] - report.miou_onnx["mIoU_all"]),
                           "passed": report.passed, "quantize_s": quantize_s})
            logger.info("INT8 with %d layer(s) in fp32: %s", len(excluded),
                        "passed" if report.passed else "; ".join(report.failures))
            return report

        report = build([])
        sensitivity: list[dict] | None = None
        excluded: list[str] = []
        if not report.passed or settings.always_measure_sensitivity:
            inputs = [np.ascontiguousarray(select_channels(s.image, modality), dtype=np.float32)
                      for s in samples]
            if settings.mode == "static":
                evaluator = static_evaluator(path, pre_path, plan.layers, inputs, threads)
            else:
                evaluator = dynamic_evaluator(pre_path, plan, inputs, settings, work, threads)
            reference = evaluator(set(), None)
            sensitivity = measure_sensitivity(evaluator, plan.layers, reference, settings.sensitivity_images)
            if not report.passed and cap > 0:
                with_gt = all("sem_seg_file_name" in s.record for s in samples)
                gts = ([read_ground_truth(s.record, cfg) for s in samples] if with_gt
                       else [r.argmax(0) for r in reference])
                excluded, report = search_fp32_layers(
                    evaluator, [r["layer"] for r in sensitivity], reference, gts, list(model.class_names),
                    cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE, cap, build, search)
        int8_mb = os.path.getsize(path) / 1e6
    if not report.passed and sensitivity:
        report.failures.append(
            f"still failing with {len(excluded)} layer(s) in fp32 (--max-fp32-layers {cap}); most sensitive "
            f"layers: {describe_layers(sensitivity[:TOP_LAYERS_NAMED])}"
        )
    quantization = _record(settings, plan, calibration, calibration_source, preprocessed, excluded, cap,
                           sensitivity, min(settings.sensitivity_images, len(samples)), search)
    quantization.update(fp32_mb=fp32_mb, int8_mb=int8_mb, size_ratio=int8_mb / fp32_mb,
                        seconds=time.perf_counter() - started)
    update_sidecar(path, parity=report.to_dict(), quantization=quantization)
    result = ExportResult(path, sidecar_path(path), model, module, module.geometry, "int8")
    return Int8Export(result, report, quantization)


def _record(settings: QuantizationSettings, plan: QuantizationPlan, calibration: Sequence[CalibrationImage],
            calibration_source: str | None, preprocessed: bool, excluded: Sequence[str], cap: int,
            sensitivity: list[dict] | None, sensitivity_images: int, search: list[dict]) -> dict:
    """The sidecar's ``quantization``: the settings, what was quantized, the search and its steps."""
    static = settings.mode == "static"
    by_layer = {r["layer"]: r for r in sensitivity or []}
    weights = "int8 (7-bit range: reduce_range) symmetric, " if settings.reduce_range else "int8 symmetric, "
    return {
        "mode": settings.mode,
        "format": "QDQ" if static else "QOperator (dynamic: DynamicQuantizeLinear + MatMulInteger)",
        "op_types": list(settings.op_types),
        "products_of_activations": ("quantized" if settings.quantize_attention else
                                    f"fp32 ({len(plan.skipped)} MatMul nodes: attention)"),
        "per_tensor_weights": plan.per_tensor,
        "weights": weights + ("per channel" if static and settings.per_channel else "per tensor"),
        "reduce_range": settings.reduce_range,
        "activations": "int8 symmetric per tensor, calibrated" if static else
                       "uint8 per tensor, range computed at run time",
        "calibration_method": settings.calibration_method if static else None,
        "calibration_images": [c.name for c in calibration] if static else [],
        "calibration_source": calibration_source if static else None,
        "preprocessed": preprocessed,
        "tensorrt": "QDQ with zero points 0: TensorRT's explicit-INT8 input (trtexec --onnx=FILE "
                    "--int8 --fp16); not tested here" if static else None,
        "layers_total": len(plan.layers),
        "layers_quantized": len(plan.layers) - len(excluded),
        "max_fp32_layers": cap,
        "fp32_layers": [{**by_layer[layer], "reason": "kept in fp32: among the most sensitive layers, needed "
                         "for the parity gate"} for layer in excluded],
        "sensitivity": sensitivity,
        "sensitivity_images": sensitivity_images if sensitivity else 0,
        "search": search,
    }
