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
    FUSION_REGISTRY,
    AverageFusion,
    CMXFusion,
    FeatureFusion,
    FeatureRectification,
    LanguageFusion,
    ModalityWeighting,
    PaperFusion,
    RGBTFusion,
    build_fusion,
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


FUSIONS = {"average": AverageFusion, "language": LanguageFusion, "cmx": CMXFusion, "paper": PaperFusion}


def _build(mode, text_dim=DT):
    torch.manual_seed(0)
    text_dim = text_dim if mode in ("language", "paper") else None
    return FUSIONS[mode](input_shape=SHAPES, text_dim=text_dim, cmx_reduction=1, cmx_num_heads=8)


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
    # Every parameter gets a gradient (DDP rejects unused parameters); with both streams present the
    # absent-modality embeddings get an exact zero.
    fusion.train()
    out = fusion(feats, text if fusion.requires_text else None)
    sum(t.square().mean() for t in out.values()).backward()
    assert all(p.grad is not None for p in fusion.parameters())
    no_grad = [n for n, p in fusion.named_parameters() if p.grad.abs().sum() == 0]
    assert sorted(no_grad) == sorted(f"absent.{n}" for n in SHAPES), no_grad


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


def _cfg(mode, language=True):
    cfg = get_cfg()
    add_sartm_config(cfg)
    cfg.MODEL.SARTM.FUSION = mode
    cfg.MODEL.SARTM.FUSION_LANGUAGE = language
    return cfg


