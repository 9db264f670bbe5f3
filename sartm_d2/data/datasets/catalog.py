"""Registered RGB-T sets by name, built-in or yours: their records, their problems, their classes."""

from __future__ import annotations

import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from .builtin import _load_builtin, _scan_builtin
from .builtin_meta import _NAME_TO_FAMILY
from .rgbt_sem_seg import _REGISTERED, _Registered

__all__ = ["get_classes", "load_rgbt_split", "scan_split"]


def _registered(name: str) -> _Registered:
    entry = _REGISTERED.get(name)
    if entry is None or name not in DatasetCatalog or DatasetCatalog[name] is not entry.loader:
        where = "is registered in DatasetCatalog, but not" if name in DatasetCatalog else "is not registered"
        raise KeyError(
            f"{name!r} {where} by sartm_d2 (register_all_rgbt / register_rgbt_sem_seg); its RGB-T names: "
            f"{sorted(n for n in _REGISTERED if n in DatasetCatalog)}."
        )
    return entry


def scan_split(name: str, root: str | os.PathLike | None = None) -> tuple[list[dict], list[str]]:
    """The records of a registered RGB-T set and every problem, without raising on problems.

    Used by ``datasets/check.py``. Absent folders or list files still raise FileNotFoundError; a name
    not registered by sartm_d2 raises KeyError.

    Args:
        name: a built-in split or a set registered with :func:`register_rgbt_sem_seg`.
        root: another dataset root for a built-in split (default: the one it was registered with).
    """
    if root is not None:
        if name not in _NAME_TO_FAMILY:
            raise KeyError(f"{name!r} is not a built-in RGB-T split; root= only applies to those.")
        return _scan_builtin(name, os.fspath(root))
    return _registered(name).scan()


def load_rgbt_split(name: str, root: str | os.PathLike | None = None) -> list[dict]:
    """The records of a registered RGB-T set; raises one error listing every problem."""
    if root is not None:
        if name not in _NAME_TO_FAMILY:
            raise KeyError(f"{name!r} is not a built-in RGB-T split; root= only applies to those.")
        return _load_builtin(name, os.fspath(root))
    return _registered(name).loader()


def get_classes(
    dataset_name: str, background_as_ignore: bool
) -> tuple[list[str], list[tuple[int, int, int]]]:
    """Class names and colours the model and evaluator should use for ``dataset_name``.

    With ``background_as_ignore`` (cfg.DATASETS.BACKGROUND_AS_IGNORE) class 0 is dropped, matching
    ``io.remap_background`` (e.g. FMB's 14-class protocol). Works for any dataset whose metadata has
    ``stuff_classes``.
    """
    known = dataset_name in MetadataCatalog.list()
    if not known or not MetadataCatalog.get(dataset_name).get("stuff_classes"):
        raise KeyError(
            f"Dataset {dataset_name!r} is not registered with stuff_classes in MetadataCatalog; "
            f"sartm_d2 registers {sorted(_NAME_TO_FAMILY)}, and your own sets with register_rgbt_sem_seg."
        )
    meta = MetadataCatalog.get(dataset_name)
    classes = list(meta.stuff_classes)
    colors = [tuple(int(v) for v in c) for c in meta.get("stuff_colors", [(0, 0, 0)] * len(classes))]
    if background_as_ignore:
        return classes[1:], colors[1:]
    return classes, colors

