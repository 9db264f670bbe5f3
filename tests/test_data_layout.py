"""The data package laid out like detectron2's, with the public API and the registrations of before.

``sartm_d2/data/datasets.py`` (one 900-line module) became the package ``sartm_d2/data/datasets/``:
``rgbt_sem_seg`` (the folder loader, ``register_rgbt_sem_seg``), ``builtin_meta``, ``builtin`` and
``catalog``; ``import_user_module`` moved to ``sartm_d2.utils.env``. ``tests/data/
builtin_datasets_bff2de7.json`` was written by the single module (commit bff2de7): the names of
``sartm_d2.data.__all__``, and for every built-in set its metadata and the error of a load from an
absent root.
"""

from __future__ import annotations

import importlib
import json
import os

import pytest
from conftest import ROOT
from detectron2.data import DatasetCatalog, MetadataCatalog

import sartm_d2.data as data
from sartm_d2.data import register_all_rgbt

with open(os.path.join(ROOT, "tests", "data", "builtin_datasets_bff2de7.json")) as f:
    BEFORE = json.load(f)
# Public names of the former module sartm_d2.data.datasets (its __all__ and its tables).
FORMER_MODULE_NAMES = [
    "CONDITIONS", "FMB_CLASSES", "FMB_COLORS", "MFNET_CLASSES", "MFNET_COLORS", "PST900_CLASSES",
    "PST900_COLORS", "PST900_VAL_EVERY", "PST900_VAL_OFFSET", "SYNTHETIC_CLASSES", "SYNTHETIC_COLORS",
    "default_palette", "get_classes", "import_user_module", "load_rgbt_sem_seg", "load_rgbt_split",
    "register_all_rgbt", "register_rgbt_sem_seg", "scan_rgbt_sem_seg", "scan_split",
]  # fmt: skip
# Where each public name lives now.
HOME = {
    "sartm_d2.data.datasets.rgbt_sem_seg": [
        "default_palette", "load_rgbt_sem_seg", "register_rgbt_sem_seg", "scan_rgbt_sem_seg",
    ],
    "sartm_d2.data.datasets.builtin": ["register_all_rgbt"],
    "sartm_d2.data.datasets.catalog": ["get_classes", "load_rgbt_split", "scan_split"],
    "sartm_d2.utils.env": ["import_user_module"],
}  # fmt: skip


def test_every_name_of_sartm_d2_data_before_the_split_is_still_there():
    assert set(BEFORE["sartm_d2.data"]) <= set(data.__all__)
    namespace: dict = {}
    exec(f"from sartm_d2.data import {', '.join(BEFORE['sartm_d2.data'])}", namespace)
    assert all(namespace[name] is getattr(data, name) for name in BEFORE["sartm_d2.data"])


def test_the_former_module_path_keeps_its_names_and_each_name_has_one_home():
    datasets = importlib.import_module("sartm_d2.data.datasets")
    assert os.path.basename(datasets.__file__) == "__init__.py"  # a package now, like detectron2's
    for name in FORMER_MODULE_NAMES:
        assert hasattr(datasets, name), name
    for module, names in HOME.items():
        home = importlib.import_module(module)
        for name in names:
            assert getattr(datasets, name) is getattr(home, name), name
            assert getattr(home, name).__module__ == module, name
            if hasattr(data, name):
                assert getattr(data, name) is getattr(home, name), name
    meta = importlib.import_module("sartm_d2.data.datasets.builtin_meta")
    for name in FORMER_MODULE_NAMES:
        if name.isupper():
            assert getattr(datasets, name) is getattr(meta, name), name


# Families registered since then (their own tests: tests/test_synthetic_mfnet.py).
ADDED_SINCE = [f"{prefix}_{split}" for prefix in ("synthetic_mfnet", "synthetic_mfnet_480x640")
               for split in ("train", "val", "test")]


def test_builtin_registrations_equal_those_before_the_split(restore_registration):
    names = register_all_rgbt("no-such-datasets-root")
    assert sorted(names) == sorted([*BEFORE["datasets"], *ADDED_SINCE])
    for name, before in BEFORE["datasets"].items():
        assert name in DatasetCatalog.list(), name
        assert MetadataCatalog.get(name).as_dict() == before["metadata"], name
        with pytest.raises(FileNotFoundError) as info:
            DatasetCatalog.get(name)
        assert f"FileNotFoundError: {info.value}" == before["load_error"], name
