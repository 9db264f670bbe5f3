"""The SARTM meta-architecture end to end through build_model(cfg) with a tiny Hiera."""

import logging
import math
import uuid

import pytest
import torch
import torch.nn.functional as F
from conftest import BASE_CONFIG, tiny_cfg
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import sartm_d2  # noqa: F401  (compat patches before detectron2)

# isort: split
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from sartm_d2.modeling import load_pretrained, load_text_embeddings, pretrained
from sartm_d2.modeling.lora import LoRAQKVLinear

CLASSES = ["background", "car", "person", "bike"]
K, DT = len(CLASSES), 12


@pytest.fixture(scope="module")
def dataset_name():
    name = f"sartm_test_{uuid.uuid4().hex[:8]}"
    MetadataCatalog.get(name).set(stuff_classes=CLASSES, stuff_colors=[(0, 0, 0)] * K, ignore_label=255)
    return name


@pytest.fixture(scope="module")
def embeddings_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "emb.pt"
    torch.manual_seed(0)
    torch.save({"embeddings": torch.randn(K, DT), "class_names": CLASSES}, path)
    return str(path)


@pytest.fixture
def make_cfg(dataset_name, embeddings_file):
    def make(**opts):
        cfg = tiny_cfg()
        cfg.DATASETS.TRAIN = (dataset_name,)
        cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = K
        cfg.MODEL.SARTM.LORA.RANK = 2
        cfg.MODEL.SARTM.DISTILL.TEACHER = "file"
        cfg.MODEL.SARTM.DISTILL.EMBEDDINGS_FILE = embeddings_file
        cfg.merge_from_list([x for kv in opts.items() for x in kv])
        torch.manual_seed(0)
        model = build_model(cfg)
        load_text_embeddings(model, cfg)  # what the trainer does at start-up
        return model

    return make


def _inputs(h=70, w=100, b=2, seed=0, out_size=None):
    g = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(b):
        label = torch.randint(0, K, (h, w), generator=g)
        label[:3] = 255
        d = {"image": torch.rand(4, h, w, generator=g) * 255, "sem_seg": label}
        d["height"], d["width"] = out_size or (h, w)
        batch.append(d)
    return batch


def _train_step(model, inputs):
    model.train()
    with EventStorage():
        losses = model(inputs)
    total = sum(losses.values())
    total.backward()
    return losses


def _randomise_lora(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def test_odd_sizes_are_padded_and_outputs_restored(make_cfg):
    model = make_cfg().eval()
    seen = {}
    model.backbone.register_forward_hook(
        lambda m, args, out: seen.update(x=args[0].shape, sfm=out["sfm"].shape)
    )
    with torch.no_grad():
        out = model(_inputs(70, 100))
    assert seen["x"] == (4, 3, 96, 128)  # 2 images x 2 modalities in ONE call, padded to /32
    assert seen["sfm"] == (4, 32, 6, 8)
    assert len(out) == 2 and out[0]["sem_seg"].shape == (K, 70, 100)
    with torch.no_grad():
        out = model(_inputs(70, 100, out_size=(140, 200)))  # "height"/"width" = original size
    assert out[1]["sem_seg"].shape == (K, 140, 200)


def test_gradients_only_in_trainable_parts_and_frozen_stay_identical(make_cfg):
    model = make_cfg()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    allowed = ("fusion.", "sem_seg_head.", "aux_head.", "backbone.conv_s0.", "backbone.conv_s1.")
    assert all("lora_" in n or n.startswith(allowed) for n in trainable)
    assert not any(n.startswith("sem_seg_head.decoder.transformer.") for n in trainable)
    assert any("backbone.trunk" in n and "qkv.weight" in n for n in frozen)
    assert any(n.startswith("backbone.neck.") for n in frozen)

    losses = _train_step(model, _inputs(64, 96))
    assert set(losses) == {"loss_sem_seg", "loss_aux", "loss_distill"}
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad <= trainable
    # LoRA B is zero at init, so A gets a zero gradient in step 1, and with both streams present the
    # absent-modality embeddings get an exact zero; every other trainable tensor a real one.
    grads = {n: p.grad for n, p in model.named_parameters()}
    no_grad = {n for n in trainable if "lora_A" not in n and (grads[n] is None or not grads[n].any())}
    assert sorted(no_grad) == [f"fusion.absent.{n}" for n in ("ffp", "ifp", "sfm")]
    assert any("lora_B" in n for n in with_grad)

    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt.step()
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if "lora_B" in n)


