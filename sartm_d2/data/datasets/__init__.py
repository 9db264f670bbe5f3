"""RGB-T datasets, laid out like detectron2's ``data/datasets``.

- ``rgbt_sem_seg``: the one loader of aligned RGB / thermal / label folders
  (:func:`load_rgbt_sem_seg`) and :func:`register_rgbt_sem_seg` for your own sets;
- ``builtin_meta``: class names, palettes and layouts of MFNet, PST900, FMB and the synthetic sets;
- ``builtin``: their registration under ``$DETECTRON2_DATASETS`` (run when this package is imported);
- ``catalog``: any registered RGB-T set by name (:func:`scan_split`, :func:`load_rgbt_split`,
  :func:`get_classes`).

Every name of the former single module ``sartm_d2.data.datasets`` is still importable from here.
"""

from ...utils.env import import_user_module  # moved to sartm_d2.utils.env; kept importable here
from . import (
    builtin,  # noqa: F401  (registers the built-in RGB-T datasets)
    builtin_meta,
)
from .builtin import register_all_rgbt
from .builtin_meta import *  # noqa: F403  (the class names, palettes and PST900 split constants)
from .catalog import get_classes, load_rgbt_split, scan_split
from .rgbt_sem_seg import default_palette, load_rgbt_sem_seg, register_rgbt_sem_seg, scan_rgbt_sem_seg

__all__ = [
    *builtin_meta.__all__,
    "default_palette",
    "get_classes",
    "import_user_module",
    "load_rgbt_sem_seg",
    "load_rgbt_split",
    "register_all_rgbt",
    "register_rgbt_sem_seg",
    "scan_rgbt_sem_seg",
    "scan_split",
]
