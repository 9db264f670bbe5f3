"""Registration of the RGB-T segmentation datasets, as their publishers lay them out.

One loader (:func:`scan_split`) serves every dataset; what differs between datasets lives in the
``_FAMILIES`` table (folders, where the names of a split come from, classes, palette). Registering
never touches the disk: a dataset that is not prepared only fails when it is used, with an error
that says where it looked and which tree it expects (see ``datasets/README.md``).

Splits:

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
- The synthetic set (``sartm_d2.data.synthetic``) uses the MFNet layout and the same loader.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from detectron2.data import DatasetCatalog, MetadataCatalog

__all__ = [
    "PST900_VAL_EVERY",
    "PST900_VAL_OFFSET",
    "get_classes",
    "load_rgbt_split",
    "register_all_rgbt",
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
    tree: str = ""  # the expected layout, shown when the data is absent

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
_MISSING = "are missing, e.g."
_ROOTS: dict[str, str] = {}  # registered name -> dataset root it was registered with


def _absent(name: str, spec: _Family, where: str, what: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"Dataset {name!r}: {what} not found at {where!r}. Expected this tree under the dataset root "
        f"(set DETECTRON2_DATASETS, default 'datasets'):\n{spec.tree}\nSee datasets/README.md."
    )


def _read_list(path: str) -> list[str]:
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def _split_names(name: str, spec: _Family, base: str, source: str, subset: str) -> tuple[list[str], str]:
    """Names of one split and a description of where they came from (for error messages)."""
    if spec.layout == "mfnet":
        path = os.path.join(base, f"{source}.txt")
        if not os.path.isfile(path):
            raise _absent(name, spec, path, "split list")
        return _read_list(path), path
    folder = os.path.join(base, source, spec.rgb_dir)
    if not os.path.isdir(folder):
        raise _absent(name, spec, folder, "image folder")
    names = sorted(os.path.splitext(f)[0] for f in os.listdir(folder) if f.lower().endswith(".png"))
    if subset in ("holdout", "rest"):
        held = set(names[PST900_VAL_OFFSET::PST900_VAL_EVERY])
        names = [n for n in names if (n in held) == (subset == "holdout")]
    return names, folder


def _conditions(base: str, names: list[str], source: str) -> tuple[dict[str, str], list[str]]:
    """Day/night of each name: test_day.txt / test_night.txt when present, else the D/N suffix."""
    lists = {}
    for cond in CONDITIONS:
        path = os.path.join(base, f"test_{cond}.txt")
        if os.path.isfile(path):
            lists[cond] = (set(_read_list(path)), path)
    problems = []
    if "day" in lists and "night" in lists:
        both = lists["day"][0] & lists["night"][0]
        if both:
            problems.append(
                f"{sorted(both)[:5]} listed in both {lists['day'][1]!r} and {lists['night'][1]!r}"
            )
    out = {}
    for n in names:
        listed = [c for c, (s, _) in lists.items() if n in s]
        if listed:
            out[n] = listed[0]
        elif n.endswith(("D", "d")):
            out[n] = "day"
        elif n.endswith(("N", "n")):
            out[n] = "night"
        else:
            problems.append(
                f"name {n!r} (split {source!r}) has no condition: it is in neither test_day.txt nor "
                "test_night.txt and does not end in D (day) or N (night)"
            )
    if source == "test":
        test = set(names)
        for s, path in lists.values():
            extra = sorted(s - test)
            if extra:
                problems.append(f"{path!r} names {len(extra)} name(s) not in test.txt, e.g. {extra[:5]}")
    return out, problems


def scan_split(name: str, root: str | None = None) -> tuple[list[dict], list[str]]:
    """Build the records of a registered split and collect every problem instead of raising.

    Used by the dataset loader (which raises on any problem) and by ``datasets/check.py`` (which
    reports them all). Absent roots / split lists still raise FileNotFoundError.

    Returns:
        (records, problems): records in the shared data contract, problem strings.
    """
    if name not in _NAME_TO_FAMILY:
        raise KeyError(f"{name!r} is not an RGB-T dataset of sartm_d2; known: {sorted(_NAME_TO_FAMILY)}")
    spec = _FAMILIES[_NAME_TO_FAMILY[name]]
    root = root if root is not None else _ROOTS.get(name, _default_root())
    base = os.path.join(root, spec.folder)
    if not os.path.isdir(base):
        raise _absent(name, spec, base, "dataset folder")
    source, subset = spec.splits[name]
    names, origin = _split_names(name, spec, base, source, subset)
    problems: list[str] = []
    if not names:
        problems.append(f"Dataset {name!r}: split is empty ({origin!r} lists no image).")
    conditions: dict[str, str] = {}
    if spec.has_conditions:
        conditions, cond_problems = _conditions(base, names, source)
        problems += [f"Dataset {name!r}: {p}" for p in cond_problems]
        if subset in CONDITIONS:
            names = [n for n in names if conditions.get(n) == subset]
            if not names and not problems:
                problems.append(f"Dataset {name!r}: no {subset} image in {origin!r}.")
    duplicates = sorted(n for n, c in Counter(names).items() if c > 1)
    if duplicates:
        problems.append(f"Dataset {name!r}: {origin!r} lists {duplicates[:5]} more than once.")

    records, missing = [], []
    for n in names:
        if spec.layout == "mfnet":
            rgb = os.path.join(base, spec.rgb_dir, f"{n}.png")
            thermal = rgb
            label = os.path.join(base, spec.label_dir, f"{n}.png")
        else:
            split_dir = os.path.join(base, source)
            rgb = os.path.join(split_dir, spec.rgb_dir, f"{n}.png")
            thermal = os.path.join(split_dir, spec.thermal_dir, f"{n}.png")
            label = os.path.join(split_dir, spec.label_dir, f"{n}.png")
        missing += [p for p in dict.fromkeys((rgb, thermal, label)) if not os.path.isfile(p)]
        record = {"file_name": rgb, "thermal_file_name": thermal, "sem_seg_file_name": label, "image_id": n}
        if spec.has_conditions and n in conditions:
            record["condition"] = conditions[n]
        records.append(record)
    if missing:
        problems.append(
            f"Dataset {name!r}: {len(missing)} file(s) named by {origin!r} {_MISSING} "
            + ", ".join(repr(p) for p in missing[:5])
        )
    return records, problems


def load_rgbt_split(name: str, root: str | None = None) -> list[dict]:
    """DatasetCatalog loader: the records of ``name``; raises one error listing every problem."""
    records, problems = scan_split(name, root)
    if problems:
        only_missing_files = all(_MISSING in p for p in problems)
        err = FileNotFoundError if only_missing_files else ValueError
        raise err("\n".join(problems) + f"\nExpected tree:\n{_FAMILIES[_NAME_TO_FAMILY[name]].tree}")
    return records


def _default_root() -> str:
    return os.getenv("DETECTRON2_DATASETS", "datasets")


def register_all_rgbt(root: str, only: Iterable[str] | None = None) -> list[str]:
    """Register (or re-point) every RGB-T split under ``root``; touches no file.

    Args:
        root: the dataset root holding MFNet/, PST900/, FMB/, SyntheticRGBT/.
        only: families to (re-)register, from "mfnet", "pst900", "fmb", "synthetic"; None = all.
            Re-registering replaces an earlier registration (e.g. a synthetic set generated in a
            temporary folder).

    Returns:
        The registered dataset names.
    """
    families = list(_FAMILIES) if only is None else list(only)
    unknown = sorted(set(families) - set(_FAMILIES))
    if unknown:
        raise ValueError(f"Unknown RGB-T dataset families {unknown}; choose from {sorted(_FAMILIES)}.")
    root = os.fspath(root)
    names = []
    for fam in families:
        spec = _FAMILIES[fam]
        for name in spec.splits:
            if name in DatasetCatalog.list():
                DatasetCatalog.remove(name)
            if name in MetadataCatalog.list():
                MetadataCatalog.remove(name)
            DatasetCatalog.register(name, lambda name=name, root=root: load_rgbt_split(name, root))
            meta = {
                "stuff_classes": list(spec.classes),
                "stuff_colors": [list(c) for c in spec.colors],
                "ignore_label": 255,
                "evaluator_type": "sem_seg",
                "dataset_root": os.path.join(root, spec.folder),
            }
            if spec.has_conditions:
                meta["conditions"] = list(CONDITIONS)
            MetadataCatalog.get(name).set(**meta)
            _ROOTS[name] = root
            names.append(name)
    return names


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
            f"sartm_d2 registers {sorted(_NAME_TO_FAMILY)}."
        )
    meta = MetadataCatalog.get(dataset_name)
    classes = list(meta.stuff_classes)
    colors = [tuple(int(v) for v in c) for c in meta.get("stuff_colors", [(0, 0, 0)] * len(classes))]
    if background_as_ignore:
        return classes[1:], colors[1:]
    return classes, colors


register_all_rgbt(_default_root())