@pytest.mark.parametrize("fusion", ["paper", "cmx"])
def test_thermal_reaches_fused_features_and_logits(make_cfg, fusion):
    model = make_cfg(**{"MODEL.SARTM.FUSION": fusion}).eval()
    _randomise_lora(model)
    captured = {}
    model.fusion.register_forward_hook(
        lambda m, a, out: captured.update(fused={k: v.clone() for k, v in out.items()})
    )
    ffm = model.fusion.levels["sfm"].cmx.ffm
    ffm.register_forward_hook(lambda m, a, out: captured.update(ffm=out.clone()))
    inputs = _inputs(64, 96)
    with torch.no_grad():
        ref = model(inputs)
        ref_fused, ref_ffm = captured["fused"], captured["ffm"]
        no_thermal = [
            dict(d, image=torch.cat([d["image"][:3], torch.zeros_like(d["image"][3:])])) for d in inputs
        ]
        out = model(no_thermal)
    for level in ("sfm", "ifp", "ffp"):
        assert not torch.allclose(captured["fused"][level], ref_fused[level], atol=1e-4), level
    assert not torch.allclose(captured["ffm"], ref_ffm, atol=1e-4)
    assert not torch.allclose(out[0]["sem_seg"], ref[0]["sem_seg"], atol=1e-5)


def test_no_object_score_gating(make_cfg):
    """The logits are the decoder's K class masks, upsampled: no object-score gate overwrites them."""
    model = make_cfg().eval()
    _randomise_lora(model)
    head = model.sem_seg_head
    assert not head.decoder.pred_obj_scores
    seen = {}
    head.register_forward_hook(lambda m, args, out: seen.update(fused=args[0], out=out))
    with torch.no_grad():
        logits = model(_inputs(64, 96))[0]["sem_seg"]
        fused = seen["fused"]
        h, w = fused["sfm"].shape[-2:]
        dense = head.no_mask_embed.weight.view(1, -1, 1, 1).expand(fused["sfm"].shape[0], -1, h, w)
        masks, *_ = head.decoder.predict_masks(
            image_embeddings=fused["sfm"], image_pe=head.pe_layer((h, w))[None],
            sparse_prompt_embeddings=fused["sfm"].new_zeros(fused["sfm"].shape[0], 0, fused["sfm"].shape[1]),
            dense_prompt_embeddings=dense, repeat_image=False, high_res_features=[fused["ffp"], fused["ifp"]],
        )
    torch.testing.assert_close(seen["out"], masks[:, 1:])  # tokens 1..K, untouched
    expected = F.interpolate(masks[:, 1:].float(), size=(64, 96), mode="bilinear", align_corners=False)
    torch.testing.assert_close(logits, expected[0])
    assert logits.std() > 0


def _ohem_reference(logits, target, thresh=0.7, min_kept_fraction=1 / 16):
    """OHEM written plainly: the pixels whose loss exceeds -log(thresh), or the n hardest if fewer."""
    loss = F.cross_entropy(logits, target, ignore_index=255, reduction="none").flatten()
    valid = loss[target.flatten() != 255]
    n_min = max(1, int(valid.numel() * min_kept_fraction))
    hard = valid[valid > -math.log(thresh)]
    return hard.mean() if hard.numel() >= n_min else valid.sort(descending=True).values[:n_min].mean()


