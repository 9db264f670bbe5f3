"""The SARTM meta-architecture: SAM2 Hiera + per-modality LoRA, fusion, mask-decoder head, aux head, KD."""

from __future__ import annotations

import logging
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
from .criterion import SARTMCriterion
from .fusion import build_fusion, fusion_class
from .heads import build_aux_head
from .preprocessing import RGBTInputNorm, ThermalGainCorrection
from .text_teacher import build_text_teacher

__all__ = ["SARTM"]

logger = logging.getLogger(__name__)

_INFERENCE_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Layers whose weight and bias autocast casts to its low-precision dtype on every call (linear and
# convolution ops are on autocast's lower-precision list on CPU and CUDA); norms and embeddings are not.
_AUTOCAST_CAST_LAYERS = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d
)


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

    The losses are the ``criterion``'s (``SARTMCriterion``, built beside the model as Mask2Former
    builds its criterion), the input normalisation the ``input_norm``'s. Ablation switches (paper
    Tables): MODEL.SARTM.DISTILL.ENABLED False (no distillation loss; with the fusion's language term
    off too, MODEL.SARTM.FUSION_LANGUAGE, this is "without language"), MODEL.SARTM.AUX_HEAD.NAME ""
    ("without aux head"), the LoRA rank and the fusion / aux-head types (set when building the parts).
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        fusion: nn.Module,
        sem_seg_head: nn.Module,
        aux_head: nn.Module | None,
        criterion: SARTMCriterion,
        input_norm: RGBTInputNorm,
        class_names: list[str],
        text_dim: int | None = None,
        text_embeddings: torch.Tensor | None = None,
        size_divisibility: int = 32,
        aux_average_at_inference: bool = False,
        inference_dtype: str = "float32",
        train_only_robust_parts: bool = False,
    ):
        """
        Args:
            backbone: maps modality-major (2B, 3, H, W) to per-modality "sfm"/"ifp"/"ffp".
            fusion: fuses the per-modality pyramid to (B, ...) levels; ``requires_text`` says whether
                it needs the text embeddings.
            sem_seg_head: main head, fused pyramid -> (B, K, H/4, W/4) logits.
            aux_head: auxiliary head with the same contract, or None.
            criterion: the training losses (``SARTMCriterion``); its ``ignore_value`` pads the labels.
            input_norm: raw R, G, B, T in 0..255 -> network input (``RGBTInputNorm``: the thermal
                normalisation and MODEL.PIXEL_MEAN / PIXEL_STD).
            class_names: the K class names (label order).
            text_dim: Dt, the width of the class-name embeddings, when the distillation or the fusion
                uses them (None otherwise). They live in a persistent (K, Dt) buffer, so MODEL.WEIGHTS
                carries them; it is filled by ``set_text_embeddings`` or by loading a state dict.
            text_embeddings: optional initial (K, Dt) embeddings (sets ``text_dim``).
            size_divisibility: images (and labels) are padded to a multiple of it (at least the
                backbone's own).
            aux_average_at_inference: predict with log(mean(softmax(main), softmax(aux))).
            inference_dtype: autocast dtype in eval mode ("float32" = none, "bfloat16", "float16");
                logits are returned in fp32 either way.
            train_only_robust_parts: freeze every parameter but the fusion's ``robust_parts`` (trust
                gates, stand-ins): the robust recipe's second stage on a plain model's weights.

        Construction reads no file: pretrained SAM2 weights and the text embeddings are loaded at
        training start (``sartm_d2.modeling.load_pretrained``) or come with MODEL.WEIGHTS.
        """
        super().__init__()
        self.backbone = backbone
        self.fusion = fusion
        self.sem_seg_head = sem_seg_head
        self.aux_head = aux_head
        self.criterion = criterion
        self.input_norm = input_norm
        self.class_names = list(class_names)
        num_classes = len(self.class_names)

        needs_text = criterion.distill_enabled or getattr(fusion, "requires_text", False)
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

        self.size_divisibility = max(
            int(size_divisibility), int(getattr(backbone, "size_divisibility", 0) or 0)
        )
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
        self.inference_only = False  # set by prepare_for_inference()
        if train_only_robust_parts:
            robust = self.robust_part_prefixes()
            if not robust:
                raise ValueError(
                    "MODEL.SARTM.ROBUST.TRAIN_ONLY_ROBUST_PARTS is True, but MODEL.SARTM.FUSION "
                    f"{getattr(fusion, 'name', type(fusion).__name__)!r} has no robust parts (trust gates, "
                    'stand-ins): use "reliability".'
                )
            for name, p in self.named_parameters():
                if not name.startswith(robust):
                    p.requires_grad_(False)

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
        text_dim = None
        if cfg.MODEL.SARTM.DISTILL.ENABLED or fusion_class(cfg).uses_text(cfg):
            text_dim = build_text_teacher(cfg).embedding_dim  # the width only: no encoder is loaded

        backbone = build_backbone(cfg, ShapeSpec(channels=3))
        fusion = build_fusion(cfg, backbone.output_shape(), text_dim=text_dim)
        return {
            "backbone": backbone,
            "fusion": fusion,
            "sem_seg_head": build_sem_seg_head(cfg, fusion.output_shape()),
            "aux_head": build_aux_head(cfg, fusion.output_shape()),
            # A fusion without trust has no trust to supervise.
            "criterion": SARTMCriterion(cfg, trust=getattr(fusion, "estimates_trust", False)),
            "input_norm": RGBTInputNorm(
                cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD, cfg.INPUT.THERMAL_NORM,
                ThermalGainCorrection() if cfg.MODEL.SARTM.ROBUST.THERMAL_GAIN_CORRECTION else None,
            ),
            "class_names": class_names,
            "text_dim": text_dim,
            "size_divisibility": cfg.INPUT.SIZE_DIVISIBILITY,
            "aux_average_at_inference": cfg.MODEL.SARTM.AUX_HEAD.AVERAGE_AT_INFERENCE,
            "inference_dtype": cfg.MODEL.SARTM.INFERENCE_DTYPE,
            "train_only_robust_parts": cfg.MODEL.SARTM.ROBUST.TRAIN_ONLY_ROBUST_PARTS,
        }

    @property
    def device(self) -> torch.device:
        return self.input_norm.pixel_mean.device

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

    def robust_part_prefixes(self) -> tuple[str, ...]:
        """State-dict key prefixes of the parts a healthy pair does not need (the fusion's
        ``robust_parts``, the learned thermal gain correction): a plain model's checkpoint lacks them,
        and training may start them fresh."""
        parts = tuple(f"fusion.{p}." for p in getattr(self.fusion, "robust_parts", ()))
        if self.input_norm.gain_correction is not None:
            parts += ("input_norm.gain_correction.",)
        return parts

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
        """Raw (B, 4, H, W) R, G, B, T in 0..255 -> the network's input (before padding): ``input_norm``.
        The exported graph calls this too."""
        return self.input_norm(x)

    def preprocess_image(self, images: list[torch.Tensor], with_gain: bool = False):
        """Normalise the (4, H, W) images and pad them to ``size_divisibility`` (padding = 0 after norm).

        With ``with_gain``: ``(ImageList, gain)``, ``gain`` the learned thermal gain correction, its
        (B, 2) prediction and the (B, 1, H, W) raw thermal images it saw (its loss's inputs; images of
        one size, as training crops are), or None without a correction.
        """
        images = [x.to(self.device, non_blocking=True).float() for x in images]
        if any(img.dim() != 3 or img.shape[0] != 4 for img in images):
            shapes = [tuple(img.shape) for img in images]
            raise ValueError(
                f'SARTM expects each "image" as a (4, H, W) R, G, B, T tensor, got shapes {shapes}.'
            )
        gain = None
        if len({img.shape for img in images}) == 1:  # one size (training crops, eval batches): one call
            stacked = torch.stack(images)
            normalized, params = self.input_norm.normalize_with_gain(stacked)
            normalized = list(normalized)
            gain = None if params is None else (self.input_norm.gain_correction, params, stacked[:, 3:4])
        else:
            normalized = [self.normalize(img[None])[0] for img in images]
        padded = ImageList.from_tensors(normalized, self.size_divisibility)
        return (padded, gain) if with_gain else padded

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
        # Corrupted samples' clean copies (consistency, trust) join the same batched pass.
        inputs, split = self.criterion.with_clean_copies(batched_inputs)
        images, gain = self.preprocess_image([b["image"] for b in inputs], with_gain=True)
        present = self.presence(inputs)
        fused, main, aux, _, trust_levels = self._predict(images.tensor, present)
        targets = [b["sem_seg"].to(self.device, non_blocking=True) for b in inputs]
        targets = ImageList.from_tensors(
            targets, self.size_divisibility, pad_value=self.criterion.ignore_value
        ).tensor.long()
        predictions = {"main": main, "aux": aux, "sfm": fused["sfm"], "trust_levels": trust_levels,
                       "gain": gain}
        return self.criterion(
            predictions, targets, text_embeddings=self.text_embeddings, split=split, present=present
        )

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
            x, thermal_valid = self.input_norm.split_valid(x)
            if present is None:
                # Modality-major stack: rows 0..B-1 RGB, B..2B-1 thermal replicated to 3 channels.
                stacked = torch.cat([x[:, :3], x[:, 3:4].expand(-1, 3, -1, -1)], dim=0)
                features = self.backbone(stacked)
            else:
                rgb, thermal = x[present[:, 0], :3], x[present[:, 1], 3:4].expand(-1, 3, -1, -1)
                stacked = torch.cat([rgb, thermal], dim=0)
                features = self.backbone(stacked, counts=(rgb.shape[0], thermal.shape[0]))
            text = self.text_embeddings if self.fusion.requires_text else None
            uses_cues = getattr(self.fusion, "uses_cues", False)  # a fusion that reads the saturation
            extra = {"cues": self.input_norm.saturation(x)} if uses_cues else {}
            fused = dict(self.fusion(features, text, present, thermal_valid=thermal_valid, **extra))
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
