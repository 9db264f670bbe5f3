"""Robustness to a misbehaving camera: the per-image thermal stretch, the field corruption families,
the held-out protocol, the reliability fusion with its trust output, the consistency loss, and the
exported graph carrying the stretch and the trust (tiny models, seconds each)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_cfg
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from sartm_d2.data import RGBTDatasetMapper
from sartm_d2.data import dataset_mapper as mapper_module
from sartm_d2.data.degradations import (
    degradation_kinds,
    degrade,
    expand_settings,
    get_degradation,
    setting_kind,
)
from sartm_d2.data.synthetic import render_scene
from sartm_d2.evaluation import thermal_gain_agreement, write_settings_table
from sartm_d2.modeling.fusion import FUSION_REGISTRY, ReliabilityFusion
from sartm_d2.modeling.losses import consistency_loss, trust_fidelity_loss
from sartm_d2.modeling.preprocessing import SATURATED, thermal_stretch

CONFIG = "configs/quick_schedules/synthetic_instant_test.yaml"
NO_TEXT = ["MODEL.SARTM.DISTILL.ENABLED", "False", "MODEL.SARTM.FUSION_LANGUAGE", "False"]
ROBUST = ["MODEL.SARTM.FUSION", "reliability", "INPUT.THERMAL_NORM", "stretch"]
H, W = 64, 96


def _scene(day=True, seed=0, h=128, w=160):
    rgb, thermal, label = render_scene(np.random.default_rng(seed), h, w, day=day)
    return rgb.astype(np.float32), thermal.astype(np.float32), label


# ------------------------------------------------------------------ thermal stretch


def test_thermal_stretch_ignores_gain_and_offset_and_matches_numpy_percentiles():
    _, thermal, _ = _scene(day=False)
    thermal = 30.0 + thermal * (120.0 / thermal.max())  # 30..150: no change below saturates
    t = torch.from_numpy(thermal)[None, None]
    ref = thermal_stretch(t)
    for gain, offset in ((0.5, 0.0), (1.5, 0.0), (0.3, 40.0), (0.8, -20.0)):
        changed = (t * gain + offset).clamp(0, 255)
        assert torch.equal(changed, t * gain + offset)  # nothing saturates: a pure gain/offset change
        torch.testing.assert_close(thermal_stretch(changed), ref, atol=1e-3, rtol=0)
    # 128x160 = 20480 pixels > 2^14: a sub-grid of every 2nd pixel; its order statistics, as numpy has them.
    sample = thermal[::2, ::2].ravel()
    lo, hi = np.percentile(sample, 1, method="lower"), np.percentile(sample, 99, method="higher")
    expected = np.clip(64.0 + (thermal - lo) * 128.0 / (hi - lo), 0, 255)  # the 1..99% range -> 64..192
    np.testing.assert_allclose(ref[0, 0].numpy(), expected, atol=1e-3)
    assert 0.0 < float(ref.min()) < 64.0 and 192.0 < float(ref.max()) < 255.0  # the tails keep their texture
    assert torch.all(thermal_stretch(torch.full((2, 1, 8, 8), 77.0)) == 128.0)  # a flat image: mid-grey


def test_thermal_stretch_ignores_saturated_pixels():
    """A clipped hot source does not move the quantiles: the rest of the scene keeps its stretch."""
    _, thermal, _ = _scene(day=False)
    thermal = 30.0 + thermal * (120.0 / thermal.max())
    t = torch.from_numpy(thermal)[None, None]
    hot = t.clone()
    hot[..., 20:60, 30:90] = 255.0  # 15% of the image saturated, far more than the top 1%
    ref, out = thermal_stretch(t), thermal_stretch(hot)
    outside = torch.ones_like(t, dtype=torch.bool)
    outside[..., 20:60, 30:90] = False
    # The unsaturated pixels' quantiles move only by the pixels the hot source covers.
    sample = hot[0, 0, ::2, ::2]
    kept = sample[sample < SATURATED].numpy()
    lo, hi = np.percentile(kept, 1, method="lower"), np.percentile(kept, 99, method="higher")
    expected = np.clip(64.0 + (hot[0, 0].numpy() - lo) * 128.0 / (hi - lo), 0, 255)
    np.testing.assert_allclose(out[0, 0].numpy(), expected, atol=1e-3)
    assert float((out - ref)[outside].abs().mean()) < 3.0  # without the rule the scene would be squeezed
    assert torch.all(thermal_stretch(torch.full((1, 1, 8, 8), 255.0)) == 128.0)  # all saturated: no contrast


def test_stretch_model_is_gain_invariant_by_construction(synthetic):
    """A random model with the stretch predicts the same labels under a thermal gain step; the same
    weights without it do not."""
    torch.manual_seed(0)
    cfg = tiny_cfg(CONFIG, *NO_TEXT, "INPUT.THERMAL_NORM", "stretch")
    model = build_model(cfg).eval()
    records = DatasetCatalog.get("synthetic_rgbt_test")
    result = thermal_gain_agreement(model, RGBTDatasetMapper(cfg, is_train=False), records)
    assert result[0.5]["images"] == result[1.5]["images"] == len(records)
    # Warm objects near 255: no headroom.
    assert result[0.5]["dimmed"] == 0 and result[1.5]["dimmed"] == len(records)
    assert all(r["agreement"] >= 0.99 for r in result.values()), result
    model.input_norm.thermal_norm = "none"
    fixed = thermal_gain_agreement(model, RGBTDatasetMapper(cfg, is_train=False), records)
    assert fixed[0.5]["agreement"] < result[0.5]["agreement"]


# ------------------------------------------------------------------ field corruptions


@pytest.mark.parametrize("kind", degradation_kinds())
def test_each_family_is_deterministic_per_image_and_grows_with_its_level(kind):
    rgb, thermal, _ = _scene(day=True, seed=1)
    family = get_degradation(kind)
    for camera in family.cameras:
        image = rgb if camera == "rgb" else thermal
        outs = [degrade(image, kind, lv, seed_key="img_1") for lv in family.levels]
        for lv, out in zip(family.levels, outs):
            assert out.shape == image.shape and out.dtype == np.float32
            assert 0.0 <= out.min() and out.max() <= 255.0
            assert np.array_equal(out, degrade(image, kind, lv, seed_key="img_1"))  # same image: same draw
        change = [float(np.abs(out - image).mean()) for out in outs]
        assert 0.0 < change[0] < change[1] < change[2], (kind, camera, change)


@pytest.mark.parametrize("kind", ["noise", "occlude", "shift", "rotate", "stripe", "hotspot", "fog", "glare"])
def test_random_families_differ_between_images(kind):
    camera = get_degradation(kind).cameras[-1]
    rgb, thermal, _ = _scene(seed=2)
    image = rgb if camera == "rgb" else thermal
    assert not np.array_equal(degrade(image, kind, 2, seed_key="a"), degrade(image, kind, 2, seed_key="b"))


def test_misregistration_moves_the_thermal_image():
    _, thermal, _ = _scene(seed=3)
    shifted = degrade(thermal, "shift", 3, seed_key="x")  # 6% of 128 px = 7.7 px
    best = min(
        (float(np.abs(np.roll(shifted, (-dy, -dx), (0, 1)) - thermal)[12:-12, 12:-12].mean()), (dy, dx))
        for dy in range(-9, 10) for dx in range(-9, 10)
    )
    assert best[1] != (0, 0) and 6.0 <= np.hypot(*best[1]) <= 9.0, best


def test_held_out_protocol_names_seen_and_unseen_settings(tmp_path):
    seen = ("noise", "stripe")
    assert expand_settings(["seen"], seen) == [
        "rgb-noise-1", "rgb-noise-2", "rgb-noise-3", "thermal-noise-1", "thermal-noise-2", "thermal-noise-3",
        "thermal-stripe-1", "thermal-stripe-2", "thermal-stripe-3"]
    unseen = expand_settings(["unseen"], seen)
    assert len(unseen) == 3 * (7 + 8) and not {setting_kind(s) for s in unseen} & set(seen)
    summary = {s: {"mIoU_all": 50.0, "mIoU": 50.0} for s in ("rgbt", "thermal-noise-2", "thermal-shift-1")}
    text = write_settings_table(summary, "d", str(tmp_path), seen_kinds=seen)
    saved = json.loads((tmp_path / "settings.json").read_text())
    assert saved["families"] == {"rgbt": None, "thermal-noise-2": "seen", "thermal-shift-1": "unseen"}
    assert saved["seen_kinds"] == list(seen) and "| thermal-shift-1 | unseen" in text


# ------------------------------------------------------------------ training inputs


def test_augmentation_draws_only_the_allowed_families_and_keeps_a_clean_copy(synthetic, monkeypatch):
    drawn = []
    real = mapper_module.degrade

    def recording(image, kind, level, *, seed_key):
        drawn.append(kind)
        return real(image, kind, level, seed_key=seed_key)

    monkeypatch.setattr(mapper_module, "degrade", recording)
    cfg = tiny_cfg(CONFIG, "INPUT.DEGRADATION_AUG_PROB", "1.0", "INPUT.DEGRADATION_AUG_KINDS",
                   "('stripe', 'fog')", "MODEL.SARTM.CONSISTENCY.LOSS_WEIGHT", "1.0", "INPUT.COLOR_AUG",
                   "False", "INPUT.RANDOM_FLIP", "none")
    mapper = RGBTDatasetMapper(cfg, is_train=True)
    record = DatasetCatalog.get("synthetic_rgbt_train")[0]
    clean = RGBTDatasetMapper(tiny_cfg(CONFIG, "INPUT.COLOR_AUG", "False", "INPUT.RANDOM_FLIP", "none"),
                              is_train=True)(record)
    assert "clean_image" not in clean  # no consistency loss: no copy
    for seed in range(12):
        np.random.seed(seed)
        d = mapper(record)
        assert torch.equal(d["clean_image"], clean["image"]) and not torch.equal(d["image"], clean["image"])
    assert set(drawn) == {"stripe", "fog"}
    with pytest.raises(ValueError, match=r"INPUT.DEGRADATION_AUG_KINDS.*\['smoke'\]"):
        RGBTDatasetMapper(tiny_cfg(CONFIG, "INPUT.DEGRADATION_AUG_KINDS", "('smoke',)"), is_train=True)


def test_dead_frame_sends_the_dropped_camera_flat_with_both_streams_and_a_clean_copy(synthetic):
    """INPUT.MODALITY_DROPOUT.DEAD_FRAME: a dropped camera is sometimes a flat frame (a dead sensor) that
    the model computes, with the clean copy kept as the consistency and trust teacher."""
    opts = ["INPUT.MODALITY_DROPOUT.BOTH", "0.0", "INPUT.MODALITY_DROPOUT.RGB_ONLY", "0.5",
            "INPUT.MODALITY_DROPOUT.THERMAL_ONLY", "0.5", "MODEL.SARTM.CONSISTENCY.LOSS_WEIGHT", "1.0",
            "INPUT.COLOR_AUG", "False", "INPUT.RANDOM_FLIP", "none"]
    record = DatasetCatalog.get("synthetic_rgbt_train")[0]
    seen = {"dead rgb": 0, "dead thermal": 0, "dropped": 0}
    dead_opts = [*opts, "INPUT.MODALITY_DROPOUT.DEAD_FRAME", "0.5"]
    mapper = RGBTDatasetMapper(tiny_cfg(CONFIG, *dead_opts), is_train=True)
    for seed in range(40):
        np.random.seed(seed)
        d = mapper(record)
        image, clean = d["image"], d["clean_image"]
        if d["modalities"] != "rgbt":
            seen["dropped"] += 1
            continue
        flat = [bool((image[c] == image[c, 0, 0]).all()) for c in (0, 3)]
        assert flat in ([True, False], [False, True])  # exactly one camera is flat
        dead, alive = (slice(0, 3), slice(3, 4)) if flat[0] else (slice(3, 4), slice(0, 3))
        seen["dead rgb" if flat[0] else "dead thermal"] += 1
        assert torch.equal(image[alive], clean[alive]) and not torch.equal(image[dead], clean[dead])
    assert min(seen.values()) >= 5, seen
    never = RGBTDatasetMapper(tiny_cfg(CONFIG, *opts), is_train=True)
    np.random.seed(0)
    assert all(never(record)["modalities"] != "rgbt" for _ in range(10))
    with pytest.raises(ValueError, match="DEAD_FRAME must be in"):
        RGBTDatasetMapper(tiny_cfg(CONFIG, "INPUT.MODALITY_DROPOUT.DEAD_FRAME", "1.5"), is_train=True)


def test_thermal_photometric_augmentation_changes_thermal_only(synthetic):
    base = ["INPUT.COLOR_AUG", "False", "INPUT.RANDOM_FLIP", "none"]
    record = DatasetCatalog.get("synthetic_rgbt_train")[0]
    clean = RGBTDatasetMapper(tiny_cfg(CONFIG, *base), is_train=True)(record)["image"]
    mapper = RGBTDatasetMapper(tiny_cfg(CONFIG, *base, "INPUT.THERMAL_PHOTOMETRIC.PROB", "1.0",
                                        "INPUT.THERMAL_PHOTOMETRIC.GAIN", "(2.0, 2.0)",
                                        "INPUT.THERMAL_PHOTOMETRIC.OFFSET", "(0.0, 0.0)",
                                        "INPUT.THERMAL_PHOTOMETRIC.GAMMA", "(1.0, 1.0)"), is_train=True)
    out = mapper(record)["image"]
    assert torch.equal(out[:3], clean[:3])
    torch.testing.assert_close(out[3], (clean[3] * 2.0).clamp(max=255.0))
    with pytest.raises(ValueError, match="INPUT.THERMAL_PHOTOMETRIC"):
        RGBTDatasetMapper(tiny_cfg(CONFIG, "INPUT.THERMAL_PHOTOMETRIC.PROB", "0.5",
                                   "INPUT.THERMAL_PHOTOMETRIC.GAMMA", "(1.5, 0.5)"), is_train=True)


# ------------------------------------------------------------------ fusion, trust and losses


def _pyramid(b, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = {"sfm": (32, 4, 6), "ifp": (8, 8, 12), "ffp": (4, 16, 24)}
    spec = {k: ShapeSpec(channels=c, stride=s) for (k, (c, _, _)), s in zip(shapes.items(), (16, 8, 4))}
    feats = {k: torch.randn(2 * b, c, h, w, generator=g) for k, (c, h, w) in shapes.items()}
    return spec, feats


def test_reliability_fusion_reports_trust_and_zero_trust_is_a_missing_camera():
    assert FUSION_REGISTRY.get("ReliabilityFusion") is ReliabilityFusion
    torch.manual_seed(0)
    spec, feats = _pyramid(b=2)
    fusion = ReliabilityFusion(input_shape=spec, text_dim=None, cmx_num_heads=2).eval()
    for gate in fusion.gates.values():
        torch.nn.init.normal_(gate.out.weight, std=0.5)
    with torch.no_grad():
        out = fusion(feats)
        assert out["trust"].shape == (2, 2) and ((out["trust"] > 0) & (out["trust"] < 1)).all()
        assert all(out[k].shape == (2, *feats[k].shape[1:]) for k in ("sfm", "ifp", "ffp"))
        # Without RGB for sample 0 its RGB trust is 0, and a gate closed on RGB everywhere (bias -> -inf)
        # gives exactly the fused output of a missing RGB camera (thermal fully trusted in both).
        present = torch.tensor([[False, True], [True, True]])
        rows = {k: torch.cat([v[1:2], v[2:]]) for k, v in feats.items()}  # RGB of sample 1, both thermals
        trust = fusion(rows, present=present)["trust"][0]
        assert trust[0] == 0.0 and 0.0 < trust[1] < 1.0
        for gate in fusion.gates.values():
            gate.out.bias[1] = 1e4
        missing = fusion(rows, present=present)
        assert missing["trust"][0].tolist() == [0.0, 1.0]
        for gate in fusion.gates.values():
            gate.out.bias[0] = -1e4
        closed = fusion(feats)
        for k in ("sfm", "ifp", "ffp"):
            torch.testing.assert_close(closed[k][0], missing[k][0], atol=1e-5, rtol=1e-5)


def test_consistency_loss_is_the_kl_to_the_clean_prediction():
    torch.manual_seed(0)
    student = torch.randn(2, 5, 4, 6, requires_grad=True)
    teacher = torch.randn(2, 5, 4, 6)
    for t in (1.0, 2.0):
        ref = F.kl_div(F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1), log_target=True,
                       reduction="none").sum(1).mean() * t * t
        torch.testing.assert_close(consistency_loss(student, teacher, temperature=t), ref)
    assert consistency_loss(teacher, teacher).abs() < 1e-6


def test_trust_target_is_the_feature_similarity_to_the_clean_copy():
    torch.manual_seed(0)
    f = torch.randn(4, 6, 3, 5)
    rgb = torch.cat([f[:2], f[:2]])  # rows 0-1 "degraded" RGB identical to their clean copies (rows 2-3)
    thermal = torch.cat([-f[2:], f[2:]])  # degraded thermal: the opposite of the clean features
    logits = torch.randn(4, 2, 3, 5)
    rows, copies = torch.tensor([0, 1]), torch.tensor([2, 3])
    bce = F.binary_cross_entropy_with_logits
    # targets: RGB 1 (cos 1), thermal 0 (cos -1 clipped), clean copies 1; one mean over 8 (row, stream) maps
    expected = (bce(logits[:2, 0], torch.ones(2, 3, 5)) + bce(logits[:2, 1], torch.zeros(2, 3, 5))
                + 2 * bce(logits[2:], torch.ones(2, 2, 3, 5))) / 4
    levels = {"sfm": (logits, rgb, thermal)}
    torch.testing.assert_close(trust_fidelity_loss(levels, rows, copies, None), expected)
    # Centred: a flat (dead) stream's features, constant per channel, have target 0 (uncentred, their
    # cosine with the clean features would be that of the channel means).
    flat = torch.cat([torch.arange(6.0).view(1, 6, 1, 1).expand(2, -1, 3, 5), f[2:]])
    expected_flat = (bce(logits[:2, 0], torch.zeros(2, 3, 5)) + bce(logits[:2, 1], torch.zeros(2, 3, 5))
                     + 2 * bce(logits[2:], torch.ones(2, 2, 3, 5))) / 4
    torch.testing.assert_close(trust_fidelity_loss({"sfm": (logits, flat, thermal)}, rows, copies, None),
                               expected_flat)
    present = torch.tensor([[True, False], [True, False], [True, True], [True, True]])  # no thermal in 0, 1
    expected = (2 * bce(logits[:2, 0], torch.ones(2, 3, 5)) + 4 * bce(logits[2:], torch.ones(2, 2, 3, 5))) / 6
    torch.testing.assert_close(trust_fidelity_loss(levels, rows, copies, present), expected)


def test_corruption_ramp_starts_clean_and_reaches_the_set_probabilities(synthetic):
    cfg = tiny_cfg(CONFIG, "INPUT.MODALITY_DROPOUT.BOTH", "0.5", "INPUT.MODALITY_DROPOUT.RGB_ONLY", "0.5",
                   "INPUT.MODALITY_DROPOUT.THERMAL_ONLY", "0.0", "INPUT.CORRUPTION_RAMP", "(10, 19)")
    mapper = RGBTDatasetMapper(cfg, is_train=True)
    assert mapper.uses_iteration
    assert [mapper._ramp(i) for i in (0, 9, 10, 14, 19, 50)] == [0, 0, 0.1, 0.5, 1, 1]
    record = DatasetCatalog.get("synthetic_rgbt_train")[0]

    def dropped(iteration):
        np.random.seed(0)
        return sum(mapper(record, iteration=iteration)["modalities"] != "rgbt" for _ in range(200))

    assert dropped(5) == 0 and 20 < dropped(14) < 80 and 70 < dropped(30) < 130  # 0%, 25%, 50% of 200
    assert not RGBTDatasetMapper(tiny_cfg(CONFIG), is_train=True).uses_iteration


def test_training_step_distils_the_clean_copy_and_inference_returns_trust(synthetic):
    cfg = tiny_cfg(CONFIG, *NO_TEXT, *ROBUST, "MODEL.SARTM.CONSISTENCY.LOSS_WEIGHT", "0.5",
                   "MODEL.SARTM.CONSISTENCY.TRUST_WEIGHT", "0.5", "INPUT.DEGRADATION_AUG_PROB", "1.0")
    torch.manual_seed(0)
    model = build_model(cfg)
    mapper = RGBTDatasetMapper(cfg, is_train=True)
    records = DatasetCatalog.get("synthetic_rgbt_train")
    np.random.seed(0)
    batch = [mapper(r) for r in records[:3]]
    assert all("clean_image" in d for d in batch)
    rows = []
    model.backbone.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
    model.train()
    with EventStorage():
        losses = model(batch)
    assert rows == [2 * 6]  # 3 degraded + 3 clean copies, both streams, one backbone pass
    assert set(losses) == {"loss_sem_seg", "loss_aux", "loss_sem_seg_corrupted", "loss_aux_corrupted",
                           "loss_consistency", "loss_trust"}
    # The clean batch's losses are exactly those of the same samples fed clean alone (no dilution).
    with EventStorage():
        alone = model([{"image": d["clean_image"], "sem_seg": d["sem_seg"]} for d in batch])
    for key in ("loss_sem_seg", "loss_aux"):
        torch.testing.assert_close(losses[key], alone[key], atol=1e-4, rtol=1e-4)
    losses["loss_trust"].backward()
    assert model.fusion.gates["sfm"].out.weight.grad.abs().sum() > 0  # the gate learns from the first step
    assert all(p.grad is None for p in model.backbone.parameters())  # gates see the streams detached
    model.eval()
    with torch.no_grad():
        out = model([RGBTDatasetMapper(cfg, is_train=False)(DatasetCatalog.get("synthetic_rgbt_test")[0])])
    assert out[0]["sem_seg"].shape == (5, H, W) and out[0]["trust"].shape == (2,)
    paper = build_model(tiny_cfg(CONFIG, *NO_TEXT)).eval()
    with torch.no_grad():
        assert "trust" not in paper([{"image": batch[0]["image"]}])[0]


def test_exported_graph_carries_the_thermal_stretch_and_the_trust(synthetic, tmp_path):
    pytest.importorskip("onnxruntime")
    from sartm_d2 import get_sartm_cfg
    from sartm_d2.export import OnnxSegmenter, check_parity, export_onnx, load_parity_samples

    opts = [*NO_TEXT, *ROBUST, "OUTPUT_DIR", str(tmp_path)]
    cfg = get_sartm_cfg(CONFIG, opts)
    torch.manual_seed(0)
    model = build_model(cfg)
    for gate in model.fusion.gates.values():  # a gate that depends on its input (it starts constant)
        torch.nn.init.normal_(gate.out.weight, std=0.5)
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model_final")
    cfg = get_sartm_cfg(CONFIG, [*opts, "MODEL.WEIGHTS", str(tmp_path / "model_final.pth")])
    result = export_onnx(cfg, str(tmp_path / "onnx"), H, W)
    segmenter = OnnxSegmenter(result.onnx_path)
    assert segmenter.output_names == ["logits", "labels", "trust"]
    meta = json.loads(open(result.sidecar_path).read())
    assert meta["thermal_norm"] == "stretch" and meta["outputs"]["trust"]["shape"] == [1, 2]
    samples = load_parity_samples(DatasetCatalog.get("synthetic_rgbt_test"), "percentile", limit=4)
    report = check_parity(cfg, result.model, segmenter, samples)
    assert report.passed and report.max_abs_trust_diff < 1e-4, report.failures
    # The stretch is in the graph: a thermal gain leaves the ONNX prediction unchanged too.
    image = samples[0].image.copy()
    halved = image.copy()
    halved[3] *= 0.5
    ref, trust = segmenter.run(image[:3].transpose(1, 2, 0).astype(np.uint8), image[3])
    out, trust_halved = segmenter.run(image[:3].transpose(1, 2, 0).astype(np.uint8), halved[3])
    assert (ref.argmax(0) == out.argmax(0)).mean() >= 0.999 and np.abs(trust - trust_halved).max() < 1e-3


def test_partial_view_marks_thermal_pixels_without_data_and_the_model_treats_them_as_missing(synthetic):
    """INPUT.MODALITY_DROPOUT.PARTIAL_VIEW: NaN outside a random view, a clean copy kept; a model given
    NaN there predicts as if those pixels' thermal stream were its absent embedding."""
    np.random.seed(3)
    opts = ["INPUT.MODALITY_DROPOUT.PARTIAL_VIEW", "1.0", "MODEL.SARTM.CONSISTENCY.LOSS_WEIGHT", "1.0",
            "INPUT.COLOR_AUG", "False", "INPUT.RANDOM_FLIP", "none"]
    cfg = tiny_cfg(CONFIG, *NO_TEXT, *opts)
    mapper = RGBTDatasetMapper(cfg, is_train=True)
    record = DatasetCatalog.get("synthetic_rgbt_train")[0]
    d = mapper(record)
    invalid = torch.isnan(d["image"][3])
    assert 0.05 < float(invalid.float().mean()) < 0.8 and not torch.isnan(d["image"][:3]).any()
    torch.testing.assert_close(d["clean_image"][3][~invalid], d["image"][3][~invalid])
    assert not torch.isnan(d["clean_image"]).any()
    # The model: NaN pixels are filled and the fusion told; the output stays finite.
    torch.manual_seed(0)
    model = build_model(tiny_cfg(CONFIG, *NO_TEXT)).eval()
    with torch.no_grad():
        for p in model.fusion.absent.values():
            p.normal_()  # a learned absent embedding: the filled pixels then differ from a cold image
        out = model([{"image": d["image"]}])[0]["sem_seg"]
        cold = d["image"].clone()
        cold[3][invalid] = 0.0
        constant = model([{"image": cold}])[0]["sem_seg"]
    assert torch.isfinite(out).all()
    assert not torch.allclose(out, constant)  # NaN is "no data", not a cold scene