# (config switch, the loss terms it gives, what it must have built)
ABLATIONS = [
    ({"MODEL.SARTM.FUSION": "paper"}, {"loss_sem_seg", "loss_aux", "loss_distill"},
     lambda m: type(m.fusion).__name__ == "PaperFusion" and m.fusion.requires_text),
    ({"MODEL.SARTM.FUSION": "average"}, {"loss_sem_seg", "loss_aux", "loss_distill"},
     lambda m: m.fusion.levels["sfm"].cmx is None and m.fusion.levels["sfm"].average is not None),
    ({"MODEL.SARTM.FUSION": "cmx"}, {"loss_sem_seg", "loss_aux", "loss_distill"},
     lambda m: m.fusion.levels["sfm"].average is None and m.fusion.levels["sfm"].cmx is not None),
    ({"MODEL.SARTM.FUSION": "language"}, {"loss_sem_seg", "loss_aux", "loss_distill"},
     lambda m: m.fusion.levels["sfm"].cmx is None and m.fusion.requires_text),
    ({"MODEL.SARTM.DISTILL.ENABLED": False, "MODEL.SARTM.FUSION_LANGUAGE": False},  # without language
     {"loss_sem_seg", "loss_aux"}, lambda m: m.text_embeddings is None and not m.fusion.requires_text),
    ({"MODEL.SARTM.DISTILL.ENABLED": False}, {"loss_sem_seg", "loss_aux"},  # language fusion kept
     lambda m: m.fusion.requires_text and not m.criterion.distill_enabled),
    ({"MODEL.SARTM.DISTILL.ENABLED": False, "MODEL.SARTM.FUSION": "language"}, {"loss_sem_seg", "loss_aux"},
     lambda m: type(m.fusion).__name__ == "LanguageFusion" and not m.criterion.distill_enabled),
    ({"MODEL.SARTM.AUX_HEAD.NAME": ""}, {"loss_sem_seg", "loss_distill"},  # without aux head
     lambda m: m.aux_head is None),
    ({"MODEL.SARTM.LORA.RANK": 4}, {"loss_sem_seg", "loss_aux", "loss_distill"},
     lambda m: {p.shape[2] for n, p in m.named_parameters() if n.endswith("lora_A")} == {4}),
    ({"MODEL.SARTM.AUX_HEAD.NAME": "DeepLabAuxHead"}, {"loss_sem_seg", "loss_aux", "loss_distill"},
     lambda m: type(m.aux_head).__name__ == "DeepLabAuxHead"),
    ({"MODEL.SARTM.AUX_HEAD.NAME": "SegFormerAuxHead"}, {"loss_sem_seg", "loss_aux", "loss_distill"},
     lambda m: type(m.aux_head).__name__ == "SegFormerAuxHead"),
    ({"MODEL.SEM_SEG_HEAD.LOSS_TYPE": "cross_entropy"}, {"loss_sem_seg", "loss_aux", "loss_distill"},
     lambda m: m.criterion.loss_type == "cross_entropy"),
    ({"MODEL.SARTM.AUX_HEAD.AVERAGE_AT_INFERENCE": True}, {"loss_sem_seg", "loss_aux", "loss_distill"},
     lambda m: m.aux_average_at_inference),
]


@pytest.mark.parametrize("opts,expected,built", ABLATIONS,
                         ids=lambda x: str(x) if isinstance(x, dict) else "")
def test_train_step_and_inference_for_each_switch(make_cfg, opts, expected, built):
    """Each switch builds its part, and the main and aux losses are the configured loss of the heads'
    own logits (recomputed here), at the configured weights."""
    model = make_cfg(**opts)
    assert built(model), opts
    logits = {}
    model.sem_seg_head.register_forward_hook(lambda m, a, out: logits.update(main=out))
    if model.aux_head is not None:
        model.aux_head.register_forward_hook(lambda m, a, out: logits.update(aux=out))
    inputs = _inputs(64, 96)
    losses = _train_step(model, inputs)
    assert set(losses) == expected
    target = torch.stack([b["sem_seg"] for b in inputs])
    reference = _ohem_reference if model.criterion.loss_type == "ohem" else (
        lambda x, t: F.cross_entropy(x, t, ignore_index=255))
    for name, key, weight in (("main", "loss_sem_seg", 1.0), ("aux", "loss_aux", 0.4)):
        if name in logits:
            up = F.interpolate(logits[name].detach().float(), size=(64, 96), mode="bilinear",
                               align_corners=False)
            torch.testing.assert_close(losses[key].detach(), weight * reference(up, target),
                                       rtol=1e-5, atol=1e-6)
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    trainable = [n for n, p in model.named_parameters() if p.requires_grad and "absent" not in n]
    assert all(model.get_parameter(n).grad is not None for n in trainable)
    model.eval()
    with torch.no_grad():
        out = model(_inputs(64, 96, b=1))
    assert out[0]["sem_seg"].shape == (K, 64, 96) and torch.isfinite(out[0]["sem_seg"]).all()


