"""Shared test helpers. Every test module may import detectron2 first: sartm_d2's compatibility
fixes are applied here, before any test module is imported."""

import os

import cv2
import pytest

import sartm_d2  # noqa: F401
from sartm_d2.data import register_all_rgbt

# The smallest Hiera that has all four stages (the global block avoids a stage transition).
TINY_HIERA = {
    "embed_dim": 8,
    "num_heads": 1,
    "stages": [1, 2, 1, 1],
    "global_att_blocks": [2],
    "window_spec": [8, 4, 14, 7],
    "window_pos_embed_bkg_spatial_size": [7, 7],
}


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
