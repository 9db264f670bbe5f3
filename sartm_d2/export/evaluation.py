"""Evaluate an exported model on registered datasets exactly as ``--eval-only`` evaluates the PyTorch one.

Same test loader and mapper (``Trainer.build_test_loader``), same evaluator
(``RGBTSemSegEvaluator`` through ``Trainer.build_evaluator``), same driver (``Trainer.test``): with
identical predictions the table and the metrics are identical. Two settings of the loader follow
the graph instead of the config: it yields the raw image (INPUT.MIN_SIZE_TEST 0; the graph holds
the export's resize) and reads thermal with the sidecar's INPUT.THERMAL_16BIT_NORM.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import torch

from ..data import get_classes
from ..data.degradations import expand_settings, parse_setting
from .runtime import OnnxSegmenter

__all__ = ["OnnxSemSegModel", "evaluate_onnx", "graph_runs"]

logger = logging.getLogger(__name__)


class OnnxSemSegModel:
    """An ``OnnxSegmenter`` with the model's inference contract: mapper dicts -> [{"sem_seg": K x H x W}],
    plus "trust" (2,) when the exported model estimates it."""

    def __init__(self, segmenter: OnnxSegmenter):
        self.segmenter = segmenter

    def __call__(self, batched_inputs: list[dict]) -> list[dict]:
        outputs = []
        for inp in batched_inputs:
            image = inp["image"]
            image = image.numpy() if isinstance(image, torch.Tensor) else image
            out = self.segmenter.outputs(image, source=repr(inp.get("file_name", "an input")))
            result = {"sem_seg": torch.from_numpy(out["logits"])}
            if "trust" in out:
                result["trust"] = torch.from_numpy(out["trust"])
            outputs.append(result)
        return outputs


def evaluate_onnx(
    cfg, onnx_path: str, output_dir: str | None = None, providers: Sequence[str] | None = None,
    threads: int | None = None,
) -> dict:
    """Evaluate ``onnx_path`` on cfg.DATASETS.TEST; results as ``Trainer.test`` returns them.

    Files go to ``output_dir/<dataset>`` (default OUTPUT_DIR/inference_onnx), not where
    ``--eval-only`` writes, so the two can be compared. ``threads``: onnxruntime's intra-op threads
    (default: all CPUs). A one-camera graph reads its camera from the loader's RGB-T images: compare
    it with ``--eval-only TEST.MODALITIES "('rgb',)"`` (or thermal). A two-camera graph runs every
    setting of TEST.MODALITIES with both cameras ("rgbt", the degraded ones: :func:`graph_settings`),
    with ``--eval-only``'s table.
    """
    from ..engine import Trainer  # the engine pulls in the trainer: import on use

    segmenter = OnnxSegmenter(onnx_path, providers, threads)
    if not cfg.DATASETS.TEST:
        raise ValueError("DATASETS.TEST is empty: name the datasets to evaluate on.")
    for name in cfg.DATASETS.TEST:
        classes, _ = get_classes(name, cfg.DATASETS.BACKGROUND_AS_IGNORE)
        if list(classes) != segmenter.class_names:
            raise ValueError(
                f"{onnx_path!r} predicts {segmenter.class_names}, but {name!r} with "
                f"DATASETS.BACKGROUND_AS_IGNORE {cfg.DATASETS.BACKGROUND_AS_IGNORE} has {list(classes)}: "
                "evaluate with the config it was exported from."
            )
    loader_cfg = cfg.clone()
    loader_cfg.defrost()
    loader_cfg.INPUT.MIN_SIZE_TEST = 0  # the graph resizes (as exported); the loader gives the raw image
    if cfg.INPUT.THERMAL_16BIT_NORM != segmenter.thermal_16bit_norm:
        logger.warning(
            "INPUT.THERMAL_16BIT_NORM is %r in the config but %r in %s's sidecar; reading thermal with the "
            "sidecar's, which the model was exported with.", cfg.INPUT.THERMAL_16BIT_NORM,
            segmenter.thermal_16bit_norm, onnx_path,
        )
        loader_cfg.INPUT.THERMAL_16BIT_NORM = segmenter.thermal_16bit_norm
    exported = segmenter.meta.get("geometry", {}).get("min_size_test")
    if exported is not None and exported != cfg.INPUT.MIN_SIZE_TEST:
        logger.warning(
            "INPUT.MIN_SIZE_TEST is %s in the config, %s in %s (the graph's resize is used).",
            cfg.INPUT.MIN_SIZE_TEST, exported, onnx_path,
        )
    loader_cfg.freeze()
    output_dir = output_dir or os.path.join(cfg.OUTPUT_DIR, "inference_onnx")
    settings = graph_settings(cfg, segmenter.modality, onnx_path)
    providers = ", ".join(segmenter.session.get_providers())
    camera = "" if segmenter.modality == "rgbt" else f", {segmenter.modality} camera only"
    logger.info("Evaluating %s with onnxruntime (%s, %d threads%s) on %s", onnx_path, providers,
                segmenter.session.get_session_options().intra_op_num_threads, camera, ", ".join(settings))
    model = OnnxSemSegModel(segmenter)
    if settings == ["rgbt"]:
        evaluators = [Trainer.build_evaluator(cfg, n, os.path.join(output_dir, n)) for n in cfg.DATASETS.TEST]
        return Trainer.test(loader_cfg, model, evaluators)
    return Trainer.test_settings(loader_cfg, model, settings, output_dir)


def graph_settings(cfg, modality: str, onnx_path: str) -> list[str]:
    """The settings of TEST.MODALITIES that a graph of ``modality`` can run, in order.

    A two-camera graph runs "rgbt" and every degraded setting (the loader degrades the image); the
    settings with a camera missing need that camera's one-camera graph and are skipped with a note.
    A one-camera graph runs its camera's setting, whatever TEST.MODALITIES says.
    """
    from ..engine.defaults import trained_degradation_kinds

    settings = expand_settings(cfg.TEST.MODALITIES, trained_degradation_kinds(cfg))
    if modality != "rgbt":
        return [modality]
    runnable = [s for s in settings if graph_runs(modality, s)]
    skipped = [s for s in settings if s not in runnable]
    if skipped:
        logger.info("%s takes both cameras: skipping %s (export one-camera graphs with "
                    "tools/export_model.py --modality rgb|thermal to evaluate them).",
                    onnx_path, ", ".join(skipped))
    if not runnable:
        raise ValueError(f"TEST.MODALITIES {tuple(cfg.TEST.MODALITIES)} has no two-camera setting for "
                         f"{onnx_path!r}: add 'rgbt' or a degraded setting such as 'thermal-noise-2'.")
    return runnable


def graph_runs(modality: str, setting: str) -> bool:
    """Whether a graph of ``modality`` runs the input ``setting``: the setting's cameras are the graph's.

    A two-camera graph runs "rgbt" and every degraded setting (the mapper degrades the raw image
    before the graph sees it); a one-camera graph runs its camera's setting alone.
    """
    return parse_setting(setting)[0] == modality
