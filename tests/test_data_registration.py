"""Registration of the RGB-T datasets on tiny fixture trees of every publisher layout."""

import os

import numpy as np
import pytest
from conftest import write_png

import sartm_d2  # noqa: F401  (compat first)

# isort: split
from detectron2.data import DatasetCatalog, MetadataCatalog

from sartm_d2.data import get_classes, register_all_rgbt
from sartm_d2.data.datasets import PST900_VAL_EVERY, PST900_VAL_OFFSET
from sartm_d2.data.synthetic import generate_synthetic_rgbt


def make_mfnet(root, splits, day_night_lists=None, size=(8, 12)):
    base = os.path.join(root, "MFNet")
    for split, names in splits.items():
        for n in names:
            write_png(os.path.join(base, "images", f"{n}.png"), np.full((*size, 4), 7, np.uint8))
            write_png(os.path.join(base, "labels", f"{n}.png"), np.zeros(size, np.uint8))
        with open(os.path.join(base, f"{split}.txt"), "w") as f:
            f.write("\n".join(names) + "\n")
    for cond, names in (day_night_lists or {}).items():
        with open(os.path.join(base, f"test_{cond}.txt"), "w") as f:
            f.write("\n".join(names) + "\n")
    return base


def make_folders(root, folder, dirs, splits, size=(8, 12)):
    rgb_d, th_d, lab_d = dirs
    for split, names in splits.items():
        for n in names:
            write_png(os.path.join(root, folder, split, rgb_d, f"{n}.png"), np.zeros((*size, 3), np.uint8))
            write_png(os.path.join(root, folder, split, th_d, f"{n}.png"), np.zeros(size, np.uint8))
            write_png(os.path.join(root, folder, split, lab_d, f"{n}.png"), np.zeros(size, np.uint8))


def test_registration_is_lazy_and_absent_data_says_where_and_what(tmp_path, restore_registration):
    names = register_all_rgbt(tmp_path / "nothing_here")
    assert {"mfnet_test_night", "pst900_val", "fmb_test", "synthetic_rgbt_train"} <= set(names)
    assert not (tmp_path / "nothing_here").exists()
    with pytest.raises(FileNotFoundError) as e:
        DatasetCatalog.get("pst900_train")
    msg = str(e.value)
    assert os.path.join(str(tmp_path), "nothing_here", "PST900") in msg and "thermal/<name>.png" in msg


def test_mfnet_counts_conditions_and_metadata(tmp_path, restore_registration):
    root = tmp_path
    base = make_mfnet(
        root,
        {"train": ["00001D", "00002N", "00003D"], "val": ["00004N"], "test": ["00005D", "00006N", "00007N"]},
    )
    register_all_rgbt(root)
    train = DatasetCatalog.get("mfnet_train")
    assert [r["image_id"] for r in train] == ["00001D", "00002N", "00003D"]
    assert [r["condition"] for r in train] == ["day", "night", "day"]
    r = train[0]
    assert r["file_name"] == r["thermal_file_name"] == os.path.join(base, "images", "00001D.png")
    assert r["sem_seg_file_name"] == os.path.join(base, "labels", "00001D.png")
    assert len(DatasetCatalog.get("mfnet_val")) == 1
    day = [r["image_id"] for r in DatasetCatalog.get("mfnet_test_day")]
    night = [r["image_id"] for r in DatasetCatalog.get("mfnet_test_night")]
    assert day == ["00005D"] and night == ["00006N", "00007N"]
    meta = MetadataCatalog.get("mfnet_test")
    assert meta.stuff_classes[:3] == ["unlabeled", "car", "person"] and len(meta.stuff_classes) == 9
    assert len(meta.stuff_colors) == 9 and meta.ignore_label == 255 and meta.evaluator_type == "sem_seg"
    assert meta.conditions == ["day", "night"]


def test_mfnet_day_night_lists_win_over_suffix(tmp_path, restore_registration):
    make_mfnet(
        tmp_path,
        {"train": ["a1"], "val": ["a2"], "test": ["t1", "t2", "t3N"]},
        day_night_lists={"day": ["t1", "t3N"], "night": ["t2"]},
    )
    register_all_rgbt(tmp_path, only=["mfnet"])
    assert [r["image_id"] for r in DatasetCatalog.get("mfnet_test_day")] == ["t1", "t3N"]
    assert [r["condition"] for r in DatasetCatalog.get("mfnet_test")] == ["day", "night", "day"]
    # A train name without D/N suffix and not in the lists has no condition: one clear error.
    with pytest.raises(ValueError, match="'a1'.*no condition"):
        DatasetCatalog.get("mfnet_train")