# ------------------------------------------------------------------ the second-stage recipe's parts


def test_gain_correction_is_the_identity_in_its_dead_zone_and_undoes_a_predicted_step():
    from sartm_d2.modeling.preprocessing import ThermalGainCorrection

    torch.manual_seed(0)
    correction = ThermalGainCorrection()
    _, thermal, _ = _scene(day=False)
    t = torch.from_numpy(thermal)[None, None]
    out, params = correction(t)  # the last layer starts at zero: a zero prediction
    assert torch.equal(out, t) and torch.equal(params, torch.zeros(1, 2))
    with torch.no_grad():  # a prediction of gain x2, offset +3: outside the dead zone
        correction.mlp[-1].bias.copy_(torch.tensor([np.log(2.0), 3.0 / 64.0]))
    half = t * 0.5
    half[..., :4, :4] = 255.0  # saturated pixels stay saturated
    out, params = correction(half)
    expected = (half * 2.0 + 3.0).clamp(0, 255)
    expected[..., :4, :4] = 255.0
    torch.testing.assert_close(out, expected)
    with torch.no_grad():  # a small prediction (gain 1.2, offset 5): inside the zone, exactly the identity
        correction.mlp[-1].bias.copy_(torch.tensor([np.log(1.2), 5.0 / 64.0]))
    assert torch.equal(correction(t)[0], t)


