"""Shared test helpers. Every test module may import detectron2 first: sartm_d2's compatibility
fixes are applied here, before any test module is imported."""

import os

import cv2
import pytest

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
