"""Cross-modal fusion of the RGB and thermal feature pyramids, level by level.

A fusion is a registered :class:`RGBTFusion` subclass, chosen by ``MODEL.SARTM.FUSION`` (its short
``name`` or its class name) from ``FUSION_REGISTRY``. It fuses each level of the pyramid (see the
backbone's glossary: ``sfm`` s16, ``ifp`` s8, ``ffp`` s4) and declares whether it needs the class
text embeddings (:meth:`RGBTFusion.uses_text`). Built in:

- ``"average"``: learned weighted average, ``out = sum_m softmax(a)_m f_m`` (``a`` starts equal).
- ``"language"``: per-pixel modality weights ``softmax_m(a_m + s * aff_m(p))`` where ``aff_m(p)``
  is the best cosine between the pixel feature and the class text embeddings projected to the
  level's channels; a modality whose pixel looks like some class gets more weight there.
- ``"cmx"``: CMX-style FRM (feature rectification) + FFM (cross-attention + channel embedding)
  fed the RGB and the thermal stream.
- ``"paper"``: the paper's fusion step: weighted average + CMX output, summed; the average is
  language-guided when ``MODEL.SARTM.FUSION_LANGUAGE`` is on (the paper), plain otherwise (the
  ablation "without language"). That key alone decides: the distillation switch does not.
- ``"reliability"``: ``"paper"`` behind a trust gate per level (:class:`TrustGate`): from both
  streams it estimates, per sample and location, a trust ``t_m`` in 0..1 for each stream, and feeds
  the fusion ``t_m * f_m + (1 - t_m) * absent_m``. ``t = 0`` is exactly a missing camera, which modality
  dropout trains for, so a failing camera can be faded out instead of poisoning the fused features.
  Its output carries ``"trust"``: the (B, 2) mean trust in RGB and thermal over levels and locations.

A missing modality (a failed or blinded camera, or modality dropout in training) is explicit: the
backbone only computes the present streams, and the fusion puts a learned per-level "absent"
embedding of that modality in place of the missing stream before fusing (:meth:`RGBTFusion.forward`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.utils.registry import Registry
from sam2.modeling.sam2_utils import LayerNorm2d
from torch import nn

from .registry import lookup

__all__ = [
    "FUSION_REGISTRY",
    "RGBTFusion",
    "AverageFusion",
    "LanguageFusion",
    "CMXFusion",
    "PaperFusion",
    "ReliabilityFusion",
    "STANDINS",
    "StandIn",
    "TrustGate",
    "open_trust",
    "pool_to_level",
    "ModalityWeighting",
    "FeatureRectification",
    "FeatureFusion",
    "CMXBlock",
    "LevelFusion",
    "build_fusion",
    "fusion_class",
]

LEVELS = ("sfm", "ifp", "ffp")
FUSION_REGISTRY = Registry("FUSION")
FUSION_REGISTRY.__doc__ = """
Cross-modal fusions, chosen by MODEL.SARTM.FUSION. A fusion is an :class:`RGBTFusion` subclass,
called with ``(cfg, input_shape, text_dim=...)``.
"""


class ModalityWeighting(nn.Module):
    """Weighted average of the two modalities, optionally with per-pixel language guidance.

    Without text (``text_dim`` None): ``w = softmax(a)``, one global weight per modality.
    With text: ``w_m(p) = softmax_m(a_m + s * max_k cos(f_m(p), P(t_k)))`` with ``P`` a learned
    linear map from the text space to this level's channels and ``s`` a learned scale that starts
    small, so training begins close to the plain average and learns how much to trust the text.
    """

    def __init__(self, channels: int, text_dim: int | None = None, init_scale: float = 0.1):
        super().__init__()
        self.modality_logits = nn.Parameter(torch.zeros(2))
        self.text_dim = text_dim
        if text_dim is not None:
            self.text_proj = nn.Linear(text_dim, channels)
            self.affinity_scale = nn.Parameter(torch.tensor(float(init_scale)))

    @property
    def requires_text(self) -> bool:
        return self.text_dim is not None

    def forward(self, rgb: torch.Tensor, thermal: torch.Tensor, text_embeddings: torch.Tensor | None = None):
        if not self.requires_text:
            w = torch.softmax(self.modality_logits, dim=0).to(rgb.dtype)
            return w[0] * rgb + w[1] * thermal
        if text_embeddings is None:
            raise ValueError("Language-guided fusion needs text embeddings (K, Dt); none were given.")
        stacked = torch.stack([rgb, thermal], dim=0)  # (2, B, C, h, w)
        prompts = F.normalize(self.text_proj(text_embeddings.to(self.text_proj.weight.dtype)), dim=-1)
        feats_n = F.normalize(stacked, dim=2)
        affinity = torch.einsum("mbchw,kc->mbkhw", feats_n, prompts.to(feats_n.dtype)).amax(dim=2)
        logits = self.modality_logits.view(2, 1, 1, 1) + self.affinity_scale * affinity  # (2, B, h, w)
        w = torch.softmax(logits.float(), dim=0).to(rgb.dtype).unsqueeze(2)
        return (w * stacked).sum(dim=0)


class FeatureRectification(nn.Module):
    """CMX's FRM: each modality is corrected by channel- and spatially-weighted features of the OTHER.

    Channel weights come from an MLP over the global average- and max-pooled features of both
    modalities; spatial weights from two 1x1 convs over their concatenation. As in CMX the two
    corrections enter with weight 0.5 each: ``rgb' = rgb + 0.5 * (cw_t * t + sw_t * t)``.
    """

    def __init__(self, channels: int, reduction: int = 1, lambda_c: float = 0.5, lambda_s: float = 0.5):
        super().__init__()
        hidden = max(1, 4 * channels // reduction)
        self.channel_mlp = nn.Sequential(
            nn.Linear(4 * channels, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, 2 * channels),
            nn.Sigmoid(),
        )
        hidden_s = max(1, 2 * channels // reduction)
        self.spatial_conv = nn.Sequential(
            nn.Conv2d(2 * channels, hidden_s, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_s, 2, 1),
            nn.Sigmoid(),
        )
        self.lambda_c = lambda_c
        self.lambda_s = lambda_s

    def forward(self, rgb: torch.Tensor, thermal: torch.Tensor):
        b, c = rgb.shape[:2]
        both = torch.cat([rgb, thermal], dim=1)
        pooled = torch.cat([both.mean(dim=(2, 3)), both.amax(dim=(2, 3))], dim=1)  # (B, 4C)
        cw = self.channel_mlp(pooled).view(b, 2, c, 1, 1)
        sw = self.spatial_conv(both)  # (B, 2, h, w)
        rgb_out = rgb + self.lambda_c * cw[:, 1] * thermal + self.lambda_s * sw[:, 1:2] * thermal
        thermal_out = thermal + self.lambda_c * cw[:, 0] * rgb + self.lambda_s * sw[:, 0:1] * rgb
        return rgb_out, thermal_out


class FeatureFusion(nn.Module):
    """CMX's FFM: cross-attention between the two streams, then a channel embedding to one map.

    Stage 1 (information exchange): each stream's queries read the OTHER stream's global context
    ``softmax_n(k)^T v`` per head (efficient/linear attention, O(N C^2 / heads), so it runs at s4
    of a 480x640 input). Stage 2 (fusion): concatenation -> 1x1 conv -> depthwise 3x3 -> ReLU ->
    1x1 conv back to C, added to a 1x1 projection of the concatenation and layer-normalised.
    """

    def __init__(self, channels: int, num_heads: int = 8, reduction: int = 1):
        super().__init__()
        # Tiny pyramids (s4 has D/8 channels) may not be divisible by the configured head count:
        # use the largest head count that divides both.
        self.num_heads = math.gcd(num_heads, channels)
        self.norm = nn.ModuleList([nn.LayerNorm(channels) for _ in range(2)])
        self.qkv = nn.ModuleList([nn.Linear(channels, 3 * channels) for _ in range(2)])
        self.proj = nn.ModuleList([nn.Linear(channels, channels) for _ in range(2)])
        hidden = max(1, channels // reduction)
        self.residual = nn.Conv2d(2 * channels, channels, 1, bias=False)
        self.embed = nn.Sequential(
            nn.Conv2d(2 * channels, hidden, 1),
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
        )
        self.out_norm = LayerNorm2d(channels)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)  # (B, heads, N, d)

    def forward(self, rgb: torch.Tensor, thermal: torch.Tensor) -> torch.Tensor:
        b, c, h, w = rgb.shape
        tokens = [x.flatten(2).transpose(1, 2) for x in (rgb, thermal)]  # 2 x (B, N, C)
        qs, contexts = [], []
        for i in range(2):
            q, k, v = self.qkv[i](self.norm[i](tokens[i])).chunk(3, dim=-1)
            q = self._split_heads(q).softmax(dim=-1)
            k = self._split_heads(k).softmax(dim=-2)
            contexts.append(k.transpose(-2, -1) @ self._split_heads(v))  # (B, heads, d, d)
            qs.append(q)
        exchanged = []
        for i in range(2):
            attn = (qs[i] @ contexts[1 - i]).transpose(1, 2).reshape(b, h * w, c)  # other stream's context
            exchanged.append((tokens[i] + self.proj[i](attn)).transpose(1, 2).reshape(b, c, h, w))
        both = torch.cat(exchanged, dim=1)
        return self.out_norm(self.residual(both) + self.embed(both))


class CMXBlock(nn.Module):
    """FRM followed by FFM (CMX, Zhang et al. 2023), as the paper applies at its fusion step."""

    def __init__(self, channels: int, reduction: int = 1, num_heads: int = 8):
        super().__init__()
        self.frm = FeatureRectification(channels, reduction=reduction)
        self.ffm = FeatureFusion(channels, num_heads=num_heads, reduction=reduction)

    def forward(self, rgb: torch.Tensor, thermal: torch.Tensor) -> torch.Tensor:
        return self.ffm(*self.frm(rgb, thermal))


class LevelFusion(nn.Module):
    """Fusion of one pyramid level: a (language-guided) weighted average, a CMX block, or their sum."""

    def __init__(self, channels: int, *, average: bool, text_dim: int | None, cmx: bool,
                 cmx_reduction: int = 1, cmx_num_heads: int = 8):
        super().__init__()
        self.average = ModalityWeighting(channels, text_dim=text_dim) if average else None
        self.cmx = CMXBlock(channels, reduction=cmx_reduction, num_heads=cmx_num_heads) if cmx else None

    def forward(self, rgb: torch.Tensor, thermal: torch.Tensor, text_embeddings: torch.Tensor | None = None):
        out = None
        if self.average is not None:
            out = self.average(rgb, thermal, text_embeddings)
        if self.cmx is not None:
            fused = self.cmx(rgb, thermal)
            out = fused if out is None else out + fused
        return out


def _fill_absent(rows: torch.Tensor, present: torch.Tensor, absent: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w): each sample's row of ``rows`` where ``present``, else the ``absent`` embedding.

    ``rows`` holds the present samples only, in batch order (``present.sum()`` rows); no loop.
    """
    b = present.shape[0]
    filler = absent.to(rows.dtype).view(1, -1, 1, 1).expand(b, -1, *rows.shape[-2:])
    if rows.shape[0] == 0:
        return filler.contiguous()  # a tensor of its own, not a view of the parameter
    index = (present.long().cumsum(0) - 1).clamp(min=0)
    return torch.where(present.view(b, 1, 1, 1), rows[index], filler)


