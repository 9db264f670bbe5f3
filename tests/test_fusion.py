"""Cross-modal fusion: shapes, both modalities reach the output, language weighting, config errors."""

import pytest
import torch
import torch.nn.functional as F

import sartm_d2  # noqa: F401  (compat patches before detectron2)

# isort: split
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec

from sartm_d2.config import add_sartm_config
from sartm_d2.modeling.fusion import (
    FeatureFusion,
    FeatureRectification,
    ModalityWeighting,
    SARTMFusion,
    build_fusion,
    fusion_requires_text,
)

D = 32
SHAPES = {"sfm": ShapeSpec(channels=D, stride=16), "ifp": ShapeSpec(channels=D // 4, stride=8),
          "ffp": ShapeSpec(channels=D // 8, stride=4)}  # fmt: skip
SIZES = {"sfm": (3, 5), "ifp": (6, 10), "ffp": (12, 20)}
K, DT, B = 4, 12, 2


def _features(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(2 * B, SHAPES[n].channels, *SIZES[n], generator=g) for n in SHAPES}


def _zero_thermal(feats):
    return {n: torch.cat([f[:B], torch.zeros_like(f[B:])]) for n, f in feats.items()}


def _build(mode, text_dim=DT):
    torch.manual_seed(0)
    return SARTMFusion(input_shape=SHAPES, mode=mode, text_dim=text_dim, cmx_reduction=1, cmx_num_heads=8)


@pytest.mark.parametrize("mode", ["average", "language", "cmx", "paper"])
def test_shapes_thermal_reaches_output_and_all_params_train(mode):
    fusion = _build(mode)
    text = torch.randn(K, DT)
    feats = _features()
    out = fusion(feats, text if fusion.requires_text else None)
    assert {n: tuple(t.shape) for n, t in out.items()} == {
        n: (B, SHAPES[n].channels, *SIZES[n]) for n in SHAPES
    }
    # Thermal reaches every level (the official release fed RGB to both FRM/FFM inputs).
    out_zero_t = fusion(_zero_thermal(feats), text if fusion.requires_text else None)
    for n in SHAPES:
        assert not torch.allclose(out[n], out_zero_t[n], atol=1e-4), (mode, n)
    # Feeding RGB twice is not the same as feeding RGB + thermal.
    rgb_twice = {n: torch.cat([f[:B], f[:B]]) for n, f in feats.items()}
    out_rgb2 = fusion(rgb_twice, text if fusion.requires_text else None)
    assert not torch.allclose(out["sfm"], out_rgb2["sfm"], atol=1e-4)
    # Every parameter gets a gradient (DDP rejects unused parameters).
    sum(t.square().mean() for t in out.values()).backward()
    no_grad = [n for n, p in fusion.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not no_grad, no_grad


def test_weighted_average_matches_formula():
    w = ModalityWeighting(D)
    rgb, th = torch.randn(2, D, 3, 4), torch.randn(2, D, 3, 4)
    torch.testing.assert_close(w(rgb, th), 0.5 * (rgb + th))  # equal weights at init
    with torch.no_grad():
        w.modality_logits.copy_(torch.tensor([1.0, -0.5]))
    a = torch.softmax(torch.tensor([1.0, -0.5]), 0)
    torch.testing.assert_close(w(rgb, th), a[0] * rgb + a[1] * th)


def test_language_weighting_matches_independent_computation():
    torch.manual_seed(1)
    w = ModalityWeighting(D, text_dim=DT)
    with torch.no_grad():
        w.affinity_scale.fill_(3.0)
        w.modality_logits.copy_(torch.tensor([0.2, -0.1]))
    rgb, th, text = torch.randn(2, D, 3, 4), torch.randn(2, D, 3, 4), torch.randn(K, DT)
    prompts = w.text_proj(text)
    expected_logits = []
    for m, f in enumerate((rgb, th)):
        cos = F.cosine_similarity(f[:, None], prompts[None, :, :, None, None], dim=2)  # (B, K, h, w)
        expected_logits.append(w.modality_logits[m] + 3.0 * cos.max(dim=1).values)
    weights = torch.softmax(torch.stack(expected_logits), dim=0)
    expected = weights[0, :, None] * rgb + weights[1, :, None] * th
    torch.testing.assert_close(w(rgb, th, text), expected, rtol=1e-5, atol=1e-5)
    # the text matters: other class embeddings give other weights
    assert not torch.allclose(w(rgb, th, torch.randn(K, DT)), expected, atol=1e-5)
    assert ModalityWeighting(D, text_dim=DT).affinity_scale.item() == pytest.approx(0.1)  # starts small


def test_cmx_modules_use_both_streams():
    torch.manual_seed(2)
    rgb, th = torch.randn(2, 8, 6, 10), torch.randn(2, 8, 6, 10)
    frm = FeatureRectification(8)
    r1, t1 = frm(rgb, th)
    r0, t0 = frm(rgb, torch.zeros_like(th))
    # rgb is rectified by thermal's weighted features, and vice versa
    assert not torch.allclose(r1, r0) and not torch.allclose(t1, t0)
    ffm = FeatureFusion(8, num_heads=8)
    assert not torch.allclose(ffm(rgb, th), ffm(rgb, torch.zeros_like(th)), atol=1e-4)
    assert not torch.allclose(ffm(rgb, th), ffm(rgb, rgb), atol=1e-4)
    # FFP of a tiny model has D/8 = 4 channels: heads drop to a divisor instead of failing
    assert FeatureFusion(4, num_heads=8).num_heads == 4
    assert FeatureFusion(4, num_heads=8)(rgb[:, :4], th[:, :4]).shape == (2, 4, 6, 10)


def _cfg(mode, distill):
    cfg = get_cfg()
    add_sartm_config(cfg)
    cfg.MODEL.SARTM.FUSION = mode
    cfg.MODEL.SARTM.DISTILL.ENABLED = distill
    return cfg


def test_build_fusion_from_config_and_language_requirements():
    fusion = build_fusion(_cfg("paper", True), SHAPES, text_dim=DT)
    assert fusion.requires_text and fusion.levels["sfm"].cmx is not None
    # ablation "without language": "paper" falls back to weighted average + CMX, no error
    fusion = build_fusion(_cfg("paper", False), SHAPES)
    assert not fusion.requires_text and fusion.levels["sfm"].cmx is not None
    assert not hasattr(fusion.levels["sfm"].average, "text_proj")
    assert fusion(_features())["ffp"].shape == (B, D // 8, *SIZES["ffp"])
    assert fusion_requires_text("language", False) and not fusion_requires_text("cmx", True)
    with pytest.raises(ValueError, match=r"MODEL\.SARTM\.FUSION.*MODEL\.SARTM\.DISTILL\.ENABLED"):
        build_fusion(_cfg("paper", True), SHAPES, text_dim=None)
    with pytest.raises(ValueError, match=r"MODEL\.SARTM\.FUSION"):
        build_fusion(_cfg("language", False), SHAPES, text_dim=None)
    with pytest.raises(ValueError, match=r"MODEL\.SARTM\.FUSION must be one of"):
        build_fusion(_cfg("concat", False), SHAPES)
    fusion = build_fusion(_cfg("language", False), SHAPES, text_dim=DT)
    with pytest.raises(ValueError, match="text embeddings"):
        fusion(_features(), None)


def test_fusion_bf16_autocast():
    fusion = _build("paper")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fusion(_features(), torch.randn(K, DT))
    assert all(torch.isfinite(t.float()).all() for t in out.values())
