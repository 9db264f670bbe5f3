"""Any-modality SARTM: a missing stream is not computed, is replaced by a learned embedding, gets no
gradient; modality dropout is reproducible and resumes exactly; --eval-only evaluates input settings."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
import torch
from conftest import TINY_HIERA, tiny_cfg
from detectron2.data import MetadataCatalog
from detectron2.engine import default_argument_parser
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sartm_d2.data import RGBTDatasetMapper
from sartm_d2.data.degradations import degrade, expand_settings, parse_setting, setting_names
from sartm_d2.engine import build_resumable_train_loader, main
from sartm_d2.modeling.backbone import SAM2HieraLoRABackbone
from sartm_d2.modeling.lora import LoRAQKVLinear, ModalityLayout

K = 3


def _random_lora(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, LoRAQKVLinear):
                layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g))


@pytest.mark.parametrize("merged", [False, True])
def test_lora_with_unequal_modality_groups_matches_the_explicit_sum(merged):
    torch.manual_seed(0)
    layout = ModalityLayout()
    layer = LoRAQKVLinear.from_linear(nn.Linear(8, 48), rank=2, alpha=4.0, num_modalities=2, layout=layout)
    _random_lora(layer)
    x = torch.randn(3 * 4, 5, 8)  # 3 images x 4 windows, image-major: 1 RGB image, then 2 thermal
    expected = torch.nn.functional.linear(x, layer.weight, layer.bias)
    for rows, m in ((slice(0, 4), 0), (slice(4, 12), 1)):
        d = layer.dim_out
        expected[rows, :, :d] += layer.scaling * x[rows] @ layer.lora_A[m, 0].T @ layer.lora_B[m, 0].T
        expected[rows, :, 2 * d:] += layer.scaling * x[rows] @ layer.lora_A[m, 1].T @ layer.lora_B[m, 1].T
    if merged:
        layer.eval().merge()
    layout.counts = (1, 2)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
        layout.counts = (0, 2)  # thermal images only: modality 1's weights
        torch.testing.assert_close(layer(x[4:]), expected[4:], rtol=1e-5, atol=1e-5)


def test_backbone_computes_only_the_present_streams():
    torch.manual_seed(0)
    backbone = SAM2HieraLoRABackbone(size="custom", d_model=32, lora_rank=2, **TINY_HIERA).eval()
    _random_lora(backbone)
    rgb, thermal = torch.randn(2, 3, 64, 96), torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        full = backbone(torch.cat([rgb, thermal]))
        thermal_only = backbone(thermal, counts=(0, 2))
        mixed = backbone(torch.cat([rgb[:1], thermal]), counts=(1, 2))
    for name, f in full.items():
        torch.testing.assert_close(thermal_only[name], f[2:], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(mixed[name], f[[0, 2, 3]], rtol=1e-4, atol=1e-4)
    # One stream costs half: the backbone's work is proportional to the images it runs.
    flops = []
    for x, counts in ((torch.cat([rgb, thermal]), None), (thermal, (0, 2))):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            backbone(x, counts=counts)
        flops.append(counter.get_total_flops())
    assert flops[1] * 2 == flops[0]
    with pytest.raises(ValueError, match="sum to the batch of 2"):
        backbone(thermal, counts=(1, 2))


@pytest.fixture
def model_and_inputs():
    name = f"anymodal_{uuid.uuid4().hex[:6]}"
    MetadataCatalog.get(name).set(stuff_classes=["a", "b", "c"], stuff_colors=[(0, 0, 0)] * K)
    cfg = tiny_cfg()
    cfg.DATASETS.TRAIN = (name,)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = K
    cfg.MODEL.SARTM.DISTILL.ENABLED = False
    cfg.MODEL.SARTM.FUSION_LANGUAGE = False
    torch.manual_seed(0)
    model = build_model(cfg)
    _random_lora(model.backbone)

    def inputs(modalities, seed=1):
        g = torch.Generator().manual_seed(seed)
        return [{"image": torch.rand(4, 64, 96, generator=g) * 255,
                 "sem_seg": torch.randint(0, K, (64, 96), generator=g), "modalities": m} for m in modalities]

    return model, inputs


def test_gradients_reach_only_the_streams_that_exist(model_and_inputs):
    model, inputs = model_and_inputs
    batch = inputs(["rgbt", "rgb", "thermal"])
    seen = []
    model.backbone.register_forward_pre_hook(lambda m, args, kwargs: seen.append((args[0], kwargs)),
                                             with_kwargs=True)
    model.train()
    with EventStorage():
        losses = model(batch)
    sum(losses.values()).backward()
    # The backbone ran RGB of samples 0 and 1, then thermal of samples 0 and 2 (replicated to 3 channels).
    stacked, kwargs = seen[0]
    mean, std = model.input_norm.pixel_mean, model.input_norm.pixel_std  # THERMAL_NORM none
    norm = [(b["image"] - mean) / std for b in batch]
    expected = torch.stack([norm[0][:3], norm[1][:3], norm[0][3:].expand(3, -1, -1),
                            norm[2][3:].expand(3, -1, -1)])
    torch.testing.assert_close(stacked[:, :, :64, :96], expected)
    assert kwargs["counts"] == (2, 2)
    for name, absent in model.fusion.absent.items():  # each absent embedding learns from its sample
        assert (absent.grad.abs().sum(dim=1) > 0).all(), name
    # Whatever the missing streams hold, the losses are the same.
    other = inputs(["rgbt", "rgb", "thermal"])
    other[1]["image"][3] = 0.0
    other[2]["image"][:3] = 255.0
    with EventStorage():
        again = model(other)
    assert all(torch.equal(losses[k], again[k]) for k in losses)

    model.zero_grad()
    with EventStorage():
        sum(model(inputs(["thermal", "thermal"])).values()).backward()
    layers = [m for m in model.backbone.modules() if isinstance(m, LoRAQKVLinear)]
    # The RGB LoRA is in the graph (DDP sees it used) but gets exactly nothing; thermal's learns.
    assert all(m.lora_B.grad[0].abs().sum() == 0 and m.lora_B.grad[1].abs().sum() > 0 for m in layers)
    assert all(a.grad[1].abs().sum() == 0 for a in model.fusion.absent.values())


def test_a_missing_stream_does_not_matter_and_the_prediction_uses_the_absent_embedding(model_and_inputs):
    model, inputs = model_and_inputs
    model.eval()
    batch = inputs(["thermal"])
    with torch.no_grad():
        out = model(batch)[0]["sem_seg"]
        batch[0]["image"] = torch.cat([torch.zeros(3, 64, 96), batch[0]["image"][3:]])  # whatever RGB holds
        assert torch.equal(model(batch)[0]["sem_seg"], out)
        model.fusion.absent["sfm"][0].add_(1.0)
        assert not torch.allclose(model(batch)[0]["sem_seg"], out)


def test_settings_names_and_degradations():
    # 3 modality sets + 8 RGB families + 10 thermal families, 3 levels each
    assert len(setting_names()) == 3 + 3 * (8 + 10) and setting_names()[:3] == ["rgbt", "rgb", "thermal"]
    assert len(setting_names(("noise", "blur", "dark", "bright"))) == 27  # the first protocol's table
    assert parse_setting("thermal-blur-3") == ("rgbt", ("thermal", "blur", 3))
    assert expand_settings(["missing", "rgb", "rgb-noise-2"]) == ["rgbt", "rgb", "thermal", "rgb-noise-2"]
    with pytest.raises(ValueError, match=r"'rgb-stripe-2'.*stripe \(thermal; levels 1/2/3\)"):
        expand_settings(["rgb-stripe-2"])  # fixed-pattern noise is a thermal camera's fault
    img = np.full((128, 160, 3), 100.0, np.float32)
    img[40:80, 50:90] = 200.0
    noisy = degrade(img, "noise", 2, seed_key="x")
    assert np.array_equal(noisy, degrade(img, "noise", 2, seed_key="x"))  # reproducible per image
    assert 20 < float((noisy - img).std()) < 30  # sigma 25, clipped at 0..255
    assert degrade(img, "dark", 3, seed_key="x").max() == pytest.approx(20.0)
    assert degrade(img, "bright", 1, seed_key="x").max() == 255.0
    blurred = degrade(img, "blur", 3, seed_key="x")
    assert blurred.mean() == pytest.approx(img.mean(), rel=1e-3) and blurred[40:80, 50:90].min() < 190


def test_modality_dropout_is_seeded_and_resumes_exactly(synthetic):
    from sartm_d2.data.datasets import load_rgbt_split

    cfg = tiny_cfg("configs/quick_schedules/synthetic_instant_test.yaml")
    cfg.INPUT.MODALITY_DROPOUT.BOTH, cfg.INPUT.MODALITY_DROPOUT.RGB_ONLY = 0.5, 0.25
    cfg.INPUT.MODALITY_DROPOUT.THERMAL_ONLY = 0.25
    records = load_rgbt_split("synthetic_rgbt_train", str(synthetic))

    def stream(start_iter, iters, seed=7):
        mapper = RGBTDatasetMapper(cfg, is_train=True)
        loader = build_resumable_train_loader(records, mapper, total_batch_size=4, seed=seed,
                                              start_iter=start_iter)
        it = iter(loader)
        return [[d["modalities"] for d in next(it)] for _ in range(iters)]

    full = stream(0, 8)
    assert full == stream(0, 8)  # the same seed draws the same modalities
    assert stream(5, 3) == full[5:]  # a run resumed at iteration 5 continues the same draws
    assert full != stream(0, 8, seed=8)
    counts = {m: sum(b.count(m) for b in full) for m in ("rgbt", "rgb", "thermal")}
    assert all(counts.values()) and counts["rgbt"] > max(counts["rgb"], counts["thermal"]) / 2
    cfg.INPUT.MODALITY_DROPOUT.BOTH = 0.9
    with pytest.raises(ValueError, match="MODALITY_DROPOUT.*summing to 1"):
        RGBTDatasetMapper(cfg, is_train=True)


def test_eval_only_writes_one_result_per_setting_and_a_table(synthetic, tmp_path):
    no_text = ["MODEL.SARTM.DISTILL.ENABLED", "False", "MODEL.SARTM.FUSION_LANGUAGE", "False"]
    model = build_model(tiny_cfg("configs/quick_schedules/synthetic_instant_test.yaml", *no_text))
    torch.save({"model": model.state_dict()}, tmp_path / "m.pth")
    argv = ["--config-file", "configs/quick_schedules/synthetic_instant_test.yaml", "--eval-only",
            *no_text, "MODEL.WEIGHTS", str(tmp_path / "m.pth"), "OUTPUT_DIR", str(tmp_path / "out"),
            "TEST.MODALITIES", "('missing', 'thermal-noise-3')"]
    results = main(default_argument_parser().parse_args(argv))
    settings = ["rgbt", "rgb", "thermal", "thermal-noise-3"]
    assert list(results) == [f"synthetic_rgbt_test/{s}" for s in settings]
    folder = tmp_path / "out" / "inference" / "synthetic_rgbt_test"
    for s in settings:
        saved = json.loads((folder / s / "sem_seg_results.json").read_text())
        assert saved["protocol"]["num_images"] == 3 and "night/mIoU_all" in saved["metrics"]
        returned = results[f"synthetic_rgbt_test/{s}"]["sem_seg"]
        assert saved["metrics"]["mIoU_all"] == pytest.approx(returned["mIoU_all"])
    table = json.loads((folder / "settings.json").read_text())
    assert list(table["settings"]) == settings


def test_anymodal_report_targets_at_their_bounds():
    import importlib.util

    spec = importlib.util.spec_from_file_location("anymodal_report", "tools/anymodal_report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)

    def metrics(all_, day=50.0, night=50.0, warm=60.0, cold=40.0):
        m = {"mIoU_all": all_, "day/mIoU_all": day, "night/mIoU_all": night}
        m.update({f"night/IoU-{c}": warm for c in report.WARM})
        m.update({f"day/IoU-{c}": cold for c in report.COLD})
        return m

    robust = {"rgbt": metrics(70.0), "rgb": metrics(50.0, cold=36.0), "thermal": metrics(55.0, warm=54.0),
              "rgb-noise-3": metrics(54.0), "thermal-shift-2": metrics(49.5), "thermal-dark-1": metrics(69.0)}
    families = {"rgbt": None, "rgb": None, "thermal": None, "rgb-noise-3": "seen",
                "thermal-shift-2": "unseen", "thermal-dark-1": "seen"}
    baseline = {"rgbt": metrics(71.0)}
    assert all(ok for _, ok, _ in report.targets(robust, baseline, families))  # every value at its bound
    robust["thermal"]["night/IoU-car"] = 53.9  # below 90% of 60
    robust["rgb-noise-3"]["mIoU_all"] = 53.9  # more than 1 point below thermal alone (55)
    robust["thermal-shift-2"]["mIoU_all"] = 49.4  # below 90% of 55
    robust["thermal-dark-1"]["mIoU_all"] = 68.9  # the gain step costs more than 1 point
    baseline["rgbt"]["mIoU_all"] = 71.1
    missed = [name for name, ok, _ in report.targets(robust, baseline, families) if not ok]
    assert missed == ["clean pairs within 1 of the plain model",
                      "seen families: none more than 1 below the better single camera",
                      "unseen families: none below 90% of the better single camera",
                      "thermal gain x0.5 within 1 of clean",
                      "thermal only, night, car >= 90% of fused"]
    # Another set's classes: the one-camera targets are theirs.
    for m in robust.values():
        m.update({"night/IoU-bike": 60.0, "day/IoU-bump": 40.0})
    robust["rgb"]["day/IoU-bump"] = 35.9  # below 90% of 40
    other = [(name, ok) for name, ok, _ in report.targets(robust, baseline, families, ("bike",), ("bump",))
             if "only" in name]
    assert other == [("thermal only, night, bike >= 90% of fused", True),
                     ("rgb only, day, bump >= 90% of fused", False)]
    runs = {"robust": robust, "plain": baseline}
    assert "| rgb-noise-3 | seen | 53.9 | 50.0 | 50.0 | - | - | - |" in report.table(runs, families)
    assert "| robust | 70.0 | 50.0 | 50.0 | -1.10 |" in report.summary(runs)


def test_degradation_augmentation_is_seeded_and_touches_one_stream(synthetic):
    from sartm_d2.data.datasets import load_rgbt_split

    config = "configs/quick_schedules/synthetic_instant_test.yaml"
    no_aug = ["INPUT.COLOR_AUG", "False", "INPUT.RANDOM_FLIP", "none"]
    record = load_rgbt_split("synthetic_rgbt_train", str(synthetic))[0]
    clean = RGBTDatasetMapper(tiny_cfg(config, *no_aug), is_train=True)(record)["image"]
    mapper = RGBTDatasetMapper(tiny_cfg(config, *no_aug, "INPUT.DEGRADATION_AUG_PROB", "1.0"), is_train=True)
    images = []
    for seed in (0, 0, 1, 2, 3, 4):
        np.random.seed(seed)
        images.append(mapper(record)["image"])
    assert torch.equal(images[0], images[1])  # the loader seeds every sample: reproducible
    changed = [((img != clean).flatten(1).any(1)[:3].any().item(), (img[3] != clean[3]).any().item())
               for img in images]
    assert all(rgb != thermal for rgb, thermal in changed)  # exactly one stream degraded
    with pytest.raises(ValueError, match="DEGRADATION_AUG_PROB"):
        RGBTDatasetMapper(tiny_cfg(config, "INPUT.DEGRADATION_AUG_PROB", "1.5"), is_train=True)
