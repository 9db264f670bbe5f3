"""Predicting one RGB-T pair from Python: detectron2's ``DefaultPredictor`` for two cameras.

::

    cfg = get_sartm_cfg("configs/mfnet.yaml", ["MODEL.WEIGHTS", "output/mfnet/model_final.pth"])
    predictor = RGBTPredictor(cfg)
    rgb, thermal = read_rgbt({"file_name": rgb_path, "thermal_file_name": thermal_path})
    out = predictor(rgb, thermal)  # or (None, thermal, "thermal"), (rgb, thermal, "rgb-fog-2"), ...
    labels = out["sem_seg"].argmax(0)

The pair is prepared by the test mapper itself (``RGBTDatasetMapper(cfg, is_train=False,
setting=...)`` and its ``map_images``), not by a copy of its steps, so a pair gets the logits that
``--eval-only`` computes for it under the same input setting. ``sartm_d2.export.OnnxRGBTPredictor``
is the same call for an exported model.

Cameras that are not pixel-aligned (``sartm_d2.data.rig``): a predictor with a rig takes the thermal
image as its camera took it (the rig's thermal size) and warps it into the RGB frame once, before the
mapper, as ``io.read_rgbt`` does for a dataset registered with the rig; the pixels the thermal camera
does not see are NaN, which the model treats as no thermal data. The output is in the RGB frame::

    predictor = RGBTPredictor(cfg, rig="rig.json")   # default: DATASETS.TEST[0]'s rig, if it has one
    rgb, thermal = read_rgbt(record, predictor.thermal_16bit_norm, predictor.rig, warp=False)
    out = predictor(rgb, thermal)                     # thermal of the rig's thermal size
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.data.catalog import Metadata

from ..data import RGBTDatasetMapper, get_classes
from ..data.degradations import setting_names
from ..data.rig import Rig, as_rig, in_rgb_frame, load_rig
from ..modalities import PRESENCE
from .defaults import build_inference_model

__all__ = ["RGBTPredictor", "predictor_metadata", "predictor_rig"]

logger = logging.getLogger(__name__)


def predictor_metadata(cfg) -> Metadata:
    """Class names and colours of ``cfg.DATASETS.TEST[0]`` under the config's background protocol.

    A fresh ``Metadata`` (not the catalog's entry): with BACKGROUND_AS_IGNORE the classes differ
    from the registered ones and the catalog must not be mutated.
    """
    if not cfg.DATASETS.TEST:
        raise ValueError(
            "DATASETS.TEST is empty: the predictor takes its class names and colours from its first entry."
        )
    name = cfg.DATASETS.TEST[0]
    classes, colors = get_classes(name, cfg.DATASETS.BACKGROUND_AS_IGNORE)
    return Metadata(name=f"{name}_predictor", stuff_classes=list(classes),
                    stuff_colors=[tuple(c) for c in colors])


def predictor_rig(cfg) -> Rig | None:
    """The rig of ``cfg.DATASETS.TEST[0]`` (its metadata's ``rig_file``, from
    ``register_rgbt_sem_seg(..., rig=)``), or None for an aligned set or an empty DATASETS.TEST."""
    if not cfg.DATASETS.TEST:
        return None
    path = MetadataCatalog.get(cfg.DATASETS.TEST[0]).get("rig_file")
    return None if path is None else load_rig(path)


class _MappedPredictor:
    """The call shared by :class:`RGBTPredictor` and ``sartm_d2.export.OnnxRGBTPredictor``.

    A subclass sets ``model`` (mapper dicts -> ``[{"sem_seg": K x H x W, "trust"?: (2,)}]``, the
    model's inference contract), ``metadata``, ``thermal_16bit_norm``, ``settings`` (the input
    settings it runs), ``rig`` (None: the pair is pixel-aligned) and builds the test mapper of a setting
    (``_build_mapper``).
    """

    model = None
    metadata: Metadata
    thermal_16bit_norm: str
    settings: tuple[str, ...]
    rig: Rig | None = None

    def __init__(self):
        self._mappers: dict[str, RGBTDatasetMapper] = {}

    def to_rgb_frame(self, rgb: np.ndarray | None, thermal: np.ndarray | None, *,
                     image_id: str | None = None) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(rgb, thermal in the RGB frame) by the predictor's rig (``sartm_d2.data.rig.in_rgb_frame``:
        with a rig, the thermal image of its thermal size warped, NaN where the thermal camera does not
        see; without one, both unchanged; a size the rig was not made for is its error, naming
        ``image_id``). What the model is given, and what a panel draws."""
        return in_rgb_frame(rgb, thermal, self.rig, where=image_id or "<array>")

    def _build_mapper(self, setting: str) -> RGBTDatasetMapper:
        raise NotImplementedError

    def mapper(self, setting: str) -> RGBTDatasetMapper:
        """The test mapper of an input setting, built on first use (an unknown name is its error)."""
        if setting not in self._mappers:
            self._mappers[setting] = self._build_mapper(setting)
        return self._mappers[setting]

    def prepare(self, rgb: np.ndarray | None, thermal: np.ndarray | None, modalities: str = "rgbt", *,
                image_id: str | None = None) -> dict:
        """The model's input for a pair, as the test loader makes it: the mapper's dict with "image"
        (float32 4 x H' x W', resized as INPUT.MIN_SIZE_TEST says), "modalities", "height", "width".

        The setting names the cameras the model computes; the image of a camera it lacks may be
        None (its channels are then zeros, which the model never reads) or given (ignored, as the
        loader's image is under that setting). With a rig, ``thermal`` is the thermal camera's image,
        warped here (:meth:`to_rgb_frame`); the dict is then in the RGB frame.
        """
        mapper = self.mapper(modalities)
        if rgb is None and thermal is None:
            raise ValueError("Give an RGB image, a thermal image or both.")
        for camera, image, needed, given in (("RGB", rgb, PRESENCE[mapper.modalities][0], "thermal"),
                                             ("thermal", thermal, PRESENCE[mapper.modalities][1], "rgb")):
            if needed and image is None:
                raise ValueError(
                    f"The input setting {modalities!r} needs the {camera} image, but it is None: give it, or "
                    f"predict from the other camera alone (modalities={given!r})."
                )
        if rgb is not None and (rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8):
            raise ValueError(f"rgb must be uint8 H x W x 3, got {rgb.dtype} of shape {rgb.shape}.")
        if thermal is not None and thermal.ndim != 2:
            raise ValueError(f"thermal must be H x W, got shape {thermal.shape}.")
        rgb, thermal = self.to_rgb_frame(rgb, thermal, image_id=image_id)
        if thermal is not None and rgb is not None and thermal.shape != rgb.shape[:2]:
            raise ValueError(
                f"thermal must be H x W of the RGB image's size {rgb.shape[:2]}, got shape {thermal.shape}: "
                "for cameras that are not pixel-aligned, give the predictor their rig (rig=, a rig file of "
                "tools/calibrate_rig.py)."
            )
        shape = rgb.shape[:2] if rgb is not None else thermal.shape
        rgb = np.zeros((*shape, 3), np.uint8) if rgb is None else rgb
        thermal = np.zeros(shape, np.float32) if thermal is None else thermal.astype(np.float32, copy=False)
        # "image_id" seeds a degradation as the dataset record's does in evaluation.
        record = {} if image_id is None else {"image_id": image_id}
        return mapper.map_images(record, rgb, thermal)

    def __call__(self, rgb: np.ndarray | None, thermal: np.ndarray | None, modalities: str = "rgbt", *,
                 image_id: str | None = None) -> dict:
        """
        Args:
            rgb: uint8 H x W x 3 in RGB order (``sartm_d2.data.io.read_rgbt`` / ``read_rgb``), or None.
            thermal: H x W in 0..255 (float32 as ``read_rgbt`` / ``read_thermal`` return it), or None;
                with a rig, the thermal camera's image (the rig's thermal size), warped here; NaN pixels
                are "no thermal data" either way.
            modalities: an input setting of TEST.MODALITIES: "rgbt", "rgb" or "thermal" (the cameras the
                model computes), or a degraded one such as "thermal-bright-2"
                (``sartm_d2.data.degradations``).
            image_id: seeds the random part of a degradation (noise, where a blob lands) the way
                evaluation seeds it by the record's "image_id"; None: one fixed seed.

        Returns:
            {"sem_seg": (K, H, W) float32 logits on the CPU at the (RGB) input's size, "trust": the (2,)
            float32 [RGB, thermal] trust in 0..1 when the model's fusion estimates one (MODEL.SARTM.FUSION
            "reliability"; a camera not computed gets 0), else None}.
        """
        inputs = self.prepare(rgb, thermal, modalities, image_id=image_id)
        with torch.no_grad():
            output = self.model([inputs])[0]
        trust = output.get("trust")
        trust = None if trust is None else trust.float().cpu()
        return {"sem_seg": output["sem_seg"].float().cpu(), "trust": trust}


class RGBTPredictor(_MappedPredictor):
    """``DefaultPredictor`` for RGB-T: the model of a config with its ``MODEL.WEIGHTS``, one pair per call.

    Like ``DefaultPredictor``: the config is cloned, the model built, its weights loaded and put in
    eval mode, and every call runs without gradients. The model is
    ``build_inference_model(cfg)``'s (a strict load of MODEL.WEIGHTS, no SAM2 or text-teacher file
    read, LoRA merged). ``metadata`` holds the class names and colours (:func:`predictor_metadata`),
    ``thermal_16bit_norm`` the config's INPUT.THERMAL_16BIT_NORM (read images with it), ``settings``
    every input setting it runs.

    ``rig``: the camera pair's :class:`~sartm_d2.data.rig.Rig` or rig file, for pairs that are not
    pixel-aligned (see the module docstring); default: the rig DATASETS.TEST[0] was registered with
    (:func:`predictor_rig`), else none.
    """

    def __init__(self, cfg, rig: Rig | str | os.PathLike | None = None):
        super().__init__()
        self.cfg = cfg.clone()
        self.rig = as_rig(rig) if rig is not None else predictor_rig(self.cfg)
        if rig is None and self.rig is not None:
            logger.info("RGBTPredictor: the rig of DATASETS.TEST[0] %r (%s): thermal images of %dx%d (WxH) "
                        "are warped into the %dx%d RGB frame.", self.cfg.DATASETS.TEST[0], self.rig.path,
                        self.rig.thermal_size[1], self.rig.thermal_size[0], self.rig.rgb_size[1],
                        self.rig.rgb_size[0])
        # MODEL.WEIGHTS checked first (empty, or no such file); strict load; LoRA merged (and, with
        # INFERENCE_DTYPE bfloat16, weights stored in bf16).
        self.model = build_inference_model(self.cfg)
        self.metadata = predictor_metadata(self.cfg)
        self.thermal_16bit_norm = self.cfg.INPUT.THERMAL_16BIT_NORM
        self.settings = tuple(setting_names())
        # Trained with modality dropout (any-modality SARTM)? Without it one camera alone fails badly.
        self.trained_for_one_camera = self.cfg.INPUT.MODALITY_DROPOUT.BOTH < 1.0
        self._warned = False

    def _build_mapper(self, setting: str) -> RGBTDatasetMapper:
        return RGBTDatasetMapper(self.cfg, is_train=False, setting=setting)

    def prepare(self, rgb, thermal, modalities: str = "rgbt", *, image_id: str | None = None) -> dict:
        """The model's input for a pair (see the base class); warns once when a model trained without
        modality dropout is asked for one camera."""
        inputs = super().prepare(rgb, thermal, modalities, image_id=image_id)
        if inputs["modalities"] != "rgbt" and not self.trained_for_one_camera and not self._warned:
            logger.warning(
                "Predicting from %s alone with a model trained without modality dropout "
                "(INPUT.MODALITY_DROPOUT.BOTH = 1): expect a collapse; train with "
                "configs/*-anymodal.yaml for one camera.", inputs["modalities"]
            )
            self._warned = True
        return inputs
