"""``RGBTPredictor``'s call for an exported model: onnxruntime runs the graph, the test mapper prepares it.

Everything comes from the .onnx file and its sidecar (``<file>.json``): the class names and colours
(``metadata``), the input size, ``thermal_16bit_norm`` and the graph's cameras (``modality``); no
model is built and no config is read. The pair goes through the same mapper path as in
``tools/eval_onnx.py`` (the test mapper without a resize: the graph holds the export's), and the
graph through the same ``OnnxSemSegModel``, so a pair gets the logits that ``eval_onnx.py``
computes for it.

An exported graph takes the thermal image already in the RGB frame (``sartm_d2.export`` says why);
with ``rig=`` this predictor warps the thermal camera's image first, by ``RGBTPredictor``'s rule.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from detectron2.data.catalog import Metadata

from ..data import RGBTDatasetMapper
from ..data.degradations import parse_setting, setting_names
from ..data.rig import Rig, as_rig
from ..engine.predictor import _MappedPredictor
from .evaluation import OnnxSemSegModel, graph_runs
from .runtime import OnnxSegmenter

__all__ = ["OnnxRGBTPredictor"]


class OnnxRGBTPredictor(_MappedPredictor):
    """``RGBTPredictor``'s contract (same call, same outputs) for a file of ``tools/export_model.py``.

    The graph has one input size: another raises ``sartm_d2.export.InputSizeError`` naming both
    sizes (re-export at the camera's size instead of resizing here, which would change the result
    against the PyTorch path). ``settings`` are the input settings the graph runs: a two-camera graph
    "rgbt" and every degraded setting (degraded before the graph, as in evaluation), a one-camera
    graph (``export_model.py --modality rgb|thermal``) its camera's; any other is an error.
    ``threads``: onnxruntime's intra-op threads (default: all CPUs). ``rig``: the camera pair's
    :class:`~sartm_d2.data.rig.Rig` or rig file for cameras that are not pixel-aligned: the call then
    takes the thermal camera's image and warps it into the RGB frame (the graph's input) before the
    mapper, as ``RGBTPredictor(cfg, rig=)`` does; no default (the graph is not tied to a camera pair).
    """

    def __init__(self, onnx_path: str, providers: Sequence[str] | None = None, threads: int | None = None,
                 rig: Rig | str | os.PathLike | None = None):
        super().__init__()
        self.path = onnx_path
        self.rig = as_rig(rig)
        self.segmenter = OnnxSegmenter(onnx_path, providers, threads)
        self.model = OnnxSemSegModel(self.segmenter)
        self.modality = self.segmenter.modality
        self.thermal_16bit_norm = self.segmenter.thermal_16bit_norm
        self.metadata = Metadata(name=f"{os.path.basename(onnx_path)}_predictor",
                                 stuff_classes=self.segmenter.class_names, stuff_colors=self.segmenter.colors)
        self.settings = tuple(s for s in setting_names() if graph_runs(self.modality, s))

    def _build_mapper(self, setting: str) -> RGBTDatasetMapper:
        if not graph_runs(self.modality, setting):  # an unknown name fails in parse_setting first
            cameras = parse_setting(setting)[0]
            if self.modality == "rgbt":
                raise ValueError(
                    f"{self.path!r} takes both cameras, so it cannot run the input setting {setting!r} "
                    f"({cameras} alone): export a one-camera graph for it (tools/export_model.py --modality "
                    f"{cameras}) or run the PyTorch model (sartm_d2.engine.RGBTPredictor). It runs 'rgbt' "
                    "and the degraded settings (e.g. 'thermal-noise-2')."
                )
            raise ValueError(
                f"{self.path!r} is a one-camera graph for {self.modality} images, so it cannot run the input "
                f"setting {setting!r}: it runs {self.modality!r} alone (demo: --modality {self.modality}); "
                "export a two-camera graph (tools/export_model.py --modality rgbt) for the others."
            )
        return RGBTDatasetMapper(is_train=False, augmentations=[], thermal_16bit_norm=self.thermal_16bit_norm,
                                 num_label_classes=len(self.segmenter.class_names), setting=setting)

    def prepare(self, rgb, thermal, modalities: str | None = None, *, image_id: str | None = None) -> dict:
        """``RGBTPredictor.prepare`` at the exported size; ``modalities`` defaults to the graph's own."""
        inputs = super().prepare(rgb, thermal, modalities or self.modality, image_id=image_id)
        self.segmenter.check_size(*inputs["image"].shape[1:])
        return inputs

    def __call__(self, rgb, thermal, modalities: str | None = None, *, image_id: str | None = None) -> dict:
        """``RGBTPredictor``'s call; ``modalities`` defaults to the graph's own: "rgbt", or the camera of
        a one-camera graph (which then reads that camera from RGB-T inputs)."""
        return super().__call__(rgb, thermal, modalities or self.modality, image_id=image_id)
