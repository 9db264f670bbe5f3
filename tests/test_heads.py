"""SAM2 mask-decoder head and the auxiliary heads: shapes, frozen/unused parts, registry, no gating."""

import pytest
import torch
import torch.nn.functional as F

import sartm_d2  # noqa: F401  (compat patches before detectron2)

# isort: split
from conftest import tiny_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY, build_sem_seg_head

from sartm_d2.modeling.heads import AUX_HEAD_REGISTRY, FPNAuxHead, SAM2MaskDecoderHead, build_aux_head

D, K, B = 32, 5, 2
SHAPES = {"sfm": ShapeSpec(channels=D, stride=16), "ifp": ShapeSpec(channels=D // 4, stride=8),
          "ffp": ShapeSpec(channels=D // 8, stride=4)}  # fmt: skip


def _fused(h=3, w=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "sfm": torch.randn(B, D, h, w, generator=g),
        "ifp": torch.randn(B, D // 4, 2 * h, 2 * w, generator=g),
        "ffp": torch.randn(B, D // 8, 4 * h, 4 * w, generator=g),
    }


def _cfg(**aux):
    cfg = tiny_cfg()
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = K
    cfg.MODEL.SARTM.AUX_HEAD.CONVS_DIM = 16
    for key, value in aux.items():
        setattr(cfg.MODEL.SARTM.AUX_HEAD, key, value)
    return cfg


def test_mask_decoder_head_shapes_for_any_feature_size_and_no_gating():
    torch.manual_seed(0)
    head = build_sem_seg_head(_cfg(), SHAPES)
    assert isinstance(head, SAM2MaskDecoderHead) and "SAM2MaskDecoderHead" in SEM_SEG_HEADS_REGISTRY
    for h, w in [(3, 5), (4, 4), (2, 7)]:  # positional encoding follows the actual size
        out = head(_fused(h, w))
        assert out.shape == (B, K, 4 * h, 4 * w)
    dec = head.decoder
    assert not dec.pred_obj_scores and not hasattr(dec, "obj_score_token")
    assert dec.num_mask_tokens == K + 1
    # The decoder's duplicates of the backbone's conv_s0/conv_s1 are gone.
    assert not hasattr(dec, "conv_s0") and not hasattr(dec, "conv_s1")
    assert (out > -1000).all() and out.std() > 0  # no -1024 object-score gate
    # The logits are the K multimask outputs (tokens 1..K) of sam2's decoder with these prompts.
    fused = _fused(3, 5)
    masks, *_ = dec.predict_masks(
        image_embeddings=fused["sfm"],
        image_pe=head.pe_layer((3, 5))[None],
        sparse_prompt_embeddings=torch.zeros(B, 0, D),
        dense_prompt_embeddings=head.no_mask_embed.weight.view(1, D, 1, 1).expand(B, D, 3, 5),
        repeat_image=False,
        high_res_features=[fused["ffp"], fused["ifp"]],
    )
    torch.testing.assert_close(head(fused), masks[:, 1:])


@pytest.mark.parametrize("freeze", [True, False])
def test_mask_decoder_head_trainable_parts_all_get_gradients(freeze):
    cfg = _cfg()
    cfg.MODEL.SAM2.FREEZE_DECODER_TRANSFORMER = freeze
    head = build_sem_seg_head(cfg, SHAPES)
    dec = head.decoder
    frozen = [dec.iou_prediction_head, dec.output_hypernetworks_mlps[0]] + (
        [dec.transformer] if freeze else []
    )
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for p in dec.transformer.parameters()) != freeze
    head(_fused()).square().mean().backward()
    missing = [
        n for n, p in head.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())
    ]
    assert not missing, missing  # no unused trainable parameter (DDP)
    assert all(p.grad is None for m in frozen for p in m.parameters())


def test_mask_decoder_head_checks_input_shapes():
    bad = dict(SHAPES, ifp=ShapeSpec(channels=D // 2, stride=8))
    with pytest.raises(ValueError, match="'ifp' must have 8 channels"):
        SAM2MaskDecoderHead(input_shape=bad, num_classes=K)
    with pytest.raises(ValueError, match="NUM_CLASSES"):
        SAM2MaskDecoderHead(input_shape=SHAPES, num_classes=0)


@pytest.mark.parametrize("name", ["FPNAuxHead", "DeepLabAuxHead", "SegFormerAuxHead"])
def test_aux_heads_shapes_gradients_and_no_modules_built_in_forward(name):
    torch.manual_seed(0)
    head = build_aux_head(_cfg(NAME=name), SHAPES)
    assert type(head) is AUX_HEAD_REGISTRY.get(name)
    params_before = [id(p) for p in head.parameters()]
    fused = _fused(3, 5)
    out = head(fused)
    assert out.shape == (B, K, 12, 20)
    assert [id(p) for p in head.parameters()] == params_before
    torch.testing.assert_close(head(fused), out)  # deterministic: no random layers made per call
    out.square().mean().backward()
    missing = [n for n, p in head.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing, missing


def test_fpn_aux_head_follows_the_paper_pathway():
    torch.manual_seed(1)
    head = FPNAuxHead(input_shape=SHAPES, num_classes=K, convs_dim=16)
    f = _fused(3, 5)

    def up(x, size):
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    lat = {n: head.lateral[n](f[n]) for n in f}
    merged = up(lat["sfm"], (6, 10)) + lat["ifp"]  # SFM up + IFP
    merged = up(merged, (12, 20)) + lat["ffp"]  # up + FFP
    torch.testing.assert_close(head(f), head.classifier(head.fuse(merged)))


def test_build_aux_head_none_and_unknown():
    assert build_aux_head(_cfg(NAME=""), SHAPES) is None
    with pytest.raises(ValueError, match=r"MODEL\.SARTM\.AUX_HEAD\.NAME 'UNetAuxHead'.*FPNAuxHead"):
        build_aux_head(_cfg(NAME="UNetAuxHead"), SHAPES)
