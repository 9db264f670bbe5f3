"""SAM2's Hiera image encoder (trunk + FpnNeck) with per-modality LoRA, as a Detectron2 backbone.

Built only from the ``sam2`` package's classes (``Hiera``, ``FpnNeck``, ``PositionEmbeddingSine``)
with the hyper-parameters of SAM2's own configs, so official checkpoints load key for key.

Glossary of the feature names (the paper's, §III-A), used by the backbone, the fusion and the heads:

======  ==================================================  ======  ==========================
name    paper                                               stride  channels (D = D_MODEL)
======  ==================================================  ======  ==========================
``sfm``  semantic feature map: the FPN's top output level    16      D
``ifp``  intermediate-resolution feature pyramid (conv_s1)   8       D / 4
``ffp``  fine-grained feature pyramid (conv_s0)              4       D / 8
======  ==================================================  ======  ==========================
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from importlib import resources

import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from omegaconf import OmegaConf
from sam2.modeling.backbones.hieradet import Hiera
from sam2.modeling.backbones.image_encoder import FpnNeck
from sam2.modeling.position_encoding import PositionEmbeddingSine
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..lora import ModalityLayout, inject_lora, lora_parameters, merge_lora, unmerge_lora

logger = logging.getLogger(__name__)

__all__ = ["SAM2HieraLoRABackbone", "build_sam2_hiera_lora_backbone", "hiera_config", "SAM2_SIZES"]

# Size name -> SAM2.1 config file in the sam2 package (SAM2 v1 uses identical trunk settings).
SAM2_SIZES = {
    "t": "sam2.1_hiera_t.yaml",
    "s": "sam2.1_hiera_s.yaml",
    "b+": "sam2.1_hiera_b+.yaml",
    "l": "sam2.1_hiera_l.yaml",
}
_CUSTOM_KEYS = (
    "embed_dim",
    "num_heads",
    "stages",
    "global_att_blocks",
    "window_spec",
    "window_pos_embed_bkg_spatial_size",
)


def hiera_config(size: str) -> dict:
    """Hiera keyword arguments of an official SAM2 size, read from the sam2 package's own config.

    Keys the config leaves out take ``Hiera``'s defaults (e.g. b+ uses the default stages).
    """
    if size not in SAM2_SIZES:
        raise ValueError(f"Unknown SAM2 size {size!r}: choose one of {sorted(SAM2_SIZES)} or 'custom'.")
    path = resources.files("sam2").joinpath("configs", "sam2.1", SAM2_SIZES[size])
    trunk = OmegaConf.to_container(OmegaConf.load(str(path)).model.image_encoder.trunk, resolve=True)
    trunk.pop("_target_", None)
    return trunk


def _check_custom(cfg: dict) -> None:
    missing = [k for k in _CUSTOM_KEYS if cfg.get(k) is None]
    if missing:
        raise ValueError(f"size='custom' needs explicit {missing} (MODEL.SAM2.CUSTOM.*).")
    stages, window_spec = list(cfg["stages"]), list(cfg["window_spec"])
    if len(stages) != 4 or min(stages) < 1:
        raise ValueError(
            f"MODEL.SAM2.CUSTOM.STAGES must have 4 stages of >= 1 block (strides 4..32), got {stages}."
        )
    if len(window_spec) != 4:
        raise ValueError(f"MODEL.SAM2.CUSTOM.WINDOW_SPEC needs one window size per stage, got {window_spec}.")
    if window_spec[0] < 1 or 8 % window_spec[0] != 0:
        # Hiera tiles the first-stage window pos-embed over the stride-4 map (H/4 is a multiple of 8).
        raise ValueError(f"MODEL.SAM2.CUSTOM.WINDOW_SPEC[0] must divide 8, got {window_spec[0]}.")
    depth = sum(stages)
    bad = [b for b in cfg["global_att_blocks"] if not 0 <= b < depth]
    if bad:
        raise ValueError(f"MODEL.SAM2.CUSTOM.GLOBAL_ATT_BLOCKS {bad} outside the {depth} blocks {stages}.")
    # sam2's q-pooling blocks (first block of stages 2..4) divide by their window size: no global attention.
    q_pool_blocks = [sum(stages[:i]) for i in range(1, 4)]
    clash = sorted(set(cfg["global_att_blocks"]) & set(q_pool_blocks))
    if clash:
        raise ValueError(
            f"MODEL.SAM2.CUSTOM.GLOBAL_ATT_BLOCKS {clash} are stage-transition (q-pooling) blocks of "
            f"{stages}; Hiera cannot use global attention there. Use other blocks (not {q_pool_blocks})."
        )
    if len(cfg["window_pos_embed_bkg_spatial_size"]) != 2:
        raise ValueError("MODEL.SAM2.CUSTOM.WINDOW_POS_EMBED_BKG_SPATIAL_SIZE must be [h, w].")


class SAM2HieraLoRABackbone(Backbone):
    """Frozen SAM2 Hiera + FpnNeck with per-modality LoRA; returns SARTM's SFM / IFP / FFP per modality.

    The input is MODALITY-MAJOR: ``x = cat([rgb, thermal], 0)`` of shape ``(M*B, 3, H, W)``; every
    output keeps that order. Both modalities share one batched pass through the frozen weights; each
    block's qkv adds only the LoRA delta of the modality a row belongs to. ``counts`` (images per
    modality) allows unequal groups, e.g. ``(0, B)`` for thermal images only: a missing stream is
    simply not computed.

    Outputs (D = ``d_model``), like SAM2's ``ImageEncoder(scalp=1)`` followed by ``SAM2Base``'s
    high-res projections: ``"sfm"`` (D, stride 16, the top level of the FPN), ``"ifp"`` =
    ``conv_s1`` of the stride-8 level (D/4), ``"ffp"`` = ``conv_s0`` of the stride-4 level (D/8).

    Trainable: the LoRA matrices, and ``conv_s0``/``conv_s1``. SAM2 trains those two 1x1 convs as
    part of its mask decoder (they live in ``sam_mask_decoder``), and the paper freezes only the
    *encoder*; so they are loaded from SAM2 but left trainable. Trunk and neck are frozen.

    The neck's weights are SAM2's ``FpnNeck``; its forward is ``_pyramid`` (no discarded positional
    encodings, no fp32 upcast). ``activation_checkpointing`` recomputes each Hiera block in the
    backward pass instead of storing its activations.
    """

    def __init__(
        self,
        *,
        size: str = "b+",
        d_model: int = 256,
        lora_rank: int = 16,
        lora_alpha: float = 16.0,
        lora_dropout: float = 0.0,
        num_modalities: int = 2,
        embed_dim: int | None = None,
        num_heads: int | None = None,
        stages: Sequence[int] | None = None,
        global_att_blocks: Sequence[int] | None = None,
        window_spec: Sequence[int] | None = None,
        window_pos_embed_bkg_spatial_size: Sequence[int] | None = None,
        activation_checkpointing: bool = False,
    ):
        """
        Args:
            size: "t", "s", "b+", "l" (SAM2's sizes, hyper-parameters from the sam2 package's configs)
                or "custom" (the explicit Hiera arguments below; tiny models for tests, ablations).
            d_model: FpnNeck channels D (256 for official checkpoints); divisible by 8.
            lora_rank, lora_alpha, lora_dropout: LoRA on q and v of every block (rank 0: no LoRA).
            num_modalities: modality groups in the batch (2: RGB, thermal).
            embed_dim, num_heads, stages, global_att_blocks, window_spec,
            window_pos_embed_bkg_spatial_size: Hiera's arguments, only (and all) with size="custom".
            activation_checkpointing: during training keep only each Hiera block's input and recompute
                the block in the backward pass: less activation memory for some recompute time
                (benchmarks/RESULTS.md); gradients are unchanged.
        """
        super().__init__()
        custom = {
            "embed_dim": embed_dim,
            "num_heads": num_heads,
            "stages": stages,
            "global_att_blocks": global_att_blocks,
            "window_spec": window_spec,
            "window_pos_embed_bkg_spatial_size": window_pos_embed_bkg_spatial_size,
        }
        if size == "custom":
            _check_custom(custom)
            trunk_cfg = {k: (v if isinstance(v, int) else tuple(v)) for k, v in custom.items()}
        else:
            given = [k for k, v in custom.items() if v is not None]
            if given:
                raise ValueError(f"Hiera arguments {given} are only for size='custom', not size={size!r}.")
            trunk_cfg = hiera_config(size)
        if d_model <= 0 or d_model % 8 != 0:
            raise ValueError(f"MODEL.SAM2.D_MODEL must be a positive multiple of 8, got {d_model}.")
        if num_modalities < 1:
            raise ValueError(f"num_modalities must be >= 1, got {num_modalities}.")

        self.size = size
        self.d_model = d_model
        self.num_modalities = num_modalities
        self.activation_checkpointing = activation_checkpointing
        self.trunk = Hiera(**trunk_cfg)
        self.neck = FpnNeck(
            position_encoding=PositionEmbeddingSine(num_pos_feats=d_model, normalize=True, temperature=10000),
            d_model=d_model,
            backbone_channel_list=list(self.trunk.channel_list),
            fpn_top_down_levels=[2, 3],
            fpn_interp_model="nearest",
        )
        trunk_channels = list(self.trunk.channel_list)
        if trunk_channels != list(self.neck.backbone_channel_list) or len(self.neck.convs) != 4:
            raise ValueError(
                f"Hiera trunk channels {self.trunk.channel_list} do not match the FpnNeck's "
                f"{self.neck.backbone_channel_list}; the neck needs the trunk's 4 levels (strides 4..32)."
            )
        # As SAM2Base.forward_image: backbone_fpn[0] (s4) -> conv_s0, backbone_fpn[1] (s8) -> conv_s1.
        self.conv_s0 = nn.Conv2d(d_model, d_model // 8, kernel_size=1, stride=1)
        self.conv_s1 = nn.Conv2d(d_model, d_model // 4, kernel_size=1, stride=1)

        for p in list(self.trunk.parameters()) + list(self.neck.parameters()):
            p.requires_grad_(False)
        self.layout = ModalityLayout()
        self.num_lora_layers = inject_lora(
            self.trunk, rank=lora_rank, alpha=lora_alpha, dropout=lora_dropout, num_modalities=num_modalities,
            layout=self.layout,
        )
        for p in lora_parameters(self.trunk):
            p.requires_grad_(True)

        self._out_features = ["sfm", "ifp", "ffp"]
        self._out_feature_channels = {"sfm": d_model, "ifp": d_model // 4, "ffp": d_model // 8}
        self._out_feature_strides = {"sfm": 16, "ifp": 8, "ffp": 4}

    @property
    def size_divisibility(self) -> int:
        # Stride-32 top level, whose 2x upsampling is added to the stride-16 level.
        return 32

    def merge_lora(self) -> int:
        """Merge LoRA into per-modality weights for inference (explicit; never done by ``.eval()``)."""
        return merge_lora(self.trunk)

    def unmerge_lora(self) -> int:
        """Undo ``merge_lora`` (required before training again)."""
        return unmerge_lora(self.trunk)

    def forward(self, x: torch.Tensor, counts: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
        """
        Args:
            x: (N, 3, H, W), modality-major, H and W multiples of 32.
            counts: images per modality in ``x`` (in order, summing to N); None = N/M each.
        Returns:
            {"sfm": (N, D, H/16, W/16), "ifp": (N, D/4, H/8, W/8), "ffp": (N, D/8, H/4, W/4)}
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"SAM2HieraLoRABackbone expects (M*B, 3, H, W) images, got {tuple(x.shape)}.")
        n, _, h, w = x.shape
        if h % 32 != 0 or w % 32 != 0:
            raise ValueError(
                f"SAM2HieraLoRABackbone needs H and W to be multiples of 32, got {h}x{w}; pad the images "
                "(ImageList.from_tensors(..., size_divisibility=32))."
            )
        if counts is not None:
            counts = tuple(int(c) for c in counts)
            if len(counts) != self.num_modalities or sum(counts) != n or min(counts) < 0:
                raise ValueError(
                    f"counts {counts} must give the images of each of the {self.num_modalities} modalities "
                    f"and sum to the batch of {n}."
                )
        elif n % self.num_modalities != 0:
            raise ValueError(
                f"Batch {n} is not divisible by num_modalities={self.num_modalities}; stack the modalities "
                "modality-major: cat([rgb, thermal], 0), or give counts."
            )
        levels = self._pyramid(self._trunk(x, counts))  # strides 4, 8, 16
        return {"sfm": levels[2], "ifp": self.conv_s1(levels[1]), "ffp": self.conv_s0(levels[0])}

    def _with_counts(self, fn, x: torch.Tensor, counts: tuple[int, ...] | None):
        """``fn(x)`` with the LoRA layers told the images per modality (also when re-run in backward)."""
        previous, self.layout.counts = self.layout.counts, counts
        try:
            return fn(x)
        finally:
            self.layout.counts = previous

    def _trunk(self, x: torch.Tensor, counts: tuple[int, ...] | None = None) -> list[torch.Tensor]:
        """``Hiera.forward`` (all four stage outputs), with optional per-block activation checkpointing."""
        if not (self.activation_checkpointing and self.training and torch.is_grad_enabled()):
            return self._with_counts(self.trunk, x, counts)
        trunk = self.trunk
        x = trunk.patch_embed(x)
        x = x + trunk._get_pos_embed(x.shape[1:3])
        outputs = []
        for i, blk in enumerate(trunk.blocks):
            x = checkpoint(self._with_counts, blk, x, counts, use_reentrant=False)
            if i in trunk.stage_ends:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs

    def _pyramid(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """SAM2's FPN (the neck's lateral convs + top-down sum), minus two costs SARTM does not need.

        ``FpnNeck.forward`` also computes a sine positional encoding of every level for every image,
        which SARTM discards (the stride-4 one is a (B, D, H/4, W/4) tensor), and upcasts the
        top-down path to fp32 (nearest upsampling is exact in bf16). The result equals
        ``FpnNeck.forward(xs)[0]`` in fp32 (tested); the stride-32 level only feeds the top-down
        path (SAM2's scalp=1), so it is not returned.
        """
        neck = self.neck
        n = len(neck.convs) - 1
        out: list[torch.Tensor] = [None] * (n + 1)
        prev = None
        for i in range(n, -1, -1):
            lateral = neck.convs[n - i](xs[i])
            if i in neck.fpn_top_down_levels and prev is not None:
                prev = lateral + F.interpolate(prev, scale_factor=2.0, mode=neck.fpn_interp_model)
                if neck.fuse_type == "avg":
                    prev = prev / 2
            else:
                prev = lateral
            out[i] = prev
        return out[:n]


@BACKBONE_REGISTRY.register()
def build_sam2_hiera_lora_backbone(cfg, input_shape: ShapeSpec | None = None) -> SAM2HieraLoRABackbone:
    """Build the backbone from MODEL.SAM2.{SIZE, D_MODEL, CUSTOM.*} and MODEL.SARTM.LORA.*.

    ``input_shape`` (4 channels: R, G, B, T) is not used: the meta-architecture feeds each modality
    as its own 3-channel image.
    """
    size = cfg.MODEL.SAM2.SIZE
    custom = {}
    if size == "custom":
        c = cfg.MODEL.SAM2.CUSTOM
        custom = {
            "embed_dim": c.EMBED_DIM,
            "num_heads": c.NUM_HEADS,
            "stages": list(c.STAGES),
            "global_att_blocks": list(c.GLOBAL_ATT_BLOCKS),
            "window_spec": list(c.WINDOW_SPEC),
            "window_pos_embed_bkg_spatial_size": list(c.WINDOW_POS_EMBED_BKG_SPATIAL_SIZE),
        }
    lora = cfg.MODEL.SARTM.LORA
    backbone = SAM2HieraLoRABackbone(
        size=size,
        d_model=cfg.MODEL.SAM2.D_MODEL,
        lora_rank=lora.RANK,
        lora_alpha=lora.ALPHA,
        lora_dropout=lora.DROPOUT,
        num_modalities=2,
        activation_checkpointing=cfg.MODEL.SAM2.ACTIVATION_CHECKPOINTING,
        **custom,
    )
    logger.info(
        "SAM2 Hiera-%s backbone (D=%d): LoRA rank %d on %d qkv layers, alpha %g, dropout %g.",
        size, cfg.MODEL.SAM2.D_MODEL, lora.RANK, backbone.num_lora_layers, lora.ALPHA, lora.DROPOUT,
    )
    return backbone
