"""The generic RGB-T folder loader and registration: aligned RGB, thermal and label folders.

One loader serves every dataset: :func:`load_rgbt_sem_seg` (like detectron2's ``load_sem_seg``)
pairs an RGB folder, a thermal folder (or channel 4 of RGBT images) and a label folder by file
stem and returns the records of the shared data contract:

- ``file_name``: the RGB image; ``thermal_file_name``: the thermal image (``== file_name`` for a
  4-channel R, G, B, T image); ``sem_seg_file_name``: the label image (absent for unlabelled sets);
  ``image_id``: the stem; ``condition`` (optional): e.g. ``day`` / ``night``; ``rig_file`` (optional):
  the rig file that maps thermal into the RGB frame when the two cameras are not pixel-aligned
  (``sartm_d2.data.rig``; ``io.read_rgbt`` applies it).

:func:`register_rgbt_sem_seg` (like ``register_coco_instances``) registers a set under a name;
``datasets/README.md`` ("Your own dataset") shows a complete example. Registering touches no file but
a rig file (checked at once): a set that is not prepared only fails when it is used, with one error
that names the folders and files at fault (every problem is collected first). The built-in sets
(``builtin``) go through the same loader and the same registration path (``_register``).
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..io import IMAGE_EXTENSIONS, lossy_label_error
from ..rig import load_rig

__all__ = ["default_palette", "load_rgbt_sem_seg", "register_rgbt_sem_seg", "scan_rgbt_sem_seg"]

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
    rig_file: str | os.PathLike | None = None,
    dataset_name: str | None = None,
) -> tuple[list[dict], list[str]]:
    """:func:`load_rgbt_sem_seg` without raising: (complete records, every problem found).

    ``datasets/check.py`` reports the problems; the loader raises them all at once. A folder or
    list file that does not exist still raises FileNotFoundError (nothing can be paired without it),
    and so does a missing rig file (a bad one: ValueError).
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
    if rig_file is not None:
        rig_file = os.fspath(rig_file)
        load_rig(rig_file)

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
            if rig_file is not None:
                out["rig_file"] = rig_file
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
    rig_file: str | os.PathLike | None = None,
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
        rig_file: a rig file (``sartm_d2.data.rig``; ``tools/calibrate_rig.py`` writes one) for cameras
            that are not pixel-aligned: checked here and put on every record as "rig_file", so that
            ``io.read_rgbt`` warps thermal into the RGB frame. RGB and labels stay as they are.
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
        rig_file=rig_file,
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
    rig: str | os.PathLike | None = None,
) -> None:
    """Register your own RGB + thermal set under ``name`` (lazily: touches no file but ``rig``).

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
        rig: the rig file of a camera pair that is not pixel-aligned (thermal of another size, field
            of view or offset; ``tools/calibrate_rig.py`` writes it). Read and checked now (a missing
            or bad file raises here, naming it), then named on every record (``rig_file``) and in the
            metadata (``rig_file``): the thermal image is warped into the RGB frame as it is read, so
            labels and predictions are in the RGB frame. Default: the pairs are aligned.
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
        "rig_file": None if rig is None else os.fspath(rig),
        "dataset_name": name,
    }
    if rig is not None:
        try:
            load_rig(rig)
        except (FileNotFoundError, ValueError) as e:
            raise type(e)(f"Dataset {name!r} (rig=): {e}") from e
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
        "rig_file": kwargs["rig_file"],
    }
    meta = _metadata(name, classes, colors, ignore_label, evaluator_type, conditions, test_split, folders)
    _register(
        name,
        lambda kwargs=kwargs: load_rgbt_sem_seg(**kwargs),
        functools.partial(scan_rgbt_sem_seg, **kwargs),
        meta,
    )

