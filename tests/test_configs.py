"""Every YAML under configs/ parses and builds its model; every key SARTM adds is read by code."""

import glob
import os
import re

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from sartm_d2 import add_sartm_config, get_sartm_cfg
from sartm_d2.data import get_classes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))
TINY = [
    "MODEL.DEVICE", "cpu", "MODEL.SAM2.SIZE", "custom", "MODEL.SAM2.CHECKPOINT", "",
    "MODEL.SAM2.D_MODEL", "32", "MODEL.SAM2.CUSTOM.EMBED_DIM", "8", "MODEL.SARTM.CMX_NUM_HEADS", "2",
    "MODEL.SARTM.AUX_HEAD.CONVS_DIM", "16",
]


def _load(path):
    return get_sartm_cfg(path)


def test_there_are_dataset_configs_and_variants():
    names = {os.path.basename(p) for p in CONFIGS}
    assert {"Base-SARTM.yaml", "mfnet.yaml", "pst900.yaml", "fmb.yaml", "synthetic.yaml"} <= names
    assert len(names) >= 9


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_builds_and_predicts(path, tmp_path):
    cfg = _load(path)
    if not cfg.DATASETS.TRAIN:
        pytest.skip("base config: no dataset")
    names, _ = get_classes(cfg.DATASETS.TRAIN[0], cfg.DATASETS.BACKGROUND_AS_IGNORE)
    assert len(names) == cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    assert not [n for n in cfg.DATASETS.VAL if "test" in n]
    emb = tmp_path / "emb.pt"
    torch.save({"embeddings": torch.randn(len(names), 8), "class_names": names}, emb)
    cfg.merge_from_list(TINY + ["MODEL.SARTM.DISTILL.TEACHER", "file", "MODEL.SARTM.DISTILL.EMBEDDINGS_FILE",
                                str(emb)])
    model = build_model(cfg).eval()
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


@pytest.mark.skipif(torch.cuda.is_available(), reason="the fallback applies only without CUDA")
def test_cuda_device_falls_back_to_cpu_without_cuda(caplog):
    cfg = get_sartm_cfg(os.path.join(ROOT, "configs", "mfnet.yaml"), ["MODEL.DEVICE", "cuda:0"])
    assert cfg.MODEL.DEVICE == "cpu"
    assert "CUDA is not available" in caplog.text
    assert get_sartm_cfg("", ["SOLVER.MAX_ITER", "7"]).SOLVER.MAX_ITER == 7
