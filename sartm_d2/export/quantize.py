"""INT8 graphs: calibrated static QDQ quantization, measured per-layer sensitivity and a parity gate.

``export_int8`` makes ``model_int8.onnx`` (``model_<camera>_int8.onnx`` for a one-camera graph) from
the fp32 graph of ``sartm_d2.export.exporter``:

1. The fp32 graph is pre-processed by onnxruntime's ``quant_pre_process`` (its graph optimiser folds
   constants and fuses MatMul + Add into Gemm; symbolic shape inference is skipped: it fails on the
   traced graph's ``If`` nodes), which makes a smaller graph that quantizes faster.
2. Static (default): activation ranges are calibrated by onnxruntime (min-max, entropy or
   percentile) on training images read by the test mapper and fed as the graph's raw input; then
   ``quantize_static`` writes QDQ (QuantizeLinear / DequantizeLinear pairs on the inputs of the
   quantized ops): weights int8 symmetric per channel (per tensor for MatMul weights of rank 3, the
   only form onnxruntime has int8 kernels for) in 7 of the 8 bits (``reduce_range``, see
   ``QuantizationSettings``), activations int8 symmetric per tensor (zero points 0: what TensorRT's
   explicit quantization reads; not tested here, no GPU). The ops are the matrix products with a
   weight and the convolutions; products of two activations (attention) stay fp32, and MatMul/Gemm
   write fp32 outputs (each choice measured, see ``QuantizationSettings`` and ``_quantize``).
   Dynamic: onnxruntime's ``quantize_dynamic`` of the MatMul/Gemm weights, per tensor (per-channel
   dynamic quantization fails at run time in onnxruntime 1.32: "DynamicQuantizeMatMul ... b zero
   point is not valid").
3. The gate: ``check_parity`` against the PyTorch fp32 ``--eval-only`` path (>= 99% argmax agreement,
   mIoU_all within 0.5 point). When the fully quantized graph fails it, every layer's sensitivity is
   measured (that layer alone quantized, all others fp32; argmax agreement and logit error against
   fp32 on the parity images), and the most sensitive layers are kept in fp32, the fewest that make
   the graph pass, up to ``max_fp32_layers``; past that the export fails, naming them.

A "layer" is the PyTorch module that emitted the quantizable nodes (MatMul, Gemm, Conv): the node's
name without its op components, e.g. ``/backbone/trunk/blocks.3/mlp/layers.0``.

Static sensitivity runs on a *switchboard*: the quantized graph with, after every DequantizeLinear, a
``Where`` that picks the dequantized or the original fp32 tensor by a boolean graph input, so that
one session measures any subset of quantized layers with onnxruntime's own scales. Dynamic
sensitivity quantizes one layer at a time with ``quantize_dynamic(nodes_to_quantize=...)``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch.nn.functional as F

from ..data import RGBTDatasetMapper
from ..evaluation import confusion_matrix, segmentation_metrics
from ..modalities import CHANNELS
from .exporter import (
    ExportResult,
    build_export_module,
    export_cfg,
    export_file_name,
    update_sidecar,
    write_onnx,
    write_sidecar,
)
from .parity import ParityReport, ParitySample, _gt, check_parity, max_miou_diff_for, min_agreement_for
from .runtime import OnnxSegmenter, require, sidecar_path

__all__ = [
    "CALIBRATION_METHODS",
    "QUANTIZATION_MODES",
    "CalibrationImage",
    "Int8Export",
    "QuantizationSettings",
    "export_int8",
    "layer_name",
    "load_calibration_images",
    "preprocess",
    "quantizable_layers",
    "quantize_graph",
]

logger = logging.getLogger(__name__)

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
QUANTIZATION_MODES = ("static", "dynamic")
STATIC_OP_TYPES = ("MatMul", "Gemm", "Conv")
# onnxruntime's dynamic Conv (ConvInteger) takes uint8 weights only; the measurement quantized
# MatMul/Gemm weights.
DYNAMIC_OP_TYPES = ("MatMul", "Gemm")
SWITCH_INPUT = "quantized_layers_switch"
TOP_LAYERS_NAMED = 5  # how many of the most sensitive layers a failure names


@dataclass
class QuantizationSettings:
    """What ``export_int8`` does (the command line's --quantization, --calibration-*, --max-fp32-layers).

    ``max_fp32_layers`` None: 10% of the quantizable layers (rounded up), so that an INT8 graph stays
    one; 0 forbids keeping any layer in fp32. ``always_measure_sensitivity`` measures and reports it
    even when the fully quantized graph passes.

    ``reduce_range`` (default on): weights use 7 of the 8 bits. Without it, onnxruntime's int8 kernels
    on x86 CPUs without VNNI (AVX2, AVX-512 without VNNI) saturate their 16-bit intermediate sums:
    measured on the 2-core AVX2 machine, the tiny test model's QDQ graph agreed with fp32 on 99.8% of
    the pixels when run unfused (fake quantization) but 62.7% with the fused kernels; with 7-bit
    weights, 99.8% both ways. 7-bit weights are still int8 with zero point 0 (TensorRT reads them).

    ``quantize_attention`` (default off): also quantize the products of two activations (attention's
    q k^T and its product with v, and the mask decoder's). Measured on Hiera-T at 480x640 (random
    weights, AVX2 machine): within noise of the same speed (0.78x of the fp32 graph's latency with
    them, 0.79x without) and further from fp32 (98.0% argmax agreement with them, 98.5% without).
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


@dataclass
class CalibrationImage:
    """One calibration input: its name and the graph's raw input (C, H, W) float32 0..255."""

    name: str
    image: np.ndarray


@dataclass
class Int8Export:
    result: ExportResult
    parity: ParityReport
    quantization: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.parity.passed


# ---------------------------------------------------------------------------------------- inputs
def load_calibration_images(
    cfg, records: Sequence[dict], limit: int, size: tuple[int, int], modality: str = "rgbt"
) -> list[CalibrationImage]:
    """``limit`` records spread evenly over ``records``, read by the test mapper, as the graph's input.

    The mapper is ``RGBTDatasetMapper(cfg, is_train=False, setting=modality)`` with INPUT.MIN_SIZE_TEST
    0, so it yields the raw image that the graph takes (the test resize is inside the graph) with the
    thermal reading of the config. An image of another size than ``size`` (HxW) is resized to it
    (bilinear): calibration only needs the range of the activations, not the exact pixels.
    """
    if limit < 1:
        raise ValueError(f"--calibration-images must be >= 1, got {limit}.")
    if not records:
        raise ValueError("No calibration image: the calibration set is empty.")
    n = min(limit, len(records))
    picks = sorted({int(round(i * (len(records) - 1) / max(n - 1, 1))) for i in range(n)})
    mapper_cfg = cfg.clone()
    mapper_cfg.defrost()
    mapper_cfg.INPUT.MIN_SIZE_TEST = 0
    mapper_cfg.freeze()
    mapper = RGBTDatasetMapper(mapper_cfg, is_train=False, setting=modality)
    channels = {"rgbt": slice(0, 4), "rgb": slice(0, 3), "thermal": slice(3, 4)}[modality]
    images, resized = [], 0
    for i in picks:
        record = records[i]
        image = mapper(record)["image"].float()
        if tuple(image.shape[1:]) != tuple(size):
            image = F.interpolate(image[None], size=tuple(size), mode="bilinear", align_corners=False)[0]
            resized += 1
        name = str(record.get("image_id", record["file_name"]))
        images.append(CalibrationImage(name, np.ascontiguousarray(image[channels].numpy(), dtype=np.float32)))
    if resized:
        logger.info("Calibration: %d of %d image(s) resized to the export size %dx%d.", resized, len(images),
                    *size)
    return images


def _reader(images: Sequence[np.ndarray]):
    quantization = require("onnxruntime.quantization")

    class Reader(quantization.CalibrationDataReader):
        """The calibration images, one batch of one each, as the graph's "image" input."""

        def __init__(self):
            self.index, self.end = 0, len(images)

        def get_next(self):
            if self.index >= self.end:
                return None
            self.index += 1
            return {"image": images[self.index - 1][None]}

        def __len__(self):
            return len(images)

        def set_range(self, start_index: int, end_index: int):  # CalibStridedMinMax's protocol
            self.index, self.end = start_index, min(end_index, len(images))

    return Reader()


# ---------------------------------------------------------------------------------------- graphs
def preprocess(src: str, dst: str) -> bool:
    """onnxruntime's ``quant_pre_process`` of ``src`` into ``dst``; False (and a copy) when it fails."""
    shape_inference = require("onnxruntime.quantization.shape_inference")
    # Its optimiser session warns about shapes it merges leniently (Hiera's traced shape arithmetic).
    require("onnxruntime").set_default_logger_severity(3)
    try:
        # Symbolic shape inference asserts on the traced graph's If nodes; ONNX shape inference and
        # onnxruntime's optimiser (constant folding, MatMul + Add -> Gemm) still run.
        shape_inference.quant_pre_process(src, dst, skip_symbolic_shape=True)
        return True
    except Exception as e:  # an optimiser failure must not block the export: quantize the fp32 graph
        logger.warning("quant_pre_process failed (%s: %s); quantizing the graph as exported.",
                       type(e).__name__, e)
        with open(src, "rb") as f, open(dst, "wb") as g:
            g.write(f.read())
        return False
    finally:
        require("onnxruntime").set_default_logger_severity(2)  # onnxruntime's default (warnings)


def layer_name(node_name: str) -> str:
    """The PyTorch module path of a traced node: its name without the op components.

    ``/backbone/trunk/blocks.3/attn/MatMul_1`` -> ``/backbone/trunk/blocks.3/attn``;
    ``/backbone/trunk/blocks.3/mlp/layers.0/MatMul/MatMulAddFusion`` -> ``.../mlp/layers.0``. Module
    names are attribute names (lower case); op components are ONNX op types (CamelCase).
    """
    parts = [p for p in node_name.split("/") if p and not p[:1].isupper()]
    return "/" + "/".join(parts) if parts else node_name


def quantizable_layers(model, op_types: Sequence[str], products_of_activations: bool = False
                       ) -> dict[str, list[str]]:
    """Layer -> its nodes of ``op_types``, in graph order; a MatMul of two activations (attention's
    q k^T and attention x v) only with ``products_of_activations``."""
    weights = {i.name for i in model.graph.initializer}
    layers: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.op_type not in op_types:
            continue
        if node.op_type == "MatMul" and not products_of_activations and not weights & set(node.input[:2]):
            continue
        if not node.name:
            raise ValueError(f"A {node.op_type} node of the graph has no name: it cannot be excluded.")
        layers.setdefault(layer_name(node.name), []).append(node.name)
    return layers


@dataclass
class _Plan:
    """What a graph's quantization covers: ``layers`` (the sensitivity's units), ``skipped`` nodes of the
    quantized op types that always stay fp32 (products of two activations), ``per_tensor`` weights."""

    layers: dict[str, list[str]]
    skipped: list[str]
    per_tensor: list[str]


def _plan(model, settings: QuantizationSettings) -> _Plan:
    layers = quantizable_layers(model, settings.op_types, settings.quantize_attention)
    chosen = {n for nodes in layers.values() for n in nodes}
    skipped = [n.name for n in model.graph.node if n.op_type in settings.op_types and n.name not in chosen]
    # onnxruntime has int8 kernels for a MatMul weight of rank > 2 (the per-modality qkv weights (2, in,
    # out) of the two-stream graph) only per tensor; per channel it runs DequantizeLinear + fp32 MatMul.
    ranks = {i.name: len(i.dims) for i in model.graph.initializer}
    per_tensor = sorted({n.input[1] for n in model.graph.node if n.op_type == "MatMul" and n.name in chosen
                         and ranks.get(n.input[1], 0) > 2})
    return _Plan(layers, skipped, per_tensor)


def _quantize(src: str, dst: str, settings: QuantizationSettings, plan: _Plan, exclude: Sequence[str], *,
              cache: str | None = None, calibration: Sequence[np.ndarray] = (),
              only: Sequence[str] | None = None) -> None:
    """onnxruntime's quantization of ``src`` into ``dst`` without the nodes ``exclude`` (or only ``only``)."""
    q = require("onnxruntime.quantization")
    with _quiet_onnxruntime():
        if settings.mode == "dynamic":
            q.quantize_dynamic(src, dst, op_types_to_quantize=list(settings.op_types), per_channel=False,
                               reduce_range=settings.reduce_range, weight_type=q.QuantType.QInt8,
                               nodes_to_exclude=list(exclude),
                               nodes_to_quantize=list(only) if only is not None else None)
            return
        method = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
                  "percentile": q.CalibrationMethod.Percentile}[settings.calibration_method]
        q.quantize_static(
            src, dst, _reader(calibration) if calibration else None, quant_format=q.QuantFormat.QDQ,
            op_types_to_quantize=list(settings.op_types), per_channel=settings.per_channel,
            reduce_range=settings.reduce_range, activation_type=q.QuantType.QInt8,
            weight_type=q.QuantType.QInt8, calibrate_method=method,
            nodes_to_exclude=[*plan.skipped, *exclude],
            nodes_to_quantize=list(only) if only is not None else None, calibration_cache_path=cache,
            extra_options={
                # Zero points 0 (TensorRT's explicit INT8 takes symmetric scales only).
                "ActivationSymmetric": True, "WeightSymmetric": True,
                # The weight's output channel: Conv 0, MatMul's last axis (also for the batched
                # per-modality qkv weights (2, in, out)), Gemm by its transB (onnxruntime's default).
                "QDQOpTypePerChannelSupportToAxis": {"MatMul": -1},
                # One image per calibration pass: the entropy and percentile calibrators keep every
                # activation of a pass in memory (gigabytes per 480x640 image for Hiera-B+).
                "CalibStridedMinMax": 1,
                "TensorQuantOverrides": {w: [{"symmetric": True}] for w in plan.per_tensor},
                # MatMul and Gemm write fp32 (MatMulIntegerToFloat, QGemm): a Q/DQ pair after each
                # would cost more than it saves (Hiera-T 480x640 on the AVX2 machine: 0.78x instead of
                # 0.93x of the fp32 graph's latency). Conv keeps its quantized output (QLinearConv).
                "OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"],
            },
        )


