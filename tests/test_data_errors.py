"""Every bad data input gives one clear error naming the file; datasets/check.py finds them all."""

import importlib.util
import os

import cv2
import numpy as np
import pytest
from conftest import write_png

import sartm_d2  # noqa: F401  (compat first)

# isort: split
from detectron2.data import DatasetCatalog

from sartm_d2.data import RGBTDatasetMapper, register_all_rgbt
from sartm_d2.data.io import check_label_values, read_label, read_rgbt, remap_background

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))






def _pst_tree(root, names=("a", "b", "c"), size=(8, 12)):
    for n in names:
        for d, arr in (
            ("rgb", np.zeros((*size, 3), np.uint8)),
            ("thermal", np.zeros(size, np.uint8)),
            ("labels", np.ones(size, np.uint8)),
        ):
            write_png(os.path.join(root, "PST900", "test", d, f"{n}.png"), arr)
    return os.path.join(root, "PST900", "test")


def _pair(tmp_path, rgb_shape=(8, 12, 3), thermal=None):
    rgb = write_png(tmp_path / "rgb.png", np.zeros(rgb_shape, np.uint8))
    th = write_png(tmp_path / "th.png", np.zeros((8, 12), np.uint8) if thermal is None else thermal)
    return {"file_name": rgb, "thermal_file_name": th}


def test_missing_thermal_file(tmp_path, restore_registration):
    base = _pst_tree(tmp_path)
    os.remove(os.path.join(base, "thermal", "b.png"))
    register_all_rgbt(tmp_path, only=["pst900"])
    with pytest.raises(FileNotFoundError, match=r"no image in '[^']*thermal'.*thermal.b\.\*"):
        DatasetCatalog.get("pst900_test")
    record = {
        "file_name": os.path.join(base, "rgb", "b.png"),
        "thermal_file_name": os.path.join(base, "thermal", "b.png"),
    }
    with pytest.raises(FileNotFoundError, match=r"thermal.b\.png"):
        read_rgbt(record)


def test_rgb_thermal_size_mismatch(tmp_path):
    record = _pair(tmp_path, thermal=np.zeros((8, 10), np.uint8))
    with pytest.raises(ValueError, match="sizes differ") as e:
        read_rgbt(record)
    assert record["file_name"] in str(e.value) and record["thermal_file_name"] in str(e.value)


def test_label_size_mismatch(tmp_path):
    label = write_png(tmp_path / "lab.png", np.zeros((8, 10), np.uint8))
    with pytest.raises(ValueError, match=r"lab\.png.*10x8.*12x8"):
        read_label(label, expected_shape=(8, 12))


def test_label_value_outside_classes(tmp_path):
    lab = np.zeros((8, 12), np.uint8)
    lab[0, 0], lab[1, 1], lab[2, 2] = 9, 255, 12
    path = write_png(tmp_path / "lab.png", lab)
    with pytest.raises(ValueError, match=r"lab\.png.*9, 12.*0\.\.8 and 255"):
        check_label_values(read_label(path), 9, path)
    check_label_values(read_label(path), 13, path)  # 0..12 + 255 is fine
    mapper = RGBTDatasetMapper(is_train=True, augmentations=[], num_label_classes=9)
    with pytest.raises(ValueError, match=r"lab\.png"):
        mapper({**_pair(tmp_path), "sem_seg_file_name": path})


def test_split_list_naming_a_missing_file(tmp_path, restore_registration):
    base = tmp_path / "MFNet"
    for n in ("00001D", "00002N"):
        write_png(base / "images" / f"{n}.png", np.zeros((4, 4, 4), np.uint8))
        write_png(base / "labels" / f"{n}.png", np.zeros((4, 4), np.uint8))
    (base / "train.txt").write_text("00001D\n00002N\n00003D\n")
    register_all_rgbt(tmp_path, only=["mfnet"])
    with pytest.raises(FileNotFoundError) as e:
        DatasetCatalog.get("mfnet_train")
    msg = str(e.value)
    assert "train.txt" in msg and os.path.join("images", "00003D.*") in msg
    assert os.path.join("labels", "00003D.*") in msg and "00001D" not in msg


