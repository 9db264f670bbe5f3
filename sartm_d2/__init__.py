"""sartm-d2: SARTM (Segment Any RGB-Thermal Model) for RGB-thermal semantic segmentation in Detectron2.

Importing the package applies the detectron2 compatibility fixes (``compat``), registers the RGB-T
datasets and registers every model part (backbone, heads, meta-architecture) with Detectron2.
"""

from . import (
    compat,  # noqa: F401  (must run before any detectron2 module is imported)
    data,  # noqa: F401  (registers all RGB-T datasets)
    modeling,  # noqa: F401  (registers backbone, heads, meta-architecture)
)
from .config import add_sartm_config, get_sartm_cfg

__all__ = ["add_sartm_config", "get_sartm_cfg"]