def test_ablation_switches_reach_the_parts(make_cfg):
    # "paper" without language: its own key; switching the distillation off keeps the architecture.
    model = make_cfg(**{"MODEL.SARTM.DISTILL.ENABLED": False})
    assert model.fusion.requires_text and model.fusion.levels["ifp"].average.text_dim == DT
    model = make_cfg(**{"MODEL.SARTM.DISTILL.ENABLED": False, "MODEL.SARTM.FUSION_LANGUAGE": False})
    assert not model.fusion.requires_text and model.text_embeddings is None
    assert model.fusion.levels["ifp"].cmx is not None
    model = make_cfg(**{"MODEL.SARTM.DISTILL.ENABLED": False, "MODEL.SARTM.FUSION": "language"})
    assert model.fusion.requires_text and model.text_embeddings.shape == (K, DT)
    model = make_cfg(**{"MODEL.SARTM.AUX_HEAD.NAME": ""})
    assert model.aux_head is None
    model = make_cfg(**{"MODEL.SARTM.LORA.RANK": 4})
    assert {p.shape[2] for n, p in model.named_parameters() if n.endswith("lora_A")} == {4}


def test_average_at_inference_is_log_mean_softmax(make_cfg):
    model = make_cfg(**{"MODEL.SARTM.AUX_HEAD.AVERAGE_AT_INFERENCE": True}).eval()
    _randomise_lora(model)
    heads = {}
    model.sem_seg_head.register_forward_hook(lambda m, a, out: heads.update(main=out))
    model.aux_head.register_forward_hook(lambda m, a, out: heads.update(aux=out))
    with torch.no_grad():
        got = model(_inputs(64, 96, b=1))[0]["sem_seg"]
    prob = 0.5 * (heads["main"].softmax(1) + heads["aux"].softmax(1))
    expected = torch.nn.functional.interpolate(
        prob.log(), size=(64, 96), mode="bilinear", align_corners=False
    )[0]
    torch.testing.assert_close(got, expected)


