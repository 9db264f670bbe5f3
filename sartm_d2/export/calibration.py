"""Calibration of static INT8 quantization: the images whose activation ranges set the scales, and the
reader that feeds them to onnxruntime's calibrator.

The images are the graph's raw input read by the test mapper, so the ranges are those of the inputs
the graph will see (the thermal reading of the config included). onnxruntime is imported on use.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch.nn.functional as F

from ..data import RGBTDatasetMapper
from ..modalities import check_modalities, select_channels
from .runtime import require

__all__ = [
    "CALIBRATION_METHODS",
    "CalibrationImage",
    "calibration_method",
    "calibration_reader",
    "load_calibration_images",
]

logger = logging.getLogger(__name__)

# How the activation ranges come from the calibration images: each name's onnxruntime calibrator.
_CALIBRATORS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
CALIBRATION_METHODS = tuple(_CALIBRATORS)


@dataclass
class CalibrationImage:
    """One calibration input: its name and the graph's raw input (C, H, W) float32 0..255."""

    name: str
    image: np.ndarray


def load_calibration_images(
    cfg, records: Sequence[dict], limit: int, size: tuple[int, int], modality: str = "rgbt"
) -> list[CalibrationImage]:
    """``limit`` records spread evenly over ``records``, read by the test mapper, as the graph's input.

    The mapper is ``RGBTDatasetMapper(cfg, is_train=False, setting=modality)`` with INPUT.MIN_SIZE_TEST
    0, so it yields the raw image that the graph takes (the test resize is inside the graph) with the
    thermal reading of the config. An image of another size than ``size`` (HxW) is resized to it
    (bilinear): calibration only needs the range of the activations, not the exact pixels.
    """
    check_modalities(modality, "modality")
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
    images, resized = [], 0
    for i in picks:
        record = records[i]
        image = mapper(record)["image"].float()
        if tuple(image.shape[1:]) != tuple(size):
            image = F.interpolate(image[None], size=tuple(size), mode="bilinear", align_corners=False)[0]
            resized += 1
        name = str(record.get("image_id", record["file_name"]))
        channels = select_channels(image, modality).numpy()
        images.append(CalibrationImage(name, np.ascontiguousarray(channels, dtype=np.float32)))
    if resized:
        logger.info("Calibration: %d of %d image(s) resized to the export size %dx%d.", resized, len(images),
                    *size)
    return images


def calibration_method(name: str):
    """onnxruntime's ``CalibrationMethod`` of a name of ``CALIBRATION_METHODS``."""
    if name not in _CALIBRATORS:
        raise ValueError(f"--calibration-method must be one of {list(CALIBRATION_METHODS)}, got {name!r}.")
    return getattr(require("onnxruntime.quantization").CalibrationMethod, _CALIBRATORS[name])


def calibration_reader(images: Sequence[np.ndarray]):
    """onnxruntime's ``CalibrationDataReader`` of ``images`` ((C, H, W) graph inputs), one batch of one
    each as the graph's "image" input; it also takes ``set_range``, so that ``CalibStridedMinMax``
    reads one image per calibration pass."""
    quantization = require("onnxruntime.quantization")

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            self.index, self.end = 0, len(images)

        def get_next(self):
            if self.index >= self.end:
                return None
            self.index += 1
            return {"image": images[self.index - 1][None]}

        def __len__(self):
            return len(images)

        def set_range(self, start_index: int, end_index: int):
            self.index, self.end = start_index, min(end_index, len(images))

    return Reader()