def test_build_fusion_from_config_and_language_requirements():
    fusion = build_fusion(_cfg("paper"), SHAPES, text_dim=DT)
    assert isinstance(fusion, PaperFusion) and fusion.requires_text and fusion.levels["sfm"].cmx is not None
    # ablation "without language": only MODEL.SARTM.FUSION_LANGUAGE removes the language term
    cfg = _cfg("paper", language=False)
    cfg.MODEL.SARTM.DISTILL.ENABLED = True
    fusion = build_fusion(cfg, SHAPES, text_dim=DT)
    assert not fusion.requires_text and fusion.levels["sfm"].cmx is not None
    assert not hasattr(fusion.levels["sfm"].average, "text_proj")
    cfg.MODEL.SARTM.DISTILL.ENABLED = False
    cfg.MODEL.SARTM.FUSION_LANGUAGE = True
    assert build_fusion(cfg, SHAPES, text_dim=DT).requires_text  # the distillation switch changes nothing
    assert fusion(_features())["ffp"].shape == (B, D // 8, *SIZES["ffp"])
    assert LanguageFusion.uses_text(_cfg("language")) and not CMXFusion.uses_text(_cfg("cmx"))
    with pytest.raises(ValueError, match=r"MODEL\.SARTM\.FUSION \"paper\" uses the class text embeddings"):
        build_fusion(_cfg("paper"), SHAPES, text_dim=None)
    with pytest.raises(ValueError, match=r"FUSION 'concat' is not registered.*'average', 'cmx'"):
        build_fusion(_cfg("concat"), SHAPES)
    assert isinstance(build_fusion(_cfg("CMXFusion"), SHAPES), CMXFusion)  # the class name works too
    fusion = build_fusion(_cfg("language"), SHAPES, text_dim=DT)
    with pytest.raises(ValueError, match="text embeddings"):
        fusion(_features(), None)


def test_a_fusion_registered_outside_the_package_is_built_by_name():
    @FUSION_REGISTRY.register()
    class SumFusionForTest(RGBTFusion):
        name = "sum_for_test"

        @classmethod
        def uses_text(cls, cfg):
            return False

        def __init__(self, cfg, input_shape, text_dim=None):
            super().__init__(input_shape=input_shape, text_dim=None)
            self.levels = torch.nn.ModuleDict({n: _Sum() for n in input_shape})

    class _Sum(torch.nn.Module):
        def forward(self, rgb, thermal, text):
            return rgb + thermal

    try:
        fusion = build_fusion(_cfg("sum_for_test"), SHAPES)
        feats = _features()
        torch.testing.assert_close(fusion.eval()(feats)["sfm"], feats["sfm"][:B] + feats["sfm"][B:])
    finally:
        FUSION_REGISTRY._obj_map.pop("SumFusionForTest")


@pytest.mark.parametrize("mode", ["average", "cmx", "paper"])
def test_a_missing_stream_is_the_learned_absent_embedding(mode):
    fusion = _build(mode).train()
    text = torch.randn(K, DT)
    text = text if fusion.requires_text else None
    feats = _features()
    # Sample 0 has both streams, sample 1 only thermal: the backbone computed 1 RGB + 2 thermal rows.
    present = torch.tensor([[True, True], [False, True]])
    rows = {n: torch.cat([f[:1], f[B:]]) for n, f in feats.items()}
    with torch.no_grad():
        for name in SHAPES:
            fusion.absent[name].normal_()
    out = fusion(rows, text, present)
    # The same as fusing full tensors where sample 1's RGB is the RGB absent embedding.
    filled = {n: torch.cat([f[:1], fusion.absent[n][0].view(1, -1, 1, 1).expand(1, -1, *SIZES[n]), f[B:]])
              for n, f in feats.items()}
    expected = fusion(filled, text)
    for n in SHAPES:
        torch.testing.assert_close(out[n], expected[n])
    # The absent RGB embedding learns from sample 1; the thermal one (never absent here) does not.
    fusion.zero_grad()
    sum(t.square().mean() for t in fusion(rows, text, present).values()).backward()
    for n in SHAPES:
        assert fusion.absent[n].grad[0].abs().sum() > 0 and fusion.absent[n].grad[1].abs().sum() == 0


def test_fusion_bf16_autocast():
    fusion = _build("paper")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fusion(_features(), torch.randn(K, DT))
    assert all(torch.isfinite(t.float()).all() for t in out.values())


@pytest.mark.parametrize("mode", ["paper", "reliability"])
def test_thermal_pixels_without_data_are_a_missing_camera_there(mode):
    """thermal_valid 0 everywhere is exactly the thermal camera missing; where it is 0 in part of the
    image, the thermal stream there is blended towards its absent embedding by the share of invalid
    input pixels of each location (and the reliability fusion's thermal trust is 0 there)."""
    from sartm_d2.modeling.fusion import ReliabilityFusion

    torch.manual_seed(0)
    kinds = {"paper": PaperFusion, "reliability": ReliabilityFusion}
    fusion = kinds[mode](input_shape=SHAPES, text_dim=DT, cmx_reduction=1, cmx_num_heads=8).eval()
    with torch.no_grad():
        for name in SHAPES:
            fusion.absent[name].normal_()
    text, feats = torch.randn(K, DT), _features()
    H, W = 16 * SIZES["sfm"][0], 16 * SIZES["sfm"][1]  # the input size of these levels
    none = torch.zeros(B, 1, H, W)
    rgb_only = fusion({n: f[:B] for n, f in feats.items()}, text, torch.tensor([[True, False]] * B))
    blind = fusion(feats, text, thermal_valid=none)
    for n in SHAPES:
        torch.testing.assert_close(blind[n], rgb_only[n])
    if mode == "paper":
        half = torch.ones(B, 1, H, W)
        half[..., : W // 2 + 2] = 0.0  # the left half and 2 more columns: locations of mixed pixels
        blended = {}
        for n, f in feats.items():
            s = SHAPES[n].stride
            v = F.avg_pool2d(half, s, s)
            thermal = v * f[B:] + (1 - v) * fusion.absent[n][1].view(1, -1, 1, 1)
            blended[n] = torch.cat([f[:B], thermal])
        expected = fusion(blended, text)
        out = fusion(feats, text, thermal_valid=half)
        for n in SHAPES:
            torch.testing.assert_close(out[n], expected[n])
    else:
        out = fusion(feats, text, thermal_valid=torch.ones(B, 1, H, W))
        assert torch.all(out["trust"][:, 1] > 0) and torch.all(blind["trust"][:, 1] == 0)