def test_truncatedwrite_png(tmp_path):
    record = _pair(tmp_path)
    data = open(record["thermal_file_name"], "rb").read()
    with open(record["thermal_file_name"], "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"th\.png.*truncated"):
        read_rgbt(record)


def test_empty_split(tmp_path, restore_registration):
    base = tmp_path / "MFNet"
    base.mkdir()
    (base / "val.txt").write_text("\n")
    register_all_rgbt(tmp_path, only=["mfnet"])
    with pytest.raises(ValueError, match=r"'mfnet_val'.*empty.*val\.txt"):
        DatasetCatalog.get("mfnet_val")
    (tmp_path / "PST900" / "test" / "rgb").mkdir(parents=True)
    register_all_rgbt(tmp_path, only=["pst900"])
    with pytest.raises(ValueError, match=r"'pst900_test'.*empty"):
        DatasetCatalog.get("pst900_test")


def test_thermal_unsupported_dtype_and_channels(tmp_path):
    record = _pair(tmp_path)
    tif = str(tmp_path / "th.tiff")
    assert cv2.imwrite(tif, np.zeros((8, 12), np.float32))
    with pytest.raises(ValueError, match=r"th\.tiff.*float32"):
        read_rgbt({**record, "thermal_file_name": tif})
    four = write_png(tmp_path / "th4.png", np.zeros((8, 12, 4), np.uint8))
    with pytest.raises(ValueError, match=r"th4\.png.*4 channel"):
        read_rgbt({**record, "thermal_file_name": four})
    # A record that claims an RGBT PNG (thermal == file_name) but points to a 3-channel image.
    with pytest.raises(ValueError, match=r"rgb\.png.*4-channel"):
        read_rgbt({**record, "thermal_file_name": record["file_name"]})
    with pytest.raises(ValueError, match="THERMAL_16BIT_NORM"):
        read_rgbt(record, "median")


def test_label_must_hold_ids(tmp_path):
    colour = np.zeros((8, 12, 3), np.uint8)
    colour[..., 2] = 200
    path = write_png(tmp_path / "col.png", colour)
    with pytest.raises(ValueError, match=r"col\.png.*colour"):
        read_label(path)


def test_remap_background():
    lab = np.array([[0, 1, 2], [8, 255, 0]], np.uint8)
    np.testing.assert_array_equal(remap_background(lab), [[255, 0, 1], [7, 255, 255]])


def _load_check():
    spec = importlib.util.spec_from_file_location("sartm_check", os.path.join(_ROOT, "datasets", "check.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_finds_every_planted_problem(tmp_path, restore_registration):
    check = _load_check()
    base = _pst_tree(tmp_path, names=("a", "b", "c", "d", "e", "f"))
    register_all_rgbt(tmp_path, only=["pst900"])
    assert check.check_dataset("pst900_test") == []
    assert check.main(["pst900_test"]) == 0
    os.remove(os.path.join(base, "thermal", "a.png"))
    write_png(os.path.join(base, "thermal", "b.png"), np.zeros((8, 10), np.uint8))  # size mismatch
    bad = np.ones((8, 12), np.uint8)
    bad[3, 3] = 7
    write_png(os.path.join(base, "labels", "c.png"), bad)  # class 7 of 5
    data = open(os.path.join(base, "rgb", "d.png"), "rb").read()
    with open(os.path.join(base, "rgb", "d.png"), "wb") as f:
        f.write(data[:40])  # truncated
    write_png(os.path.join(base, "labels", "e.png"), np.ones((6, 12), np.uint8))  # label size
    problems = check.check_dataset("pst900_test")
    assert len(problems) == 5, problems
    text = "\n".join(problems)
    for planted in ("thermal/a.*", "thermal/b.png", "labels/c.png", "rgb/d.png", "labels/e.png"):
        assert os.path.join(base, *planted.split("/")) in text, planted
    assert check.main(["pst900_test", "fmb_train"]) == 1
    assert "not found" in check.check_dataset("fmb_train")[0]