def test_pst900_holdout_rule_and_class_order(tmp_path, restore_registration):
    train_names = [f"{i:03d}" for i in range(23)]
    make_folders(tmp_path, "PST900", ("rgb", "thermal", "labels"), {"train": train_names, "test": ["x", "y"]})
    register_all_rgbt(tmp_path)
    held = train_names[PST900_VAL_OFFSET::PST900_VAL_EVERY]
    assert held == ["000", "010", "020"]
    val = [r["image_id"] for r in DatasetCatalog.get("pst900_val")]
    train = [r["image_id"] for r in DatasetCatalog.get("pst900_train")]
    assert val == held
    assert sorted(train + val) == train_names and not set(train) & set(val)
    assert [r["image_id"] for r in DatasetCatalog.get("pst900_trainval")] == train_names
    test = DatasetCatalog.get("pst900_test")
    assert len(test) == 2
    assert test[0]["thermal_file_name"] == os.path.join(str(tmp_path), "PST900", "test", "thermal", "x.png")
    assert "condition" not in test[0]
    classes, colors = get_classes("pst900_test", background_as_ignore=False)
    assert classes == ["background", "fire_extinguisher", "backpack", "hand_drill", "survivor"]
    assert classes[1] == "fire_extinguisher" and classes[3] == "hand_drill"
    assert colors[1] == (0, 0, 255)
    assert "conditions" not in MetadataCatalog.get("pst900_test").as_dict()


def test_fmb_counts_and_14_vs_15_classes(tmp_path, restore_registration):
    make_folders(tmp_path, "FMB", ("Visible", "Infrared", "Label"), {"train": ["b", "a", "c"], "test": ["d"]})
    register_all_rgbt(tmp_path)
    train = DatasetCatalog.get("fmb_train")
    assert [r["image_id"] for r in train] == ["a", "b", "c"]
    assert train[0]["file_name"].endswith(os.path.join("FMB", "train", "Visible", "a.png"))
    assert train[0]["sem_seg_file_name"].endswith(os.path.join("FMB", "train", "Label", "a.png"))
    assert len(DatasetCatalog.get("fmb_test")) == 1
    classes15, colors15 = get_classes("fmb_test", background_as_ignore=False)
    classes14, colors14 = get_classes("fmb_test", background_as_ignore=True)
    assert len(classes15) == 15 and classes15[0] == "unlabeled" and classes15[8] == "person"
    assert classes14 == classes15[1:] and colors14 == colors15[1:] and classes14[-1] == "pole"


def test_synthetic_set_through_the_mfnet_loader(tmp_path, restore_registration):
    # Its own set (not conftest's session set): the registration of a fresh root is what is tested.
    generate_synthetic_rgbt(tmp_path, num_train=4, num_val=2, num_test=4, height=32, width=64)
    names = register_all_rgbt(tmp_path, only=["synthetic"])
    assert names == ["synthetic_rgbt_train", "synthetic_rgbt_val", "synthetic_rgbt_test"]
    counts = [len(DatasetCatalog.get(n)) for n in names]
    assert counts == [4, 2, 4]
    test = DatasetCatalog.get("synthetic_rgbt_test")
    assert [r["condition"] for r in test] == ["day", "night", "day", "night"]
    classes, _ = get_classes("synthetic_rgbt_train", background_as_ignore=False)
    assert classes == ["background", "person", "car", "traffic sign", "road marking"]
    assert MetadataCatalog.get("synthetic_rgbt_val").conditions == ["day", "night"]


def test_get_classes_unknown_dataset():
    with pytest.raises(KeyError, match="not_a_dataset"):
        get_classes("not_a_dataset", False)


def test_unknown_family_is_rejected():
    with pytest.raises(ValueError, match="kitti"):
        register_all_rgbt("x", only=["kitti"])


def test_test_splits_are_marked_evaluation_only(tmp_path, restore_registration):
    names = register_all_rgbt(tmp_path)
    marked = sorted(n for n in names if MetadataCatalog.get(n).test_split)
    assert marked == sorted(
        [
            "mfnet_test",
            "mfnet_test_day",
            "mfnet_test_night",
            "pst900_test",
            "fmb_test",
            "synthetic_rgbt_test",
            "synthetic_mfnet_test",
            "synthetic_mfnet_480x640_test",
        ]
    )
    assert MetadataCatalog.get("pst900_val").test_split is False
    assert MetadataCatalog.get("synthetic_mfnet_480x640_val").test_split is False
    assert MetadataCatalog.get("mfnet_val").get("test_split", True) is False


def test_builtin_metadata_names_the_folders(tmp_path, restore_registration):
    register_all_rgbt(tmp_path, only=["mfnet", "fmb"])
    mfnet = MetadataCatalog.get("mfnet_val")
    assert mfnet.dataset_root == os.path.join(str(tmp_path), "MFNet")
    assert mfnet.image_root == mfnet.thermal_root == os.path.join(str(tmp_path), "MFNet", "images")
    assert mfnet.image_list == os.path.join(str(tmp_path), "MFNet", "val.txt")
    fmb = MetadataCatalog.get("fmb_test")
    assert fmb.thermal_root == os.path.join(str(tmp_path), "FMB", "test", "Infrared")
    assert fmb.sem_seg_root == os.path.join(str(tmp_path), "FMB", "test", "Label")
