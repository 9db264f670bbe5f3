"""RGB-T data: file reading (``io``), dataset registration (``datasets``), the synthetic set and the mapper.

Importing this package registers every RGB-T dataset under ``$DETECTRON2_DATASETS`` (lazily).
"""

from . import datasets  # noqa: F401  (registers all RGB-T datasets)
from .dataset_mapper import RGBTDatasetMapper
from .datasets import get_classes, load_rgbt_split, register_all_rgbt, scan_split
from .io import check_label_values, read_label, read_rgbt, remap_background

__all__ = [
    "RGBTDatasetMapper",
    "check_label_values",
    "get_classes",
    "load_rgbt_split",
    "read_label",
    "read_rgbt",
    "register_all_rgbt",
    "remap_background",
    "scan_split",
]
