"""A user's own fusion, text teacher and auxiliary head: one class each, registered outside the package,
chosen by one config value each, trained through the normal entry point."""

from __future__ import annotations

import hashlib

import pytest
import torch
from detectron2.engine import default_argument_parser
from detectron2.utils.env import seed_all_rng
from torch import nn

from sartm_d2 import get_sartm_cfg
from sartm_d2.engine import Trainer, main
from sartm_d2.modeling import (
    AUX_HEAD_REGISTRY,
    TEXT_TEACHER_REGISTRY,
    AuxHead,
    TextTeacher,
    build_text_teacher,
    load_pretrained,
)
from sartm_d2.modeling.fusion import FUSION_REGISTRY, RGBTFusion

CONFIG = "configs/quick_schedules/synthetic_instant_test.yaml"


class _GatedSum(nn.Module):
    """Per-pixel gate from the two streams and the best text affinity (uses the embeddings)."""

    def __init__(self, channels: int, text_dim: int):
        super().__init__()
        self.gate = nn.Conv2d(2 * channels, 1, 1)
        self.text = nn.Linear(text_dim, channels)

    def forward(self, rgb, thermal, text):
        prompts = nn.functional.normalize(self.text(text), dim=-1)
        affinity = torch.einsum("bchw,kc->bkhw", nn.functional.normalize(rgb, dim=1), prompts).amax(1, True)
        g = torch.sigmoid(self.gate(torch.cat([rgb, thermal], 1)) + affinity)
        return g * rgb + (1 - g) * thermal


@FUSION_REGISTRY.register()
class GatedSumFusionForTest(RGBTFusion):
    name = "gated_sum_for_test"

    @classmethod
    def uses_text(cls, cfg):
        return True

    def __init__(self, cfg, input_shape, text_dim=None):
        super().__init__(input_shape=input_shape, text_dim=text_dim)
        self.levels = nn.ModuleDict({n: _GatedSum(s.channels, text_dim) for n, s in input_shape.items()})


@TEXT_TEACHER_REGISTRY.register()
class HashTeacherForTest(TextTeacher):
    """A 16-d 'encoder' that hashes prompts: deterministic, offline, cacheable."""

    name = "hash_for_test"
    calls: list[list[str]] = []

    def __init__(self, cfg):
        self.template = cfg.MODEL.SARTM.DISTILL.TEMPLATE

    @property
    def embedding_dim(self):
        return 16

    def fingerprint(self):
        return {"hash": "sha256-16"}

    def encode(self, prompts):
        HashTeacherForTest.calls.append(list(prompts))
        rows = [list(hashlib.sha256(p.encode()).digest()[:16]) for p in prompts]
        return torch.tensor(rows, dtype=torch.float32) - 127.5


@AUX_HEAD_REGISTRY.register()
class LinearAuxHeadForTest(AuxHead):
    """A 1x1 classifier on the stride-4 level."""

    def __init__(self, cfg, input_shape):
        super().__init__()
        self.classifier = nn.Conv2d(input_shape["ffp"].channels, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, 1)

    def forward(self, features):
        return self.classifier(features["ffp"])


def test_own_fusion_teacher_and_aux_head_train_through_the_config(synthetic, tmp_path):
    opts = ["MODEL.SARTM.FUSION", "gated_sum_for_test", "MODEL.SARTM.DISTILL.TEACHER", "hash_for_test",
            "MODEL.SARTM.AUX_HEAD.NAME", "LinearAuxHeadForTest", "MODEL.SARTM.DISTILL.CACHE_DIR",
            str(tmp_path / "cache"), "SOLVER.MAX_ITER", "20", "SEED", "0"]
    HashTeacherForTest.calls.clear()
    args = ["--config-file", CONFIG, *opts, "OUTPUT_DIR", str(tmp_path / "out")]
    trained = main(default_argument_parser().parse_args(args))["sem_seg"]["mIoU_all"]
    names = ("background", "person", "car", "traffic sign", "road marking")
    state = torch.load(tmp_path / "out" / "model_final.pth", weights_only=True)["model"]
    assert state["text_embeddings"].shape == (5, 16)

    # The model training started from: the same build with the same seed (setup seeds with SEED, then
    # the trainer builds the model first), evaluated on the same test images.
    cfg = get_sartm_cfg(CONFIG, [*opts, "OUTPUT_DIR", str(tmp_path / "init")])
    seed_all_rng(cfg.SEED)
    initial = Trainer.build_model(cfg)
    load_pretrained(initial, cfg)
    untrained = Trainer.test(cfg, initial)["sem_seg"]["mIoU_all"]
    assert HashTeacherForTest.calls == [[f"a photo of a {n}." for n in names]]  # once: then the cache
    assert len(list((tmp_path / "cache").glob("text_hash_for_test_*.pt"))) == 1

    init = initial.state_dict()
    assert set(state) == set(init)
    frozen = [k for k in init if k.startswith("backbone.trunk.") and "lora_" not in k]
    assert frozen and all(torch.equal(state[k], init[k]) for k in frozen)  # it is training's start
    # The user's fusion and aux head, and LoRA, were trained (LoRA's B starts at zero).
    for key in ("fusion.levels.sfm.gate.weight", "fusion.levels.sfm.text.weight",
                "aux_head.classifier.weight", "backbone.trunk.blocks.0.attn.qkv.lora_B"):
        assert not torch.allclose(state[key], init[key]), key
    # A clear gain, not a near tie (the margin over several seeds: benchmarks/RESULTS.md).
    assert trained > untrained + 10, (trained, untrained)


def test_unknown_names_list_the_registered_ones(synthetic, tmp_path):
    cfg = get_sartm_cfg(CONFIG, ["MODEL.SARTM.DISTILL.TEACHER", "bert"])
    with pytest.raises(ValueError, match=r"TEACHER 'bert' is not registered.*'hash_for_test'.*'minilm'"):
        build_text_teacher(cfg)
    weights = tmp_path / "model_final.pth"  # present, so that the model's build is what fails
    weights.write_bytes(b"")
    for key, value, listed in (("MODEL.SARTM.FUSION", "concat", "'gated_sum_for_test'"),
                               ("MODEL.SARTM.AUX_HEAD.NAME", "UNetHead", "'LinearAuxHeadForTest'")):
        args = default_argument_parser().parse_args(["--eval-only", "--config-file", CONFIG, key, value,
                                                     "OUTPUT_DIR", str(tmp_path),
                                                     "MODEL.WEIGHTS", str(weights)])
        with pytest.raises(ValueError, match=rf"{key} '{value}' is not registered.*{listed}"):
            main(args)
