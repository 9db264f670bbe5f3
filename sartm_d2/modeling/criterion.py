"""SARTM's training objective, beside the model (Mask2Former's way): the model predicts, this scores.

``SARTMCriterion`` owns every loss weight and setting: OHEM cross-entropy of the main and auxiliary
heads, the language-aided distillation, and, for the robust any-modality recipe, the clean/corrupted
split with its consistency and trust terms. ``SARTM`` gets it built (``from_config``) and calls it;
the model's constructor then takes parts, not loss weights.

The clean/corrupted split: a training sample that the mapper degraded or stripped of a camera can
carry its clean image ("clean_image"). When the consistency or trust term is on, the clean copies are
appended to the batch (:meth:`SARTMCriterion.with_clean_copies`) and run in the same batched pass; the
segmentation losses of the clean batch (untouched samples and clean copies) are exactly the plain
model's, and the corrupted samples get their own, weighted apart, so that corrupted rows add to the
clean path's gradient instead of diluting it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from torch import nn

from .losses import (
    LOSS_TYPES,
    consistency_loss,
    gain_correction_loss,
    language_distillation_loss,
    semantic_loss,
    standin_loss,
    trust_fidelity_loss,
)

__all__ = ["CleanSplit", "SARTMCriterion"]


@dataclass(frozen=True)
class CleanSplit:
    """Rows of a batch extended by clean copies: ``corrupted[i]``'s clean copy is row ``copies[i]``;
    ``clean`` are the rows scored as the plain model's batch (untouched samples, then the copies)."""

    corrupted: torch.Tensor
    copies: torch.Tensor
    clean: torch.Tensor


