"""Per-layer sensitivity of an INT8 graph and the search for the fewest layers to keep in fp32.

A layer's sensitivity is the graph's error with that layer alone quantized (all others fp32): argmax
agreement and logit error against the fp32 graph on the parity images. The search keeps the most
sensitive layers in fp32, the fewest that pass the INT8 parity gate.

Both run on an *evaluator*: ``evaluator(enabled, count)`` gives the logits (K, H, W) of the first
``count`` images (None: all) with the layers ``enabled`` quantized. Static graphs evaluate on the
switchboard (``int8_graph.switchboard``: one session, onnxruntime's own scales); dynamic graphs
quantize the enabled layers with ``quantize_dynamic(nodes_to_quantize=...)`` per call.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..evaluation import confusion_matrix, segmentation_metrics
from .int8_graph import SWITCH_INPUT, QuantizationPlan, quantize_onnx, switchboard
from .parity import ParityReport, max_miou_diff_for, min_agreement_for
from .runtime import require

if TYPE_CHECKING:
    from .quantize import QuantizationSettings

__all__ = [
    "Evaluator",
    "compare_logits",
    "describe_layers",
    "dynamic_evaluator",
    "measure_sensitivity",
    "search_fp32_layers",
    "static_evaluator",
]

logger = logging.getLogger(__name__)

# evaluate(enabled layers, number of images or None for all) -> logits (K, H, W) per image
Evaluator = Callable[[set, "int | None"], list]


def _session_options(threads: int | None):
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
    return options


def static_evaluator(qdq_path: str, fp32_path: str, layers: dict[str, list[str]],
                     images: Sequence[np.ndarray], threads: int | None = None) -> Evaluator:
    """The evaluator of the QDQ graph ``qdq_path`` (quantized from ``fp32_path``) on ``images``
    ((C, H, W) graph inputs), through its switchboard."""
    onnx = require("onnx")
    ort = require("onnxruntime")
    model, owners = switchboard(onnx.load(qdq_path), onnx.load(fp32_path), layers)
    options = _session_options(threads)
    # Basic optimisations only: the Q/DQ pairs run as written (the quantization simulated), not fused
    # into int8 kernels.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    session = ort.InferenceSession(model.SerializeToString(), sess_options=options,
                                   providers=["CPUExecutionProvider"])
    del model

    dequantized = sum(1 for n in onnx.load(qdq_path).graph.node if n.op_type == "DequantizeLinear")
    logger.info("Sensitivity graph: %d switchable Q/DQ tensors (%d weight/bias scales fixed).", len(owners),
                dequantized - len(owners))

    def run(enabled: set[str], count: int | None = None) -> list[np.ndarray]:
        switch = np.array([bool(o & enabled) for o in owners], dtype=bool)
        feeds = [{"image": x[None], SWITCH_INPUT: switch} for x in images[:count]]
        return [session.run(["logits"], feed)[0][0] for feed in feeds]

    return run


def dynamic_evaluator(pre_path: str, plan: QuantizationPlan, images: Sequence[np.ndarray],
                      settings: QuantizationSettings, workdir: str, threads: int | None = None) -> Evaluator:
    """The evaluator of dynamic quantization of the pre-processed fp32 graph ``pre_path``: each call
    quantizes the enabled layers alone (in ``workdir``) and runs that graph."""
    ort = require("onnxruntime")
    options = _session_options(threads)
    fp32 = ort.InferenceSession(pre_path, sess_options=options, providers=["CPUExecutionProvider"])

    def run(enabled: set[str], count: int | None = None) -> list[np.ndarray]:
        session = fp32
        if enabled:
            path = os.path.join(workdir, "dynamic_trial.onnx")
            quantize_onnx(pre_path, path, settings, plan, only=plan.nodes(sorted(enabled)))
            session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
        return [session.run(["logits"], {"image": x[None]})[0][0] for x in images[:count]]

    return run


def compare_logits(logits: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> dict:
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


def measure_sensitivity(evaluator: Evaluator, layers: dict[str, list[str]], reference: Sequence[np.ndarray],
                        count: int) -> list[dict]:
    """Each layer alone quantized, on the first ``count`` images: its agreement and logit error
    against ``reference`` (the fp32 logits), most sensitive first, ranked from 1."""
    rows = []
    t0 = time.perf_counter()
    for layer, nodes in layers.items():
        m = compare_logits(evaluator({layer}, count), reference[:count])
        rows.append({"layer": layer, "nodes": list(nodes), **m})
    rows.sort(key=lambda r: (r["agreement"], -r["mean_abs_logit_diff"]))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    logger.info("Sensitivity of %d layers computed in %.1f s.", len(rows), time.perf_counter() - t0)
    return rows


def describe_layers(rows: Sequence[dict]) -> str:
    """The layers of ``measure_sensitivity``'s rows with their effect alone, for an error message."""
    return "; ".join(
        f"{r['layer']} (alone: {100 * r['agreement']:.2f}% agreement, mean |logit diff| "
        f"{r['mean_abs_logit_diff']:.3g})" for r in rows
    )


def search_fp32_layers(evaluator: Evaluator, order: Sequence[str], reference: Sequence[np.ndarray],
                       gts: Sequence[np.ndarray], class_names: Sequence[str], ignore: int, cap: int,
                       build: Callable[[Sequence[str]], ParityReport], search: list[dict]):
    """Keep the k most sensitive layers in fp32 for the smallest k (1 <= k <= cap) that passes the gate.

    k is first estimated on the evaluator (one run per k: doubling, then bisecting) with the gate's
    bounds against the fp32 graph, then checked for real by ``build(layers kept in fp32)`` (quantize +
    ``check_parity``). The estimate simulates the quantization but not the int8 kernels' own arithmetic,
    so a real failure moves on to at least twice that k (O(log cap) real builds). ``order``: the layers,
    most sensitive first; ``gts``: the parity images' labels (or the fp32 argmax). Each step is appended
    to ``search``. Returns (layers kept in fp32, the last real report).
    """
    ref_miou = _miou_all([r.argmax(0) for r in reference], gts, class_names, ignore)
    min_agreement, max_miou = min_agreement_for("int8"), max_miou_diff_for("int8")
    estimates: dict[int, bool] = {}

    def estimate(k: int) -> bool:
        if k not in estimates:
            logits = evaluator(set(order[k:]), None)
            m = compare_logits(logits, reference)
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
