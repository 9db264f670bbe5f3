"""Registration of RGB-T segmentation datasets: the built-in ones and your own.

One loader serves every dataset: :func:`load_rgbt_sem_seg` (like detectron2's ``load_sem_seg``)
pairs an RGB folder, a thermal folder (or channel 4 of RGBT images) and a label folder by file
stem and returns the records of the shared data contract:

- ``file_name``: the RGB image; ``thermal_file_name``: the thermal image (``== file_name`` for a
  4-channel R, G, B, T image); ``sem_seg_file_name``: the label image (absent for unlabelled sets);
  ``image_id``: the stem; ``condition`` (optional): e.g. ``day`` / ``night``.

:func:`register_rgbt_sem_seg` (like ``register_coco_instances``) registers a set under a name;
``datasets/README.md`` ("Your own dataset") shows a complete example. Registering never touches the
disk: a set that is not prepared only fails when it is used, with one error that names the folders
and files at fault (every problem is collected first) and, for the built-in sets, the expected tree.

The built-in families are a table (``_FAMILIES``) turned into the same loader's arguments:

- MFNet: ``train.txt`` / ``val.txt`` / ``test.txt``; ``mfnet_test_day`` / ``mfnet_test_night`` are
  the test names whose condition is day / night, taken from ``test_day.txt`` / ``test_night.txt``
  when present, else from the D/N suffix of the name. Every MFNet-layout record has "condition".
- PST900 has no val split. ``pst900_val`` is a fixed hold-out of the *train* folder: the sorted
  train names at positions ``PST900_VAL_OFFSET, PST900_VAL_OFFSET + PST900_VAL_EVERY, ...`` (every
  10th, 60 of 597); ``pst900_train`` excludes them; ``pst900_trainval`` is the whole train folder
  (for the final model, once hyper-parameters are chosen on ``pst900_val``). It is a module
  constant because registration runs at import, before any config exists.
- FMB: ``fmb_train`` / ``fmb_test`` with 15 classes (0 = unlabeled); cfg
  ``DATASETS.BACKGROUND_AS_IGNORE`` gives the 14-class protocol (see :func:`get_classes`).
- The synthetic set (``sartm_d2.data.synthetic``) uses the MFNet layout.

Every split read from a ``test`` folder or list has metadata ``test_split=True``: evaluation only,
never model selection.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from detectron2.data import DatasetCatalog, MetadataCatalog

from .io import IMAGE_EXTENSIONS, lossy_label_error

__all__ = [
    "import_user_module",
    "PST900_VAL_EVERY",
    "PST900_VAL_OFFSET",
    "default_palette",
    "get_classes",
    "load_rgbt_sem_seg",
    "load_rgbt_split",
    "register_all_rgbt",
    "register_rgbt_sem_seg",
    "scan_rgbt_sem_seg",
    "scan_split",
]

PST900_VAL_EVERY = 10
PST900_VAL_OFFSET = 0
CONDITIONS = ["day", "night"]

MFNET_CLASSES = ["unlabeled", "car", "person", "bike", "curve", "car_stop", "guardrail", "color_cone", "bump"]
MFNET_COLORS = [
    (0, 0, 0),
    (64, 0, 128),
    (64, 64, 0),
    (0, 128, 192),
    (0, 0, 192),
    (128, 128, 0),
    (64, 64, 128),
    (192, 128, 128),
    (192, 64, 0),
]
# Label ids as stored in PST900 (the official SARTM release lists them in a wrong order).
PST900_CLASSES = ["background", "fire_extinguisher", "backpack", "hand_drill", "survivor"]
PST900_COLORS = [(0, 0, 0), (0, 0, 255), (0, 255, 0), (255, 0, 0), (255, 255, 255)]
FMB_CLASSES = [
    "unlabeled",
    "road",
    "sidewalk",
    "building",
    "lamp",
    "sign",
    "vegetation",
    "sky",
    "person",
    "car",
    "truck",
    "bus",
    "motorcycle",
    "bicycle",
    "pole",
]
FMB_COLORS = [
    (0, 0, 0),
    (179, 228, 228),
    (181, 57, 133),
    (67, 162, 177),
    (200, 178, 50),
    (132, 45, 199),
    (66, 172, 84),
    (179, 73, 79),
    (76, 99, 166),
    (66, 121, 253),
    (137, 165, 91),
    (155, 97, 152),
    (105, 153, 140),
    (222, 215, 158),
    (135, 113, 90),
]
# The synthetic set's classes are real words so that a text teacher can embed them.
SYNTHETIC_CLASSES = ["background", "person", "car", "traffic sign", "road marking"]
SYNTHETIC_COLORS = [(0, 0, 0), (220, 20, 60), (0, 0, 142), (220, 220, 0), (255, 255, 255)]

_SHOWN = 5  # names / files quoted per problem


# ----------------------------------------------------------------------------- the one loader
class _Missing(str):
    """A problem that is only absent files: the loader then raises FileNotFoundError."""


@dataclass
class _Folder:
    """The image files of one flat folder by stem, and the stems that have several files."""

    path: str
    files: dict[str, str]
    duplicates: dict[str, list[str]]

    @classmethod
    def index(cls, path: str) -> _Folder:
        files: dict[str, str] = {}
        duplicates: dict[str, list[str]] = {}
        with os.scandir(path) as entries:
            # Sorted, so that which duplicate comes first does not depend on the file system.
            for entry in sorted(entries, key=lambda e: e.name):
                stem, ext = os.path.splitext(entry.name)
                # Dot files include macOS "._x.png" resource forks, which are not images.
                if entry.name.startswith(".") or ext.lower() not in IMAGE_EXTENSIONS or not entry.is_file():
                    continue
                if stem in files:
                    duplicates.setdefault(stem, [files[stem]]).append(entry.path)
                else:
                    files[stem] = entry.path
        return cls(path, files, duplicates)


def _read_list(path: str) -> list[str]:
    """Names of a list file, one per line; an image extension (``a.png``) is dropped."""
    names = []
    with open(path) as f:
        for line in f:
            name = line.strip()
            if name:
                stem, ext = os.path.splitext(name)
                names.append(stem if ext.lower() in IMAGE_EXTENSIONS else name)
    return names


def _describe(fn: Callable) -> str:
    """A function's name (with a partial's keywords) and the first line of its docstring."""
    target = fn.func if isinstance(fn, functools.partial) else fn
    label = getattr(target, "__name__", repr(target))
    if isinstance(fn, functools.partial) and fn.keywords:
        label += "(" + ", ".join(f"{k}={v!r}" for k, v in fn.keywords.items()) + ")"
    doc = (getattr(target, "__doc__", None) or "").strip().splitlines()
    return f"{label} ({doc[0].rstrip('.')})" if doc else label


def _same_folder(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    return os.path.normpath(os.path.abspath(a)) == os.path.normpath(os.path.abspath(b))


def _assign_conditions(
    what: str,
    names: list[str],
    condition_lists: Mapping[str, str],
    condition_fn: Callable[[str], str | None] | None,
    conditions: Sequence[str] | None,
) -> tuple[dict[str, str], list[str]]:
    """Condition of each name: its condition list first, else ``condition_fn``; every name needs one.

    A list may name images of other sets (one day.txt for all splits), so only the set's names count.
    """
    listed: dict[str, str] = {}
    where: dict[str, str] = {}
    problems = []
    for cond, path in condition_lists.items():
        twice = []
        for n in _read_list(path):
            if n in listed and listed[n] != cond:
                twice.append(n)
            else:
                listed[n], where[n] = cond, path
        if twice:
            problems.append(
                f"{what}: {sorted(twice)[:_SHOWN]} listed in both {where[twice[0]]!r} and {path!r}."
            )
    out, unknown, bad, raised = {}, [], [], []
    for n in names:
        cond = listed.get(n)
        if cond is None and condition_fn is not None:
            try:
                cond = condition_fn(n)
            except Exception as e:  # the user's function: report it with the name, like other problems
                raised.append(f"{n!r}: {type(e).__name__}: {e}")
                continue
        if cond is None:
            unknown.append(n)
        elif conditions is not None and cond not in conditions:
            bad.append(f"{n!r} -> {cond!r}")
        else:
            out[n] = cond
    if unknown:
        sources = [f"in none of {sorted(condition_lists.values())}"] if condition_lists else []
        if condition_fn is not None:
            sources.append(f"condition_fn {_describe(condition_fn)} returned None")
        problems.append(
            f"{what}: name(s) {unknown[:_SHOWN]} ({len(unknown)} in all) have no condition: "
            + " and ".join(sources)
            + ". Every image of a set with conditions needs one."
        )
    if raised:
        problems.append(
            f"{what}: condition_fn {_describe(condition_fn)} raised for {len(raised)} name(s): "
            + "; ".join(raised[:_SHOWN])
        )
    if bad:
        problems.append(
            f"{what}: condition(s) outside the declared conditions {list(conditions or [])}: "
            + ", ".join(bad[:_SHOWN])
            + (f" ({len(bad)} in all)." if len(bad) > _SHOWN else ".")
        )
    return out, problems


def scan_rgbt_sem_seg(
    rgb_root: str | os.PathLike,
    thermal_root: str | os.PathLike | None,
    gt_root: str | os.PathLike | None,
    *,
    image_list: str | os.PathLike | None = None,
    condition_lists: Mapping[str, str | os.PathLike] | None = None,
    condition_fn: Callable[[str], str | None] | None = None,
    conditions: Sequence[str] | None = None,
    select: Callable[[list[dict]], list[dict]] | None = None,
    dataset_name: str | None = None,
) -> tuple[list[dict], list[str]]:
    """:func:`load_rgbt_sem_seg` without raising: (complete records, every problem found).

    ``datasets/check.py`` reports the problems; the loader raises them all at once. A folder or
    list file that does not exist still raises FileNotFoundError (nothing can be paired without it).
    """
    what = f"Dataset {dataset_name!r}" if dataset_name else f"RGB-T set {os.fspath(rgb_root)!r}"
    rgb_root = os.fspath(rgb_root)
    rgbt = thermal_root is None or _same_folder(thermal_root, rgb_root)
    folders = [("RGB", "rgb_root", rgb_root, "file_name")]
    if not rgbt:
        folders.append(("thermal", "thermal_root", os.fspath(thermal_root), "thermal_file_name"))
    if gt_root is not None:
        folders.append(("label", "gt_root", os.fspath(gt_root), "sem_seg_file_name"))
    cond_lists = {c: os.fspath(p) for c, p in (condition_lists or {}).items()}

    # 1. The names: the list file, else the RGB folder. An empty set needs no other folder.
    index: dict[str, _Folder] = {}
    if image_list is not None:
        origin = os.fspath(image_list)
        if not os.path.isfile(origin):
            raise FileNotFoundError(f"{what}: image list {origin!r} (image_list) not found.")
        names = _read_list(origin)
        if not names:
            return [], [f"{what}: the set is empty: {origin!r} lists no name."]
    else:
        origin = rgb_root
        if not os.path.isdir(rgb_root):
            raise FileNotFoundError(f"{what}: RGB folder {rgb_root!r} (rgb_root) not found.")
        index["file_name"] = _Folder.index(rgb_root)
        names = sorted(index["file_name"].files)
        if not names:
            exts = " ".join(IMAGE_EXTENSIONS)
            return [], [f"{what}: the set is empty: {rgb_root!r} holds no image (extensions {exts})."]
    absent = [f"{kind} folder {path!r} ({arg})" for kind, arg, path, _ in folders if not os.path.isdir(path)]
    absent += [
        f"condition list {p!r} (condition_lists[{c!r}])"
        for c, p in cond_lists.items()
        if not os.path.isfile(p)
    ]
    if absent:
        raise FileNotFoundError(f"{what}: not found: " + "; ".join(absent) + ".")
    index.update({key: _Folder.index(path) for _, _, path, key in folders if key not in index})

    problems: list[str] = []
    repeated = sorted(n for n, c in Counter(names).items() if c > 1)
    if repeated:
        problems.append(f"{what}: {origin!r} lists {repeated[:_SHOWN]} more than once.")

    # 2. Conditions, then the subset (both need only the names).
    cond_of: dict[str, str] = {}
    if cond_lists or condition_fn is not None:
        cond_of, cond_problems = _assign_conditions(what, names, cond_lists, condition_fn, conditions)
        problems += cond_problems
    candidates = [{"image_id": n, **({"condition": cond_of[n]} if n in cond_of else {})} for n in names]
    if select is not None:
        try:
            candidates = list(select(candidates))
        except Exception as e:  # the user's function: a ValueError naming the set, not a bare KeyError
            raise ValueError(f"{what}: select {_describe(select)} raised {type(e).__name__}: {e}") from e
        if not candidates and not problems:
            problems.append(
                f"{what}: select {_describe(select)} kept no image of the {len(names)} in {origin!r}."
            )

    # 3. Pair the files by stem; collect every missing, doubled or lossy file.
    missing: dict[str, list[str]] = {}
    doubled, lossy = [], []
    records = []
    for cand in candidates:
        n = cand["image_id"]
        record, complete = {}, True
        for _, _, path, key in folders:
            folder = index[key]
            if n in folder.duplicates:
                doubled.append(f"{n!r} in {path!r}: " + ", ".join(repr(f) for f in folder.duplicates[n]))
            if n not in folder.files:
                missing.setdefault(path, []).append(n)
                complete = False
            else:
                record[key] = folder.files[n]
        if "sem_seg_file_name" in record and lossy_label_error(record["sem_seg_file_name"]):
            lossy.append(record["sem_seg_file_name"])
            complete = False
        if complete:
            out = {"file_name": record["file_name"]}
            out["thermal_file_name"] = record["file_name"] if rgbt else record["thermal_file_name"]
            if "sem_seg_file_name" in record:
                out["sem_seg_file_name"] = record["sem_seg_file_name"]
            out["image_id"] = n
            if "condition" in cand:
                out["condition"] = cand["condition"]
            records.append(out)
    for path, stems in missing.items():
        shown = ", ".join(repr(os.path.join(path, f"{s}.*")) for s in stems[:_SHOWN])
        problems.append(
            _Missing(
                f"{what}: {len(stems)} name(s) of {origin!r} have no image in {path!r} (files are paired "
                f"by stem, any image extension): {shown}"
                + (" ..." if len(stems) > _SHOWN else "")
                + ". Add the files, or leave these names out (image_list)."
            )
        )
    if doubled:
        problems.append(
            f"{what}: {len(doubled)} stem(s) have several files in one folder, so the pairing is ambiguous; "
            "keep one file per stem: " + "; ".join(doubled[:_SHOWN])
        )
    if lossy:
        problems.append(lossy_label_error(lossy[0]) + f" ({len(lossy)} JPEG label(s): {lossy[:_SHOWN]})")
    return records, problems


def _raise_problems(problems: list[str]) -> None:
    if problems:
        err = FileNotFoundError if all(isinstance(p, _Missing) for p in problems) else ValueError
        raise err("\n".join(problems))


def load_rgbt_sem_seg(
    rgb_root: str | os.PathLike,
    thermal_root: str | os.PathLike | None,
    gt_root: str | os.PathLike | None,
    *,
    image_list: str | os.PathLike | None = None,
    condition_lists: Mapping[str, str | os.PathLike] | None = None,
    condition_fn: Callable[[str], str | None] | None = None,
    conditions: Sequence[str] | None = None,
    select: Callable[[list[dict]], list[dict]] | None = None,
    dataset_name: str | None = None,
) -> list[dict]:
    """Pair RGB, thermal and label images by file stem into RGB-T records (reads no image).

    Args:
        rgb_root: folder of the RGB images (any format OpenCV reads; flat, one file per stem).
        thermal_root: folder of the thermal images (8- or 16-bit, 1 or 3 channels), or None when the
            RGB images are 4-channel R, G, B, T PNG/TIFF (then ``thermal_file_name == file_name``).
        gt_root: folder of the label images (class ids, 255 = ignore; PNG, TIFF or BMP, not JPEG), or
            None for an unlabelled set (demo / inference only: records have no ``sem_seg_file_name``).
        image_list: a text file of the set's names, one file stem per line (MFNet's ``train.txt``);
            default: the sorted stems of ``rgb_root``. Several sets can then share one folder.
        condition_lists: condition -> list file of the stems with that condition, e.g.
            ``{"day": "day.txt", "night": "night.txt"}``. A name listed nowhere asks ``condition_fn``.
        condition_fn: ``name -> condition or None`` (e.g. from a suffix or a time stamp in the name).
            With conditions, every image needs one (None is reported), so per-condition results add up.
        conditions: the allowed condition values, in report order; another value is a problem.
        select: keeps a subset: called with one dict per name, in order, holding "image_id" and, with
            conditions, "condition"; returns those to keep (``lambda rs: rs[::10]`` is a hold-out).
        dataset_name: the registered name, quoted in errors.

    Returns:
        The records, in name order. Raises one FileNotFoundError (only absent files) or ValueError
        listing every problem: names without a thermal or label partner (by folder), several files of
        one stem in a folder, JPEG labels, an empty set, names without a condition.
    """
    records, problems = scan_rgbt_sem_seg(
        rgb_root,
        thermal_root,
        gt_root,
        image_list=image_list,
        condition_lists=condition_lists,
        condition_fn=condition_fn,
        conditions=conditions,
        select=select,
        dataset_name=dataset_name,
    )
    _raise_problems(problems)
    return records


# ----------------------------------------------------------------------------- registration
def default_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """PASCAL VOC's colour map: fixed, distinct for up to 256 classes, class 0 black.

    Deterministic (unlike detectron2's random colours) so that figures of two runs agree.
    """
    colors = []
    for i in range(num_classes):
        r = g = b = 0
        c = i
        for bit in range(7, -1, -1):
            r |= (c & 1) << bit
            g |= ((c >> 1) & 1) << bit
            b |= ((c >> 2) & 1) << bit
            c >>= 3
        colors.append((r, g, b))
    return colors


@dataclass(frozen=True)
class _Registered:
    """What sartm_d2 registered under a name: the catalog function and its problem scanner."""

    loader: Callable[[], list[dict]]
    scan: Callable[[], tuple[list[dict], list[str]]]


_REGISTERED: dict[str, _Registered] = {}


def _register(name: str, loader: Callable, scan: Callable, metadata: dict) -> None:
    """The one registration path (built-in and user sets): replaces any earlier ``name``."""
    if name in DatasetCatalog:
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(**metadata)
    _REGISTERED[name] = _Registered(loader, scan)


def _metadata(
    name: str,
    classes: Sequence[str],
    colors: Sequence[Sequence[int]] | None,
    ignore_label: int,
    evaluator_type: str,
    conditions: Sequence[str] | None,
    test_split: bool,
    folders: dict[str, str | None],
) -> dict:
    """Checked MetadataCatalog fields; mistakes are reported at registration, not at training."""
    if isinstance(classes, str) or not classes or not all(isinstance(c, str) and c for c in classes):
        raise ValueError(f"Dataset {name!r}: classes must be a non-empty list of names, got {classes!r}.")
    if not 0 <= int(ignore_label) <= 255 or int(ignore_label) < len(classes):
        raise ValueError(
            f"Dataset {name!r}: ignore_label {ignore_label} must be in 0..255 and not a class id "
            f"(0..{len(classes) - 1}); labels are 8-bit."
        )
    colors = default_palette(len(classes)) if colors is None else colors
    if len(colors) != len(classes) or not all(
        len(c) == 3 and all(0 <= int(v) <= 255 for v in c) for c in colors
    ):
        raise ValueError(
            f"Dataset {name!r}: colors must give one (R, G, B) in 0..255 per class ({len(classes)}), "
            f"got {list(colors)!r}; leave it None for the default palette."
        )
    meta = {
        "stuff_classes": list(classes),
        "stuff_colors": [[int(v) for v in c] for c in colors],
        "ignore_label": int(ignore_label),
        "evaluator_type": evaluator_type,
        "test_split": bool(test_split),
    }
    if conditions:
        meta["conditions"] = list(conditions)
    meta.update({k: v for k, v in folders.items() if v is not None})
    return meta


def register_rgbt_sem_seg(
    name: str,
    rgb_root: str | os.PathLike,
    thermal_root: str | os.PathLike | None,
    gt_root: str | os.PathLike | None,
    classes: Sequence[str],
    *,
    colors: Sequence[Sequence[int]] | None = None,
    image_list: str | os.PathLike | None = None,
    condition_lists: Mapping[str, str | os.PathLike] | None = None,
    condition_fn: Callable[[str], str | None] | None = None,
    conditions: Sequence[str] | None = None,
    select: Callable[[list[dict]], list[dict]] | None = None,
    ignore_label: int = 255,
    evaluator_type: str = "sem_seg",
    test_split: bool = False,
) -> None:
    """Register your own aligned RGB + thermal set under ``name`` (lazily: touches no file).

    ``DatasetCatalog.get(name)`` then returns :func:`load_rgbt_sem_seg`'s records (see it for
    ``rgb_root`` ... ``select``); registering ``name`` again replaces it. Use the name in
    DATASETS.TRAIN / VAL / TEST and check the files with ``python datasets/check.py --register
    MODULE name``.

    Args:
        classes: class names by label id (``stuff_classes``); MODEL.SEM_SEG_HEAD.NUM_CLASSES must
            equal their number (minus one with DATASETS.BACKGROUND_AS_IGNORE).
        colors: one (R, G, B) per class for visualisation (``stuff_colors``); default
            :func:`default_palette`.
        conditions: condition values in report order (metadata ``conditions``); default: the keys of
            ``condition_lists``.
        ignore_label: the label value excluded from training and metrics (8-bit, not a class id).
        evaluator_type: detectron2's metadata field; "sem_seg".
        test_split: mark the set as evaluation-only (metadata ``test_split``): training refuses it as
            DATASETS.VAL, so no model is selected on test data.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_rgbt_sem_seg: name must be a non-empty string, got {name!r}.")
    if conditions is None and condition_lists:
        conditions = list(condition_lists)
    if conditions is not None and condition_lists:
        undeclared = sorted(set(condition_lists) - set(conditions))
        if undeclared:
            raise ValueError(
                f"Dataset {name!r}: condition_lists has {undeclared}, which are not in conditions "
                f"{list(conditions)}."
            )
    kwargs = {
        "rgb_root": os.fspath(rgb_root),
        "thermal_root": None if thermal_root is None else os.fspath(thermal_root),
        "gt_root": None if gt_root is None else os.fspath(gt_root),
        "image_list": None if image_list is None else os.fspath(image_list),
        "condition_lists": {c: os.fspath(p) for c, p in (condition_lists or {}).items()},
        "condition_fn": condition_fn,
        "conditions": None if conditions is None else list(conditions),
        "select": select,
        "dataset_name": name,
    }
    roots = [p for p in (kwargs["rgb_root"], kwargs["thermal_root"], kwargs["gt_root"]) if p is not None]
    try:
        dataset_root = os.path.commonpath(roots)
    except ValueError:  # relative and absolute roots mixed
        dataset_root = os.path.commonpath([os.path.abspath(p) for p in roots])
    folders = {
        "dataset_root": dataset_root,
        "image_root": kwargs["rgb_root"],
        "thermal_root": kwargs["thermal_root"] or kwargs["rgb_root"],
        "sem_seg_root": kwargs["gt_root"],
        "image_list": kwargs["image_list"],
    }
    meta = _metadata(name, classes, colors, ignore_label, evaluator_type, conditions, test_split, folders)
    _register(
        name,
        lambda kwargs=kwargs: load_rgbt_sem_seg(**kwargs),
        functools.partial(scan_rgbt_sem_seg, **kwargs),
        meta,
    )


