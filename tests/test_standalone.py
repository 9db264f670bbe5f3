"""A trained model stands alone and loads strictly.

- The paper's configs (CLIP teacher, SAM2 checkpoint under weights/) evaluate and run the demo from
  a checkpoint copied to a folder with no weights/ and no text cache.
- A checkpoint that does not fit the model is an error naming the keys and both shapes; fine-tuning
  restarts exactly the class-count-dependent tensors.
- The detectron2 seams (data-loader reset, checkpointer URL state) work on both 0.6 and main.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re

import cv2
import numpy as np
import pytest
import torch
from conftest import demo_panel_ok
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import default_argument_parser
from detectron2.modeling import build_model
from fvcore.common.checkpoint import Checkpointer

from sartm_d2 import get_sartm_cfg
from sartm_d2.data import register_all_rgbt
from sartm_d2.data.synthetic import generate_synthetic_rgbt
from sartm_d2.engine import RGBTCheckpointer, Trainer, build_inference_model, main, replace_data_loader
from sartm_d2.engine.train_loop import MixedPrecisionTrainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The paper's configs with the tiny model (the test's time): their CLIP teacher and their SAM2 and
# CLIP paths under weights/, which do not exist here.
PAPER_PATHS = ["MODEL.SAM2.CHECKPOINT", "weights/sam2/sam2.1_hiera_base_plus.pt"]
H, W = 64, 96


def _config(name: str) -> str:
    return os.path.join(ROOT, "configs", "quick_schedules", name.replace(".yaml", "_instant_test.yaml"))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """MFNet (from the synthetic generator, MFNet layout) and a tiny PST900 test folder.

    Its own set, not conftest's session set: the paper's configs need the folders MFNet/ and PST900/."""
    root = tmp_path_factory.mktemp("standalone_data")
    generate_synthetic_rgbt(str(root), seed=2, num_train=2, num_val=2, num_test=4, height=H, width=W)
    os.rename(root / "SyntheticRGBT", root / "MFNet")
    rng = np.random.default_rng(0)
    for kind in ("rgb", "thermal", "labels"):
        os.makedirs(root / "PST900" / "test" / kind)
    test = root / "PST900" / "test"
    for i in range(3):
        cv2.imwrite(str(test / "rgb" / f"{i}.png"), rng.integers(0, 256, (H, W, 3), np.uint8))
        cv2.imwrite(str(test / "thermal" / f"{i}.png"), rng.integers(0, 256, (H, W), np.uint8))
        cv2.imwrite(str(test / "labels" / f"{i}.png"), rng.integers(0, 5, (H, W), np.uint8))
    return root


def _demo_cli():
    path = os.path.join(ROOT, "demo", "demo.py")
    spec = importlib.util.spec_from_file_location("sartm_demo_standalone", path)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    return cli


def _random_trained_model(cfg):
    """A model as training leaves it: random text embeddings in the buffer, non-zero LoRA B."""
    torch.manual_seed(0)
    model = build_model(cfg)
    model.set_text_embeddings(torch.nn.functional.normalize(torch.randn_like(model.text_embeddings), dim=1))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.normal_(0, 0.05)
    return model


@pytest.mark.parametrize("config", ["mfnet.yaml", "pst900.yaml"])
def test_a_checkpoint_is_all_that_inference_needs(config, data_root, tmp_path, monkeypatch, caplog,
                                                  restore_registration):
    register_all_rgbt(str(data_root), only=["mfnet", "pst900"])
    monkeypatch.syspath_prepend(os.path.join(ROOT, "demo"))
    # A working directory without weights/ (CLIP, SAM2) and without a text cache.
    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)
    cfg = get_sartm_cfg(_config(config), PAPER_PATHS)
    assert cfg.MODEL.SARTM.DISTILL.TEACHER == "clip" and cfg.MODEL.SAM2.CHECKPOINT.startswith("weights/")
    model = _random_trained_model(cfg)
    weights = str(work / "model_final.pth")
    torch.save({"model": model.state_dict()}, weights)

    # The same predictions as the model that was saved: weights and text embeddings come from the file.
    loaded = build_inference_model(get_sartm_cfg(_config(config), [*PAPER_PATHS, "MODEL.WEIGHTS", weights]))
    image = {"image": torch.rand(4, H, W) * 255, "height": H, "width": W}
    with torch.no_grad():
        torch.testing.assert_close(loaded([image])[0]["sem_seg"], model.eval()([image])[0]["sem_seg"],
                                   rtol=1e-4, atol=1e-4)

    argv = ["--config-file", _config(config), "--eval-only", *PAPER_PATHS, "MODEL.WEIGHTS", weights,
            "OUTPUT_DIR", str(work / "out")]
    with caplog.at_level(logging.WARNING):
        results = main(default_argument_parser().parse_args(argv))
    metrics = (results[cfg.DATASETS.TEST[0]] if len(cfg.DATASETS.TEST) > 1 else results)["sem_seg"]
    assert 0.0 <= metrics["mIoU_all"] <= 100.0 and f"IoU-{model.class_names[1]}" in metrics
    assert not any("RANDOM" in r.getMessage() for r in caplog.records)  # the model is not random

    rgbt = sorted((data_root / "MFNet" / "images").iterdir())[0]
    pst = data_root / "PST900" / "test"
    inputs = ["--input", str(rgbt)] if config == "mfnet.yaml" else ["--input", str(pst)]
    written = _demo_cli().main([
        "--config-file", _config(config), *inputs, "--output", str(work / "vis"), "--opts", *PAPER_PATHS,
        "MODEL.WEIGHTS", weights,
    ])
    assert written and all(demo_panel_ok(p, H, W) for p in written)
    # Nothing was looked up or written where the config's teacher, SAM2 and cache paths point.
    assert sorted(os.listdir(work)) == ["model_final.pth", "out", "vis"]


@pytest.fixture
def tiny_cfg(data_root, restore_registration):
    register_all_rgbt(str(data_root), only=["mfnet", "pst900"])

    def make(config="mfnet.yaml", *opts):
        return get_sartm_cfg(_config(config), [*PAPER_PATHS, *opts])

    return make


def test_a_checkpoint_that_does_not_fit_is_refused_with_keys_and_shapes(tiny_cfg, tmp_path):
    weights = str(tmp_path / "m.pth")
    state = _random_trained_model(tiny_cfg()).state_dict()
    torch.save({"model": state}, weights)
    other = tiny_cfg("mfnet.yaml", "MODEL.SAM2.D_MODEL", "64", "MODEL.WEIGHTS", weights)
    with pytest.raises(ValueError) as info:
        build_inference_model(other)
    msg = str(info.value)
    assert "m.pth" in msg and "tensor(s) of another shape" in msg
    key = "backbone.neck.convs.0.conv.weight"
    assert f"{key}: checkpoint {tuple(state[key].shape)} vs model" in msg

    for edit, words in ((lambda s: s.pop("fusion.levels.sfm.average.modality_logits"), "missing from"),
                        (lambda s: s.update(extra=torch.zeros(1)), "the model lacks: ['extra']")):
        broken = dict(state)
        edit(broken)
        torch.save({"model": broken}, weights)
        with pytest.raises(ValueError, match=re.escape(words)):
            build_inference_model(tiny_cfg("mfnet.yaml", "MODEL.WEIGHTS", weights))


def test_fine_tuning_restarts_only_the_class_dependent_tensors(tiny_cfg, tmp_path, caplog):
    mfnet = _random_trained_model(tiny_cfg())  # 9 classes
    weights = str(tmp_path / "mfnet.pth")
    torch.save({"model": mfnet.state_dict()}, weights)

    pst = build_model(tiny_cfg("pst900.yaml"))  # 5 classes
    before = {k: v.clone() for k, v in pst.state_dict().items()}
    fresh = pst.class_dependent_keys()
    assert "sem_seg_head.decoder.mask_tokens." in fresh and "aux_head.classifier." in fresh
    with caplog.at_level(logging.INFO, logger="sartm_d2.engine.checkpoint"):
        RGBTCheckpointer(pst).load(weights, checkpointables=[], fresh=fresh)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "start fresh" in logged and "sem_seg_head.decoder.mask_tokens.weight (10, 32) -> (6, 32)" in logged
    after, source = pst.state_dict(), mfnet.state_dict()
    for key, value in after.items():
        if key.startswith(fresh):  # all of them restart, also hypernetwork MLPs 0..5 that would fit
            assert torch.equal(value, before[key]), key
        else:
            assert torch.equal(value, source[key]), key

    # Any other mismatch is still an error when fine-tuning.
    wider = build_model(tiny_cfg("pst900.yaml", "MODEL.SAM2.CUSTOM.EMBED_DIM", "16"))
    with pytest.raises(ValueError, match="backbone.trunk"):
        RGBTCheckpointer(wider).load(weights, checkpointables=[], fresh=wider.class_dependent_keys())


def test_a_refused_file_leaves_the_checkpointer_usable_on_detectron2_main(tiny_cfg, tmp_path, monkeypatch):
    model = _random_trained_model(tiny_cfg())
    good = str(tmp_path / "good.pth")
    torch.save({"model": model.state_dict()}, good)
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")

    def main_style_load(self, path, *args, **kwargs):
        # detectron2 main's DetectionCheckpointer.load: asserts on entry, sets during, resets at the end.
        assert self._parsed_url_during_load is None
        self._parsed_url_during_load = path
        ret = Checkpointer.load(self, path, *args, **kwargs)
        self._parsed_url_during_load = None
        return ret

    for main_branch in (False, True):  # 0.6 (no such attribute), then main's behaviour
        if main_branch:
            monkeypatch.setattr(DetectionCheckpointer, "load", main_style_load)
        ckpt = RGBTCheckpointer(model)
        if main_branch:
            ckpt._parsed_url_during_load = None
        with pytest.raises(RuntimeError, match="bad.pth"):
            ckpt.load(str(tmp_path / "bad.pth"))
        assert getattr(ckpt, "_parsed_url_during_load", None) is None
        ckpt.load(good)  # the next load works


class _LoaderAttribute06:
    """detectron2 0.6's SimpleTrainer: the iterator is a plain attribute."""

    def __init__(self, loader):
        self.data_loader = loader
        self._data_loader_iter = iter(loader)


