"""The SARTM meta-architecture: SAM2 Hiera + per-modality LoRA, fusion, mask-decoder head, aux head, KD."""

from __future__ import annotations

import logging
import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone, build_sem_seg_head
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList
from torch import nn

from ..data import get_classes
from ..modalities import MODALITIES, PRESENCE
from .fusion import build_fusion, fusion_class
from .heads import build_aux_head
from .losses import (
    LOSS_TYPES,
    consistency_loss,
    language_distillation_loss,
    semantic_loss,
    trust_fidelity_loss,
)
from .text_teacher import build_text_teacher

__all__ = ["SARTM", "THERMAL_NORMS", "robust_thermal_stretch"]

logger = logging.getLogger(__name__)

_INFERENCE_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Layers whose weight and bias autocast casts to its low-precision dtype on every call (linear and
# convolution ops are on autocast's lower-precision list on CPU and CUDA); norms and embeddings are not.
_AUTOCAST_CAST_LAYERS = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d
)


THERMAL_NORMS = ("none", "percentile")
# Pixels at most in the sample the thermal percentiles are taken from (a regular sub-grid): exact
# order statistics of a 480x640 image would cost a full TopK of 307k values per image.
_PERCENTILE_SAMPLES = 1 << 14


def robust_thermal_stretch(
    thermal: torch.Tensor, low: float = 0.01, high: float = 0.99, to: tuple[float, float] = (64.0, 192.0)
) -> torch.Tensor:
    """Per image, the ``low``..``high`` quantiles of (B, 1, H, W) thermal mapped linearly to ``to``, clipped
    to 0..255.

    The quantiles are order statistics (TopK, which ONNX carries) of a regular sub-grid of at most
    ``_PERCENTILE_SAMPLES`` pixels. Any gain > 0 and offset of the input give the same output (up to
    float rounding) as long as they saturate nothing: the 8-bit thermal image of an AGC camera then
    means the same whatever gain and offset the camera chose for this frame. The quantile range goes
    to the middle half of 0..255, not all of it: people and engines are the hottest few percent of a
    scene, so the 99th percentile falls inside them (20-44% of their pixels lie above it on the
    synthetic set), and a full-range stretch would clip their texture away. A flat image maps to
    ``to[0]``.
    """
    h, w = thermal.shape[-2:]
    step = max(1, int(math.ceil(math.sqrt(h * w / _PERCENTILE_SAMPLES))))
    sample = thermal[:, :, ::step, ::step].flatten(1)  # (B, N)
    n = sample.shape[1]
    k_low = int(math.floor(low * (n - 1))) + 1
    k_high = n - int(math.ceil(high * (n - 1)))
    lo = sample.topk(k_low, dim=1, largest=False).values.amax(dim=1).view(-1, 1, 1, 1)
    hi = sample.topk(k_high, dim=1, largest=True).values.amin(dim=1).view(-1, 1, 1, 1)
    span = hi - lo
    scale = torch.where(span > 0, (to[1] - to[0]) / span.clamp(min=1e-6), torch.zeros_like(span))
    return ((thermal - lo) * scale + to[0]).clamp(0.0, 255.0)


