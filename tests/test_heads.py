"""SAM2 mask-decoder head and the auxiliary heads: shapes, frozen/unused parts, registry, no gating, and
each aux head recomputed along its documented pathway."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sartm_d2  # noqa: F401  (compat patches before detectron2)

# isort: split
from conftest import tiny_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY, build_sem_seg_head

from sartm_d2.modeling.heads import (
    AUX_HEAD_REGISTRY,
    DeepLabAuxHead,
    FPNAuxHead,
    SAM2MaskDecoderHead,
    SegFormerAuxHead,
    build_aux_head,
)

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
def test_aux_heads_shapes_gradients_and_no_modules_built_in_forward(name, monkeypatch):
    torch.manual_seed(0)
    head = build_aux_head(_cfg(NAME=name), SHAPES)
    assert type(head) is AUX_HEAD_REGISTRY.get(name)
    state_before = {k: v.clone() for k, v in head.state_dict().items()}
    params_before = [id(p) for p in head.parameters()]
    built = []  # every nn.Module constructed while forward runs (parameter-free ones included)
    module_init = nn.Module.__init__

    def counting_init(self, *args, **kwargs):
        built.append(type(self).__name__)
        module_init(self, *args, **kwargs)

    monkeypatch.setattr(nn.Module, "__init__", counting_init)
    out = head(_fused(3, 5))
    monkeypatch.undo()
    assert not built, f"{name}.forward built modules: {built}"
    assert out.shape == (B, K, 12, 20)
    assert [id(p) for p in head.parameters()] == params_before
    assert head.state_dict().keys() == state_before.keys()
    assert all(torch.equal(v, state_before[k]) for k, v in head.state_dict().items())
    out.square().mean().backward()
    missing = [n for n, p in head.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing, missing


def _up(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _conv(conv, x, dilation=1):
    """``conv`` (an nn.Conv2d) as F.conv2d, with the "same" padding of a ``dilation``-dilated kernel."""
    k = conv.weight.shape[-1]
    return F.conv2d(x, conv.weight, conv.bias, padding=dilation * (k // 2), dilation=dilation)


def _conv_norm_relu(block, x, dilation=1):
    """conv (no bias) -> GroupNorm -> ReLU from the weights of a conv_norm_relu block."""
    conv, norm = block[0], block[1]
    assert conv.bias is None and norm.num_groups == math.gcd(32, norm.num_channels)
    y = F.group_norm(_conv(conv, x, dilation), norm.num_groups, norm.weight, norm.bias, norm.eps)
    return F.relu(y)


def _randomise_norms(head):
    """GroupNorm affine parameters away from (1, 0), so that a skipped norm shows."""
    with torch.no_grad():
        for m in head.modules():
            if isinstance(m, nn.GroupNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)


def test_deeplab_aux_head_follows_aspp_and_the_low_level_decoder():
    torch.manual_seed(1)
    head = DeepLabAuxHead(input_shape=SHAPES, num_classes=K, convs_dim=16, dilations=(6, 12))
    _randomise_norms(head)
    f = _fused(8, 16)  # SFM wider than the largest dilation, so that every dilated tap can matter
    sfm = f["sfm"]
    # ASPP: a 1x1 branch, 3x3 branches with dilation 6 and 12, image pooling (no norm), concatenated
    # and projected to convs_dim by a 1x1 conv.
    branches = [_conv_norm_relu(head.aspp[0], sfm)]
    branches += [_conv_norm_relu(head.aspp[i], sfm, d) for i, d in ((1, 6), (2, 12))]
    pooled = F.relu(_conv(head.image_pool[1], sfm.mean(dim=(2, 3), keepdim=True)))
    branches.append(pooled.expand(-1, -1, 8, 16))
    context = _conv_norm_relu(head.aspp_project, torch.cat(branches, 1))
    # Decoder: ASPP output up to stride 4, concatenated with the projected FFP, 3x3 fuse, classifier.
    low = _conv_norm_relu(head.low_level, f["ffp"])
    assert low.shape[1] == 8  # max(8, convs_dim // 4)
    fused = _conv_norm_relu(head.fuse, torch.cat([_up(context, (32, 64)), low], 1))
    torch.testing.assert_close(head(f), _conv(head.classifier, fused))


def test_segformer_aux_head_follows_the_all_mlp_decoder():
    torch.manual_seed(2)
    head = SegFormerAuxHead(input_shape=SHAPES, num_classes=K, convs_dim=16)
    _randomise_norms(head)
    f = _fused(3, 5)
    # Per level a linear (1x1) projection to convs_dim, bilinear upsampling to stride 4 (FFP's size),
    # concatenation from the coarsest level down, a 1x1 conv-norm-ReLU fuse, the classifier.
    projected = [_up(_conv(head.project[n], f[n]), (12, 20)) for n in ("sfm", "ifp", "ffp")]
    fused = _conv_norm_relu(head.fuse, torch.cat(projected, 1))
    assert head.fuse[0].kernel_size == (1, 1)
    torch.testing.assert_close(head(f), _conv(head.classifier, fused))


def test_fpn_aux_head_follows_the_paper_pathway():
    torch.manual_seed(1)
    head = FPNAuxHead(input_shape=SHAPES, num_classes=K, convs_dim=16)
    f = _fused(3, 5)
    lat = {n: head.lateral[n](f[n]) for n in f}
    merged = _up(lat["sfm"], (6, 10)) + lat["ifp"]  # SFM up + IFP
    merged = _up(merged, (12, 20)) + lat["ffp"]  # up + FFP
    torch.testing.assert_close(head(f), head.classifier(head.fuse(merged)))


def test_build_aux_head_none_and_unknown():
    assert build_aux_head(_cfg(NAME=""), SHAPES) is None
    with pytest.raises(ValueError, match=r"MODEL\.SARTM\.AUX_HEAD\.NAME 'UNetAuxHead'.*FPNAuxHead"):
        build_aux_head(_cfg(NAME="UNetAuxHead"), SHAPES)