def test_gain_correction_loss_against_a_hand_computation():
    from sartm_d2.modeling.losses import gain_correction_loss
    from sartm_d2.modeling.preprocessing import ThermalGainCorrection

    g = torch.Generator().manual_seed(0)
    clean = torch.rand(2, 1, 8, 8, generator=g) * 200
    thermal = torch.cat([clean[:1], clean[:1] * 0.5])  # row 1: row 0 at half gain, its target row 0
    params = torch.tensor([[0.0, 0.0], [np.log(2.0), 0.0]])
    target_rows = torch.tensor([0, 0])
    loss = gain_correction_loss(ThermalGainCorrection(), params, thermal, target_rows, None, synthetic=0)
    err = [((thermal[0] - clean[0]) ** 2).mean(), ((thermal[1] * 2.0 - clean[0]) ** 2).mean()]
    torch.testing.assert_close(loss, torch.stack(err).mean() / 255.0**2)


def test_standin_loss_against_a_hand_computation():
    from sartm_d2.modeling.losses import standin_loss

    g = torch.Generator().manual_seed(1)
    maps = [torch.randn(3, 4, 2, 2, generator=g) for _ in range(4)]
    levels = {"sfm": (None, *maps)}
    rows = torch.tensor([0, 2])
    rgb, thermal, s_rgb, s_thermal = (m[rows] for m in maps)
    expected = 0.5 * (((s_rgb - rgb) ** 2).mean() / (rgb**2).mean()
                      + ((s_thermal - thermal) ** 2).mean() / (thermal**2).mean())
    torch.testing.assert_close(standin_loss(levels, rows), expected)