class SARTMCriterion(nn.Module):
    """The weighted losses of one training step (see the module docstring)."""

    @configurable
    def __init__(
        self,
        *,
        ignore_value: int = 255,
        main_loss_weight: float = 1.0,
        aux_loss_weight: float = 0.4,
        loss_type: str = "ohem",
        ohem_thresh: float = 0.7,
        ohem_min_kept_fraction: float = 1.0 / 16,
        distill_enabled: bool = True,
        distill_tau: float = 0.1,
        distill_weight: float = 1.0,
        consistency_weight: float = 0.0,
        consistency_temperature: float = 1.0,
        trust_weight: float = 0.0,
        corrupted_loss_weight: float = 0.25,
        standin_weight: float = 0.0,
        gain_correction_weight: float = 0.0,
    ):
        """
        Args:
            ignore_value: label of unlabelled pixels (padding gets it too).
            main_loss_weight, aux_loss_weight, distill_weight: loss weights (>= 0).
            loss_type, ohem_thresh, ohem_min_kept_fraction: see ``losses.semantic_loss``.
            distill_enabled, distill_tau: language-aided distillation on/off and its temperature.
            consistency_weight, consistency_temperature: KL self-distillation of the clean fused
                prediction into the corrupted one (0 = off).
            trust_weight: weight of ``losses.trust_fidelity_loss`` (used with a fusion that estimates
                trust; 0 = off).
            corrupted_loss_weight: weight of the corrupted samples' own segmentation losses.
            standin_weight: weight of ``losses.standin_loss`` on the clean pairs (with a fusion whose
                stand-ins predict a stream from the other; 0 = off).
            gain_correction_weight: weight of ``losses.gain_correction_loss`` (with the model's learned
                thermal gain correction; 0 = off).
        """
        super().__init__()
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"MODEL.SEM_SEG_HEAD.LOSS_TYPE must be one of {LOSS_TYPES}, got {loss_type!r}.")
        if standin_weight < 0 or gain_correction_weight < 0:
            raise ValueError(
                "MODEL.SARTM.ROBUST.STANDIN_WEIGHT and GAIN_CORRECTION_WEIGHT must be >= 0, got "
                f"{standin_weight} and {gain_correction_weight}."
            )
        weights = (consistency_weight, trust_weight, corrupted_loss_weight)
        if min(weights) < 0 or consistency_temperature <= 0:
            raise ValueError(
                "MODEL.SARTM.CONSISTENCY: LOSS_WEIGHT, TRUST_WEIGHT and CORRUPTED_LOSS_WEIGHT must be >= 0 "
                f"and TEMPERATURE > 0, got {consistency_weight}, {trust_weight}, {corrupted_loss_weight} "
                f"and {consistency_temperature}."
            )
        self.ignore_value = ignore_value
        self.main_loss_weight = main_loss_weight
        self.aux_loss_weight = aux_loss_weight
        self.loss_type = loss_type
        self.ohem_thresh = ohem_thresh
        self.ohem_min_kept_fraction = ohem_min_kept_fraction
        self.distill_enabled = distill_enabled
        self.distill_tau = distill_tau
        self.distill_weight = distill_weight
        self.consistency_weight = consistency_weight
        self.consistency_temperature = consistency_temperature
        self.trust_weight = trust_weight
        self.corrupted_loss_weight = corrupted_loss_weight
        self.standin_weight = standin_weight
        self.gain_correction_weight = gain_correction_weight

    @classmethod
    def from_config(cls, cfg, trust: bool = True):
        """``trust``: whether the model estimates trust and has stand-ins (else TRUST_WEIGHT and
        STANDIN_WEIGHT have nothing to supervise)."""
        head, sartm = cfg.MODEL.SEM_SEG_HEAD, cfg.MODEL.SARTM
        return {
            "ignore_value": head.IGNORE_VALUE,
            "main_loss_weight": head.LOSS_WEIGHT,
            "aux_loss_weight": sartm.AUX_HEAD.LOSS_WEIGHT,
            "loss_type": head.LOSS_TYPE,
            "ohem_thresh": head.OHEM_THRESH,
            "ohem_min_kept_fraction": head.OHEM_MIN_KEPT_FRACTION,
            "distill_enabled": sartm.DISTILL.ENABLED,
            "distill_tau": sartm.DISTILL.TAU,
            "distill_weight": sartm.DISTILL.LOSS_WEIGHT,
            "consistency_weight": sartm.CONSISTENCY.LOSS_WEIGHT,
            "consistency_temperature": sartm.CONSISTENCY.TEMPERATURE,
            "trust_weight": sartm.CONSISTENCY.TRUST_WEIGHT if trust else 0.0,
            "corrupted_loss_weight": sartm.CONSISTENCY.CORRUPTED_LOSS_WEIGHT,
            "standin_weight": sartm.ROBUST.STANDIN_WEIGHT if trust else 0.0,
            "gain_correction_weight": (
                sartm.ROBUST.GAIN_CORRECTION_WEIGHT if sartm.ROBUST.THERMAL_GAIN_CORRECTION else 0.0
            ),
        }

    @property
    def uses_clean_copies(self) -> bool:
        """Whether corrupted samples' clean images join the batch (a term that needs them is on)."""
        return self.consistency_weight > 0 or self.trust_weight > 0 or self.gain_correction_weight > 0

    def with_clean_copies(self, batched_inputs: list[dict]) -> tuple[list[dict], CleanSplit | None]:
        """The batch to run: ``batched_inputs``, plus one clean copy (both cameras) per sample that
        carries "clean_image" when :attr:`uses_clean_copies`; and the split of its rows (None: no copies)."""
        corrupted = [i for i, b in enumerate(batched_inputs) if "clean_image" in b]
        if not corrupted or not self.uses_clean_copies:
            return list(batched_inputs), None
        copies = [{"image": batched_inputs[i]["clean_image"], "sem_seg": batched_inputs[i]["sem_seg"]}
                  for i in corrupted]
        n = len(batched_inputs)
        untouched = [i for i in range(n) if i not in set(corrupted)]
        copy_rows = list(range(n, n + len(copies)))
        split = CleanSplit(
            corrupted=torch.tensor(corrupted, dtype=torch.long),
            copies=torch.tensor(copy_rows, dtype=torch.long),
            clean=torch.tensor(untouched + copy_rows, dtype=torch.long),
        )
        return list(batched_inputs) + copies, split

    def segmentation_losses(
        self,
        main: torch.Tensor,
        aux: torch.Tensor | None,
        sfm: torch.Tensor | None,
        targets: torch.Tensor,
        text_embeddings: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """The plain model's weighted losses; logits are upsampled (bilinear) to the labels' (padded) size.
        The distillation needs the stride-16 fused map ``sfm`` (None: no distillation term)."""
        size = targets.shape[-2:]

        def seg_loss(logits: torch.Tensor) -> torch.Tensor:
            logits = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
            return semantic_loss(
                logits, targets, loss_type=self.loss_type, ignore_index=self.ignore_value,
                ohem_thresh=self.ohem_thresh, ohem_min_kept_fraction=self.ohem_min_kept_fraction,
            )

        losses = {"loss_sem_seg": self.main_loss_weight * seg_loss(main)}
        if aux is not None:
            losses["loss_aux"] = self.aux_loss_weight * seg_loss(aux)
        if self.distill_enabled and sfm is not None:
            kd = language_distillation_loss(
                sfm, targets, text_embeddings, tau=self.distill_tau, ignore_index=self.ignore_value
            )
            losses["loss_distill"] = self.distill_weight * kd
        return losses

    def forward(
        self,
        predictions: dict,
        targets: torch.Tensor,
        *,
        text_embeddings: torch.Tensor | None = None,
        split: CleanSplit | None = None,
        present: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """
        Args:
            predictions: "main" (N, K, h, w) logits, "aux" (or None), "sfm" the fused stride-16 map,
                "trust_levels" (the fusion's per-level trust logits and streams, or None), "gain" (the
                learned thermal gain correction, its (N, 2) prediction and the (N, 1, H, W) raw thermal
                images it saw, or None).
            targets: (N, H, W) int64 labels at the padded input size.
            text_embeddings: (K, Dt) class-name embeddings (the distillation's target relations).
            split: the rows of :meth:`with_clean_copies` (None: every row is a plain sample).
            present: (N, 2) bool streams of each row (None: all present).
        Returns:
            "loss_sem_seg", "loss_aux" (with an aux head), "loss_distill" (if enabled), "loss_standin",
            "loss_gain" (if weighted) and, with a split, "loss_sem_seg_corrupted", "loss_aux_corrupted",
            "loss_consistency", "loss_trust".
        """
        main, aux, sfm = predictions["main"], predictions.get("aux"), predictions.get("sfm")
        trust_levels, gain, device = predictions.get("trust_levels"), predictions.get("gain"), main.device
        # Each row's target thermal image (its own, a corrupted row's its clean copy's) and the clean
        # pairs the stand-ins learn from (without a split: the rows with both streams).
        target_rows = torch.arange(main.shape[0], device=device)
        if split is None:
            losses = self.segmentation_losses(main, aux, sfm, targets, text_embeddings)
            pairs = None if present is None else present.all(dim=1).nonzero()[:, 0]
        else:
            def rows(t, index):
                return None if t is None else t[index.to(t.device)]

            clean, corrupted, copies = (t.to(device) for t in (split.clean, split.corrupted, split.copies))
            losses = self.segmentation_losses(
                rows(main, clean), rows(aux, clean), rows(sfm, clean), rows(targets, clean), text_embeddings
            )
            if self.corrupted_loss_weight > 0:
                extra = self.segmentation_losses(
                    rows(main, corrupted), rows(aux, corrupted), None, rows(targets, corrupted), None
                )
                losses.update({f"{k}_corrupted": self.corrupted_loss_weight * v for k, v in extra.items()})
            if self.consistency_weight > 0:
                losses["loss_consistency"] = self.consistency_weight * consistency_loss(
                    main[corrupted], main[copies].detach(), temperature=self.consistency_temperature
                )
            if self.trust_weight > 0 and trust_levels is not None:
                losses["loss_trust"] = self.trust_weight * trust_fidelity_loss(
                    trust_levels, corrupted, copies, present
                )
            target_rows[corrupted] = copies
            pairs = clean  # the clean batch: every row a clean pair
        if self.standin_weight > 0 and trust_levels is not None:
            losses["loss_standin"] = self.standin_weight * standin_loss(trust_levels, pairs)
        if self.gain_correction_weight > 0 and gain is not None:
            gain_loss = gain_correction_loss(*gain, target_rows, present)
            losses["loss_gain"] = self.gain_correction_weight * gain_loss
        return losses

        def rows(t, index):
            return None if t is None else t[index.to(t.device)]

        clean, corrupted, copies = split.clean, split.corrupted, split.copies
        losses = self.segmentation_losses(
            rows(main, clean), rows(aux, clean), rows(sfm, clean), rows(targets, clean), text_embeddings
        )
        if self.corrupted_loss_weight > 0:
            extra = self.segmentation_losses(
                rows(main, corrupted), rows(aux, corrupted), None, rows(targets, corrupted), None
            )
            losses.update({f"{k}_corrupted": self.corrupted_loss_weight * v for k, v in extra.items()})
        if self.consistency_weight > 0:
            losses["loss_consistency"] = self.consistency_weight * consistency_loss(
                rows(main, corrupted), rows(main, copies).detach(), temperature=self.consistency_temperature
            )
        if self.gain_correction_weight > 0 and gain is not None:  # a corrupted row's target is its copy
            own = torch.arange(main.shape[0], device=main.device)
            own[corrupted.to(main.device)] = copies.to(main.device)
            losses["loss_gain"] = self.gain_correction_weight * gain_correction_loss(*gain, own, present)
        if self.standin_weight > 0 and trust_levels is not None:  # the clean batch: every row a clean pair
            losses["loss_standin"] = self.standin_weight * standin_loss(trust_levels, clean.to(main.device))
        if self.trust_weight > 0 and trust_levels is not None:
            device = main.device
            losses["loss_trust"] = self.trust_weight * trust_fidelity_loss(
                trust_levels, corrupted.to(device), copies.to(device), present
            )
        return losses
