"""Shared test helpers. Every test module may import detectron2 first: sartm_d2's compatibility
fixes are applied here, before any test module is imported."""

# ruff: noqa: E402  (the thread settings below come before numpy and torch are imported)
import os

# One intra-op thread (OpenMP, BLAS) for the tests and the commands they start, unless the caller sets
# OMP_NUM_THREADS: the tests' models are tiny, so a second thread gains nothing, and where another job
# holds a core every parallel region waits for the descheduled thread (the suite then runs many times
# slower). Set before numpy and torch load their thread pools. Modules marked ``all_cores`` (trainings at
# the demo's size, which a second thread does speed up) get every CPU back: ``all_cores_for_marked``.
CALLER_THREADS = os.environ.get("OMP_NUM_THREADS")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import importlib.util
import sys

import cv2
import numpy as np
import pytest
import torch

import sartm_d2  # noqa: F401
from sartm_d2 import get_sartm_cfg
from sartm_d2.data import register_all_rgbt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE_CONFIG = os.path.join(ROOT, "configs", "Base-SARTM.yaml")
# The one tiny model of the tests (and of the benchmark's "custom" size).
TINY_MODEL = os.path.join(ROOT, "configs", "quick_schedules", "tiny-model.yaml")


def tiny_cfg(config_file: str = BASE_CONFIG, *opts):
    """``config_file``, then the tiny model, then ``opts``, on the CPU (unfrozen)."""
    cfg = get_sartm_cfg(config_file)
    cfg.merge_from_file(TINY_MODEL)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *opts])
    return cfg


# The tiny model's Hiera as keyword arguments of SAM2HieraLoRABackbone.
TINY_HIERA = {key.lower(): value for key, value in tiny_cfg().MODEL.SAM2.CUSTOM.items()}


@pytest.fixture(scope="module", autouse=True)
def all_cores_for_marked(request):
    """Every CPU for torch and the commands started while a module marked ``all_cores`` runs (its module
    fixtures included), one thread again after it; nothing changes where the caller set OMP_NUM_THREADS."""
    if CALLER_THREADS is not None or request.node.get_closest_marker("all_cores") is None:
        yield
        return
    from sartm_d2.export.runtime import cpu_threads

    threads = cpu_threads()
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        yield
    finally:
        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture
def restore_registration():
    """Re-point every dataset at $DETECTRON2_DATASETS after a test registered fixture trees."""
    yield
    register_all_rgbt(os.getenv("DETECTRON2_DATASETS", "datasets"))


def write_png(path, array):
    """Write ``array`` as a PNG (creating folders) and return the path."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return str(path)


def folder_bytes(folder) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, with its bytes (to compare two generated sets)."""
    out = {}
    for dirpath, _, names in os.walk(folder):
        for n in names:
            p = os.path.join(dirpath, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, folder)] = f.read()
    return out


def local_contrast(values, label, cls, background: int = 0, ring: int = 9):
    """How far the mean of ``values`` (H x W, or H x W x C: Euclidean over channels) inside class
    ``cls`` lies from its mean on the background pixels of a ``ring``-wide band around it; None when
    either has fewer than 10 pixels."""
    inside = label == cls
    band = cv2.dilate(inside.astype(np.uint8), np.ones((ring, ring), np.uint8)).astype(bool)
    band &= label == background
    if inside.sum() < 10 or band.sum() < 10:
        return None
    diff = np.asarray(values[inside].mean(axis=0), np.float64) - values[band].mean(axis=0)
    return float(np.linalg.norm(np.atleast_1d(diff)))