def test_open_trust_lets_a_confident_stream_through_exactly():
    from sartm_d2.modeling.fusion import open_trust

    trust = torch.tensor([0.95, 0.9, 0.45, 0.0])
    torch.testing.assert_close(open_trust(trust, 0.9), torch.tensor([1.0, 1.0, 0.5, 0.0]))
    assert torch.equal(open_trust(trust, 1.0), trust)


def test_robust_stage_loads_a_plain_checkpoint_and_trains_only_its_parts(synthetic, tmp_path):
    """MODEL.SARTM.ROBUST.TRAIN_ONLY_ROBUST_PARTS: a plain model's checkpoint lacks the gates, stand-ins and
    gain correction; training from it starts them fresh and freezes everything else."""
    from sartm_d2.engine import RGBTCheckpointer

    torch.manual_seed(0)
    plain = build_model(tiny_cfg(CONFIG, *NO_TEXT))
    DetectionCheckpointer(plain, save_dir=str(tmp_path)).save("plain")
    robust_opts = [*NO_TEXT, "MODEL.SARTM.FUSION", "reliability", "MODEL.SARTM.ROBUST.STANDIN", "hallucinate",
                   "MODEL.SARTM.ROBUST.THERMAL_GAIN_CORRECTION", "True",
                   "MODEL.SARTM.ROBUST.TRAIN_ONLY_ROBUST_PARTS", "True"]
    robust = build_model(tiny_cfg(CONFIG, *robust_opts))
    prefixes = robust.robust_part_prefixes()
    assert set(prefixes) == {"fusion.gates.", "fusion.standins.", "fusion.absent.",
                             "input_norm.gain_correction."}
    trainable = {n for n, p in robust.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(prefixes) for n in trainable)
    assert any(n.startswith("fusion.standins.") for n in trainable)
    checkpointer = RGBTCheckpointer(robust)
    with pytest.raises(ValueError, match="missing from the checkpoint"):
        checkpointer.load(str(tmp_path / "plain.pth"), checkpointables=[])  # strict without new_parts
    checkpointer.load(str(tmp_path / "plain.pth"), checkpointables=[], fresh=(), new_parts=prefixes)
    state = plain.state_dict()
    for name, value in robust.state_dict().items():
        if not name.startswith(prefixes):
            assert torch.equal(value, state[name]), name
    with pytest.raises(ValueError, match="TRAIN_ONLY_ROBUST_PARTS is True, but MODEL.SARTM.FUSION"):
        build_model(tiny_cfg(CONFIG, *NO_TEXT, "MODEL.SARTM.ROBUST.TRAIN_ONLY_ROBUST_PARTS", "True"))