def _count(module: nn.Module | None) -> tuple[int, int]:
    if module is None:
        return 0, 0
    params = list(module.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


@META_ARCH_REGISTRY.register()
class SARTM(nn.Module):
    """Segment Any RGB-Thermal Model (paper §III) with SemanticSegmentor's input/output contract.

    Per step: the 4-channel [R, G, B, T] images are normalised, padded to ``size_divisibility`` and
    split into RGB and thermal (replicated to 3 channels); ONE backbone call runs both, stacked
    modality-major. The fusion merges each pyramid level; the SAM2 mask-decoder head gives the main
    logits and the optional auxiliary head a second prediction (both supervised at the padded input
    size); the distillation aligns the class-relation structure of the fused stride-16 features
    with that of the class-name text embeddings.

    Ablation switches (paper Tables): ``distill_enabled=False`` (no distillation loss; with the
    fusion's language term off too, MODEL.SARTM.FUSION_LANGUAGE, this is "without language"),
    ``aux_head=None`` ("without aux head"), the LoRA rank and the fusion / aux-head types (set
    when building the parts).
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        fusion: nn.Module,
        sem_seg_head: nn.Module,
        aux_head: nn.Module | None,
        class_names: list[str],
        text_dim: int | None = None,
        text_embeddings: torch.Tensor | None = None,
        pixel_mean: tuple[float, ...],
        pixel_std: tuple[float, ...],
        size_divisibility: int = 32,
        ignore_value: int = 255,
        main_loss_weight: float = 1.0,
        aux_loss_weight: float = 0.4,
        loss_type: str = "ohem",
        ohem_thresh: float = 0.7,
        ohem_min_kept_fraction: float = 1.0 / 16,
        distill_enabled: bool = True,
        distill_tau: float = 0.1,
        distill_weight: float = 1.0,
        aux_average_at_inference: bool = False,
        inference_dtype: str = "float32",
        thermal_norm: str = "none",
        consistency_weight: float = 0.0,
        consistency_temperature: float = 1.0,
        trust_weight: float = 0.0,
        corrupted_loss_weight: float = 0.25,
    ):
        """
        Args:
            backbone: maps modality-major (2B, 3, H, W) to per-modality "sfm"/"ifp"/"ffp".
            fusion: fuses the per-modality pyramid to (B, ...) levels; ``requires_text`` says whether
                it needs the text embeddings.
            sem_seg_head: main head, fused pyramid -> (B, K, H/4, W/4) logits.
            aux_head: auxiliary head with the same contract, or None.
            class_names: the K class names (label order).
            text_dim: Dt, the width of the class-name embeddings, when the distillation or the fusion
                uses them (None otherwise). They live in a persistent (K, Dt) buffer, so MODEL.WEIGHTS
                carries them; it is filled by ``set_text_embeddings`` or by loading a state dict.
            text_embeddings: optional initial (K, Dt) embeddings (sets ``text_dim``).
            pixel_mean, pixel_std: 4 values each (R, G, B, T), for inputs in the 0..255 range.
            size_divisibility: images (and labels) are padded to a multiple of it.
            ignore_value: label of unlabelled pixels (padding gets it too).
            main_loss_weight, aux_loss_weight, distill_weight: loss weights.
            loss_type, ohem_thresh, ohem_min_kept_fraction: see ``losses.semantic_loss``.
            distill_enabled, distill_tau: language-aided distillation on/off and its temperature.
            aux_average_at_inference: predict with log(mean(softmax(main), softmax(aux))).
            inference_dtype: autocast dtype in eval mode ("float32" = none, "bfloat16", "float16");
                logits are returned in fp32 either way.
            thermal_norm: "none" or "percentile" (``robust_thermal_stretch`` before the mean/std; part of
                ``normalize``, so every path and the exported graph apply it).
            consistency_weight, consistency_temperature: self-distillation of the clean fused prediction
                into degraded or modality-dropped samples that carry a "clean_image" (0 = off).
            trust_weight: weight of ``losses.trust_fidelity_loss`` on those samples, for fusions that
                estimate trust (0 = the gates learn from the segmentation losses alone).
            corrupted_loss_weight: with clean copies, the segmentation losses are computed apart on the
                clean batch (every sample, clean: exactly the plain model's losses) and on the corrupted
                samples ("loss_sem_seg_corrupted", "loss_aux_corrupted", times this weight), so that the
                corrupted rows do not dilute the fused path's gradient.

        Construction reads no file: pretrained SAM2 weights and the text embeddings are loaded at
        training start (``sartm_d2.modeling.load_pretrained``) or come with MODEL.WEIGHTS.
        """
        super().__init__()
        self.backbone = backbone
        self.fusion = fusion
        self.sem_seg_head = sem_seg_head
        self.aux_head = aux_head
        self.class_names = list(class_names)
        num_classes = len(self.class_names)

        if len(pixel_mean) != 4 or len(pixel_std) != 4:
            raise ValueError(
                f"MODEL.PIXEL_MEAN / MODEL.PIXEL_STD need 4 values (R, G, B, T), got {list(pixel_mean)} / "
                f"{list(pixel_std)}."
            )
        self.register_buffer(
            "pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False
        )
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)

        needs_text = distill_enabled or getattr(fusion, "requires_text", False)
        if text_embeddings is not None:
            text_dim = text_embeddings.shape[-1]
        if needs_text and text_dim is None:
            raise ValueError(
                "SARTM needs class text embeddings (MODEL.SARTM.DISTILL.ENABLED is on or MODEL.SARTM.FUSION "
                "uses language guidance), but no text_dim was given."
            )
        self._text_ready = False
        if needs_text:
            self.register_buffer("text_embeddings", torch.zeros(num_classes, int(text_dim)), persistent=True)
            if text_embeddings is not None:
                self.set_text_embeddings(text_embeddings)
            # A loaded state dict fills the buffer: the embeddings then come from the checkpoint.
            self.register_load_state_dict_post_hook(SARTM._after_load_state_dict)
        else:
            self.register_buffer("text_embeddings", None)
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"MODEL.SEM_SEG_HEAD.LOSS_TYPE must be one of {LOSS_TYPES}, got {loss_type!r}.")

        self.size_divisibility = max(
            int(size_divisibility), int(getattr(backbone, "size_divisibility", 0) or 0)
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
        if aux_average_at_inference and aux_head is None:
            raise ValueError(
                "MODEL.SARTM.AUX_HEAD.AVERAGE_AT_INFERENCE is True but there is no auxiliary head "
                '(MODEL.SARTM.AUX_HEAD.NAME ""); name a head or set AVERAGE_AT_INFERENCE False.'
            )
        self.aux_average_at_inference = aux_average_at_inference
        if inference_dtype not in _INFERENCE_DTYPES:
            raise ValueError(
                f"MODEL.SARTM.INFERENCE_DTYPE must be one of {sorted(_INFERENCE_DTYPES)}, "
                f"got {inference_dtype!r}."
            )
        self.inference_dtype = _INFERENCE_DTYPES[inference_dtype]
        if thermal_norm not in THERMAL_NORMS:
            raise ValueError(f"INPUT.THERMAL_NORM must be one of {THERMAL_NORMS}, got {thermal_norm!r}.")
        self.thermal_norm = thermal_norm
        weights = (consistency_weight, trust_weight, corrupted_loss_weight)
        if min(weights) < 0 or consistency_temperature <= 0:
            raise ValueError(
                "MODEL.SARTM.CONSISTENCY: LOSS_WEIGHT, TRUST_WEIGHT and CORRUPTED_LOSS_WEIGHT must be >= 0 "
                f"and TEMPERATURE > 0, got {consistency_weight}, {trust_weight}, {corrupted_loss_weight} "
                f"and {consistency_temperature}."
            )
        self.corrupted_loss_weight = corrupted_loss_weight
        self.consistency_weight = consistency_weight
        self.consistency_temperature = consistency_temperature
        self.trust_weight = trust_weight if getattr(fusion, "estimates_trust", False) else 0.0
        self.inference_only = False  # set by prepare_for_inference()

        for name in ("backbone", "fusion", "sem_seg_head", "aux_head"):
            total, trainable = _count(getattr(self, name))
            if getattr(self, name) is not None:
                logger.info(
                    "SARTM %s: %.3f M parameters, %.3f M trainable.", name, total / 1e6, trainable / 1e6
                )
        total, trainable = _count(self)
        logger.info("SARTM total: %.3f M parameters, %.3f M trainable.", total / 1e6, trainable / 1e6)

    @classmethod
    def from_config(cls, cfg):
        datasets = cfg.DATASETS.TRAIN if len(cfg.DATASETS.TRAIN) else cfg.DATASETS.TEST
        if not len(datasets):
            raise ValueError(
                "SARTM takes its class names from DATASETS.TRAIN[0] (or DATASETS.TEST[0]); both are empty."
            )
        class_names, _ = get_classes(datasets[0], cfg.DATASETS.BACKGROUND_AS_IGNORE)
        num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
        if len(class_names) != num_classes:
            raise ValueError(
                f"MODEL.SEM_SEG_HEAD.NUM_CLASSES = {num_classes}, but dataset {datasets[0]!r} has "
                f"{len(class_names)} classes with DATASETS.BACKGROUND_AS_IGNORE = "
                f"{cfg.DATASETS.BACKGROUND_AS_IGNORE}: {class_names}. Set NUM_CLASSES to {len(class_names)}."
            )
        distill = cfg.MODEL.SARTM.DISTILL
        text_dim = None
        if distill.ENABLED or fusion_class(cfg).uses_text(cfg):
            text_dim = build_text_teacher(cfg).embedding_dim  # the width only: no encoder is loaded

        backbone = build_backbone(cfg, ShapeSpec(channels=3))
        fusion = build_fusion(cfg, backbone.output_shape(), text_dim=text_dim)
        head_cfg = cfg.MODEL.SEM_SEG_HEAD
        return {
            "backbone": backbone,
            "fusion": fusion,
            "sem_seg_head": build_sem_seg_head(cfg, fusion.output_shape()),
            "aux_head": build_aux_head(cfg, fusion.output_shape()),
            "class_names": class_names,
            "text_dim": text_dim,
            "pixel_mean": tuple(cfg.MODEL.PIXEL_MEAN),
            "pixel_std": tuple(cfg.MODEL.PIXEL_STD),
            "size_divisibility": cfg.INPUT.SIZE_DIVISIBILITY,
            "ignore_value": head_cfg.IGNORE_VALUE,
            "main_loss_weight": head_cfg.LOSS_WEIGHT,
            "aux_loss_weight": cfg.MODEL.SARTM.AUX_HEAD.LOSS_WEIGHT,
            "loss_type": head_cfg.LOSS_TYPE,
            "ohem_thresh": head_cfg.OHEM_THRESH,
            "ohem_min_kept_fraction": head_cfg.OHEM_MIN_KEPT_FRACTION,
            "distill_enabled": distill.ENABLED,
            "distill_tau": distill.TAU,
            "distill_weight": distill.LOSS_WEIGHT,
            "aux_average_at_inference": cfg.MODEL.SARTM.AUX_HEAD.AVERAGE_AT_INFERENCE,
            "inference_dtype": cfg.MODEL.SARTM.INFERENCE_DTYPE,
            "thermal_norm": cfg.INPUT.THERMAL_NORM,
            "consistency_weight": cfg.MODEL.SARTM.CONSISTENCY.LOSS_WEIGHT,
            "consistency_temperature": cfg.MODEL.SARTM.CONSISTENCY.TEMPERATURE,
            "trust_weight": cfg.MODEL.SARTM.CONSISTENCY.TRUST_WEIGHT,
            "corrupted_loss_weight": cfg.MODEL.SARTM.CONSISTENCY.CORRUPTED_LOSS_WEIGHT,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @torch.no_grad()
    def set_text_embeddings(self, embeddings: torch.Tensor) -> None:
        """Fill the (K, Dt) class-name embedding buffer (from the text teacher or its cache)."""
        if self.text_embeddings is None:
            raise ValueError("This SARTM model uses no text embeddings (no distillation, no language term).")
        expected = tuple(self.text_embeddings.shape)
        if tuple(embeddings.shape) != expected:
            raise ValueError(
                f"Text embeddings of shape {tuple(embeddings.shape)} do not fit the model's {expected} "
                "(K classes x Dt of MODEL.SARTM.DISTILL.TEACHER)."
            )
        self.text_embeddings.copy_(embeddings.to(self.text_embeddings))
        self._text_ready = True

    @staticmethod
    def _after_load_state_dict(module: SARTM, incompatible) -> None:
        if not any(k.split(".")[-1] == "text_embeddings" for k in incompatible.missing_keys):
            module._text_ready = True

    def class_dependent_keys(self) -> tuple[str, ...]:
        """State-dict key prefixes whose shapes depend on the class count (fresh when fine-tuning)."""
        prefixes = ["text_embeddings"]
        for name in ("sem_seg_head", "aux_head"):
            head = getattr(self, name)
            prefixes += [f"{name}.{p}" for p in getattr(head, "class_dependent_prefixes", ())]
        return tuple(prefixes)

    def merge_lora(self) -> int:
        """Merge the LoRA deltas into the backbone weights (explicit, for inference only)."""
        return self.backbone.merge_lora()

    def unmerge_lora(self) -> int:
        """Undo ``merge_lora`` (required before training again)."""
        if self.inference_only:
            raise RuntimeError(
                "This SARTM model was prepared for inference (prepare_for_inference) and cannot be "
                "unmerged; build a new model (build_model + MODEL.WEIGHTS) to train."
            )
        return self.backbone.unmerge_lora()

    @torch.no_grad()
    def prepare_for_inference(self) -> SARTM:
        """Turn this model into a deployable, inference-only one (the demo and ``--eval-only`` do).

        Merges LoRA into per-modality weights and, when ``inference_dtype`` is bf16/fp16, stores the
        weight and bias of every linear and convolution layer in that dtype. Autocast casts exactly
        those tensors on every call, rounding them the same way, so the logits are bit-identical to the
        autocast-only path, while each forward skips one cast kernel per tensor (op counts in
        benchmarks/RESULTS.md).
        Irreversible: training or ``unmerge_lora`` afterwards raise; build a new model.
        """
        self.eval()
        self.merge_lora()
        dtype = self.inference_dtype
        if dtype is not None:
            for module in self.modules():
                if not isinstance(module, _AUTOCAST_CAST_LAYERS):
                    continue
                for name in ("weight", "bias"):  # not LoRA's A/B: a saved state stays exact
                    p = getattr(module, name)
                    if p is not None:
                        setattr(module, name, nn.Parameter(p.detach().to(dtype), p.requires_grad))
                if getattr(module, "merged_weight", None) is not None:
                    module.merged_weight = module.merged_weight.to(dtype)
        self.inference_only = True
        return self

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Raw (B, 4, H, W) R, G, B, T in 0..255 -> the network's input (before padding).

        The thermal channel is first stretched per image when ``thermal_norm`` is "percentile"; then
        every channel gets MODEL.PIXEL_MEAN / PIXEL_STD. The exported graph calls this too.
        """
        if self.thermal_norm == "percentile":
            x = torch.cat([x[:, :3], robust_thermal_stretch(x[:, 3:4])], dim=1)
        return (x - self.pixel_mean) / self.pixel_std

    def preprocess_image(self, images: list[torch.Tensor]) -> ImageList:
        """Normalise the (4, H, W) images and pad them to ``size_divisibility`` (padding = 0 after norm)."""
        images = [x.to(self.device, non_blocking=True).float() for x in images]
        if any(img.dim() != 3 or img.shape[0] != 4 for img in images):
            shapes = [tuple(img.shape) for img in images]
            raise ValueError(
                f'SARTM expects each "image" as a (4, H, W) R, G, B, T tensor, got shapes {shapes}.'
            )
        if len({img.shape for img in images}) == 1:  # one size (training crops, eval batches): one call
            normalized = list(self.normalize(torch.stack(images)))
        else:
            normalized = [self.normalize(img[None])[0] for img in images]
        return ImageList.from_tensors(normalized, self.size_divisibility)

    def forward(self, batched_inputs: list[dict]):
        """
        Args:
            batched_inputs: mapper dicts with "image" (4, H, W) float 0..255, "sem_seg" (H, W) int64
                (training), "height"/"width" (inference output size, default: the image size),
                optionally "modalities": "rgbt" (default), "rgb" or "thermal" (the other stream is
                missing: it is not computed, whatever the image holds there), and in training
                optionally "clean_image" (the sample before its degradation or modality dropout: it
                joins the same batched pass, with its label, as the consistency loss's teacher).
        Returns:
            training: {"loss_sem_seg", "loss_aux" (with an aux head), "loss_distill" (if enabled), and
            with clean images "loss_sem_seg_corrupted", "loss_aux_corrupted", "loss_consistency",
            "loss_trust" (by their weights)};
            inference: [{"sem_seg": (K, height, width) logits}] per image, plus "trust" ((2,): how far
            the fusion trusts RGB and thermal, 0..1) when the fusion estimates it.
        """
        if self.training and self.inference_only:
            raise RuntimeError(
                "This SARTM model was prepared for inference (prepare_for_inference: LoRA merged, weights "
                "possibly in bf16) and cannot train; build a new model (build_model + MODEL.WEIGHTS)."
            )
        if self.text_embeddings is not None and not self._text_ready:
            raise RuntimeError(
                "The SARTM text-embedding buffer is empty: load MODEL.WEIGHTS (a trained checkpoint carries "
                "the embeddings), or start training through sartm_d2.engine.Trainer (it fills them from "
                "MODEL.SARTM.DISTILL.TEACHER), or call model.set_text_embeddings(...)."
            )
        if not self.training:
            images = self.preprocess_image([b["image"] for b in batched_inputs])
            logits, trust = self.inference(images.tensor, self.presence(batched_inputs))
            results = []
            for i, (result, input_per_image, image_size) in enumerate(
                    zip(logits, batched_inputs, images.image_sizes)):
                height = input_per_image.get("height", image_size[0])
                width = input_per_image.get("width", image_size[1])
                results.append({"sem_seg": sem_seg_postprocess(result, image_size, height, width)})
                if trust is not None:
                    results[-1]["trust"] = trust[i]
            return results

        if "sem_seg" not in batched_inputs[0]:
            raise ValueError('SARTM in training mode needs "sem_seg" in every input dict (the label map).')
        # Clean copies (consistency, trust): appended as extra samples with both modalities, same pass.
        corrupted = [i for i, b in enumerate(batched_inputs) if "clean_image" in b]
        use_clean = bool(corrupted) and (self.consistency_weight > 0 or self.trust_weight > 0)
        clean = [{"image": batched_inputs[i]["clean_image"], "sem_seg": batched_inputs[i]["sem_seg"]}
                 for i in corrupted] if use_clean else []
        inputs = list(batched_inputs) + clean
        images = self.preprocess_image([b["image"] for b in inputs])
        x = images.tensor
        present = self.presence(inputs)
        fused, main, aux, _, trust_levels = self._predict(x, present)
        targets = [b["sem_seg"].to(self.device, non_blocking=True) for b in inputs]
        targets = ImageList.from_tensors(targets, self.size_divisibility, pad_value=self.ignore_value).tensor
        targets = targets.long()
        if not use_clean:
            return self.losses(main, aux, fused["sfm"], targets, x.shape[-2:])
        # The clean batch (untouched samples and the clean copies) gets the plain model's losses; the
        # corrupted samples their own, so that they add to the fused path's gradient instead of diluting it.
        rows = torch.tensor(corrupted, device=main.device)
        copies = torch.arange(len(batched_inputs), len(inputs), device=main.device)
        untouched = sorted(set(range(len(batched_inputs))) - set(corrupted))
        plain = torch.cat([torch.tensor(untouched, dtype=torch.long, device=main.device), copies])

        def pick(t, index):
            return None if t is None else t[index]

        losses = self.losses(main[plain], pick(aux, plain), fused["sfm"][plain], targets[plain], x.shape[-2:])
        if self.corrupted_loss_weight > 0:
            extra = self.losses(main[rows], pick(aux, rows), None, targets[rows], x.shape[-2:])
            losses.update({f"{k}_corrupted": self.corrupted_loss_weight * v for k, v in extra.items()})
        if self.consistency_weight > 0:
            losses["loss_consistency"] = self.consistency_weight * consistency_loss(
                main[rows], main[copies].detach(), temperature=self.consistency_temperature
            )
        if self.trust_weight > 0 and trust_levels is not None:
            trust = trust_fidelity_loss(trust_levels, rows, copies, present)
            losses["loss_trust"] = self.trust_weight * trust
        return losses

    def presence(self, batched_inputs: list[dict]) -> torch.Tensor | None:
        """(B, 2) bool: which of RGB and thermal each input has ("modalities"), or None if all have both."""
        names = [b.get("modalities", "rgbt") for b in batched_inputs]
        if all(n == "rgbt" for n in names):
            return None
        unknown = sorted({n for n in names if n not in PRESENCE})
        if unknown:
            raise ValueError(f'Input "modalities" {unknown} unknown; choose from {list(MODALITIES)}.')
        return torch.tensor([PRESENCE[n] for n in names], dtype=torch.bool, device=self.device)

    def _predict(self, x: torch.Tensor, present: torch.Tensor | None = None):
        """Backbone, fusion and heads on normalised, padded (B, 4, H, W).

        With ``present`` (B, 2), the backbone runs only the streams that exist (one batched pass,
        RGB rows then thermal rows); the fusion stands in its learned "absent" embedding for the others.
        Returns ``(fused pyramid, main, aux, trust, trust_levels)``: ``trust`` is the fusion's (B, 2)
        per-image trust in RGB and thermal, ``trust_levels`` its per-level maps in training (or None).
        """
        # Training autocast is the trainer's (SOLVER.AMP); inference follows INFERENCE_DTYPE. With
        # "float32" no context is entered, so a caller's own autocast still applies.
        dtype = None if self.training else self.inference_dtype
        autocast = torch.autocast(self.device.type, dtype=dtype) if dtype is not None else nullcontext()
        with autocast:
            if present is None:
                # Modality-major stack: rows 0..B-1 RGB, B..2B-1 thermal replicated to 3 channels.
                stacked = torch.cat([x[:, :3], x[:, 3:4].expand(-1, 3, -1, -1)], dim=0)
                features = self.backbone(stacked)
            else:
                rgb, thermal = x[present[:, 0], :3], x[present[:, 1], 3:4].expand(-1, 3, -1, -1)
                stacked = torch.cat([rgb, thermal], dim=0)
                features = self.backbone(stacked, counts=(rgb.shape[0], thermal.shape[0]))
            text = self.text_embeddings if self.fusion.requires_text else None
            fused = dict(self.fusion(features, text, present))
            trust, trust_levels = fused.pop("trust", None), fused.pop("trust_levels", None)
            main = self.sem_seg_head(fused)
            # At inference the auxiliary head only matters when averaged with the main one.
            use_aux = self.aux_head is not None and (self.training or self.aux_average_at_inference)
            aux = self.aux_head(fused) if use_aux else None
        return fused, main, aux, (None if trust is None else trust.float()), trust_levels

    def inference(self, x: torch.Tensor, present: torch.Tensor | None = None):
        """The tensor-only core of inference (what an export traces).

        Args:
            x: (B, 4, H, W) normalised R, G, B, T images, H and W multiples of ``size_divisibility``.
            present: optional (B, 2) bool, which of RGB / thermal each image has (None: both).
        Returns:
            (logits, trust): (B, K, H, W) float32 logits (the main head's, or log(mean of both heads'
            softmax)) and the fusion's (B, 2) float32 trust in RGB and thermal, or None.
        """
        _, main, aux, trust, _ = self._predict(x, present)
        if self.aux_average_at_inference:
            prob = 0.5 * (main.float().softmax(dim=1) + aux.float().softmax(dim=1))
            logits = torch.log(prob.clamp(min=1e-12))
        else:
            logits = main.float()
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False), trust

    def losses(
        self,
        main: torch.Tensor,
        aux: torch.Tensor | None,
        sfm: torch.Tensor | None,
        targets: torch.Tensor,
        padded_size: tuple[int, int],
    ) -> dict[str, torch.Tensor]:
        """Weighted losses; logits are upsampled (bilinear) to the padded input size first. The
        distillation needs the stride-16 fused map ``sfm`` (None: no distillation term)."""

        def seg_loss(logits: torch.Tensor) -> torch.Tensor:
            logits = F.interpolate(logits.float(), size=padded_size, mode="bilinear", align_corners=False)
            return semantic_loss(
                logits,
                targets,
                loss_type=self.loss_type,
                ignore_index=self.ignore_value,
                ohem_thresh=self.ohem_thresh,
                ohem_min_kept_fraction=self.ohem_min_kept_fraction,
            )

        losses = {"loss_sem_seg": self.main_loss_weight * seg_loss(main)}
        if aux is not None:
            losses["loss_aux"] = self.aux_loss_weight * seg_loss(aux)
        if self.distill_enabled and sfm is not None:
            kd = language_distillation_loss(
                sfm, targets, self.text_embeddings, tau=self.distill_tau, ignore_index=self.ignore_value
            )
            losses["loss_distill"] = self.distill_weight * kd
        return losses