def load_script(path: str, name: str):
    """Import a script of the repository (``tools/export_model.py``) as the module ``name`` (registered in
    ``sys.modules``, as an import would: a dataclass of the script resolves its annotations there)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def demo_cli(monkeypatch):
    """demo/demo.py as ``python demo/demo.py`` sees it (demo/ first on the import path)."""
    monkeypatch.syspath_prepend(os.path.join(ROOT, "demo"))
    return load_script("demo/demo.py", "sartm_demo_cli")


# The suite's synthetic set (the embedded generator, small): the data of every module that asks for the
# ``synthetic`` fixture. A module that needs other sizes, counts or folders generates its own and says why.
SYNTHETIC_SET = {"seed": 3, "num_train": 4, "num_val": 1, "num_test": 3, "height": 64, "width": 96}


@pytest.fixture(scope="session")
def synthetic_set(tmp_path_factory):
    """The dataset root holding SyntheticRGBT/ (``SYNTHETIC_SET``), generated once per session."""
    from sartm_d2.data.synthetic import generate_synthetic_rgbt

    root = tmp_path_factory.mktemp("synthetic_set")
    generate_synthetic_rgbt(str(root), **SYNTHETIC_SET)
    return root


@pytest.fixture(scope="module")
def synthetic(synthetic_set):
    """The "synthetic" family registered at the session's set for one module, re-pointed at
    $DETECTRON2_DATASETS after it. Per module, not once per session: a module that registers its own
    trees (``restore_registration``, test_demo_quality.py) re-points the family when it ends."""
    register_all_rgbt(str(synthetic_set), only=["synthetic"])
    yield synthetic_set
    register_all_rgbt(os.getenv("DETECTRON2_DATASETS", "datasets"), only=["synthetic"])


@pytest.fixture(scope="session")
def tiny_checkpoint(synthetic_set, tmp_path_factory):
    """``tiny_checkpoint(config, *opts)``: a tiny random model of ``config`` with ``opts`` and file text
    embeddings, saved as model_final.pth once per session for each (config, opts) and shared by the
    modules that ask for the same; returns ``{"root", "work", "opts"}``, ``opts`` the config options that
    point at the files (a fresh list per call). The data is the session's set: ask for ``synthetic`` too,
    which registers it."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from sartm_d2.data.datasets import SYNTHETIC_CLASSES
    from sartm_d2.modeling import load_text_embeddings

    saved = {}

    def make(config: str, *opts):
        key = (os.path.abspath(config), *opts)
        if key not in saved:
            work = tmp_path_factory.mktemp("checkpoint")
            emb = str(work / "text.pt")
            # Seeded: the same files whichever module asks first.
            g = torch.Generator().manual_seed(0)
            torch.save({"embeddings": torch.randn(len(SYNTHETIC_CLASSES), 16, generator=g),
                        "class_names": SYNTHETIC_CLASSES}, emb)
            all_opts = ["MODEL.SARTM.DISTILL.TEACHER", "file", "MODEL.SARTM.DISTILL.EMBEDDINGS_FILE", emb,
                        "OUTPUT_DIR", str(work / "out"), *opts]
            cfg = get_sartm_cfg(config, all_opts)
            torch.manual_seed(0)
            model = build_model(cfg)
            load_text_embeddings(model, cfg)
            DetectionCheckpointer(model, save_dir=str(work)).save("model_final")
            saved[key] = (work, [*all_opts, "MODEL.WEIGHTS", str(work / "model_final.pth")])
        work, all_opts = saved[key]
        return {"root": synthetic_set, "work": work, "opts": list(all_opts)}

    return make


def demo_panel_ok(path, height: int, width: int) -> bool:
    """Whether ``path`` is a demo panel of a ``height`` x ``width`` input: three images side by side at
    the demo's drawing size (small inputs are upscaled), plus caption and legend rows."""
    h, w = load_script("demo/drawing.py", "sartm_demo_drawing").drawing_size(height, width)
    shape = cv2.imread(str(path)).shape
    return shape[1] == 3 * w and shape[0] > h and shape[2] == 3


def capture_eval_logits(monkeypatch) -> dict:
    """A dict that fills with ``{image_id: sem_seg logits}`` of every image the evaluator is given
    (``--eval-only``, ``tools/eval_onnx.py``): the model's outputs on what the test loader fed it."""
    from sartm_d2.evaluation import RGBTSemSegEvaluator

    seen = {}
    process = RGBTSemSegEvaluator.process

    def recording(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            seen[inp["image_id"]] = out["sem_seg"].detach().clone()
        return process(self, inputs, outputs)

    monkeypatch.setattr(RGBTSemSegEvaluator, "process", recording)
    return seen


@pytest.fixture
def own():
    """register_rgbt_sem_seg that removes what it registered after the test."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from sartm_d2.data import register_rgbt_sem_seg

    names = []

    def register(name, *args, **kwargs):
        names.append(name)
        register_rgbt_sem_seg(name, *args, **kwargs)

    yield register
    for n in names:
        if n in DatasetCatalog:
            DatasetCatalog.remove(n)
        if n in MetadataCatalog.list():
            MetadataCatalog.remove(n)
