"""Auxiliary segmentation heads on the fused pyramid (paper §III-D second pathway, ablation Table VIII).

Each head takes the fused levels ``sfm`` (s16), ``ifp`` (s8), ``ffp`` (s4) and returns (B, K, H/4,
W/4) logits. All layers are created in ``__init__``, so they are trained and checkpointed.
Normalisation is GroupNorm, which does not depend on the per-GPU batch size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.utils.registry import Registry
from torch import nn

from ..registry import lookup

__all__ = [
    "AUX_HEAD_REGISTRY", "AuxHead", "FPNAuxHead", "DeepLabAuxHead", "SegFormerAuxHead", "build_aux_head"
]

AUX_HEAD_REGISTRY = Registry("AUX_HEAD")
AUX_HEAD_REGISTRY.__doc__ = """
Registry for SARTM's auxiliary heads, chosen by MODEL.SARTM.AUX_HEAD.NAME. A head is called with
(cfg, input_shape: dict[str, ShapeSpec]) and maps the fused pyramid to (B, K, H/4, W/4) logits.
"""


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels)


def conv_norm_relu(
    in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1
) -> nn.Sequential:
    padding = dilation * (kernel_size // 2)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
        _group_norm(out_channels),
        nn.ReLU(inplace=True),
    )


def _resize(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class AuxHead(nn.Module):
    """Base class of the auxiliary heads: the fused pyramid in, (B, K, H/4, W/4) logits out.

    A new head subclasses it, is registered with ``@AUX_HEAD_REGISTRY.register()`` and is chosen
    by its class name in MODEL.SARTM.AUX_HEAD.NAME. ``from_config`` gives ``input_shape``,
    ``num_classes`` and ``convs_dim``; parameters whose shapes follow the class count are listed
    in ``class_dependent_prefixes`` (they restart when a checkpoint is fine-tuned to other classes).
    """

    # Parameters whose shapes follow the class count (fresh when fine-tuning to other classes).
    class_dependent_prefixes = ("classifier.",)

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]):
        return {
            "input_shape": input_shape,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "convs_dim": cfg.MODEL.SARTM.AUX_HEAD.CONVS_DIM,
        }


@AUX_HEAD_REGISTRY.register()
class FPNAuxHead(AuxHead):
    """The paper's second pathway: SFM up + IFP, up + FFP, 3x3 conv, classifier.

    Each level is first projected to ``convs_dim`` by a 1x1 conv so the sums are defined (the
    levels have D, D/4 and D/8 channels).
    """

    @configurable
    def __init__(self, *, input_shape: dict[str, ShapeSpec], num_classes: int, convs_dim: int = 128):
        """
        Args:
            input_shape: ShapeSpecs of "sfm", "ifp", "ffp".
            num_classes: K.
            convs_dim: channels of the merged features.
        """
        super().__init__()
        self.lateral = nn.ModuleDict(
            {name: nn.Conv2d(input_shape[name].channels, convs_dim, 1) for name in ("sfm", "ifp", "ffp")}
        )
        self.fuse = conv_norm_relu(convs_dim, convs_dim, 3)
        self.classifier = nn.Conv2d(convs_dim, num_classes, 1)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        ifp = self.lateral["ifp"](features["ifp"])
        merged = _resize(self.lateral["sfm"](features["sfm"]), ifp) + ifp
        ffp = self.lateral["ffp"](features["ffp"])
        merged = _resize(merged, ffp) + ffp
        return self.classifier(self.fuse(merged))


@AUX_HEAD_REGISTRY.register()
class DeepLabAuxHead(AuxHead):
    """DeepLabV3+-style head, kept small: ASPP-lite on SFM + the low-level FFP.

    ASPP-lite: a 1x1 branch, two 3x3 branches with dilation 6 and 12 (at stride 16) and image
    pooling, projected to ``convs_dim``; upsampled to s4, concatenated with a ``convs_dim // 4``
    projection of FFP, fused by a 3x3 conv and classified.
    """

    @configurable
    def __init__(
        self,
        *,
        input_shape: dict[str, ShapeSpec],
        num_classes: int,
        convs_dim: int = 128,
        dilations: tuple[int, ...] = (6, 12),
    ):
        """
        Args:
            input_shape: ShapeSpecs of "sfm" and "ffp" ("ifp" is not used by this head).
            num_classes: K.
            convs_dim: channels of the ASPP branches and of the decoder.
            dilations: dilations of the 3x3 ASPP branches.
        """
        super().__init__()
        in_ch = input_shape["sfm"].channels
        self.aspp = nn.ModuleList(
            [conv_norm_relu(in_ch, convs_dim, 1)]
            + [conv_norm_relu(in_ch, convs_dim, 3, d) for d in dilations]
        )
        # No norm after pooling: GroupNorm over a 1x1 map with few channels per group is degenerate.
        self.image_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_ch, convs_dim, 1), nn.ReLU(inplace=True)
        )
        self.aspp_project = conv_norm_relu(convs_dim * (len(dilations) + 2), convs_dim, 1)
        low_dim = max(8, convs_dim // 4)
        self.low_level = conv_norm_relu(input_shape["ffp"].channels, low_dim, 1)
        self.fuse = conv_norm_relu(convs_dim + low_dim, convs_dim, 3)
        self.classifier = nn.Conv2d(convs_dim, num_classes, 1)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        sfm = features["sfm"]
        branches = [branch(sfm) for branch in self.aspp]
        branches.append(self.image_pool(sfm).expand(-1, -1, *sfm.shape[-2:]))
        context = self.aspp_project(torch.cat(branches, dim=1))
        low = self.low_level(features["ffp"])
        return self.classifier(self.fuse(torch.cat([_resize(context, low), low], dim=1)))


@AUX_HEAD_REGISTRY.register()
class SegFormerAuxHead(AuxHead):
    """SegFormer's all-MLP decoder: per-level linear projection, upsample to s4, concat, fuse, classify."""

    @configurable
    def __init__(self, *, input_shape: dict[str, ShapeSpec], num_classes: int, convs_dim: int = 128):
        """
        Args:
            input_shape: ShapeSpecs of "sfm", "ifp", "ffp".
            num_classes: K.
            convs_dim: embedding width of each projected level.
        """
        super().__init__()
        self.names = ("sfm", "ifp", "ffp")
        self.project = nn.ModuleDict(
            {n: nn.Conv2d(input_shape[n].channels, convs_dim, 1) for n in self.names}
        )
        self.fuse = conv_norm_relu(len(self.names) * convs_dim, convs_dim, 1)
        self.classifier = nn.Conv2d(convs_dim, num_classes, 1)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        target = features["ffp"]
        projected = [_resize(self.project[n](features[n]), target) for n in self.names]
        return self.classifier(self.fuse(torch.cat(projected, dim=1)))


def build_aux_head(cfg, input_shape: dict[str, ShapeSpec]) -> nn.Module | None:
    """Build ``MODEL.SARTM.AUX_HEAD.NAME`` from the registry; "" (ablation "without aux head") gives None."""
    name = cfg.MODEL.SARTM.AUX_HEAD.NAME
    if not name:
        return None
    return lookup(AUX_HEAD_REGISTRY, name, "MODEL.SARTM.AUX_HEAD.NAME")(cfg, input_shape)
