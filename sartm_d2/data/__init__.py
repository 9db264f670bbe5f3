"""RGB-T data: file reading (``io``), datasets (``datasets``: the folder loader, the built-in sets'
metadata and registration), rigs of cameras that are not pixel-aligned (``rig``, ``rig_calibration``),
the two synthetic families (``synthetic``, ``synthetic_mfnet``) and the mapper.

Importing this package registers every built-in RGB-T dataset under ``$DETECTRON2_DATASETS``
(lazily); ``register_rgbt_sem_seg`` registers your own. ``import_user_module`` lives in
``sartm_d2.utils.env`` and stays importable from here.
"""

from ..utils.env import import_user_module
from . import datasets  # noqa: F401  (registers all RGB-T datasets)
from .dataset_mapper import RGBTDatasetMapper
from .datasets import (
    default_palette,
    get_classes,
    load_rgbt_sem_seg,
    load_rgbt_split,
    register_all_rgbt,
    register_rgbt_sem_seg,
    scan_rgbt_sem_seg,
    scan_split,
)
from .io import check_label_values, read_label, read_rgbt, remap_background
from .rig import Rig, load_rig, save_rig, warp_thermal

__all__ = [
    "RGBTDatasetMapper",
    "Rig",
    "check_label_values",
    "default_palette",
    "get_classes",
    "import_user_module",
    "load_rgbt_sem_seg",
    "load_rgbt_split",
    "load_rig",
    "read_label",
    "read_rgbt",
    "register_all_rgbt",
    "register_rgbt_sem_seg",
    "remap_background",
    "save_rig",
    "scan_rgbt_sem_seg",
    "scan_split",
    "warp_thermal",
]