def test_bf16_autocast_train_and_inference(make_cfg):
    model = make_cfg()
    seen = []
    model.backbone.register_forward_hook(lambda m, a, out: seen.append(out["sfm"].dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = _train_step(model, _inputs(64, 96))
        model.eval()
        with torch.no_grad():
            out = model(_inputs(64, 96, b=1))
    # The caller's autocast reaches the backbone in training and in inference.
    assert seen == [torch.bfloat16, torch.bfloat16]
    assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in losses.values())
    assert out[0]["sem_seg"].shape == (K, 64, 96) and torch.isfinite(out[0]["sem_seg"]).all()


def test_merged_and_unmerged_inference_agree(make_cfg):
    model = make_cfg().eval()
    _randomise_lora(model)
    inputs = _inputs(64, 96, b=1)
    with torch.no_grad():
        ref = model(inputs)[0]["sem_seg"]
        assert model.merge_lora() > 0
        merged = model(inputs)[0]["sem_seg"]
        model.unmerge_lora()
        again = model(inputs)[0]["sem_seg"]
    torch.testing.assert_close(merged, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(again, ref, rtol=1e-5, atol=1e-5)


def test_text_embeddings_travel_in_the_state_dict(make_cfg, embeddings_file):
    model = make_cfg()
    state = model.state_dict()
    expected = torch.nn.functional.normalize(
        torch.load(embeddings_file, weights_only=True)["embeddings"], dim=1
    )
    torch.testing.assert_close(state["text_embeddings"], expected)
    assert "pixel_mean" not in state


def test_config_errors(make_cfg, tmp_path):
    with pytest.raises(
        ValueError, match=r"MODEL\.SEM_SEG_HEAD\.NUM_CLASSES = 3.*DATASETS\.BACKGROUND_AS_IGNORE"
    ):
        make_cfg(**{"MODEL.SEM_SEG_HEAD.NUM_CLASSES": 3})
    # background as ignore drops class 0: 3 classes, and the embeddings file no longer matches
    with pytest.raises(ValueError, match="EMBEDDINGS_FILE"):
        make_cfg(**{"MODEL.SEM_SEG_HEAD.NUM_CLASSES": 3, "DATASETS.BACKGROUND_AS_IGNORE": True})
    with pytest.raises(ValueError, match=r"AVERAGE_AT_INFERENCE.*MODEL\.SARTM\.AUX_HEAD\.NAME"):
        make_cfg(**{"MODEL.SARTM.AUX_HEAD.AVERAGE_AT_INFERENCE": True, "MODEL.SARTM.AUX_HEAD.NAME": ""})
    missing = str(tmp_path / "ViT-B-32.pt")
    clip_opts = {"MODEL.SARTM.DISTILL.TEACHER": "clip", "MODEL.SARTM.DISTILL.CLIP_WEIGHTS": missing}
    with pytest.raises(FileNotFoundError, match="MODEL.SARTM.DISTILL.CLIP_WEIGHTS"):
        make_cfg(**clip_opts)
    # the teacher is not needed when distillation is off and the fusion does not use text
    no_language = {"MODEL.SARTM.DISTILL.ENABLED": False, "MODEL.SARTM.FUSION_LANGUAGE": False}
    model = make_cfg(**clip_opts, **no_language)
    assert model.text_embeddings is None


def test_building_reads_no_file_and_random_weights_warning(dataset_name, monkeypatch, caplog, tmp_path):
    # Construction reads neither the SAM2 checkpoint nor the text teacher: both files are absent.
    cfg = tiny_cfg(BASE_CONFIG, "DATASETS.TRAIN", f"('{dataset_name}',)",
                   "MODEL.SEM_SEG_HEAD.NUM_CLASSES", str(K),
                   "MODEL.SAM2.CHECKPOINT", str(tmp_path / "sam2.1_hiera_tiny.pt"),
                   "MODEL.SARTM.DISTILL.CLIP_WEIGHTS", str(tmp_path / "ViT-B-32.pt"))
    model = build_model(cfg)
    assert model.text_embeddings.shape == (K, 512)  # CLIP ViT-B/32's width, known without the file
    with pytest.raises(RuntimeError, match="text-embedding buffer is empty"):
        model.eval()(_inputs(64, 96, b=1))

    # Training start-up: the SAM2 checkpoint when one is named, a RANDOM warning only when none is.
    calls = []
    monkeypatch.setattr(pretrained, "load_sam2_checkpoint", lambda m, path: calls.append((m, path)))
    monkeypatch.setattr(pretrained, "load_text_embeddings", lambda m, c: calls.append("text"))
    with caplog.at_level(logging.WARNING, logger="sartm_d2.modeling.pretrained"):
        load_pretrained(model, cfg)
    assert calls == [(model, cfg.MODEL.SAM2.CHECKPOINT), "text"]
    assert not any("RANDOM" in r.getMessage() for r in caplog.records)
    cfg.MODEL.SAM2.CHECKPOINT = ""
    with caplog.at_level(logging.WARNING, logger="sartm_d2.modeling.pretrained"):
        load_pretrained(model, cfg)
    assert sum("RANDOM" in r.getMessage() for r in caplog.records) == 1


def test_aux_head_runs_at_inference_only_when_averaged(make_cfg):
    model = make_cfg().eval()
    calls = []
    model.aux_head.register_forward_hook(lambda m, a, out: calls.append(1))
    with torch.no_grad():
        model(_inputs(64, 96, b=1))
    assert calls == []
    _train_step(model, _inputs(64, 96))
    assert calls == [1]


def test_inference_dtype(make_cfg):
    ref_model = make_cfg().eval()
    _randomise_lora(ref_model)
    model = make_cfg(**{"MODEL.SARTM.INFERENCE_DTYPE": "bfloat16"}).eval()
    model.load_state_dict(ref_model.state_dict())
    seen = []
    model.backbone.register_forward_hook(lambda m, a, out: seen.append(out["sfm"].dtype))
    inputs = _inputs(64, 96, b=1)
    with torch.no_grad():
        ref = ref_model(inputs)[0]["sem_seg"]
        got = model(inputs)[0]["sem_seg"]
    assert seen == [torch.bfloat16] and got.dtype == torch.float32
    # bf16 keeps ~3 significant digits: the prediction is nearly the same.
    assert (got.argmax(0) == ref.argmax(0)).float().mean() > 0.95
    assert (got - ref).abs().max() < 0.1 * ref.abs().max()
    # Training ignores it (the trainer's SOLVER.AMP decides).
    losses = _train_step(model, _inputs(64, 96))
    assert all(v.dtype == torch.float32 for v in losses.values())
    with pytest.raises(ValueError, match="INFERENCE_DTYPE"):
        make_cfg(**{"MODEL.SARTM.INFERENCE_DTYPE": "int8"})


class _CastRecorder(TorchDispatchMode):
    """Records the dtype casts (aten._to_copy) applied to the given tensors (by identity of storage)."""

    def __init__(self, tensors):
        super().__init__()
        self.ptrs = {t.data_ptr() for t in tensors}
        self.casts = 0
        self.param_casts = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket is torch.ops.aten._to_copy:
            self.casts += 1
            self.param_casts += int(args[0].data_ptr() in self.ptrs)
        return func(*args, **(kwargs or {}))


_LAYERS = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)


def _layer_tensors(model):
    """Weights and biases of the linear/conv layers, and the merged per-modality qkv weights."""
    return [t for m in model.modules() if isinstance(m, _LAYERS)
            for t in (m.weight, m.bias, getattr(m, "merged_weight", None)) if t is not None]


@pytest.mark.parametrize("fusion", ["paper", "cmx"])
def test_prepare_for_inference_is_bit_identical_without_weight_casts(make_cfg, fusion):
    opts = {"MODEL.SARTM.INFERENCE_DTYPE": "bfloat16", "MODEL.SARTM.FUSION": fusion,
            "MODEL.SARTM.AUX_HEAD.AVERAGE_AT_INFERENCE": True}  # the aux head's convolutions run too
    ref_model = make_cfg(**opts).eval()
    _randomise_lora(ref_model)
    model = make_cfg(**opts)
    model.load_state_dict(ref_model.state_dict())
    inputs = _inputs(64, 96, b=2)
    ref_model.merge_lora()  # the autocast-only path: every linear/conv weight cast on each call
    with torch.no_grad(), _CastRecorder(_layer_tensors(ref_model)) as ref_casts:
        ref = [o["sem_seg"] for o in ref_model(inputs)]
    assert model.prepare_for_inference() is model and model.inference_only and not model.training
    layers = [m for m in model.modules() if isinstance(m, _LAYERS)]
    assert layers and all(m.weight.dtype == torch.bfloat16 for m in layers)
    qkv = [m for m in model.modules() if isinstance(m, LoRAQKVLinear)]
    assert qkv and all(m.merged and m.merged_weight.dtype == torch.bfloat16 for m in qkv)
    assert all(m.weight.dtype == torch.float32 for m in model.modules() if isinstance(m, nn.LayerNorm))
    assert all(m.lora_A.dtype == m.lora_B.dtype == torch.float32 for m in qkv)  # LoRA stays exact
    with torch.no_grad(), _CastRecorder(_layer_tensors(model)) as casts:
        got = [o["sem_seg"] for o in model(inputs)]
    for g, r in zip(got, ref):
        assert g.dtype == torch.float32 and torch.equal(g, r)
    # Autocast cast every layer's weight on each call before; now none (a few other casts remain:
    # the text embeddings, the random positional-encoding matrix).
    assert ref_casts.param_casts >= len(layers) and casts.param_casts == 0
    assert casts.casts <= ref_casts.casts - len(layers)


def test_prepare_for_inference_fp32_merges_only_and_is_final(make_cfg):
    ref_model = make_cfg().eval()
    _randomise_lora(ref_model)
    model = make_cfg()
    model.load_state_dict(ref_model.state_dict())
    inputs = _inputs(64, 96, b=1)
    with torch.no_grad():
        ref = ref_model(inputs)[0]["sem_seg"]
        model.prepare_for_inference()
        got = model(inputs)[0]["sem_seg"]
    assert all(t.dtype == torch.float32 for t in model.parameters())
    assert all(m.merged for m in model.modules() if isinstance(m, LoRAQKVLinear))
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    with pytest.raises(RuntimeError, match="prepared for inference.*build a new model"):
        _train_step(model, _inputs(64, 96))
    with pytest.raises(RuntimeError, match="prepare_for_inference"):
        model.unmerge_lora()
