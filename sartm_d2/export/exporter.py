"""ONNX export of a trained SARTM: the prepared model in ``ExportableSARTM``, fp32 or fp16, and a sidecar.

Choices, each forced by a failure of the alternative:

* ``torch.onnx.export(..., dynamo=False, opset_version=18)``: the dynamo exporter fails inside
  ``torch.export`` on this model; the TorchScript exporter traces it (fixed input size).
* fp32 export always; fp16 is that graph converted with onnxruntime's float16 tool, inputs and
  outputs kept fp32. bf16 is refused: onnxruntime has no bf16 kernels for most of these ops (a bf16
  graph fails to load: "unsupported type: tensor(bfloat16)"), so INFERENCE_DTYPE is forced to float32.
* One fixed size per file (the graph is traced at it); it is recorded in the sidecar.
* int8 is the fp32 graph quantized by ``sartm_d2.export.quantize`` (calibrated, with its own gate).
* ``modality`` "rgb" / "thermal": a one-camera graph (``ExportableSARTM``), input that camera alone.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..data import get_classes
from ..modalities import CHANNELS, check_modalities
from .graph import ExportableSARTM, ExportGeometry, export_geometry
from .runtime import SIDECAR_FORMAT, require, sidecar_path

__all__ = [
    "EXPORT_DTYPES",
    "OPSET",
    "ExportResult",
    "build_export_module",
    "export_cfg",
    "export_file_name",
    "export_onnx",
    "write_onnx",
    "write_sidecar",
]

logger = logging.getLogger(__name__)

OPSET = 18
EXPORT_DTYPES = ("fp32", "fp16", "int8")
_BF16_NAMES = ("bf16", "bfloat16")


@dataclass
class ExportResult:
    onnx_path: str
    sidecar_path: str
    model: torch.nn.Module  # the prepared fp32 model the graph came from (the parity reference)
    module: ExportableSARTM
    geometry: ExportGeometry
    dtype: str


def check_dtype(dtype: str) -> str:
    if dtype in _BF16_NAMES:
        raise ValueError(
            "bf16 export is not supported: onnxruntime (CPU and CUDA) has no bfloat16 kernels for most ops "
            "of this model, so such a file fails to load ('unsupported type: tensor(bfloat16)'). Export "
            "--dtype fp32, --dtype int8 for CPUs, or --dtype fp16 for GPUs and TensorRT."
        )
    if dtype not in EXPORT_DTYPES:
        raise ValueError(f"--dtype must be one of {list(EXPORT_DTYPES)}, got {dtype!r}.")
    return dtype


def check_modality(modality: str) -> str:
    check_modalities(modality, "--modality")
    return modality


def export_file_name(dtype: str = "fp32", modality: str = "rgbt") -> str:
    """model.onnx, model_fp16.onnx, model_int8.onnx; one camera: model_rgb.onnx, model_thermal_int8.onnx."""
    parts = ["model"] + ([modality] if modality != "rgbt" else []) + ([dtype] if dtype != "fp32" else [])
    return "_".join(parts) + ".onnx"


def export_cfg(cfg):
    """A copy of ``cfg`` for tracing: fp32 (INFERENCE_DTYPE float32), eager (COMPILE ""), on the CPU."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.SARTM.COMPILE = ""  # the tracer records eager ops; a torch.compile wrapper would hide them
    if cfg.MODEL.SARTM.INFERENCE_DTYPE != "float32":
        logger.info(
            "Exporting in fp32: MODEL.SARTM.INFERENCE_DTYPE %s is torch autocast, which ONNX does not carry.",
            cfg.MODEL.SARTM.INFERENCE_DTYPE,
        )
        cfg.MODEL.SARTM.INFERENCE_DTYPE = "float32"
    cfg.freeze()
    return cfg


def class_names_and_colors(cfg) -> tuple[list[str], list[tuple[int, int, int]]]:
    """The names and colours the demo would draw with (DATASETS.TEST[0], else DATASETS.TRAIN[0])."""
    names = list(cfg.DATASETS.TEST) or list(cfg.DATASETS.TRAIN)
    if not names:
        raise ValueError("DATASETS.TEST and DATASETS.TRAIN are both empty: the classes come from them.")
    return get_classes(names[0], cfg.DATASETS.BACKGROUND_AS_IGNORE)


def build_export_module(
    cfg, height: int, width: int, modality: str = "rgbt"
) -> tuple[torch.nn.Module, ExportableSARTM]:
    """The prepared fp32 model of ``cfg`` + MODEL.WEIGHTS (strict load) and its export wrapper
    (``modality`` "rgb" / "thermal": a one-camera graph)."""
    from ..engine import build_inference_model  # the engine pulls in the trainer: import on use

    cfg = export_cfg(cfg)
    model = build_inference_model(cfg)
    # The model's padding, not INPUT.SIZE_DIVISIBILITY: it raises the config's value to its backbone's.
    geometry = export_geometry(
        height, width, min_size_test=cfg.INPUT.MIN_SIZE_TEST, max_size_test=cfg.INPUT.MAX_SIZE_TEST,
        size_divisibility=model.size_divisibility,
    )
    return model, ExportableSARTM(model, geometry, check_modality(modality)).eval()


