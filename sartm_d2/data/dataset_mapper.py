"""The one dataset mapper of every RGB-T dataset (the records of ``sartm_d2.data.datasets``)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import transforms as T

from .io import check_label_values, read_label, read_rgbt, remap_background

__all__ = ["RGBTDatasetMapper"]

logger = logging.getLogger(__name__)

# Jitter ranges of the photometric augmentations (multiplicative factors, as in detectron2's
# RandomBrightness / RandomContrast / RandomSaturation).
_COLOR_JITTER = (0.8, 1.2)
_THERMAL_JITTER = (0.9, 1.1)


class RGBTDatasetMapper:
    """Turn an RGB-T record into the model's input dict.

    Steps:

    1. Copy the record (the catalog's dicts are shared) and read RGB (uint8) and thermal (float32,
       0..255; 16-bit thermal normalised by ``thermal_16bit_norm``) with ``io.read_rgbt``.
    2. Read the label (when the record names one; required for training), check its size and
       that every value is a class id or ``ignore_label``; with ``background_as_ignore`` map
       0 -> ignore and k -> k - 1.
    3. Geometric augmentation: ``augmentations`` run on ``T.AugInput(rgb, sem_seg=label)``; the
       returned transforms are applied to the thermal image. RGB and thermal are both float32 here,
       so both are resized by the same bilinear interpolation (detectron2 would use PIL for
       uint8 and torch for float, two different filters) while the label uses nearest.
    4. Photometric augmentation after geometry: ``color_augmentations`` on RGB only and
       ``thermal_augmentations`` on thermal only; both clipped back to 0..255.
    5. Output: the record's fields plus "image" (float32 4 x H x W: R, G, B, T in 0..255),
       "sem_seg" (int64 H x W, when a label exists), "height" and "width" (the ORIGINAL size, which
       is what ``sem_seg_postprocess`` resizes predictions to).
    """

    @configurable
    def __init__(
        self,
        *,
        is_train: bool,
        augmentations: Sequence[T.Augmentation | T.Transform],
        color_augmentations: Sequence[T.Augmentation | T.Transform] = (),
        thermal_augmentations: Sequence[T.Augmentation | T.Transform] = (),
        thermal_16bit_norm: str = "percentile",
        num_label_classes: int,
        background_as_ignore: bool = False,
        ignore_label: int = 255,
    ):
        """
        Args:
            is_train: training mode (a label is then required).
            augmentations: geometric augmentations applied to RGB, thermal and label together.
            color_augmentations: photometric augmentations of the RGB image only.
            thermal_augmentations: photometric augmentations of the thermal image only.
            thermal_16bit_norm: "percentile", "minmax" or "fixed" (see ``sartm_d2.data.io``).
            num_label_classes: classes as stored in the label files (ids 0..num_label_classes-1),
                i.e. including class 0 also when it becomes ignore.
            background_as_ignore: map label 0 to ``ignore_label`` and shift the others down.
            ignore_label: the "ignore" value of the label files and of the output.
        """
        self.is_train = is_train
        self.augmentations = T.AugmentationList(list(augmentations))
        self.color_augmentations = T.AugmentationList(list(color_augmentations))
        self.thermal_augmentations = T.AugmentationList(list(thermal_augmentations))
        self.thermal_16bit_norm = thermal_16bit_norm
        self.num_label_classes = num_label_classes
        self.background_as_ignore = background_as_ignore
        self.ignore_label = ignore_label
        mode = "training" if is_train else "inference"
        logger.info("[RGBTDatasetMapper] geometric augmentations in %s: %s", mode, list(augmentations))

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ignore = cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
        augs: list[T.Augmentation] = []
        color_augs: list[T.Augmentation] = []
        thermal_augs: list[T.Augmentation] = []
        if is_train:
            if tuple(cfg.INPUT.MIN_SIZE_TRAIN) != (0,):
                augs.append(
                    T.ResizeShortestEdge(
                        cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
                    )
                )
            if cfg.INPUT.CROP.ENABLED:
                augs.append(
                    T.RandomCrop_CategoryAreaConstraint(
                        cfg.INPUT.CROP.TYPE,
                        cfg.INPUT.CROP.SIZE,
                        cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA,
                        ignore,
                    )
                )
            if cfg.INPUT.RANDOM_FLIP != "none":
                augs.append(
                    T.RandomFlip(
                        horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                        vertical=cfg.INPUT.RANDOM_FLIP == "vertical",
                    )
                )
            if cfg.INPUT.COLOR_AUG:
                color_augs = [
                    T.RandomBrightness(*_COLOR_JITTER),
                    T.RandomContrast(*_COLOR_JITTER),
                    T.RandomSaturation(*_COLOR_JITTER),
                ]
            if cfg.INPUT.THERMAL_AUG:
                thermal_augs = [T.RandomBrightness(*_THERMAL_JITTER), T.RandomContrast(*_THERMAL_JITTER)]
        elif cfg.INPUT.MIN_SIZE_TEST != 0:
            augs.append(T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice"))
        background_as_ignore = cfg.DATASETS.BACKGROUND_AS_IGNORE
        return {
            "is_train": is_train,
            "augmentations": augs,
            "color_augmentations": color_augs,
            "thermal_augmentations": thermal_augs,
            "thermal_16bit_norm": cfg.INPUT.THERMAL_16BIT_NORM,
            "num_label_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES + int(background_as_ignore),
            "background_as_ignore": background_as_ignore,
            "ignore_label": ignore,
        }

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        rgb, thermal = read_rgbt(dataset_dict, self.thermal_16bit_norm)
        height, width = rgb.shape[:2]

        label = None
        label_path = dataset_dict.get("sem_seg_file_name")
        if label_path:
            label = read_label(label_path, expected_shape=(height, width))
            check_label_values(label, self.num_label_classes, label_path, self.ignore_label)
            if self.background_as_ignore:
                label = remap_background(label, self.ignore_label)
        elif self.is_train:
            raise ValueError(
                f"Training record {dataset_dict.get('file_name')!r} has no 'sem_seg_file_name'; "
                "training needs a label for every image."
            )

        aug_input = T.AugInput(rgb.astype(np.float32), sem_seg=label)
        tfms = self.augmentations(aug_input)
        rgb, label = aug_input.image, aug_input.sem_seg
        thermal = tfms.apply_image(thermal)

        if self.is_train and self.color_augmentations.augs:
            color_input = T.AugInput(np.ascontiguousarray(rgb))
            self.color_augmentations(color_input)
            rgb = np.clip(color_input.image, 0.0, 255.0)
        if self.is_train and self.thermal_augmentations.augs:
            thermal_input = T.AugInput(np.ascontiguousarray(thermal))
            self.thermal_augmentations(thermal_input)
            thermal = np.clip(thermal_input.image, 0.0, 255.0)

        image = np.concatenate([rgb, thermal[:, :, None]], axis=2).astype(np.float32, copy=False)
        dataset_dict["image"] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if label is not None:
            dataset_dict["sem_seg"] = torch.from_numpy(np.ascontiguousarray(label).astype(np.int64))
        dataset_dict["height"], dataset_dict["width"] = height, width
        return dataset_dict