def quantize_graph(fp32_path: str, dst: str, settings: QuantizationSettings | None = None,
                   calibration: Sequence[np.ndarray] = (), exclude_layers: Sequence[str] = ()) -> dict:
    """Pre-process and quantize an fp32 graph file as ``export_int8`` does, without the gate (the
    benchmark's INT8 rows; random weights have no accuracy to keep). Returns what was done."""
    onnx = require("onnx")
    settings = settings or QuantizationSettings()
    if settings.mode == "static" and not calibration:
        raise ValueError("Static INT8 quantization needs calibration images.")
    with tempfile.TemporaryDirectory(prefix="sartm_int8_") as work:
        pre_path = os.path.join(work, "pre.onnx")
        preprocessed = preprocess(fp32_path, pre_path)
        plan = _plan(onnx.load(pre_path), settings)
        layers = plan.layers
        nodes = [n for layer in exclude_layers for n in layers[layer]]
        t0 = time.perf_counter()
        _quantize(pre_path, dst, settings, plan, nodes, calibration=list(calibration))
        quantize_s = time.perf_counter() - t0
    return {"mode": settings.mode, "reduce_range": settings.reduce_range, "preprocessed": preprocessed,
            "layers_total": len(layers), "quantize_s": quantize_s,
            "calibration_method": settings.calibration_method if settings.mode == "static" else None,
            "calibration_images": len(calibration) if settings.mode == "static" else 0}