def write_onnx(module: ExportableSARTM, path: str, dtype: str = "fp32", opset: int = OPSET) -> str:
    """Trace ``module`` at its geometry's size into ``path`` (fp32, or converted to fp16); checked."""
    onnx = require("onnx")
    if check_dtype(dtype) == "int8":
        raise ValueError("write_onnx writes fp32/fp16; an int8 graph is quantized from the fp32 one "
                         "(sartm_d2.export.quantize.export_int8, tools/export_model.py --dtype int8).")
    g = module.geometry
    example = torch.zeros(1, module.input_channels, g.height, g.width)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=folder, prefix=".tmp_export_")
    os.close(fd)
    try:
        # The tracer warns at every shape-dependent Python branch of the model: expected, since the
        # graph is traced for one fixed size (recorded in the sidecar and checked at run time).
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")  # strided slices
            torch.onnx.export(
                module, (example,), tmp, input_names=["image"], output_names=module.output_names,
                opset_version=opset, dynamo=False, do_constant_folding=True,
            )
        graph = onnx.load(tmp)
        # The tracer leaves the output dims unknown (Hiera's shape arithmetic stays in the graph);
        # state them, so runtimes and TensorRT see the fixed sizes. The full check below verifies them.
        k = len(module.model.class_names)
        shapes = ([1, k, g.height, g.width], [1, g.height, g.width], [1, 2])  # logits, labels, trust
        for output, dims in zip(graph.graph.output, shapes):
            shape = output.type.tensor_type.shape
            del shape.dim[:]
            for d in dims:
                shape.dim.add().dim_value = d
        _fold_constant_nonzero(graph.graph)
        if dtype == "fp16":
            require("onnxruntime")
            from onnxruntime.transformers.float16 import convert_float_to_float16

            # keep_io_types: the input stays raw fp32 0..255 and the logits fp32, like the fp32 file.
            graph = convert_float_to_float16(graph, keep_io_types=True)
            _sort_nodes(graph.graph)  # the converter appends its input casts after their consumers
        onnx.save(graph, tmp)
        onnx.checker.check_model(tmp, full_check=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _fold_constant_nonzero(graph) -> int:
    """Replace each NonZero of a constant by its result; returns how many.

    A one-camera graph selects its stream with the constant presence mask (``x[present[:, 0]]``),
    which the tracer writes as NonZero of a constant. Neither the exporter nor onnxruntime folds it,
    so every shape behind it stays dynamic: Hiera's position-embedding resize then runs on every call
    instead of being folded as in the two-stream graph (its cost: benchmarks/RESULTS.md, one camera).
    """
    onnx = require("onnx")
    numpy_helper = onnx.numpy_helper
    constants = {i.name: i for i in graph.initializer}
    constants.update({n.output[0]: n.attribute[0].t for n in graph.node if n.op_type == "Constant"
                      and n.attribute and n.attribute[0].name == "value"})
    folded = 0
    for i, node in enumerate(graph.node):
        if node.op_type == "NonZero" and node.input[0] in constants:
            value = np.array(np.nonzero(numpy_helper.to_array(constants[node.input[0]])), dtype=np.int64)
            graph.node[i].CopyFrom(onnx.helper.make_node(
                "Constant", [], [node.output[0]], name=node.name or f"folded_nonzero_{i}",
                value=numpy_helper.from_array(value, node.output[0]),
            ))
            folded += 1
    return folded


def _subgraph_inputs(node) -> set[str]:
    """Outer-scope names that the subgraphs of ``node`` (If/Loop branches) read."""
    names: set[str] = set()
    for attr in node.attribute:
        for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
            local = {i.name for i in sub.input} | {i.name for i in sub.initializer}
            for n in sub.node:
                local.update(n.output)
                names.update(i for i in [*n.input, *_subgraph_inputs(n)] if i and i not in local)
    return names


def _sort_nodes(graph) -> None:
    """Order ``graph.node`` topologically (stable: the original order wherever it is already valid)."""
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        rest = []
        for node in pending:
            if all(i in known for i in [*node.input, *_subgraph_inputs(node)]):
                ordered.append(node)
                known.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ValueError(f"The exported graph has a cycle or an undefined input at {rest[0].name!r}.")
        pending = rest
    copies = [type(n)() for n in ordered]
    for copy, node in zip(copies, ordered):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_sidecar(
    onnx_path: str, cfg, geometry: ExportGeometry, dtype: str, *, num_classes: int,
    config_file: str | None = None, parity: dict | None = None, trust: bool = False, modality: str = "rgbt",
) -> str:
    """Write ``<file>.json``: what a runtime needs (classes, colours, size, thermal norm) and provenance.

    ``modality``: which cameras the graph takes ("rgbt"; "rgb" or "thermal" for a one-camera graph,
    whose input has that camera's channels only, see ``input.channels``)."""
    onnx = require("onnx")
    names, colors = class_names_and_colors(cfg)
    if len(names) != num_classes:
        raise ValueError(f"The model has {num_classes} classes, the dataset names {len(names)}: {names}.")
    weights = cfg.MODEL.WEIGHTS
    meta = {
        "format": SIDECAR_FORMAT,
        "onnx_file": os.path.basename(onnx_path),
        "dtype": dtype,
        "opset": OPSET,
        "modality": check_modality(modality),
        "input": {
            "name": "image", "shape": [1, len(CHANNELS[modality]), geometry.height, geometry.width],
            "dtype": "float32", "height": geometry.height, "width": geometry.width,
            "channels": list(CHANNELS[modality]),
            "range": "0..255: RGB as read (uint8 values), thermal after INPUT.THERMAL_16BIT_NORM "
                     "(sartm_d2.data.io.read_rgbt); normalisation (INPUT.THERMAL_NORM included), resize and "
                     "padding are in the graph",
            "thermal_frame": "the RGB image's: cameras that are not pixel-aligned warp thermal first by "
                             "their rig (sartm_d2.data.warp_thermal); NaN marks pixels without thermal "
                             "data (outside the thermal camera's view), which the graph treats as a missing "
                             "camera",
        },
        "outputs": {
            "logits": {"shape": [1, num_classes, geometry.height, geometry.width], "dtype": "float32"},
            "labels": {"shape": [1, geometry.height, geometry.width], "dtype": "int64"},
            **({"trust": {"shape": [1, 2], "dtype": "float32", "channels": ["RGB", "T"]}} if trust else {}),
        },
        "class_names": list(names),
        "colors": [list(c) for c in colors],
        "thermal_16bit_norm": cfg.INPUT.THERMAL_16BIT_NORM,
        "thermal_norm": cfg.INPUT.THERMAL_NORM,
        "geometry": geometry.to_dict(),
        "pixel_mean": list(cfg.MODEL.PIXEL_MEAN),
        "pixel_std": list(cfg.MODEL.PIXEL_STD),
        "source": {
            "config_file": os.path.abspath(config_file) if config_file else None,
            "weights": os.path.abspath(weights) if weights and "://" not in weights else weights,
            "weights_sha256": _sha256(weights) if weights and os.path.isfile(weights) else None,
            "config": cfg.dump(),
        },
        "exported": {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__, "onnx": onnx.__version__,
            "exporter": f"torch.onnx.export(dynamo=False, opset_version={OPSET})",
        },
        "parity": parity,
    }
    path = sidecar_path(onnx_path)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=2)
    os.replace(tmp, path)
    return path


