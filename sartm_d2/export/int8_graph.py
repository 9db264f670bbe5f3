"""The INT8 graph: which nodes onnxruntime quantizes, how, and the switchboard that un-quantizes any subset.

A "layer" is the PyTorch module that emitted the quantizable nodes (MatMul, Gemm, Conv): the node's
name without its op components, e.g. ``/backbone/trunk/blocks.3/mlp/layers.0``. The layers are the
units that the sensitivity search (``sensitivity``) keeps in fp32 or not.

Static quantization writes QDQ (QuantizeLinear / DequantizeLinear pairs on the inputs of the quantized
ops): weights int8 symmetric per channel (per tensor for MatMul weights of rank 3, the only form
onnxruntime has int8 kernels for), activations int8 symmetric per tensor (zero points 0: what
TensorRT's explicit quantization reads). Products of two activations (attention) stay fp32 unless
``quantize_attention``, and MatMul/Gemm write fp32 outputs (see ``quantize_onnx``). Dynamic
quantization is onnxruntime's ``quantize_dynamic`` of the MatMul/Gemm weights, per tensor: its
per-channel form has no valid run-time kernel in onnxruntime ("DynamicQuantizeMatMul ... b zero point
is not valid").

The switchboard is the quantized graph with, after every DequantizeLinear, a ``Where`` that picks the
dequantized or the original fp32 tensor by a boolean graph input, so that one session runs any subset
of quantized layers with onnxruntime's own scales.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .calibration import calibration_method, calibration_reader
from .runtime import require

if TYPE_CHECKING:
    from .quantize import QuantizationSettings

__all__ = [
    "SWITCH_INPUT",
    "QuantizationPlan",
    "layer_name",
    "plan_quantization",
    "preprocess",
    "quantizable_layers",
    "quantize_graph",
    "quantize_onnx",
    "switchboard",
]

logger = logging.getLogger(__name__)

SWITCH_INPUT = "quantized_layers_switch"  # the switchboard's boolean input, one entry per switched tensor


def preprocess(src: str, dst: str) -> bool:
    """onnxruntime's ``quant_pre_process`` of ``src`` into ``dst``; False (and a copy) when it fails.

    Its graph optimiser folds constants and fuses MatMul + Add into Gemm, which makes a smaller graph
    that quantizes faster. Symbolic shape inference is skipped: it asserts on the traced graph's ``If``
    nodes.
    """
    shape_inference = require("onnxruntime.quantization.shape_inference")
    # Its optimiser session warns about shapes it merges leniently (Hiera's traced shape arithmetic).
    require("onnxruntime").set_default_logger_severity(3)
    try:
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
class QuantizationPlan:
    """What a graph's quantization covers: ``layers`` (the sensitivity's units: layer -> its nodes),
    ``skipped`` nodes of the quantized op types that always stay fp32 (products of two activations),
    ``per_tensor`` the weights quantized per tensor."""

    layers: dict[str, list[str]]
    skipped: list[str]
    per_tensor: list[str]

    def nodes(self, layers: Sequence[str]) -> list[str]:
        """The nodes of ``layers``, in their order."""
        return [n for layer in layers for n in self.layers[layer]]


def plan_quantization(model, settings: QuantizationSettings) -> QuantizationPlan:
    """The ``QuantizationPlan`` of ``model`` (a loaded ONNX graph) under ``settings``."""
    layers = quantizable_layers(model, settings.op_types, settings.quantize_attention)
    chosen = {n for nodes in layers.values() for n in nodes}
    skipped = [n.name for n in model.graph.node if n.op_type in settings.op_types and n.name not in chosen]
    # onnxruntime has int8 kernels for a MatMul weight of rank > 2 (the per-modality qkv weights (2, in,
    # out) of the two-stream graph) only per tensor; per channel it runs DequantizeLinear + fp32 MatMul.
    ranks = {i.name: len(i.dims) for i in model.graph.initializer}
    per_tensor = sorted({n.input[1] for n in model.graph.node if n.op_type == "MatMul" and n.name in chosen
                         and ranks.get(n.input[1], 0) > 2})
    return QuantizationPlan(layers, skipped, per_tensor)


def quantize_onnx(src: str, dst: str, settings: QuantizationSettings, plan: QuantizationPlan,
                  exclude: Sequence[str] = (), *, cache: str | None = None,
                  calibration: Sequence[np.ndarray] = (), only: Sequence[str] | None = None) -> None:
    """onnxruntime's quantization of ``src`` into ``dst`` without the nodes ``exclude`` (or only ``only``).

    Static: calibrated on ``calibration`` ((C, H, W) graph inputs), or on the ranges already in
    ``cache`` (onnxruntime's calibration cache file) when ``calibration`` is empty.
    """
    q = require("onnxruntime.quantization")
    with _quiet_onnxruntime():
        if settings.mode == "dynamic":
            q.quantize_dynamic(src, dst, op_types_to_quantize=list(settings.op_types), per_channel=False,
                               reduce_range=settings.reduce_range, weight_type=q.QuantType.QInt8,
                               nodes_to_exclude=list(exclude),
                               nodes_to_quantize=list(only) if only is not None else None)
            return
        q.quantize_static(
            src, dst, calibration_reader(calibration) if calibration else None,
            quant_format=q.QuantFormat.QDQ, op_types_to_quantize=list(settings.op_types),
            per_channel=settings.per_channel, reduce_range=settings.reduce_range,
            activation_type=q.QuantType.QInt8, weight_type=q.QuantType.QInt8,
            calibrate_method=calibration_method(settings.calibration_method),
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
                # MatMul and Gemm write fp32 (MatMulIntegerToFloat, QGemm): a Q/DQ pair after each would
                # cost more time than the int8 output saves. Conv keeps its quantized output (QLinearConv).
                "OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"],
            },
        )


def quantize_graph(fp32_path: str, dst: str, settings: QuantizationSettings,
                   calibration: Sequence[np.ndarray] = (), exclude_layers: Sequence[str] = ()) -> dict:
    """Pre-process and quantize an fp32 graph file as ``export_int8`` does, without the gate (the
    benchmark's INT8 rows; random weights have no accuracy to keep). Returns what was done."""
    onnx = require("onnx")
    if settings.mode == "static" and not calibration:
        raise ValueError("Static INT8 quantization needs calibration images.")
    with tempfile.TemporaryDirectory(prefix="sartm_int8_") as work:
        pre_path = os.path.join(work, "pre.onnx")
        preprocessed = preprocess(fp32_path, pre_path)
        plan = plan_quantization(onnx.load(pre_path), settings)
        t0 = time.perf_counter()
        quantize_onnx(pre_path, dst, settings, plan, plan.nodes(exclude_layers),
                      calibration=list(calibration))
        quantize_s = time.perf_counter() - t0
    return {"mode": settings.mode, "reduce_range": settings.reduce_range, "preprocessed": preprocessed,
            "layers_total": len(plan.layers), "quantize_s": quantize_s,
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


def switchboard(qdq, fp32, layers: dict[str, list[str]]):
    """The QDQ graph ``qdq`` with a ``Where`` after every DequantizeLinear whose fp32 origin is known
    (in ``qdq`` itself, or a weight of ``fp32``, the graph it was quantized from); modifies ``qdq``.

    Returns (model, owners): ``owners[i]`` is the set of layers whose quantization puts the i-th
    switched tensor through its Q/DQ pair, as onnxruntime does (a tensor is quantized when a quantized
    node reads it or writes it, and then all its readers see the dequantized values). The model's
    input ``SWITCH_INPUT`` (bool, one per owner) picks the dequantized tensor where True.
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