class RGBTFusion(nn.Module):
    """Base class of the fusions: merges the two pyramids into one with the same channels and strides.

    A subclass sets ``name`` (its MODEL.SARTM.FUSION value), builds one module per level in
    ``self.levels`` (called as ``levels[name](rgb, thermal, text_embeddings)`` on (B, C, h, w)
    tensors) and, when it needs the class text embeddings, overrides :meth:`uses_text`.

    Each level also has a learned embedding per modality (``absent``, zeros at first) that stands
    in for a stream the backbone did not compute: the fused model then runs on one modality.
    """

    name: str = ""
    estimates_trust: bool = False  # whether forward's output also holds "trust" (B, 2)

    @classmethod
    def uses_text(cls, cfg) -> bool:
        """Whether this fusion, configured by ``cfg``, needs the class text embeddings."""
        return False

    @configurable
    def __init__(self, *, input_shape: dict[str, ShapeSpec], text_dim: int | None = None):
        """
        Args:
            input_shape: ShapeSpec of each level ("sfm", "ifp", "ffp") of the backbone output.
            text_dim: width Dt of the class text embeddings when the fusion uses them, else None.
        """
        super().__init__()
        missing = [name for name in LEVELS if name not in input_shape]
        if missing:
            raise ValueError(
                f"Fusion expects backbone levels {LEVELS}; missing {missing} in {sorted(input_shape)}."
            )
        self._input_shape = {k: input_shape[k] for k in LEVELS}
        self.text_dim = text_dim
        self.absent = nn.ParameterDict(
            {name: nn.Parameter(torch.zeros(2, spec.channels)) for name, spec in self._input_shape.items()}
        )
        self.levels = nn.ModuleDict()

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec], text_dim: int | None = None):
        if cls.uses_text(cfg) and text_dim is None:
            raise ValueError(
                f'MODEL.SARTM.FUSION "{cfg.MODEL.SARTM.FUSION}" uses the class text embeddings, but their '
                "width is unknown (text_dim is None). Build the fusion through the SARTM model, which takes "
                "it from MODEL.SARTM.DISTILL.TEACHER."
            )
        return {"input_shape": input_shape, "text_dim": text_dim if cls.uses_text(cfg) else None}

    @property
    def requires_text(self) -> bool:
        """True when forward needs ``text_embeddings``."""
        return self.text_dim is not None

    def output_shape(self) -> dict[str, ShapeSpec]:
        return dict(self._input_shape)

    def forward(
        self,
        features: dict[str, torch.Tensor],
        text_embeddings: torch.Tensor | None = None,
        present: torch.Tensor | None = None,
        thermal_valid: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """
        Args:
            features: per level the backbone output, modality-major: the RGB rows, then the thermal rows.
                Without ``present`` that is 2B rows (B of each); with it, only the present streams.
            text_embeddings: (K, Dt) class text embeddings; required iff ``requires_text``.
            present: optional (B, 2) bool, whether sample b has RGB (column 0) and thermal (column 1).
            thermal_valid: optional (B, 1, H, W) float, 1 where the input's thermal pixel holds data (a
                rig's thermal camera sees that RGB pixel), 0 where not: per location of a level, the
                thermal stream is blended towards its "absent" embedding by the share of invalid pixels,
                a missing camera at those pixels.
        Returns:
            per level the fused (B, C, h, w) tensor.
        """
        if self.requires_text and text_embeddings is None:
            raise ValueError(f'MODEL.SARTM.FUSION "{self.name}" uses the text embeddings: none given.')
        if present is None and self.training:
            # All present: the absent embeddings still enter the graph (with zero gradient), so that
            # DDP finds every parameter used in every step.
            b = features[LEVELS[0]].shape[0] // 2
            present = torch.ones(b, 2, dtype=torch.bool, device=features[LEVELS[0]].device)
        return {
            name: fuse(*self._streams(name, features[name], present, thermal_valid), text_embeddings)
            for name, fuse in self.levels.items()
        }

    def _streams(self, name: str, x: torch.Tensor, present: torch.Tensor | None,
                 thermal_valid: torch.Tensor | None = None):
        """The (B, C, h, w) RGB and thermal maps of level ``name``: rows of ``x``, or "absent" embeddings
        (for a missing stream, and for the thermal stream where ``thermal_valid`` says it has no data)."""
        if present is None:
            rgb, thermal = x.chunk(2, dim=0)
        else:
            n_rgb = int(present[:, 0].sum())
            rgb = _fill_absent(x[:n_rgb], present[:, 0], self.absent[name][0])
            thermal = _fill_absent(x[n_rgb:], present[:, 1], self.absent[name][1])
        if thermal_valid is not None:
            v = pool_to_level(thermal_valid, thermal, self._input_shape[name].stride)
            thermal = v * thermal + (1.0 - v) * self.absent[name][1].to(thermal.dtype).view(1, -1, 1, 1)
        return rgb, thermal


class _LevelwiseFusion(RGBTFusion):
    """A fusion made of one :class:`LevelFusion` per level; subclasses choose its parts."""

    average = False
    cmx = False

    @configurable
    def __init__(self, *, input_shape, text_dim=None, cmx_reduction: int = 1, cmx_num_heads: int = 8):
        """
        Args:
            input_shape, text_dim: see :class:`RGBTFusion`.
            cmx_reduction: channel reduction of the FRM MLPs and the FFM channel embedding.
            cmx_num_heads: FFM heads (reduced to a divisor of each level's channels).
        """
        super().__init__(input_shape=input_shape, text_dim=text_dim)
        self.levels = nn.ModuleDict({
            name: LevelFusion(spec.channels, average=self.average, text_dim=self.text_dim, cmx=self.cmx,
                              cmx_reduction=cmx_reduction, cmx_num_heads=cmx_num_heads)
            for name, spec in self._input_shape.items()
        })

    @classmethod
    def from_config(cls, cfg, input_shape, text_dim=None):
        return {
            **super().from_config(cfg, input_shape, text_dim),
            "cmx_reduction": cfg.MODEL.SARTM.CMX_REDUCTION,
            "cmx_num_heads": cfg.MODEL.SARTM.CMX_NUM_HEADS,
        }


@FUSION_REGISTRY.register()
class AverageFusion(_LevelwiseFusion):
    """Learned weighted average of the two streams (``"average"``)."""

    name = "average"
    average = True


@FUSION_REGISTRY.register()
class LanguageFusion(_LevelwiseFusion):
    """Weighted average with per-pixel weights from the class text embeddings (``"language"``)."""

    name = "language"
    average = True

    @classmethod
    def uses_text(cls, cfg) -> bool:
        return True


@FUSION_REGISTRY.register()
class CMXFusion(_LevelwiseFusion):
    """CMX's FRM + FFM at every level (``"cmx"``)."""

    name = "cmx"
    cmx = True


@FUSION_REGISTRY.register()
class PaperFusion(_LevelwiseFusion):
    """The paper's fusion step: (language-guided) weighted average + CMX, summed (``"paper"``)."""

    name = "paper"
    average = True
    cmx = True

    @classmethod
    def uses_text(cls, cfg) -> bool:
        return bool(cfg.MODEL.SARTM.FUSION_LANGUAGE)


def fusion_class(cfg) -> type[RGBTFusion]:
    """The registered fusion class named by MODEL.SARTM.FUSION (error lists the registered names)."""
    return lookup(FUSION_REGISTRY, cfg.MODEL.SARTM.FUSION, "MODEL.SARTM.FUSION")


def build_fusion(cfg, input_shape: dict[str, ShapeSpec], text_dim: int | None = None) -> RGBTFusion:
    """Build MODEL.SARTM.FUSION; ``text_dim`` is Dt of the class text embeddings (when it uses them)."""
    return fusion_class(cfg)(cfg, input_shape, text_dim=text_dim)


class TrustGate(nn.Module):
    """Per-location trust logits of the two streams of one level, from both streams' features and the
    input's saturation.

    A 1x1 conv of the concatenated streams and of the cues (per location, the share of saturated input
    pixels of each camera: a clipped pixel is no measurement, and a saturated image may still give
    features that look healthy), plus a projection of its global average (a blinded or noisy camera
    shows in the whole image, not only in one place), then a 3x3 conv to two logits (the trust is their
    sigmoid). The output conv starts at zero weight and a bias of ``logit(init_trust)``, so training
    starts as the ungated fusion with both streams trusted.
    """

    def __init__(self, channels: int, init_trust: float = 0.95, cue_channels: int = 2):
        super().__init__()
        hidden = max(8, channels // 4)
        self.local = nn.Conv2d(2 * channels + cue_channels, hidden, 1)
        self.context = nn.Linear(hidden, hidden)
        self.out = nn.Conv2d(hidden, 2, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.constant_(self.out.bias, math.log(init_trust / (1.0 - init_trust)))

    def forward(self, rgb: torch.Tensor, thermal: torch.Tensor, cues: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) each and (B, 2, h, w) cues -> (B, 2, h, w) trust logits of RGB and thermal."""
        h = F.gelu(self.local(torch.cat([rgb, thermal, cues.to(rgb.dtype)], dim=1)))
        h = F.gelu(h + self.context(h.mean(dim=(2, 3)))[:, :, None, None])
        return self.out(h)


class StandIn(nn.Module):
    """What a missing or untrusted stream is replaced by at one level: its learned "absent" embedding
    plus, with ``from_other``, a prediction of its features from the other stream's.

    The prediction (1x1 convs and depthwise 3x3 convs, one dilated, at the level's width; the last conv
    starts at zero, so the stand-in starts as the embedding) lets a fusion trained on pairs see
    something pair-like when one camera is gone: thermal-like features of warm objects seen by day in
    RGB, RGB-like features of the painted ones seen in thermal... It is cheap next to the backbone
    (about 3 C^2 multiply-adds per location).
    """

    def __init__(self, channels: int, from_other: bool):
        super().__init__()
        hidden = max(16, channels)
        self.predict = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.GELU(),
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden), nn.GELU(),
            nn.Conv2d(hidden, hidden, 1), nn.GELU(),
            nn.Conv2d(hidden, hidden, 3, padding=2, dilation=2, groups=hidden),
            nn.Conv2d(hidden, channels, 1),
        ) if from_other else None
        if self.predict is not None:
            nn.init.zeros_(self.predict[-1].weight)
            nn.init.zeros_(self.predict[-1].bias)

    def forward(self, absent: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """``absent`` (C,) embedding, ``other`` (B, C, h, w) the other stream -> (B, C, h, w)."""
        base = absent.to(other.dtype).view(1, -1, 1, 1)
        if self.predict is None:
            return base.expand_as(other)
        return base + self.predict(other)


STANDINS = ("embedding", "hallucinate")


@FUSION_REGISTRY.register()
class ReliabilityFusion(PaperFusion):
    """The paper's fusion behind a learned trust gate per level (``"reliability"``; module docstring).

    Each stream enters the fusion as ``t * f + (1 - t) * s``: ``t`` its trust (0 for a missing
    camera), ``s`` its stand-in (:class:`StandIn`: the learned "absent" embedding, or with ``standin``
    "hallucinate" also a prediction from the other stream). Trained with modality dropout,
    degradation augmentation and the consistency loss (the any-modality configs), the gates learn to
    fade out a stream that does not help; the model's output then reports the per-image trust of each
    camera, so a deployer sees which one is failing. The gates see the streams detached: they observe
    the backbone, which is not trained to look trustworthy. In training the output also holds
    ``"trust_levels"``: per level (trust logits (B, 2, h, w), RGB map, thermal map, RGB stand-in,
    thermal stand-in) before the gate, for the trust and stand-in supervision (``losses``).
    """

    name = "reliability"
    estimates_trust = True  # forward's output has "trust"; the exported graph gets a "trust" output
    uses_cues = True  # forward takes the input's per-pixel saturation ("cues")
    robust_parts = ("gates", "standins", "absent")  # what a healthy pair does not need (SARTM)

    @configurable
    def __init__(self, *, input_shape, text_dim=None, cmx_reduction: int = 1, cmx_num_heads: int = 8,
                 standin: str = "embedding", open_at: float = 1.0):
        """Args: see :class:`PaperFusion`; one :class:`TrustGate` and one :class:`StandIn` per stream
        and level are added. ``standin``: "embedding" or "hallucinate" (MODEL.SARTM.ROBUST.STANDIN);
        ``open_at``: the trust at which a gate is fully open (:func:`open_trust`,
        MODEL.SARTM.ROBUST.TRUST_OPEN_AT)."""
        super().__init__(input_shape=input_shape, text_dim=text_dim, cmx_reduction=cmx_reduction,
                         cmx_num_heads=cmx_num_heads)
        if standin not in STANDINS:
            raise ValueError(f"MODEL.SARTM.ROBUST.STANDIN must be one of {STANDINS}, got {standin!r}.")
        if not 0.0 < open_at <= 1.0:
            raise ValueError(f"MODEL.SARTM.ROBUST.TRUST_OPEN_AT must be in (0, 1], got {open_at}.")
        self.open_at = float(open_at)
        self.gates = nn.ModuleDict(
            {name: TrustGate(spec.channels) for name, spec in self._input_shape.items()}
        )
        self.standins = nn.ModuleDict({
            name: nn.ModuleList([StandIn(spec.channels, standin == "hallucinate") for _ in range(2)])
            for name, spec in self._input_shape.items()
        })

    @classmethod
    def from_config(cls, cfg, input_shape, text_dim=None):
        robust = cfg.MODEL.SARTM.ROBUST
        return {**super().from_config(cfg, input_shape, text_dim), "standin": robust.STANDIN,
                "open_at": robust.TRUST_OPEN_AT}

    def forward(self, features, text_embeddings=None, present=None, thermal_valid=None, cues=None):
        """As :meth:`RGBTFusion.forward`, plus ``"trust"``: (B, 2) mean trust in RGB and thermal (a
        missing stream has 0; where the thermal pixels hold no data, ``thermal_valid``, the thermal
        trust is 0 there too). ``cues``: (B, 2, H, W) per-pixel saturation of RGB and thermal at the
        input size (None: none saturated)."""
        if self.requires_text and text_embeddings is None:
            raise ValueError(f'MODEL.SARTM.FUSION "{self.name}" uses the text embeddings: none given.')
        out, trusts, levels = {}, [], {}
        for name, fuse in self.levels.items():
            stride = self._input_shape[name].stride
            rgb, thermal = self._streams(name, features[name], present, thermal_valid)
            level_cues = pool_to_level(cues, rgb, stride, channels=2)
            logits = self.gates[name](rgb.detach(), thermal.detach(), level_cues)
            trust = open_trust(torch.sigmoid(logits), self.open_at)
            if present is not None:
                trust = trust * present[:, :, None, None].to(trust.dtype)
            if thermal_valid is not None:
                ones = torch.ones_like(trust[:, :1])
                trust = trust * torch.cat([ones, pool_to_level(thermal_valid, trust, stride)], dim=1)
            standin_rgb = self.standins[name][0](self.absent[name][0], thermal)
            standin_thermal = self.standins[name][1](self.absent[name][1], rgb)
            levels[name] = (logits, rgb, thermal, standin_rgb, standin_thermal)
            t_rgb, t_thermal = trust[:, :1], trust[:, 1:]
            gated_rgb = t_rgb * rgb + (1.0 - t_rgb) * standin_rgb
            gated_thermal = t_thermal * thermal + (1.0 - t_thermal) * standin_thermal
            out[name] = fuse(gated_rgb, gated_thermal, text_embeddings)
            trusts.append(trust.mean(dim=(2, 3)))
        out["trust"] = torch.stack(trusts).mean(dim=0)
        if self.training:
            out["trust_levels"] = levels
        return out


def pool_to_level(
    maps: torch.Tensor | None, like: torch.Tensor, stride: int, channels: int = 1
) -> torch.Tensor:
    """(B, c, H, W) input-size maps averaged over each ``stride`` x ``stride`` cell: the locations of the
    level ``like`` (B, C, H / stride, W / stride); zeros of ``channels`` channels if None. (A constant
    kernel: the exported graph keeps its sizes dynamic, which adaptive pooling cannot take.)"""
    if maps is None:
        b, _, h, w = like.shape
        return like.new_zeros(b, channels, h, w)
    return F.avg_pool2d(maps.to(like.dtype), kernel_size=stride, stride=stride)


def open_trust(trust: torch.Tensor, open_at: float) -> torch.Tensor:
    """``min(1, trust / open_at)``: a gate at least ``open_at`` sure of a stream lets it through exactly,
    so that on a healthy pair the fused features are the ungated fusion's (the plain model's, when only
    the robust parts were trained); below, the stream fades linearly. ``open_at`` 1: the trust itself."""
    return (trust / open_at).clamp(max=1.0)
