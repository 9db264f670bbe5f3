"""Metadata of the built-in RGB-T sets: class names, palettes and folder layouts (like detectron2's
``builtin_meta.py``). Their registration is ``builtin``.

- MFNet: 9 classes; ``images/`` of 4-channel RGBT PNGs, ``labels/``, ``train/val/test.txt``.
- PST900: 5 classes (label ids as stored; the official SARTM release lists them in a wrong order);
  ``{train,test}/{rgb,thermal,labels}/``. It has no val split: ``pst900_val`` is every
  ``PST900_VAL_EVERY``-th sorted train name from ``PST900_VAL_OFFSET`` (60 of 597), a module
  constant because registration runs at import, before any config exists.
- FMB: 15 classes with 0 = unlabeled; ``{train,test}/{Visible,Infrared,Label}/``.
- The synthetic set (``sartm_d2.data.synthetic``): 5 classes, MFNet layout.
- The synthetic MFNet-like family (``sartm_d2.data.synthetic_mfnet``): MFNet's 9 classes and
  layout, one folder per image size (``SYNTHETIC_MFNET_FOLDER``); 96x128 and 480x640 are registered.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CONDITIONS",
    "FMB_CLASSES",
    "FMB_COLORS",
    "MFNET_CLASSES",
    "MFNET_COLORS",
    "PST900_CLASSES",
    "PST900_COLORS",
    "PST900_VAL_EVERY",
    "PST900_VAL_OFFSET",
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_COLORS",
    "SYNTHETIC_MFNET_FOLDER",
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
# Folder of the synthetic MFNet-like family at one image size: every size has its own, so the
# registered sizes never overwrite each other.
SYNTHETIC_MFNET_FOLDER = "SyntheticMFNet_{height}x{width}"

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


def _synthetic_mfnet(prefix: str, height: int, width: int) -> _Family:
    """The synthetic MFNet-like family at one size: ``<prefix>_{train,val,test}``."""
    folder = SYNTHETIC_MFNET_FOLDER.format(height=height, width=width)
    return _Family(
        folder=folder,
        layout="mfnet",
        classes=tuple(MFNET_CLASSES),
        colors=tuple(MFNET_COLORS),
        splits={f"{prefix}_{split}": (split, "all") for split in ("train", "val", "test")},
        tree=_MFNET_TREE.format(folder=folder, k=8)
        + "\n(generate it with: python -m sartm_d2.data.synthetic_mfnet --root <DETECTRON2_DATASETS> "
        f"--height {height} --width {width})",
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
    "synthetic_mfnet": _synthetic_mfnet("synthetic_mfnet", 96, 128),
    "synthetic_mfnet_480x640": _synthetic_mfnet("synthetic_mfnet_480x640", 480, 640),
}

_NAME_TO_FAMILY = {name: fam for fam, spec in _FAMILIES.items() for name in spec.splits}