def test_gain_correction_term_targets_each_corrupted_row_at_its_clean_copy(monkeypatch):
    """In a training step the gain correction learns from every row: a corrupted row's target is its
    clean copy's thermal image, any other row's its own."""
    from sartm_d2.modeling import criterion as criterion_module

    torch.manual_seed(0)
    opts = [*NO_TEXT, "MODEL.SARTM.ROBUST.THERMAL_GAIN_CORRECTION", "True",
            "MODEL.SARTM.CONSISTENCY.LOSS_WEIGHT", "1.0"]
    model = build_model(tiny_cfg(CONFIG, *opts)).train()
    seen = {}
    real = criterion_module.gain_correction_loss

    def recording(correction, params, thermal, target_rows, present, **kwargs):
        seen.update(params=params, thermal=thermal, target_rows=target_rows)
        return real(correction, params, thermal, target_rows, present, **kwargs)

    monkeypatch.setattr(criterion_module, "gain_correction_loss", recording)
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(4, 64, 96, generator=g) * 200
    corrupted = clean.clone()
    corrupted[3] *= 0.5
    label = torch.zeros(64, 96, dtype=torch.long)
    batch = [{"image": corrupted, "clean_image": clean, "sem_seg": label},
             {"image": torch.rand(4, 64, 96, generator=g) * 200, "sem_seg": label}]
    with EventStorage():
        losses = model(batch)
    assert "loss_gain" in losses and torch.isfinite(losses["loss_gain"])
    assert seen["target_rows"].tolist() == [2, 1, 2]  # rows: the corrupted sample, the other, the copy
    torch.testing.assert_close(seen["thermal"][0], corrupted[3:4])
    torch.testing.assert_close(seen["thermal"][2], clean[3:4])
    sum(losses.values()).backward()
    assert model.input_norm.gain_correction.mlp[-1].weight.grad.abs().sum() > 0
