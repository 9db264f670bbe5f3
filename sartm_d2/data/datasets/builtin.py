"""Registration of the built-in RGB-T sets under ``$DETECTRON2_DATASETS`` (default ``datasets/``), at import.

The families of ``builtin_meta`` (``_FAMILIES``) are turned into arguments of the one loader
(``rgbt_sem_seg.load_rgbt_sem_seg``) and registered through its registration path:

- MFNet: ``train.txt`` / ``val.txt`` / ``test.txt``; ``mfnet_test_day`` / ``mfnet_test_night`` are
  the test names whose condition is day / night, taken from ``test_day.txt`` / ``test_night.txt``
  when present, else from the D/N suffix of the name. Every MFNet-layout record has "condition".
- PST900 has no val split. ``pst900_val`` is a fixed hold-out of the *train* folder: the sorted
  train names at positions ``PST900_VAL_OFFSET, PST900_VAL_OFFSET + PST900_VAL_EVERY, ...`` (every
  10th, 60 of 597); ``pst900_train`` excludes them; ``pst900_trainval`` is the whole train folder
  (for the final model, once hyper-parameters are chosen on ``pst900_val``).
- FMB: ``fmb_train`` / ``fmb_test`` with 15 classes (0 = unlabeled); cfg
  ``DATASETS.BACKGROUND_AS_IGNORE`` gives the 14-class protocol (see ``catalog.get_classes``).
- The synthetic set (``sartm_d2.data.synthetic``) and the synthetic MFNet-like family
  (``sartm_d2.data.synthetic_mfnet``, 96x128 and 480x640) use the MFNet layout.

Every split read from a ``test`` folder or list has metadata ``test_split=True``: evaluation only,
never model selection. Registering touches no file; a set that is absent or incomplete fails when
it is used, with the tree it expects.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable

from .builtin_meta import _FAMILIES, _NAME_TO_FAMILY, CONDITIONS, PST900_VAL_EVERY, PST900_VAL_OFFSET
from .rgbt_sem_seg import _metadata, _register, load_rgbt_sem_seg, scan_rgbt_sem_seg

__all__ = ["register_all_rgbt"]


def _day_night_from_suffix(name: str) -> str | None:
    """'day' for a name ending in D, 'night' for N (MFNet's naming)."""
    if name.endswith(("D", "d")):
        return "day"
    if name.endswith(("N", "n")):
        return "night"
    return None


def _only_condition(records: list[dict], condition: str) -> list[dict]:
    """The images of one condition."""
    return [r for r in records if r.get("condition") == condition]


def _pst900_holdout(records: list[dict], held: bool) -> list[dict]:
    """Every PST900_VAL_EVERY-th sorted train name (held) or the others."""
    out = set(range(PST900_VAL_OFFSET, len(records), PST900_VAL_EVERY))
    return [r for i, r in enumerate(records) if (i in out) == held]


def _builtin_kwargs(name: str, root: str) -> dict:
    """The loader arguments of a built-in split; raises (with the expected tree) if it is absent."""
    spec = _FAMILIES[_NAME_TO_FAMILY[name]]
    base = os.path.join(root, spec.folder)
    if not os.path.isdir(base):
        raise FileNotFoundError(
            f"Dataset {name!r}: dataset folder not found at {base!r}. Expected this tree under the dataset "
            f"root (set DETECTRON2_DATASETS, default 'datasets'):\n{spec.tree}\nSee datasets/README.md."
        )
    source, subset = spec.splits[name]
    kwargs: dict = {"dataset_name": name}
    if spec.layout == "mfnet":
        # The day/night lists are optional: only the ones that exist are used (read at load time).
        lists = {c: os.path.join(base, f"test_{c}.txt") for c in CONDITIONS}
        kwargs.update(
            rgb_root=os.path.join(base, spec.rgb_dir),
            thermal_root=None,
            gt_root=os.path.join(base, spec.label_dir),
            image_list=os.path.join(base, f"{source}.txt"),
            condition_lists={c: p for c, p in lists.items() if os.path.isfile(p)},
            condition_fn=_day_night_from_suffix,
            conditions=CONDITIONS,
        )
        if subset in CONDITIONS:
            kwargs["select"] = functools.partial(_only_condition, condition=subset)
    else:
        split_dir = os.path.join(base, source)
        kwargs.update(
            rgb_root=os.path.join(split_dir, spec.rgb_dir),
            thermal_root=os.path.join(split_dir, spec.thermal_dir),
            gt_root=os.path.join(split_dir, spec.label_dir),
        )
        if subset in ("holdout", "rest"):
            kwargs["select"] = functools.partial(_pst900_holdout, held=subset == "holdout")
    return kwargs


def _with_tree(name: str, fn: Callable, *args, **kwargs):
    """Call ``fn``; a failure of a built-in split also shows the tree it expects."""
    try:
        return fn(*args, **kwargs)
    except (FileNotFoundError, ValueError) as e:
        tree = _FAMILIES[_NAME_TO_FAMILY[name]].tree
        if tree in str(e):
            raise
        raise type(e)(f"{e}\nExpected tree:\n{tree}") from None


def _load_builtin(name: str, root: str) -> list[dict]:
    return _with_tree(name, lambda: load_rgbt_sem_seg(**_builtin_kwargs(name, root)))


def _scan_builtin(name: str, root: str) -> tuple[list[dict], list[str]]:
    return _with_tree(name, lambda: scan_rgbt_sem_seg(**_builtin_kwargs(name, root)))


def _default_root() -> str:
    return os.getenv("DETECTRON2_DATASETS", "datasets")


def register_all_rgbt(root: str | os.PathLike, only: Iterable[str] | None = None) -> list[str]:
    """Register (or re-point) every built-in RGB-T split under ``root``; touches no file.

    Args:
        root: the dataset root holding MFNet/, PST900/, FMB/, SyntheticRGBT/, SyntheticMFNet_96x128/, ...
        only: families to (re-)register, from "mfnet", "pst900", "fmb", "synthetic",
            "synthetic_mfnet" (96x128), "synthetic_mfnet_480x640"; None = all.
            Re-registering replaces an earlier registration (e.g. a synthetic set generated in a
            temporary folder). Your own sets: :func:`register_rgbt_sem_seg`.

    Returns:
        The registered dataset names.
    """
    families = list(_FAMILIES) if only is None else list(only)
    unknown = sorted(set(families) - set(_FAMILIES))
    if unknown:
        raise ValueError(
            f"Unknown built-in RGB-T dataset families {unknown}; choose from {sorted(_FAMILIES)}, or "
            "register your own set with sartm_d2.data.register_rgbt_sem_seg."
        )
    root = os.fspath(root)
    names = []
    for fam in families:
        spec = _FAMILIES[fam]
        base = os.path.join(root, spec.folder)
        for name, (source, _) in spec.splits.items():
            if spec.layout == "mfnet":
                folders = {
                    "image_root": os.path.join(base, spec.rgb_dir),
                    "thermal_root": os.path.join(base, spec.rgb_dir),
                    "sem_seg_root": os.path.join(base, spec.label_dir),
                    "image_list": os.path.join(base, f"{source}.txt"),
                }
            else:
                folders = {
                    "image_root": os.path.join(base, source, spec.rgb_dir),
                    "thermal_root": os.path.join(base, source, spec.thermal_dir),
                    "sem_seg_root": os.path.join(base, source, spec.label_dir),
                }
            meta = _metadata(
                name,
                spec.classes,
                spec.colors,
                255,
                "sem_seg",
                CONDITIONS if spec.has_conditions else None,
                source == "test",
                {"dataset_root": base, **folders},
            )
            _register(
                name,
                lambda name=name, root=root: _load_builtin(name, root),
                functools.partial(_scan_builtin, name, root),
                meta,
            )
            names.append(name)
    return names


register_all_rgbt(_default_root())
