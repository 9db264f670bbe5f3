"""Every YAML under configs/ parses and builds its model; every key SARTM adds is read by code."""

import ast
import glob
import os

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


def _own_nodes(scope):
    """The nodes of one function (or module) scope; nested functions are yielded, not entered."""
    todo = list(ast.iter_child_nodes(scope))
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))


def _config_reads(tree, top_nodes) -> set[str]:
    """The config paths that a module reads (loads, not assigns): ``<...>.MODEL.SARTM.LORA.RANK``,
    ``lora.RANK`` after ``lora = <...>.MODEL.SARTM.LORA`` (or ``lora, x = <...>.LORA, ...``) in the same
    or an enclosing function, and ``getattr(<node>, "RANK")``. Strings and comments are not code, so
    they read nothing."""
    reads = set()

    def path(node, aliases):
        names = []
        while isinstance(node, ast.Attribute):
            names.append(node.attr)
            node = node.value
        names.reverse()
        start = next((i for i, n in enumerate(names) if n in top_nodes), None)
        if start is not None:
            return ".".join(names[start:])
        if isinstance(node, ast.Name) and node.id in aliases and names:
            return ".".join([aliases[node.id], *names])
        return aliases.get(node.id) if isinstance(node, ast.Name) and not names else None

    def visit(scope, aliases):
        nodes = list(_own_nodes(scope))
        aliases = dict(aliases)
        for node in nodes:
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
                pairs = [(target, value)]
                if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):  # a, b = x.A, x.B
                    pairs = list(zip(target.elts, value.elts))
                for name, attribute in pairs:
                    if isinstance(name, ast.Name) and isinstance(attribute, ast.Attribute):
                        if resolved := path(attribute, aliases):
                            aliases[name.id] = resolved
        inner = {id(n.value) for n in nodes if isinstance(n, ast.Attribute)}
        for node in nodes:
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load) and id(node) not in inner:
                reads.add(path(node, aliases))
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                  and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)):
                base = path(node.args[0], aliases)
                if base:
                    reads.add(f"{base}.{node.args[1].value}")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(node, aliases)

    visit(tree, {})
    return reads - {None}


def test_every_added_key_is_read():
    base = get_cfg()
    cfg = get_cfg()
    add_sartm_config(cfg)
    added = sorted(set(_leaves(cfg)) - set(_leaves(base)))
    assert len(added) > 30
    reads = set()
    for pattern in ("sartm_d2/**/*.py", "train_net.py", "demo/*.py", "tools/*.py", "datasets/*.py"):
        for f in glob.glob(os.path.join(ROOT, pattern), recursive=True):
            if os.path.relpath(f, ROOT) != os.path.join("sartm_d2", "config.py"):  # it only assigns
                with open(f) as fh:
                    reads |= _config_reads(ast.parse(fh.read(), f), set(cfg))

    def read(key):
        return any(r == key or r.startswith(key + ".") for r in reads)

    unread = [k for k in added if not read(k)]
    assert not unread, f"config keys that no code reads: {unread}"


def test_the_key_reader_counts_code_only():
    source = """
def f(cfg):
    lora, test = cfg.MODEL.SARTM.LORA, cfg.TEST
    cfg.MODEL.SARTM.FUSION = "cmx"  # assigning is no read; nor is this comment: cfg.MODEL.SARTM.COMPILE
    def g():
        return lora.RANK + getattr(cfg.MODEL.SARTM.LORA, "ALPHA")
    raise ValueError("MODEL.SARTM.LORA.DROPOUT must be >= 0", test.MODALITIES[0])
def h(lora):
    return lora.DROPOUT  # not known to be a config node
"""
    reads = _config_reads(ast.parse(source), {"MODEL", "TEST"})
    nodes = {"MODEL.SARTM.LORA", "TEST"}  # the aliased nodes themselves
    assert reads == nodes | {"MODEL.SARTM.LORA.RANK", "MODEL.SARTM.LORA.ALPHA", "TEST.MODALITIES"}


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
