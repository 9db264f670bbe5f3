"""Every YAML under configs/ parses and builds its model; every key SARTM adds is read by code."""

import glob
import os
import re

import pytest
import torch
from conftest import TINY_MODEL
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model

from sartm_d2 import add_sartm_config, get_sartm_cfg
from sartm_d2.data import get_classes, import_user_module

# configs/own-dataset.yaml names the sets that the example module registers.
import_user_module(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "datasets",
                                "own_dataset_example.py"))

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))
CONFIGS += sorted(glob.glob(os.path.join(ROOT, "configs", "quick_schedules", "*_instant_test.yaml")))


def _load(path):
    return get_sartm_cfg(path)


def test_there_are_dataset_configs_and_variants():
    names = {os.path.basename(p) for p in CONFIGS}
    assert {"Base-SARTM.yaml", "mfnet.yaml", "pst900.yaml", "fmb.yaml", "synthetic.yaml"} <= names
    assert len(names) >= 9


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_builds_and_predicts(path):
    cfg = _load(path)
    if not cfg.DATASETS.TRAIN:
        pytest.skip("base config: no dataset")
    names, _ = get_classes(cfg.DATASETS.TRAIN[0], cfg.DATASETS.BACKGROUND_AS_IGNORE)
    assert len(names) == cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    assert not [n for n in cfg.DATASETS.VAL if MetadataCatalog.get(n).get("test_split", False)]
    # The config's own teacher (CLIP, MiniLM) and SAM2 path: building reads neither file.
    cfg.merge_from_file(TINY_MODEL)
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg).eval()
    if model.text_embeddings is not None:
        random_text = torch.nn.functional.normalize(torch.randn_like(model.text_embeddings), dim=1)
        model.set_text_embeddings(random_text)
    with torch.no_grad():
        out = model([{"image": torch.rand(4, 40, 70) * 255, "height": 40, "width": 70}])
    assert out[0]["sem_seg"].shape == (len(names), 40, 70)


def _leaves(node, prefix=""):
    for k, v in node.items():
        if hasattr(v, "items"):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"


def test_every_added_key_is_read():
    base = set(_leaves(get_cfg()))
    cfg = get_cfg()
    add_sartm_config(cfg)
    added = sorted(set(_leaves(cfg)) - base)
    sources = []
    for pattern in ("sartm_d2/**/*.py", "train_net.py", "demo/*.py", "tools/*.py"):
        for f in glob.glob(os.path.join(ROOT, pattern), recursive=True):
            if not f.endswith("config.py"):
                sources.append(open(f).read())

    def read(key):
        # A key counts as read where one source file names both its leaf and its parent node.
        parent, leaf = key.split(".")[-2:]
        return any(re.search(rf"\b{leaf}\b", t) and re.search(rf"\b{parent}\b", t) for t in sources)

    assert len(added) > 30
    unread = [k for k in added if not read(k)]
    assert not unread, f"config keys that no code reads: {unread}"


def test_add_sartm_config_only_adds_keys():
    base, cfg = get_cfg(), get_cfg()
    add_sartm_config(cfg)

    def value(node, key):
        for part in key.split("."):
            node = node[part]
        return node

    changed = [k for k in _leaves(base) if value(base, k) != value(cfg, k)]
    assert not changed, f"add_sartm_config changed detectron2's own keys: {changed}"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the fallback applies only without CUDA")
def test_cuda_device_falls_back_to_cpu_without_cuda(caplog):
    cfg = get_sartm_cfg(os.path.join(ROOT, "configs", "mfnet.yaml"), ["MODEL.DEVICE", "cuda:0"])
    assert cfg.MODEL.DEVICE == "cpu"
    assert "CUDA is not available" in caplog.text
    assert get_sartm_cfg("", ["SOLVER.MAX_ITER", "7"]).SOLVER.MAX_ITER == 7
