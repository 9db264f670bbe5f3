"""Cross-modal fusion of the RGB and thermal feature pyramids, one fusion module per level.

The backbone returns every level modality-major: rows ``0..B-1`` are RGB, ``B..2B-1`` thermal.
``SARTMFusion`` splits them and fuses each level (``sfm`` s16, ``ifp`` s8, ``ffp`` s4) with the
mode chosen by ``MODEL.SARTM.FUSION``:

- ``"average"``: learned weighted average, ``out = sum_m softmax(a)_m f_m`` (``a`` starts equal).
- ``"language"``: per-pixel modality weights ``softmax_m(a_m + s * aff_m(p))`` where ``aff_m(p)``
  is the best cosine between the pixel feature and the class text embeddings projected to the
  level's channels; a modality whose pixel looks like some class gets more weight there.
- ``"cmx"``: CMX-style FRM (feature rectification) + FFM (cross-attention + channel embedding)
  fed the RGB and the thermal stream (the official release fed RGB twice).
- ``"paper"``: the paper's fusion step: language-guided weighted average + CMX output, summed.
  With ``MODEL.SARTM.DISTILL.ENABLED False`` (ablation "without language") it drops the language
  term and becomes weighted average + CMX, since no text embeddings exist in that setting.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from sam2.modeling.sam2_utils import LayerNorm2d
from torch import nn

__all__ = [
    "FUSION_MODES",
    "ModalityWeighting",
    "FeatureRectification",
    "FeatureFusion",
    "CMXFusion",
    "LevelFusion",
    "SARTMFusion",
    "build_fusion",
    "fusion_requires_text",
]

FUSION_MODES = ("average", "language", "cmx", "paper")
LEVELS = ("sfm", "ifp", "ffp")


def fusion_requires_text(mode: str, distill_enabled: bool) -> bool:
    """Whether the fusion ``mode`` needs class text embeddings (see the module docstring)."""
    if mode not in FUSION_MODES:
        raise ValueError(f"MODEL.SARTM.FUSION must be one of {FUSION_MODES}, got {mode!r}.")
    return mode == "language" or (mode == "paper" and distill_enabled)


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


class CMXFusion(nn.Module):
    """FRM followed by FFM (CMX, Zhang et al. 2023), as the paper applies at its fusion step."""

    def __init__(self, channels: int, reduction: int = 1, num_heads: int = 8):
        super().__init__()
        self.frm = FeatureRectification(channels, reduction=reduction)
        self.ffm = FeatureFusion(channels, num_heads=num_heads, reduction=reduction)

    def forward(self, rgb: torch.Tensor, thermal: torch.Tensor) -> torch.Tensor:
        return self.ffm(*self.frm(rgb, thermal))


class LevelFusion(nn.Module):
    """Fusion of one pyramid level: a (language-guided) weighted average, CMX, or their sum."""

    def __init__(
        self, channels: int, *, mode: str, text_dim: int | None, cmx_reduction: int, cmx_num_heads: int
    ):
        super().__init__()
        self.average = None
        self.cmx = None
        if mode in ("average", "language", "paper"):
            self.average = ModalityWeighting(channels, text_dim=text_dim)
        if mode in ("cmx", "paper"):
            self.cmx = CMXFusion(channels, reduction=cmx_reduction, num_heads=cmx_num_heads)

    def forward(self, rgb: torch.Tensor, thermal: torch.Tensor, text_embeddings: torch.Tensor | None = None):
        out = None
        if self.average is not None:
            out = self.average(rgb, thermal, text_embeddings)
        if self.cmx is not None:
            fused = self.cmx(rgb, thermal)
            out = fused if out is None else out + fused
        return out


class SARTMFusion(nn.Module):
    """Fuses the modality-major backbone pyramid into one pyramid with the same channels and strides."""

    @configurable
    def __init__(
        self,
        *,
        input_shape: dict[str, ShapeSpec],
        mode: str,
        text_dim: int | None = None,
        cmx_reduction: int = 1,
        cmx_num_heads: int = 8,
    ):
        """
        Args:
            input_shape: ShapeSpec of each level ("sfm", "ifp", "ffp") of the backbone output.
            mode: one of ``FUSION_MODES``.
            text_dim: dimension Dt of the text embeddings when the language term is used; None
                disables it (mode "paper" then fuses by weighted average + CMX).
            cmx_reduction: channel reduction of the FRM MLPs and the FFM channel embedding.
            cmx_num_heads: FFM heads (reduced to a divisor of each level's channels).
        """
        super().__init__()
        if mode not in FUSION_MODES:
            raise ValueError(f"MODEL.SARTM.FUSION must be one of {FUSION_MODES}, got {mode!r}.")
        if mode == "language" and text_dim is None:
            raise ValueError(
                'MODEL.SARTM.FUSION "language" needs class text embeddings, but none were provided. '
                "The model loads them from the text teacher (MODEL.SARTM.DISTILL.TEACHER) whenever the "
                "fusion or MODEL.SARTM.DISTILL.ENABLED needs them; pass text_dim when building the fusion "
                'directly, or choose MODEL.SARTM.FUSION "average"/"cmx".'
            )
        missing = [name for name in LEVELS if name not in input_shape]
        if missing:
            raise ValueError(
                f"Fusion expects backbone levels {LEVELS}; missing {missing} in {sorted(input_shape)}."
            )
        self.mode = mode
        self.text_dim = text_dim if mode in ("language", "paper") else None
        self._input_shape = {k: input_shape[k] for k in LEVELS}
        self.levels = nn.ModuleDict(
            {
                name: LevelFusion(
                    spec.channels,
                    mode=mode,
                    text_dim=self.text_dim,
                    cmx_reduction=cmx_reduction,
                    cmx_num_heads=cmx_num_heads,
                )
                for name, spec in self._input_shape.items()
            }
        )

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec], text_dim: int | None = None):
        mode = cfg.MODEL.SARTM.FUSION
        if fusion_requires_text(mode, cfg.MODEL.SARTM.DISTILL.ENABLED) and text_dim is None:
            raise ValueError(
                f'MODEL.SARTM.FUSION "{mode}" with MODEL.SARTM.DISTILL.ENABLED '
                f"{cfg.MODEL.SARTM.DISTILL.ENABLED} needs class text embeddings, but none were provided "
                "(text_dim is None). Build the fusion through the SARTM model, which loads them from "
                'MODEL.SARTM.DISTILL.TEACHER, or use MODEL.SARTM.FUSION "average"/"cmx".'
            )
        return {
            "input_shape": input_shape,
            "mode": mode,
            "text_dim": text_dim if fusion_requires_text(mode, cfg.MODEL.SARTM.DISTILL.ENABLED) else None,
            "cmx_reduction": cfg.MODEL.SARTM.CMX_REDUCTION,
            "cmx_num_heads": cfg.MODEL.SARTM.CMX_NUM_HEADS,
        }

    @property
    def requires_text(self) -> bool:
        """True when forward needs ``text_embeddings`` (language term active)."""
        return self.text_dim is not None

    def output_shape(self) -> dict[str, ShapeSpec]:
        return dict(self._input_shape)

    def forward(
        self, features: dict[str, torch.Tensor], text_embeddings: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """
        Args:
            features: per level a (2B, C, h, w) tensor, RGB rows first, then thermal.
            text_embeddings: (K, Dt) class text embeddings; required iff ``requires_text``.
        Returns:
            per level the fused (B, C, h, w) tensor.
        """
        if self.requires_text and text_embeddings is None:
            raise ValueError(
                f'MODEL.SARTM.FUSION "{self.mode}" uses language guidance and needs text embeddings '
                "in forward."
            )
        out = {}
        for name, fuse in self.levels.items():
            rgb, thermal = features[name].chunk(2, dim=0)
            out[name] = fuse(rgb, thermal, text_embeddings)
        return out


def build_fusion(cfg, input_shape: dict[str, ShapeSpec], text_dim: int | None = None) -> SARTMFusion:
    """Build the fusion of ``MODEL.SARTM.FUSION``; ``text_dim`` is Dt of the class text embeddings."""
    return SARTMFusion(cfg, input_shape, text_dim=text_dim)