# ----------------------------------------------------------------------------- built-in sets
@dataclass(frozen=True)
class _Family:
    """How one dataset family is laid out under ``<root>/<folder>``."""

    folder: str
    layout: str  # "mfnet": images/ + labels/ + <split>.txt; "folders": <split>/{rgb,thermal,label}/
    classes: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    # Registered name -> (split source, subset). Split source: a split list stem ("train") for
    # "mfnet", a sub-folder ("train") for "folders". Subset: "all", "day", "night", "holdout", "rest".
    splits: dict[str, tuple[str, str]]
    rgb_dir: str = "images"
    thermal_dir: str = ""  # "" = thermal is channel 4 of the RGBT PNG in rgb_dir
    label_dir: str = "labels"
    tree: str = ""  # the expected layout, shown when the data is absent or incomplete

    @property
    def has_conditions(self) -> bool:
        return self.layout == "mfnet"


_MFNET_TREE = """{folder}/
  images/<name>.png      4-channel PNG: R, G, B, thermal
  labels/<name>.png      class ids 0..{k}, 255 = ignore
  train.txt val.txt test.txt     one name per line (no extension)
  [test_day.txt test_night.txt]  optional; else a name ending in D / N is day / night"""


def _folders_tree(folder: str, rgb: str, thermal: str, label: str, k: int) -> str:
    return (
        f"{folder}/\n  {{train,test}}/\n    {rgb}/<name>.png      RGB\n"
        f"    {thermal}/<name>.png  thermal, 8 or 16 bit, aligned with RGB\n"
        f"    {label}/<name>.png    class ids 0..{k}, 255 = ignore"
    )