class _LoaderPropertyMain:
    """detectron2 main's SimpleTrainer: a read-only lazy property and reset_data_loader."""

    def __init__(self, loader):
        self.data_loader, self._iter = loader, None

    @property
    def _data_loader_iter(self):
        if self._iter is None:
            self._iter = iter(self.data_loader)
        return self._iter

    def reset_data_loader(self, builder):
        del self.data_loader
        self.data_loader, self._iter = builder(), None


@pytest.mark.parametrize("kind", [_LoaderAttribute06, _LoaderPropertyMain])
def test_replace_data_loader_on_both_detectron2_versions(kind):
    trainer = kind([1, 2])
    assert next(trainer._data_loader_iter) == 1
    replace_data_loader(trainer, [7, 8])
    assert trainer.data_loader == [7, 8] and next(trainer._data_loader_iter) == 7


def test_after_backward_hooks_run_where_detectron2_has_them(monkeypatch):
    model = torch.nn.Linear(2, 1)

    class Loss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, data):
            return {"loss": self.m(torch.ones(1, 2)).sum()}

    from detectron2.utils.events import EventStorage

    calls = []
    trainer = MixedPrecisionTrainer(Loss(), [0, 0], torch.optim.SGD(model.parameters(), lr=0.1))
    monkeypatch.setattr(trainer, "after_backward", lambda: calls.append(model.weight.grad is not None),
                        raising=False)
    with EventStorage():
        trainer.run_step()
    assert calls == [True]  # called once, after backward (gradients exist), before the step


def test_a_test_split_is_refused_for_validation_by_its_metadata(tiny_cfg, tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    DatasetCatalog.register("contest_val", list)
    MetadataCatalog.get("contest_val").set(stuff_classes=["a", "b"])
    args = default_argument_parser().parse_args([
        "--config-file", _config("mfnet.yaml"), *PAPER_PATHS, "OUTPUT_DIR", str(tmp_path), "DATASETS.VAL",
        "('contest_val',)",
    ])
    from sartm_d2.engine import setup

    assert setup(args).DATASETS.VAL == ("contest_val",)  # "test" in the name is not a test split
    args.opts[-1] = "('mfnet_test_night',)"
    with pytest.raises(ValueError, match="'mfnet_test_night', a test split"):
        setup(args)


def test_train_net_is_a_thin_main_over_the_package():
    from detectron2.engine import DefaultTrainer

    import train_net

    assert train_net.Trainer is Trainer and train_net.main is main and issubclass(Trainer, DefaultTrainer)