@contextlib.contextmanager
def _quiet_onnxruntime():
    """onnxruntime's quantizer logs a pre-processing hint at WARNING on the root logger per call."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def _switchboard(qdq, fp32, layers: dict[str, list[str]]):
    """The QDQ graph with a ``Where`` after every DequantizeLinear whose fp32 origin is known.

    Returns (model, owners): ``owners[i]`` is the set of layers whose quantization puts the i-th
    switched tensor through its Q/DQ pair, as onnxruntime does (a tensor is quantized when a quantized
    node reads it or writes it, and then all its readers see the dequantized values).
    """
    onnx = require("onnx")
    helper = onnx.helper
    node_layer = {n: layer for layer, nodes in layers.items() for n in nodes}
    producer = {o: n for n in qdq.graph.node for o in n.output}
    readers = defaultdict(list)
    for node in qdq.graph.node:
        for i in node.input:
            readers[i].append(node)
    qdq_inits = {i.name for i in qdq.graph.initializer}
    fp32_inits = {i.name: i for i in fp32.graph.initializer}
    nodes, owners, extra_inits, switched = [], [], {}, {}
    for node in qdq.graph.node:
        nodes.append(node)
        if node.op_type != "DequantizeLinear":
            continue
        src, out = node.input[0], node.output[0]
        origin = producer.get(src)
        if origin is not None and origin.op_type == "QuantizeLinear":
            original = origin.input[0]
            writer = producer.get(original)
            touched = {node_layer[writer.name]} if writer is not None and writer.name in node_layer else set()
        elif src in qdq_inits and src.endswith("_quantized") and src[: -len("_quantized")] in fp32_inits:
            # A weight or bias; its DequantizeLinear output may carry the fp32 name, so a copy is added.
            weight = onnx.TensorProto()
            weight.CopyFrom(fp32_inits[src[: -len("_quantized")]])
            original = weight.name = f"{weight.name}_fp32_switch"
            extra_inits[original] = weight
            touched = set()
        else:  # nothing to switch back to: stays quantized in every configuration
            continue
        touched |= {node_layer[r.name] for r in readers[out] if r.name in node_layer}
        if not touched:
            continue
        index = len(owners)
        owners.append(touched)
        idx = f"{out}_switch_index"
        extra_inits[idx] = onnx.numpy_helper.from_array(np.array(index, np.int64), idx)
        nodes.append(helper.make_node("Gather", [SWITCH_INPUT, idx], [f"{out}_switch"], name=f"{out}_switch"))
        nodes.append(helper.make_node("Where", [f"{out}_switch", out, original], [f"{out}_switched"],
                                      name=f"{out}_switched"))
        switched[out] = f"{out}_switched"
    for node in nodes:
        if node.op_type == "Where" and node.name.endswith("_switched"):
            continue
        for k, name in enumerate(node.input):
            if name in switched:
                node.input[k] = switched[name]
    graph = qdq.graph
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(extra_inits.values())
    graph.input.append(helper.make_tensor_value_info(SWITCH_INPUT, onnx.TensorProto.BOOL, [len(owners)]))
    return qdq, owners


# evaluate(enabled layers, number of images or None for all) -> logits (K, H, W) per image
Evaluator = Callable[[set, "int | None"], list]


def _static_evaluator(qdq_path: str, fp32_path: str, layers, images: Sequence[np.ndarray],
                      threads: int | None) -> Evaluator:
    onnx = require("onnx")
    ort = require("onnxruntime")
    model, owners = _switchboard(onnx.load(qdq_path), onnx.load(fp32_path), layers)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
    session = ort.InferenceSession(model.SerializeToString(), sess_options=options,
                                   providers=["CPUExecutionProvider"])
    del model

    dequantized = sum(1 for n in onnx.load(qdq_path).graph.node if n.op_type == "DequantizeLinear")
    unswitched = dequantized - len(owners)
    logger.info("Sensitivity graph: %d switchable Q/DQ tensors (%d weight/bias scales fixed).", len(owners),
                unswitched)

    def run(enabled: set[str], count: int | None = None) -> list[np.ndarray]:
        switch = np.array([bool(o & enabled) for o in owners], dtype=bool)
        feeds = [{"image": x[None], SWITCH_INPUT: switch} for x in images[:count]]
        return [session.run(["logits"], feed)[0][0] for feed in feeds]

    return run


def _dynamic_evaluator(pre_path: str, plan: _Plan, images: Sequence[np.ndarray], settings, workdir: str,
                       threads: int | None) -> Evaluator:
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
    fp32 = ort.InferenceSession(pre_path, sess_options=options, providers=["CPUExecutionProvider"])

    def run(enabled: set[str], count: int | None = None) -> list[np.ndarray]:
        session = fp32
        if enabled:
            path = os.path.join(workdir, "dynamic_trial.onnx")
            only = [n for layer in enabled for n in plan.layers[layer]]
            _quantize(pre_path, path, settings, plan, [], only=only)
            session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
        return [session.run(["logits"], {"image": x[None]})[0][0] for x in images[:count]]

    return run


# ---------------------------------------------------------------------------------------- measuring
def _compare(logits: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> dict:
    """Argmax agreement and |logit difference| of ``logits`` against ``reference``, over all images."""
    agree = pixels = 0
    total = values = 0.0
    worst = 0.0
    for a, b in zip(logits, reference):
        agree += int((a.argmax(0) == b.argmax(0)).sum())
        pixels += a.shape[1] * a.shape[2]
        d = np.abs(a.astype(np.float64) - b)
        total += float(d.sum())
        values += d.size
        worst = max(worst, float(d.max()))
    return {"agreement": agree / max(pixels, 1), "mean_abs_logit_diff": total / max(values, 1),
            "max_abs_logit_diff": worst}


def _miou_all(labels: Sequence[np.ndarray], gts: Sequence[np.ndarray], class_names, ignore: int) -> float:
    k = len(class_names)
    conf = np.zeros((k, k), np.int64)
    for pred, gt in zip(labels, gts):
        conf += confusion_matrix(pred, gt, k, ignore)
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(segmentation_metrics(conf, list(class_names))["mIoU_all"])


def _measure_sensitivity(evaluator, layers, reference, count: int) -> list[dict]:
    """Each layer alone quantized: its agreement and logit error against fp32, most sensitive first."""
    rows = []
    t0 = time.perf_counter()
    for layer, nodes in layers.items():
        m = _compare(evaluator({layer}, count), reference[:count])
        rows.append({"layer": layer, "nodes": list(nodes), **m})
    rows.sort(key=lambda r: (r["agreement"], -r["mean_abs_logit_diff"]))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    logger.info("Sensitivity of %d layers measured in %.1f s.", len(rows), time.perf_counter() - t0)
    return rows


def _describe(rows: Sequence[dict]) -> str:
    return "; ".join(
        f"{r['layer']} (alone: {100 * r['agreement']:.2f}% agreement, mean |logit diff| "
        f"{r['mean_abs_logit_diff']:.3g})" for r in rows
    )


# ---------------------------------------------------------------------------------------- the export
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
        plan = _plan(onnx.load(pre_path), settings)
        layers = plan.layers
        if not layers:
            raise ValueError(f"The graph has no {'/'.join(settings.op_types)} node to quantize.")
        cap = settings.max_fp32_layers
        cap = math.ceil(0.1 * len(layers)) if cap is None else min(cap, len(layers))
        cache = os.path.join(work, "calibration.json") if settings.mode == "static" else None
        images = [c.image for c in calibration]
        side_written = False
        search: list[dict] = []

        def build(excluded: Sequence[str]) -> ParityReport:
            nonlocal side_written, images
            tmp = os.path.join(work, "candidate.onnx")
            nodes = [n for layer in excluded for n in layers[layer]]
            t0 = time.perf_counter()
            _quantize(pre_path, tmp, settings, plan, nodes, cache=cache, calibration=images)
            images = []  # calibrated once: later candidates read the cached ranges
            quantize_s = time.perf_counter() - t0
            onnx.checker.check_model(tmp)
            os.replace(tmp, path)
            if not side_written:
                write_sidecar(path, cfg, module.geometry, "int8", config_file=config_file,
                              num_classes=len(model.class_names), trust=module.has_trust, modality=modality)
                side_written = True
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
            inputs = [np.ascontiguousarray(_graph_input(s.image, modality)) for s in samples]
            if settings.mode == "static":
                evaluator = _static_evaluator(path, pre_path, layers, inputs, threads)
            else:
                evaluator = _dynamic_evaluator(pre_path, plan, inputs, settings, work, threads)
            reference = evaluator(set(), None)
            sensitivity = _measure_sensitivity(evaluator, layers, reference, settings.sensitivity_images)
            if not report.passed and cap > 0:
                with_gt = all("sem_seg_file_name" in s.record for s in samples)
                gts = [_gt(s.record, cfg) for s in samples] if with_gt else [r.argmax(0) for r in reference]
                excluded, report = _search(evaluator, [r["layer"] for r in sensitivity], reference, gts,
                                           list(model.class_names), cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE, cap,
                                           build, search)
        quantized_mb = os.path.getsize(path) / 1e6
    by_layer = {r["layer"]: r for r in sensitivity or []}
    fp32_layers = [{**by_layer[layer], "reason": "kept in fp32: among the most sensitive layers, needed "
                    "for the parity gate"} for layer in excluded]
    if not report.passed and sensitivity:
        report.failures.append(
            f"still failing with {len(excluded)} layer(s) in fp32 (--max-fp32-layers {cap}); most sensitive "
            f"layers: {_describe(sensitivity[:TOP_LAYERS_NAMED])}"
        )
    quantization = {
        "mode": settings.mode,
        "format": "QDQ" if settings.mode == "static" else "QOperator (dynamic: DynamicQuantizeLinear + "
                                                           "MatMulInteger)",
        "op_types": list(settings.op_types),
        "products_of_activations": ("quantized" if settings.quantize_attention else
                                    f"fp32 ({len(plan.skipped)} MatMul nodes: attention)"),
        "per_tensor_weights": plan.per_tensor,
        "weights": ("int8 (7-bit range: reduce_range) symmetric, " if settings.reduce_range else
                    "int8 symmetric, ") + ("per channel" if settings.mode == "static" and settings.per_channel
                                           else "per tensor"),
        "reduce_range": settings.reduce_range,
        "activations": "int8 symmetric per tensor, calibrated" if settings.mode == "static" else
                       "uint8 per tensor, range computed at run time",
        "calibration_method": settings.calibration_method if settings.mode == "static" else None,
        "calibration_images": [c.name for c in calibration] if settings.mode == "static" else [],
        "calibration_source": calibration_source if settings.mode == "static" else None,
        "preprocessed": preprocessed,
        "tensorrt": "QDQ with zero points 0: TensorRT's explicit-INT8 input (trtexec --onnx=FILE "
                    "--int8 --fp16); not tested here" if settings.mode == "static" else None,
        "layers_total": len(layers),
        "layers_quantized": len(layers) - len(excluded),
        "max_fp32_layers": cap,
        "fp32_layers": fp32_layers,
        "sensitivity": sensitivity,
        "sensitivity_images": min(settings.sensitivity_images, len(samples)) if sensitivity else 0,
        "search": search,
        "fp32_mb": fp32_mb,
        "int8_mb": quantized_mb,
        "size_ratio": quantized_mb / fp32_mb,
        "seconds": time.perf_counter() - started,
    }
    _update(path, report, quantization)
    result = ExportResult(path, sidecar_path(path), model, module, module.geometry, "int8")
    return Int8Export(result, report, quantization)


def _graph_input(image: np.ndarray, modality: str) -> np.ndarray:
    channels = CHANNELS[modality]
    if len(channels) == 4:
        return image.astype(np.float32)
    return (image[:3] if modality == "rgb" else image[3:]).astype(np.float32)


def _search(evaluator: Evaluator, order: Sequence[str], reference: Sequence[np.ndarray],
            gts: Sequence[np.ndarray], class_names: Sequence[str], ignore: int, cap: int,
            build: Callable[[Sequence[str]], ParityReport], search: list[dict]):
    """Keep the k most sensitive layers in fp32 for the smallest k (1 <= k <= cap) that passes the gate.

    k is first estimated on the evaluator (one run per k: doubling, then bisecting) with the gate's
    bounds against the fp32 graph, then checked for real (quantize + ``check_parity``). The estimate
    simulates the quantization but not the int8 kernels' own arithmetic, so a real failure moves on to
    at least twice that k (O(log cap) real builds). ``order``: the layers, most sensitive first;
    ``gts``: the parity images' labels (or the fp32 argmax). Steps are appended to ``search``.
    Returns (layers kept in fp32, the last real report).
    """
    ref_miou = _miou_all([r.argmax(0) for r in reference], gts, class_names, ignore)
    min_agreement, max_miou = min_agreement_for("int8"), max_miou_diff_for("int8")
    estimates: dict[int, bool] = {}

    def estimate(k: int) -> bool:
        if k not in estimates:
            logits = evaluator(set(order[k:]), None)
            m = _compare(logits, reference)
            miou = _miou_all([x.argmax(0) for x in logits], gts, class_names, ignore)
            estimates[k] = m["agreement"] >= min_agreement and abs(miou - ref_miou) <= max_miou
            search.append({"fp32_layers": k, "real": False, "agreement": m["agreement"],
                           "miou_diff": abs(miou - ref_miou), "passed": estimates[k]})
        return estimates[k]

    def smallest_estimated_pass(low: int) -> int:
        """The smallest k in (low, cap] estimated to pass (cap when none is)."""
        below, k = low, low + 1
        while k < cap and not estimate(k):
            below, k = k, min(2 * k, cap)
        if not estimate(k):
            return cap
        while k - below > 1:
            mid = (below + k) // 2
            below, k = (below, mid) if estimate(mid) else (mid, k)
        return k

    low = 0
    while True:
        k = smallest_estimated_pass(low) if low == 0 else min(max(smallest_estimated_pass(low), 2 * low), cap)
        report = build(order[:k])
        if report.passed or k >= cap:
            return order[:k], report
        low = k


def _update(path: str, report: ParityReport, quantization: dict) -> None:
    update_sidecar(path, parity=report.to_dict(), quantization=quantization)