def update_sidecar(onnx_path: str, **fields) -> None:
    """Set top-level fields of an existing sidecar (the parity report, after the check)."""
    path = sidecar_path(onnx_path)
    with open(path) as f:
        meta = json.load(f)
    meta.update(fields)
    with open(path + ".tmp", "w") as f:
        json.dump(meta, f, indent=2)
    os.replace(path + ".tmp", path)


def export_onnx(cfg, output: str, height: int, width: int, dtype: str = "fp32", *,
                config_file: str | None = None, modality: str = "rgbt") -> ExportResult:
    """Export the model of ``cfg`` + MODEL.WEIGHTS to ``output`` (a folder: ``export_file_name``).

    fp32 or fp16 (int8: ``sartm_d2.export.quantize.export_int8``). The sidecar's ``parity`` is null
    until :func:`sartm_d2.export.check_parity` has run.
    """
    check_dtype(dtype)
    require("onnx")
    cfg = export_cfg(cfg)
    model, module = build_export_module(cfg, height, width, modality)
    path = os.path.join(output, export_file_name(dtype, modality))
    logger.info("Exporting %s at %dx%d (%s) to %s", cfg.MODEL.WEIGHTS, height, width, dtype, path)
    write_onnx(module, path, dtype)
    side = write_sidecar(path, cfg, module.geometry, dtype, config_file=config_file,
                         num_classes=len(model.class_names), trust=module.has_trust, modality=modality)
    logger.info("Wrote %s (%.1f MB) and %s", path, os.path.getsize(path) / 1e6, side)
    return ExportResult(path, side, model, module, module.geometry, dtype)
