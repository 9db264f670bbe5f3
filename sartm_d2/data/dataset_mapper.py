"""The one dataset mapper of every RGB-T dataset (the records of ``sartm_d2.data.datasets``)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import cv2
import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import transforms as T

from ..modalities import CAMERAS, MODALITIES
from .degradations import LEGACY_KINDS, check_kinds, degrade, get_degradation, parse_setting
from .io import check_label_values, read_label, read_rgbt, remap_background

__all__ = ["RGBTDatasetMapper"]

logger = logging.getLogger(__name__)

# Jitter ranges of the photometric augmentations (multiplicative factors, as in detectron2's
# RandomBrightness / RandomContrast / RandomSaturation).
_COLOR_JITTER = (0.8, 1.2)


def _thermal_photometric(thermal: np.ndarray, gain: float, offset: float, gamma: float) -> np.ndarray:
    """AGC-like change of an 8-bit-range thermal image: gamma on 0..1, then gain and offset, clipped."""
    curved = 255.0 * np.power(np.clip(thermal, 0.0, 255.0) / 255.0, gamma)
    return np.clip(curved * gain + offset, 0.0, 255.0).astype(np.float32)


def _degrade_one(rgb, thermal, which: str, kind: str, level: int, key: str):
    """(rgb, thermal) with the ``which`` one degraded (``sartm_d2.data.degradations.degrade``)."""
    if which == "rgb":
        return degrade(rgb, kind, level, seed_key=key), thermal
    return rgb, degrade(thermal, kind, level, seed_key=key)


def _criterion_uses_clean_copies(cfg) -> bool:
    """Whether the model's criterion takes corrupted samples' clean copies (its rule, not a second one)."""
    from ..modeling.criterion import SARTMCriterion

    return SARTMCriterion(cfg).uses_clean_copies


def _random_view(h: int, w: int) -> np.ndarray:
    """A bool H x W mask of a random thermal field of view inside the RGB image: the image rectangle
    scaled to 60..95% of each side, rotated by up to 3 degrees and shifted to a random place that keeps
    it at least half inside (drawn from numpy's global generator, which the loader seeds per sample)."""
    sy, sx = np.random.uniform(0.6, 0.95, size=2)
    angle = np.deg2rad(np.random.uniform(-3.0, 3.0))
    cy, cx = np.random.uniform(0.25, 0.75) * h, np.random.uniform(0.25, 0.75) * w
    half = np.array([[-sx * w, -sy * h], [sx * w, -sy * h], [sx * w, sy * h], [-sx * w, sy * h]]) / 2.0
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    corners = half @ rotation.T + np.array([cx, cy])
    mask = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(mask, np.round(corners).astype(np.int32), 1)
    return mask.astype(bool)


def _to_chw(rgb: np.ndarray, thermal: np.ndarray) -> torch.Tensor:
    """float32 (4, H, W) R, G, B, T tensor of an RGB and a thermal image."""
    image = np.concatenate([rgb, thermal[:, :, None]], axis=2).astype(np.float32, copy=False)
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


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
    4. Photometric augmentation after geometry: ``color_augmentations`` on RGB only, the AGC-like
       ``thermal_photometric`` (gain, offset, gamma) on thermal only; both clipped back to 0..255.
    5. Which modalities the model sees ("modalities": "rgbt", "rgb" or "thermal"): in training drawn
       per sample with ``modality_probs`` (modality dropout; the loader seeds the draw by the
       sample's position, so it is reproducible and resumes exactly), and a sample with both may get
       one degraded by a family of ``degradation_kinds``; at test time the ``setting``'s, which may
       also degrade one modality (``sartm_d2.data.degradations``).
    6. Output: the record's fields plus "image" (float32 4 x H x W: R, G, B, T in 0..255),
       "sem_seg" (int64 H x W, when a label exists), "modalities", "height" and "width" (the
       ORIGINAL size, which is what ``sem_seg_postprocess`` resizes predictions to). With
       ``keep_clean``, a training sample that was changed (photometric augmentation, modality
       dropout, degradation, partial view) also carries "clean_image", the same image before any of
       that (the consistency loss's teacher input, the gain correction's target).
    """

    @configurable
    def __init__(
        self,
        *,
        is_train: bool,
        augmentations: Sequence[T.Augmentation | T.Transform],
        color_augmentations: Sequence[T.Augmentation | T.Transform] = (),
        thermal_16bit_norm: str = "percentile",
        num_label_classes: int,
        background_as_ignore: bool = False,
        ignore_label: int = 255,
        modality_probs: Sequence[float] = (1.0, 0.0, 0.0),
        dead_frame_prob: float = 0.0,
        partial_view_prob: float = 0.0,
        degradation_prob: float = 0.0,
        degradation_kinds: Sequence[str] = LEGACY_KINDS,
        thermal_photometric: dict | None = None,
        keep_clean: bool = False,
        corruption_ramp: Sequence[int] = (0, 0),
        setting: str = "rgbt",
    ):
        """
        Args:
            is_train: training mode (a label is then required).
            augmentations: geometric augmentations applied to RGB, thermal and label together.
            color_augmentations: photometric augmentations of the RGB image only.
            thermal_16bit_norm: "percentile", "minmax" or "fixed" (see ``sartm_d2.data.io``).
            num_label_classes: classes as stored in the label files (ids 0..num_label_classes-1),
                i.e. including class 0 also when it becomes ignore.
            background_as_ignore: map label 0 to ``ignore_label`` and shift the others down.
            ignore_label: the "ignore" value of the label files and of the output.
            modality_probs: training: probabilities that a sample keeps both modalities, RGB only or
                thermal only (INPUT.MODALITY_DROPOUT.{BOTH, RGB_ONLY, THERMAL_ONLY}).
            partial_view_prob: training: probability that a sample with both cameras sees thermal only in a
                random part of the RGB view (a rig's thermal camera with a smaller field of view): NaN
                elsewhere, which the model treats as a missing camera at those pixels
                (INPUT.MODALITY_DROPOUT.PARTIAL_VIEW).
            dead_frame_prob: training: probability that a dropped camera is instead sent as a flat frame
                at a random level, both streams computed (INPUT.MODALITY_DROPOUT.DEAD_FRAME).
            degradation_prob: training: probability that a sample with both modalities gets one of them
                degraded (random modality, kind and level of ``sartm_d2.data.degradations``), so
                that the fusion learns when not to trust a stream (INPUT.DEGRADATION_AUG_PROB).
            degradation_kinds: the families that augmentation draws from (INPUT.DEGRADATION_AUG_KINDS);
                each (camera, family) pair it applies to is equally likely, the level uniform.
            thermal_photometric: training: {"prob", "gain", "offset", "gamma"} (probability and
                (low, high) ranges, INPUT.THERMAL_PHOTOMETRIC), or None (off).
            keep_clean: training: attach "clean_image" (before any corruption: photometric, dropout,
                degradation, partial view) to samples that any of those changed
                (MODEL.SARTM.CONSISTENCY.LOSS_WEIGHT or TRUST_WEIGHT > 0).
            corruption_ramp: training: (start, end) iterations over which the probabilities of modality
                dropout, degradation and thermal photometric augmentation grow from 0 to their values
                (INPUT.CORRUPTION_RAMP; the loader passes ``iteration``); (0, 0) = no ramp.
            setting: inference: the input setting (TEST.MODALITIES entry), e.g. "rgb", "rgb-noise-2".
        """
        self.is_train = is_train
        self.augmentations = T.AugmentationList(list(augmentations))
        self.color_augmentations = T.AugmentationList(list(color_augmentations))
        self.thermal_16bit_norm = thermal_16bit_norm
        self.num_label_classes = num_label_classes
        self.background_as_ignore = background_as_ignore
        self.ignore_label = ignore_label
        probs = np.asarray(modality_probs, dtype=np.float64)
        if probs.shape != (3,) or (probs < 0).any() or abs(probs.sum() - 1.0) > 1e-6:
            raise ValueError(
                "INPUT.MODALITY_DROPOUT.{BOTH, RGB_ONLY, THERMAL_ONLY} must be three probabilities summing "
                f"to 1, got {list(modality_probs)}."
            )
        self.modality_cdf = np.cumsum(probs)
        if not 0.0 <= dead_frame_prob <= 1.0:
            raise ValueError(f"INPUT.MODALITY_DROPOUT.DEAD_FRAME must be in [0, 1], got {dead_frame_prob}.")
        self.dead_frame_prob = dead_frame_prob
        if not 0.0 <= partial_view_prob <= 1.0:
            raise ValueError(
                f"INPUT.MODALITY_DROPOUT.PARTIAL_VIEW must be in [0, 1], got {partial_view_prob}."
            )
        self.partial_view_prob = partial_view_prob
        if not 0.0 <= degradation_prob <= 1.0:
            raise ValueError(f"INPUT.DEGRADATION_AUG_PROB must be in [0, 1], got {degradation_prob}.")
        self.degradation_prob = degradation_prob
        kinds = check_kinds(degradation_kinds)
        if degradation_prob > 0 and not kinds:
            raise ValueError(
                "INPUT.DEGRADATION_AUG_PROB > 0 needs at least one INPUT.DEGRADATION_AUG_KINDS family."
            )
        families = {k: get_degradation(k) for k in kinds}
        self.degradation_choices = [
            (m, k, families[k].levels) for m in CAMERAS for k in kinds if m in families[k].cameras
        ]
        tp = thermal_photometric if thermal_photometric and thermal_photometric["prob"] > 0 else None
        self.thermal_photometric = tp
        if tp is not None:
            ranges_ok = all(len(tp[k]) == 2 and tp[k][0] <= tp[k][1] for k in ("gain", "offset", "gamma"))
            if not (0.0 <= tp["prob"] <= 1.0 and ranges_ok and tp["gain"][0] > 0 and tp["gamma"][0] > 0):
                raise ValueError(
                    "INPUT.THERMAL_PHOTOMETRIC: PROB must be in [0, 1] and GAIN, OFFSET, GAMMA (low, high) "
                    f"ranges with low <= high (GAIN and GAMMA > 0), got {tp}."
                )
        self.keep_clean = keep_clean
        start, end = (int(v) for v in corruption_ramp)
        if not 0 <= start <= end:
            raise ValueError(
                f"INPUT.CORRUPTION_RAMP must be (start, end) with 0 <= start <= end, got {corruption_ramp}."
            )
        self.corruption_ramp = (start, end)
        self.setting = setting
        self.modalities, self.degradation = parse_setting(setting)
        mode = "training" if is_train else "inference"
        logger.info("[RGBTDatasetMapper] geometric augmentations in %s: %s", mode, list(augmentations))

    @classmethod
    def from_config(cls, cfg, is_train: bool = True, setting: str = "rgbt"):
        ignore = cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
        augs: list[T.Augmentation] = []
        color_augs: list[T.Augmentation] = []
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
        elif cfg.INPUT.MIN_SIZE_TEST != 0:
            augs.append(T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice"))
        background_as_ignore = cfg.DATASETS.BACKGROUND_AS_IGNORE
        dropout = cfg.INPUT.MODALITY_DROPOUT
        tp = cfg.INPUT.THERMAL_PHOTOMETRIC
        return {
            "is_train": is_train,
            "setting": setting,
            "augmentations": augs,
            "color_augmentations": color_augs,
            "thermal_16bit_norm": cfg.INPUT.THERMAL_16BIT_NORM,
            "num_label_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES + int(background_as_ignore),
            "background_as_ignore": background_as_ignore,
            "ignore_label": ignore,
            "modality_probs": (dropout.BOTH, dropout.RGB_ONLY, dropout.THERMAL_ONLY),
            "dead_frame_prob": dropout.DEAD_FRAME,
            "partial_view_prob": dropout.PARTIAL_VIEW if is_train else 0.0,
            "degradation_prob": cfg.INPUT.DEGRADATION_AUG_PROB if is_train else 0.0,
            "degradation_kinds": tuple(cfg.INPUT.DEGRADATION_AUG_KINDS),
            "thermal_photometric": {
                "prob": tp.PROB if is_train else 0.0, "gain": tuple(tp.GAIN), "offset": tuple(tp.OFFSET),
                "gamma": tuple(tp.GAMMA),
            },
            "keep_clean": is_train and _criterion_uses_clean_copies(cfg),
            "corruption_ramp": tuple(cfg.INPUT.CORRUPTION_RAMP),
        }

    @property
    def uses_iteration(self) -> bool:
        """Whether ``__call__`` wants the training iteration (a corruption ramp is set)."""
        return self.is_train and self.corruption_ramp[1] > 0

    def _ramp(self, iteration: int | None) -> float:
        """Fraction (0..1) of the corruption probabilities in force at ``iteration``."""
        start, end = self.corruption_ramp
        if iteration is None or end == 0 or iteration >= end:
            return 1.0
        if iteration < start:
            return 0.0
        return (iteration - start + 1) / (end - start + 1)

    def __call__(self, dataset_dict: dict, iteration: int | None = None) -> dict:
        """Map one record; ``iteration`` (training, given by the loader) drives INPUT.CORRUPTION_RAMP."""
        dataset_dict = copy.deepcopy(dataset_dict)
        rgb, thermal = read_rgbt(dataset_dict, self.thermal_16bit_norm)
        label = None
        label_path = dataset_dict.get("sem_seg_file_name")
        if label_path:
            label = read_label(label_path, expected_shape=rgb.shape[:2])
            check_label_values(label, self.num_label_classes, label_path, self.ignore_label)
            if self.background_as_ignore:
                label = remap_background(label, self.ignore_label)
        elif self.is_train:
            raise ValueError(
                f"Training record {dataset_dict.get('file_name')!r} has no 'sem_seg_file_name'; "
                "training needs a label for every image."
            )
        return self.map_images(dataset_dict, rgb, thermal, label, iteration)

    def map_images(
        self,
        dataset_dict: dict,
        rgb: np.ndarray,
        thermal: np.ndarray,
        label: np.ndarray | None = None,
        iteration: int | None = None,
    ) -> dict:
        """Steps 3 to 6 on images already read (as ``io.read_rgbt`` returns them) and a checked label.

        ``dataset_dict`` gets the outputs (it is changed in place and returned); "image_id" (or
        "file_name") seeds the test setting's degradation. The predictor (``sartm_d2.engine``) calls
        this, so that one picture is prepared exactly as the test loader prepares it.
        """
        ramp = self._ramp(iteration)
        height, width = rgb.shape[:2]
        aug_input = T.AugInput(rgb.astype(np.float32), sem_seg=label)
        tfms = self.augmentations(aug_input)
        rgb, label = aug_input.image, aug_input.sem_seg
        thermal = tfms.apply_image(thermal)

        if self.is_train and self.color_augmentations.augs:
            color_input = T.AugInput(np.ascontiguousarray(rgb))
            self.color_augmentations(color_input)
            rgb = np.clip(color_input.image, 0.0, 255.0)
        untouched = (rgb, thermal)  # the clean copy of a corrupted training sample
        tp = self.thermal_photometric
        photometric = self.is_train and tp is not None and np.random.rand() < ramp * tp["prob"]
        if photometric:
            gain, offset, gamma = (np.random.uniform(*tp[k]) for k in ("gain", "offset", "gamma"))
            thermal = _thermal_photometric(thermal, gain, offset, gamma)

        clean = None
        if self.is_train:
            modalities = "rgbt"
            if self.modality_cdf[0] < 1.0:  # no draw without dropout: the random stream stays as it was
                cdf = self.modality_cdf[:2]
                if ramp < 1.0:  # the ramp scales the dropped share
                    cdf = 1.0 - ramp * (1.0 - cdf)
                choice = int(np.searchsorted(cdf, np.random.rand(), side="right"))
                modalities = MODALITIES[choice]  # the order of modality_probs
            dead = modalities != "rgbt" and np.random.rand() < self.dead_frame_prob
            degrade_one = self.degradation_prob > 0 and modalities == "rgbt"
            partial = (self.partial_view_prob > 0 and modalities == "rgbt"
                       and np.random.rand() < ramp * self.partial_view_prob)
            if self.keep_clean and (modalities != "rgbt" or degrade_one or partial or photometric):
                clean = untouched
            if partial:
                thermal = np.where(_random_view(*thermal.shape[:2]), thermal, np.float32(np.nan))
            if dead:  # the dropped camera sends flat frames instead: both streams run
                level = np.random.uniform(0.0, 255.0)
                if modalities == "rgb":
                    thermal = np.full_like(thermal, level)
                else:
                    rgb = np.full_like(rgb, level)
                modalities = "rgbt"
            elif degrade_one and np.random.rand() < ramp * self.degradation_prob:
                choices = self.degradation_choices
                which, kind, levels = choices[np.random.randint(len(choices))]
                level, key = levels[np.random.randint(len(levels))], str(np.random.randint(2**31))
                rgb, thermal = _degrade_one(rgb, thermal, which, kind, level, key)
            elif modalities == "rgbt" and not (partial or photometric):
                clean = None  # nothing happened to this sample: no clean copy needed
        else:
            modalities = self.modalities
            if self.degradation is not None:
                key = str(dataset_dict.get("image_id", dataset_dict.get("file_name")))
                rgb, thermal = _degrade_one(rgb, thermal, *self.degradation, key)
        dataset_dict["modalities"] = modalities

        dataset_dict["image"] = _to_chw(rgb, thermal)
        if clean is not None:
            dataset_dict["clean_image"] = _to_chw(*clean)
        if label is not None:
            dataset_dict["sem_seg"] = torch.from_numpy(np.ascontiguousarray(label).astype(np.int64))
        dataset_dict["height"], dataset_dict["width"] = height, width
        return dataset_dict
