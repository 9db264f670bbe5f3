"""SAM2's mask decoder used as a semantic segmentation head (paper §III-D, first pathway)."""

from __future__ import annotations

import logging

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from sam2.modeling.position_encoding import PositionEmbeddingRandom
from sam2.modeling.sam.mask_decoder import MaskDecoder
from sam2.modeling.sam.transformer import TwoWayTransformer
from torch import nn

__all__ = ["SAM2MaskDecoderHead"]

logger = logging.getLogger(__name__)


@SEM_SEG_HEADS_REGISTRY.register()
class SAM2MaskDecoderHead(nn.Module):
    """One SAM2 mask token per class, no prompts: K mask logits at stride 4.

    - ``decoder`` is sam2's ``MaskDecoder`` with ``num_multimask_outputs=K`` and the high-res path;
      the K multimask outputs (tokens 1..K) are the class logits, token 0 (SAM's single-mask
      output) is not used.
    - ``pe_layer`` and ``no_mask_embed`` play the roles of SAM2's prompt encoder: the image
      positional encoding is computed for the ACTUAL feature size (inputs need not be square or
      1024 px) and the dense prompt is the "no mask" embedding, the sparse prompts are empty.
    - No object-score head (``pred_obj_scores=False``): SAM2's frozen score gate would overwrite
      the logits with -1024 where it sees "no object", and the main loss would get no gradient.
    - The decoder's own ``conv_s0``/``conv_s1`` are deleted: SAM2 applies them in
      ``forward_image`` (here: the backbone owns them), so the decoder's copies would be unused
      parameters, which DDP rejects.
    - Parameters whose output is discarded are frozen for the same reason: the IoU prediction head
      and the hypernetwork MLP of token 0. With ``freeze_transformer`` the two-way transformer
      (loaded from SAM2) is frozen too (paper §III-A).
    """

    # Parameters whose shapes follow the class count (one mask token and hypernetwork MLP per class).
    class_dependent_prefixes = (
        "decoder.mask_tokens.", "decoder.output_hypernetworks_mlps.", "decoder.iou_prediction_head."
    )

    @configurable
    def __init__(
        self,
        *,
        input_shape: dict[str, ShapeSpec],
        num_classes: int,
        num_heads: int = 8,
        mlp_dim: int | None = None,
        freeze_transformer: bool = True,
    ):
        """
        Args:
            input_shape: ShapeSpecs of the fused levels "sfm" (D channels, stride 16), "ifp" (D/4,
                stride 8) and "ffp" (D/8, stride 4).
            num_classes: K, one mask token per class.
            num_heads: attention heads of the two-way transformer (SAM2: 8); must divide D/2.
            mlp_dim: MLP width of the transformer; None = 8 * D (SAM2's 2048 for D = 256).
            freeze_transformer: freeze ``decoder.transformer``.
        """
        super().__init__()
        dim = input_shape["sfm"].channels
        expected = {"ifp": (dim // 4, 8), "ffp": (dim // 8, 4)}
        for name, (channels, stride) in expected.items():
            spec = input_shape[name]
            if spec.channels != channels or (spec.stride is not None and spec.stride != stride):
                raise ValueError(
                    f"SAM2MaskDecoderHead: level {name!r} must have {channels} channels at stride {stride} "
                    f"(D = {dim} from 'sfm'), got {spec.channels} channels at stride {spec.stride}. Check "
                    "MODEL.SAM2.D_MODEL and the backbone's conv_s0/conv_s1."
                )
        if dim % 8 != 0 or (dim // 2) % num_heads != 0:
            raise ValueError(
                f"SAM2MaskDecoderHead: D = {dim} (MODEL.SAM2.D_MODEL) must be a multiple of 8 and D/2 "
                f"divisible by the {num_heads} attention heads."
            )
        if num_classes < 1:
            raise ValueError(f"MODEL.SEM_SEG_HEAD.NUM_CLASSES must be >= 1, got {num_classes}.")
        self.num_classes = num_classes
        self.decoder = MaskDecoder(
            transformer_dim=dim,
            transformer=TwoWayTransformer(
                depth=2, embedding_dim=dim, mlp_dim=mlp_dim or 8 * dim, num_heads=num_heads
            ),
            num_multimask_outputs=num_classes,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
            use_high_res_features=True,
            iou_prediction_use_sigmoid=True,
            pred_obj_scores=False,
            pred_obj_scores_mlp=False,
            use_multimask_token_for_obj_ptr=False,
        )
        # The backbone owns (and applies) conv_s0/conv_s1, as SAM2Base.forward_image does.
        del self.decoder.conv_s0
        del self.decoder.conv_s1
        self.pe_layer = PositionEmbeddingRandom(dim // 2)
        self.no_mask_embed = nn.Embedding(1, dim)

        unused = [self.decoder.iou_prediction_head, self.decoder.output_hypernetworks_mlps[0]]
        if freeze_transformer:
            unused.append(self.decoder.transformer)
        for module in unused:
            module.requires_grad_(False)

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]):
        return {
            "input_shape": input_shape,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "freeze_transformer": cfg.MODEL.SAM2.FREEZE_DECODER_TRANSFORMER,
        }

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """
        Args:
            features: fused "sfm" (B, D, h, w), "ifp" (B, D/4, 2h, 2w), "ffp" (B, D/8, 4h, 4w).
        Returns:
            (B, K, 4h, 4w) class logits at stride 4.
        """
        sfm = features["sfm"]
        b, d, h, w = sfm.shape
        image_pe = self.pe_layer((h, w)).unsqueeze(0).to(sfm.dtype)
        sparse = sfm.new_zeros((b, 0, d))
        dense = self.no_mask_embed.weight.reshape(1, d, 1, 1).expand(b, d, h, w).to(sfm.dtype)
        masks, _, _, _ = self.decoder(
            image_embeddings=sfm,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,  # masks[:, 1:]: one per class
            repeat_image=False,
            high_res_features=[features["ffp"], features["ifp"]],
        )
        return masks
