"""SAM2HieraLoRABackbone: shapes, equivalence with plain SAM2 at init, per-modality LoRA, training."""

import pytest
import torch
from conftest import TINY_HIERA, tiny_cfg

from sartm_d2.modeling.backbone import SAM2HieraLoRABackbone, hiera_config
from sartm_d2.modeling.lora import LoRAQKVLinear

TINY = TINY_HIERA
D = 32


def _tiny(seed=0, rank=4, randomise=True):
    torch.manual_seed(seed)
    backbone = SAM2HieraLoRABackbone(size="custom", d_model=D, lora_rank=rank, lora_alpha=8.0, **TINY)
    if randomise:  # zero-initialised pos embeds would hide ordering errors
        with torch.no_grad():
            backbone.trunk.pos_embed.normal_()
            backbone.trunk.pos_embed_window.normal_()
    return backbone


def _lora_layers(backbone):
    return [m for m in backbone.modules() if isinstance(m, LoRAQKVLinear)]


def _randomise_lora_b(backbone, modality=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in _lora_layers(backbone):
            target = layer.lora_B if modality is None else layer.lora_B[modality]
            target.add_(torch.randn(target.shape, generator=g))


@pytest.mark.parametrize("hw", [(64, 96), (96, 64), (32, 32)])
def test_shapes_and_shape_specs(hw):
    backbone = _tiny()
    specs = backbone.output_shape()
    assert {k: (s.channels, s.stride) for k, s in specs.items()} == {
        "sfm": (D, 16),
        "ifp": (D // 4, 8),
        "ffp": (D // 8, 4),
    }
    assert backbone.size_divisibility == 32
    h, w = hw
    out = backbone(torch.randn(4, 3, h, w))
    for name, spec in specs.items():
        assert out[name].shape == (4, spec.channels, h // spec.stride, w // spec.stride), name


def test_bad_inputs_are_clear_errors():
    backbone = _tiny()
    with pytest.raises(ValueError, match=r"multiples of 32, got 70x100"):
        backbone(torch.randn(2, 3, 70, 100))
    with pytest.raises(ValueError, match="num_modalities"):
        backbone(torch.randn(3, 3, 64, 64))
    with pytest.raises(ValueError, match=r"\(M\*B, 3, H, W\)"):
        backbone(torch.randn(2, 4, 64, 64))
    with pytest.raises(ValueError, match="stage-transition"):
        SAM2HieraLoRABackbone(size="custom", d_model=D, **{**TINY, "global_att_blocks": [1]})
    with pytest.raises(ValueError, match="only for size='custom'"):
        SAM2HieraLoRABackbone(size="t", embed_dim=8)
    with pytest.raises(ValueError, match="Unknown SAM2 size"):
        SAM2HieraLoRABackbone(size="xl")
    with pytest.raises(ValueError, match="multiple of 8"):
        SAM2HieraLoRABackbone(size="custom", d_model=20, **TINY)


def _plain_sam2_features(backbone, x):
    """Each modality alone through sam2's own ImageEncoder(Hiera, FpnNeck, scalp=1) + conv_s0/s1."""
    from sam2.modeling.backbones.hieradet import Hiera
    from sam2.modeling.backbones.image_encoder import FpnNeck, ImageEncoder
    from sam2.modeling.position_encoding import PositionEmbeddingSine

    trunk = Hiera(**{k: tuple(v) if isinstance(v, list) else v for k, v in TINY.items()})
    neck = FpnNeck(
        position_encoding=PositionEmbeddingSine(num_pos_feats=D),
        d_model=D,
        backbone_channel_list=trunk.channel_list,
        fpn_top_down_levels=[2, 3],
        fpn_interp_model="nearest",
    )
    encoder = ImageEncoder(trunk=trunk, neck=neck, scalp=1)
    sd = {k: v for k, v in backbone.state_dict().items() if "lora_" not in k and not k.startswith("conv_s")}
    encoder.load_state_dict(sd, strict=True)
    fpn = encoder(x)["backbone_fpn"]
    assert len(fpn) == 3
    return {"sfm": fpn[2], "ifp": backbone.conv_s1(fpn[1]), "ffp": backbone.conv_s0(fpn[0])}


def test_init_equals_plain_sam2_per_modality():
    backbone = _tiny()
    torch.manual_seed(3)
    rgb, thermal = torch.randn(2, 3, 64, 96), torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        out = backbone(torch.cat([rgb, thermal]))
        ref_rgb = _plain_sam2_features(backbone, rgb)
        ref_t = _plain_sam2_features(backbone, thermal)
    for name in ("sfm", "ifp", "ffp"):
        torch.testing.assert_close(out[name][:2], ref_rgb[name], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out[name][2:], ref_t[name], atol=1e-5, rtol=1e-5)


def test_thermal_lora_leaves_rgb_stream_bit_identical():
    backbone = _tiny()
    x = torch.randn(4, 3, 64, 96)
    with torch.no_grad():
        before = backbone(x)
        _randomise_lora_b(backbone, modality=1)
        after = backbone(x)
    for name in before:
        assert torch.equal(before[name][:2], after[name][:2]), name
        assert not torch.allclose(before[name][2:], after[name][2:], atol=1e-3), name


def test_only_lora_and_projections_train():
    backbone = _tiny()
    _randomise_lora_b(backbone)
    frozen = {n: p.detach().clone() for n, p in backbone.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("trunk.", "neck.")) for n in frozen)
    out = backbone(torch.randn(4, 3, 64, 64))
    sum(v.float().square().mean() for v in out.values()).backward()
    with_grad = {n for n, p in backbone.named_parameters() if p.grad is not None}
    expected = {n for n, _ in backbone.named_parameters() if "lora_" in n or n.startswith("conv_s")}
    assert with_grad == expected
    assert len([n for n in expected if "lora_" in n]) == 2 * 5
    assert all(backbone.get_parameter(n).grad.abs().sum() > 0 for n in expected)
    lora_before = backbone.trunk.blocks[3].attn.qkv.lora_B.detach().clone()
    torch.optim.AdamW(backbone.parameters(), lr=1e-2, weight_decay=0.1).step()
    assert all(torch.equal(backbone.get_parameter(n), v) for n, v in frozen.items())
    assert not torch.equal(backbone.trunk.blocks[3].attn.qkv.lora_B, lora_before)


def test_merge_unmerge_backbone():
    backbone = _tiny().eval()
    _randomise_lora_b(backbone)
    x = torch.randn(4, 3, 64, 96)
    state = {k: v.clone() for k, v in backbone.state_dict().items()}
    with torch.no_grad():
        ref = backbone(x)
        backbone.train().eval()
        assert not any(m.merged for m in _lora_layers(backbone))  # .eval()/.train() never merge
        assert backbone.merge_lora() == 5
        merged = backbone(x)
        backbone.unmerge_lora()
        again = backbone(x)
    for name in ref:
        torch.testing.assert_close(merged[name], ref[name], atol=1e-5, rtol=1e-4)
        assert torch.equal(again[name], ref[name])
    assert all(torch.equal(v, state[k]) for k, v in backbone.state_dict().items())


def test_bf16_autocast_is_finite():
    backbone = _tiny()
    _randomise_lora_b(backbone)
    x = torch.randn(4, 3, 64, 96)
    with torch.no_grad():
        ref = backbone(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = backbone(x)
    for name in ref:
        assert torch.isfinite(out[name]).all()
        assert out[name].shape == ref[name].shape
        rel = (out[name].float() - ref[name]).norm() / ref[name].norm()
        assert rel < 0.1, (name, rel)


def test_builder_reads_config():
    from detectron2.layers import ShapeSpec
    from detectron2.modeling import build_backbone

    cfg = tiny_cfg()
    cfg.MODEL.SAM2.D_MODEL = 64
    cfg.MODEL.SAM2.CUSTOM.EMBED_DIM = 8
    cfg.MODEL.SARTM.LORA.RANK = 3
    cfg.MODEL.SARTM.LORA.ALPHA = 6.0
    cfg.MODEL.SARTM.LORA.DROPOUT = 0.1
    backbone = build_backbone(cfg, ShapeSpec(channels=4))
    assert isinstance(backbone, SAM2HieraLoRABackbone)
    assert backbone.output_shape()["ifp"].channels == 16
    assert backbone.trunk.channel_list == [64, 32, 16, 8]
    layers = _lora_layers(backbone)
    assert len(layers) == sum(cfg.MODEL.SAM2.CUSTOM.STAGES)
    assert {(m.rank, m.scaling, m.lora_dropout.p) for m in layers} == {(3, 2.0, 0.1)}
    cfg.MODEL.SARTM.LORA.RANK = 0
    assert build_backbone(cfg)(torch.zeros(2, 3, 32, 32))["sfm"].shape == (2, 64, 2, 2)


def test_official_sizes_from_sam2_configs():
    # Facts of SAM2's configs: t = 96-d [1, 2, 7, 2]; b+ = 112-d, 2 heads, Hiera's default stages.
    assert hiera_config("t")["stages"] == [1, 2, 7, 2] and hiera_config("t")["embed_dim"] == 96
    assert hiera_config("b+") == {"embed_dim": 112, "num_heads": 2}
    assert hiera_config("l")["window_spec"] == [8, 4, 16, 8]
    backbone = SAM2HieraLoRABackbone(size="t", lora_rank=16)
    assert backbone.trunk.channel_list == [768, 384, 192, 96] and len(_lora_layers(backbone)) == 12
    lora = sum(p.numel() for n, p in backbone.named_parameters() if "lora_" in n)
    # per block: M * 2 (q, v) * r * (in + dim_out); transitions have dim_out = 2 * in.
    dims = [(b.dim, b.dim_out) for b in backbone.trunk.blocks]
    assert lora == sum(2 * 2 * 16 * (i + o) for i, o in dims)


def test_activation_checkpointing_gives_identical_features_and_gradients(monkeypatch):
    from sartm_d2.modeling.backbone import sam2_hiera_lora

    calls = []
    original = sam2_hiera_lora.checkpoint
    monkeypatch.setattr(sam2_hiera_lora, "checkpoint", lambda *a, **k: calls.append(1) or original(*a, **k))
    ref, ckpt = _tiny(), _tiny()
    ckpt.activation_checkpointing = True
    _randomise_lora_b(ref)
    _randomise_lora_b(ckpt)
    x = torch.randn(4, 3, 64, 96)
    outs = []
    for model in (ref, ckpt):
        model.train()
        out = model(x)
        sum(v.square().mean() for v in out.values()).backward()
        outs.append(out)
    assert len(calls) == len(ckpt.trunk.blocks)  # every block of the second model was checkpointed
    for name in outs[0]:
        torch.testing.assert_close(outs[1][name], outs[0][name], rtol=0, atol=0)
    grads = [{n: p.grad for n, p in m.named_parameters() if p.requires_grad} for m in (ref, ckpt)]
    assert grads[0].keys() == grads[1].keys() and any("lora_A" in n for n in grads[0])
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-5, atol=1e-6)