_FAMILIES: dict[str, _Family] = {
    "mfnet": _Family(
        folder="MFNet",
        layout="mfnet",
        classes=tuple(MFNET_CLASSES),
        colors=tuple(MFNET_COLORS),
        splits={
            "mfnet_train": ("train", "all"),
            "mfnet_val": ("val", "all"),
            "mfnet_test": ("test", "all"),
            "mfnet_test_day": ("test", "day"),
            "mfnet_test_night": ("test", "night"),
        },
        tree=_MFNET_TREE.format(folder="MFNet", k=8),
    ),
    "pst900": _Family(
        folder="PST900",
        layout="folders",
        classes=tuple(PST900_CLASSES),
        colors=tuple(PST900_COLORS),
        splits={
            "pst900_train": ("train", "rest"),
            "pst900_val": ("train", "holdout"),
            "pst900_trainval": ("train", "all"),
            "pst900_test": ("test", "all"),
        },
        rgb_dir="rgb",
        thermal_dir="thermal",
        label_dir="labels",
        tree=_folders_tree("PST900", "rgb", "thermal", "labels", 4),
    ),
    "fmb": _Family(
        folder="FMB",
        layout="folders",
        classes=tuple(FMB_CLASSES),
        colors=tuple(FMB_COLORS),
        splits={"fmb_train": ("train", "all"), "fmb_test": ("test", "all")},
        rgb_dir="Visible",
        thermal_dir="Infrared",
        label_dir="Label",
        tree=_folders_tree("FMB", "Visible", "Infrared", "Label", 14),
    ),
    "synthetic": _Family(
        folder="SyntheticRGBT",
        layout="mfnet",
        classes=tuple(SYNTHETIC_CLASSES),
        colors=tuple(SYNTHETIC_COLORS),
        splits={
            "synthetic_rgbt_train": ("train", "all"),
            "synthetic_rgbt_val": ("val", "all"),
            "synthetic_rgbt_test": ("test", "all"),
        },
        tree=_MFNET_TREE.format(folder="SyntheticRGBT", k=4)
        + "\n(generate it with: python -m sartm_d2.data.synthetic --root <DETECTRON2_DATASETS>)",
    ),
}
_NAME_TO_FAMILY = {name: fam for fam, spec in _FAMILIES.items() for name in spec.splits}


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


def import_user_module(module: str) -> None:
    """Import ``module`` (a dotted name, or a path to a ``.py`` file) so that its registrations run.

    The ``--register MODULE`` of train_net.py, demo/demo.py and datasets/check.py: a user's own
    datasets (or parts) are registered in every process that needs them, without editing sartm_d2.
    """
    if module.endswith(".py") or os.sep in module:
        path = os.path.abspath(module)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--register {module}: no such file {path!r}.")
        name = os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        return
    # A script's own folder, not the current directory, is first on sys.path; the user's module is
    # usually in the current directory.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    importlib.import_module(module)


def register_all_rgbt(root: str | os.PathLike, only: Iterable[str] | None = None) -> list[str]:
    """Register (or re-point) every built-in RGB-T split under ``root``; touches no file.

    Args:
        root: the dataset root holding MFNet/, PST900/, FMB/, SyntheticRGBT/.
        only: families to (re-)register, from "mfnet", "pst900", "fmb", "synthetic"; None = all.
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


# ----------------------------------------------------------------------------- by name
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


register_all_rgbt(_default_root())
