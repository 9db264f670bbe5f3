"""A user's own RGB-T set: register_rgbt_sem_seg / load_rgbt_sem_seg on generated tiny folders."""

import importlib.util
import logging
import os
import sys

import cv2
import numpy as np
import pytest

import sartm_d2  # noqa: F401  (compat first)

# isort: split
from detectron2.data import DatasetCatalog, MetadataCatalog

from sartm_d2.data import (
    RGBTDatasetMapper,
    default_palette,
    get_classes,
    load_rgbt_sem_seg,
    read_label,
    read_rgbt,
    register_rgbt_sem_seg,
    scan_split,
)
from sartm_d2.data.io import read_image

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = (8, 12)
CLASSES = ["background", "person", "car"]


def write(path, array):
    """Write any format OpenCV encodes (by extension), creating folders."""
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return str(path)


def thermal16(seed):
    return np.random.default_rng(seed).integers(0, 65535, SIZE, endpoint=True).astype(np.uint16)


def make_set(root, names=("a", "b", "c"), rgb_ext=".jpg", th_ext=".tiff", gt_ext=".png"):
    """rgb/ (JPEG), thermal/ (16-bit TIFF), labels/ (PNG) under ``root``."""
    for i, n in enumerate(names):
        write(os.path.join(root, "rgb", n + rgb_ext), np.full((*SIZE, 3), 40 * i, np.uint8))
        write(os.path.join(root, "thermal", n + th_ext), thermal16(i))
        write(os.path.join(root, "labels", n + gt_ext), np.full(SIZE, i % len(CLASSES), np.uint8))
    return [os.path.join(root, d) for d in ("rgb", "thermal", "labels")]


def test_jpeg_rgb_16bit_tiff_thermal_png_labels(tmp_path, own):
    rgb, thermal, labels = make_set(tmp_path)
    own("own_train", rgb, thermal, labels, CLASSES)
    records = DatasetCatalog.get("own_train")
    assert [r["image_id"] for r in records] == ["a", "b", "c"]
    assert records[0] == {
        "file_name": os.path.join(rgb, "a.jpg"),
        "thermal_file_name": os.path.join(thermal, "a.tiff"),
        "sem_seg_file_name": os.path.join(labels, "a.png"),
        "image_id": "a",
    }
    _, t = read_rgbt(records[1], "fixed")
    np.testing.assert_array_equal(t, thermal16(1).astype(np.float32) / 257.0)
    meta = MetadataCatalog.get("own_train")
    assert meta.stuff_classes == CLASSES and meta.ignore_label == 255 and meta.evaluator_type == "sem_seg"
    assert meta.stuff_colors == [list(c) for c in default_palette(3)] and meta.stuff_colors[0] == [0, 0, 0]
    assert meta.test_split is False and "conditions" not in meta.as_dict()
    assert meta.image_root == rgb and meta.thermal_root == thermal and meta.sem_seg_root == labels
    assert meta.dataset_root == str(tmp_path)
    assert get_classes("own_train", True)[0] == ["person", "car"]
    # The same records from the loader alone (detectron2's load_sem_seg style).
    assert load_rgbt_sem_seg(rgb, thermal, labels) == records
    # A training sample through the one mapper.
    mapper = RGBTDatasetMapper(is_train=True, augmentations=[], num_label_classes=3)
    sample = mapper(records[2])
    assert tuple(sample["image"].shape) == (4, *SIZE) and int(sample["sem_seg"].max()) == 2


def test_16bit_tiff_thermal_is_read_exactly(tmp_path):
    t = thermal16(7)
    path = write(tmp_path / "t.tif", t)
    raw = read_image(path)
    assert raw.dtype == np.uint16 and raw.shape == SIZE
    np.testing.assert_array_equal(raw, t)
    rgb = write(tmp_path / "rgb.png", np.zeros((*SIZE, 3), np.uint8))
    _, minmax = read_rgbt({"file_name": rgb, "thermal_file_name": path}, "minmax")
    lo, hi = float(t.min()), float(t.max())
    np.testing.assert_allclose(minmax, (t.astype(np.float32) - lo) * (255.0 / (hi - lo)), rtol=1e-6)


def test_four_channel_rgbt_tiff_and_png(tmp_path, own):
    rgbt = np.random.default_rng(0).integers(0, 256, (*SIZE, 4), dtype=np.uint8)
    write(tmp_path / "rgbt" / "p.png", rgbt)
    rgbt16 = np.random.default_rng(1).integers(0, 65536, (*SIZE, 4), dtype=np.uint16)
    write(tmp_path / "rgbt" / "t.tiff", rgbt16)
    write(tmp_path / "gt" / "p.png", np.zeros(SIZE, np.uint8))
    write(tmp_path / "gt" / "t.bmp", np.ones(SIZE, np.uint8))
    own("own_rgbt", tmp_path / "rgbt", None, tmp_path / "gt", CLASSES)
    records = DatasetCatalog.get("own_rgbt")
    assert [r["thermal_file_name"] == r["file_name"] for r in records] == [True, True]
    rgb, thermal = read_rgbt(records[0])
    np.testing.assert_array_equal(rgb, rgbt[:, :, 2::-1])  # stored B, G, R, T -> R, G, B
    np.testing.assert_array_equal(thermal, rgbt[:, :, 3].astype(np.float32))
    _, thermal = read_rgbt(records[1], "fixed")
    np.testing.assert_array_equal(thermal, rgbt16[:, :, 3].astype(np.float32) / 257.0)
    assert read_label(records[1]["sem_seg_file_name"]).max() == 1
    # thermal_root equal to rgb_root means the same: channel 4.
    assert load_rgbt_sem_seg(tmp_path / "rgbt", tmp_path / "rgbt", tmp_path / "gt") == records


def test_list_file_and_conditions_from_list_files(tmp_path, own):
    make_set(tmp_path, names=("a", "b", "c", "d"))
    (tmp_path / "val.txt").write_text("d\nb.jpg\n\n")  # order kept; an image extension is dropped
    (tmp_path / "day.txt").write_text("a\nb\n")
    (tmp_path / "night.txt").write_text("c\nd\n")
    lists = {"day": tmp_path / "day.txt", "night": tmp_path / "night.txt"}
    d = str(tmp_path)
    own("own_val", f"{d}/rgb", f"{d}/thermal", f"{d}/labels", CLASSES, image_list=tmp_path / "val.txt",
        condition_lists=lists)
    records = DatasetCatalog.get("own_val")
    assert [(r["image_id"], r["condition"]) for r in records] == [("d", "night"), ("b", "day")]
    assert MetadataCatalog.get("own_val").conditions == ["day", "night"]
    # A name listed in both lists, and a set name listed in neither: both reported together.
    (tmp_path / "night.txt").write_text("b\nd\n")
    own("own_all", f"{d}/rgb", f"{d}/thermal", f"{d}/labels", CLASSES, condition_lists=lists)
    with pytest.raises(ValueError) as e:
        DatasetCatalog.get("own_all")
    msg = str(e.value)
    assert "['b'] listed in both" in msg and "day.txt" in msg and "night.txt" in msg
    assert "['c'] (1 in all) have no condition" in msg


def test_conditions_from_a_function_and_select(tmp_path, own):
    names = ("day_1", "night_1", "day_2", "dusk_1")
    make_set(tmp_path, names=names)
    d = str(tmp_path)

    def condition(name):
        """The prefix before the underscore."""
        return name.split("_")[0]

    own("own_night", f"{d}/rgb", f"{d}/thermal", f"{d}/labels", CLASSES, condition_fn=condition,
        select=lambda rs: [r for r in rs if r["condition"] == "night"], test_split=True)
    assert [r["image_id"] for r in DatasetCatalog.get("own_night")] == ["night_1"]
    meta = MetadataCatalog.get("own_night")
    assert meta.test_split is True and "conditions" not in meta.as_dict()
    # Declared conditions: another value is a problem; None from the function too.
    own("own_strict", f"{d}/rgb", f"{d}/thermal", f"{d}/labels", CLASSES,
        condition_fn=lambda n: None if n == "day_2" else condition(n), conditions=["day", "night"])
    with pytest.raises(ValueError) as e:
        DatasetCatalog.get("own_strict")
    msg = str(e.value)
    assert "'dusk_1' -> 'dusk'" in msg and "['day', 'night']" in msg
    assert "['day_2'] (1 in all) have no condition" in msg and "condition_fn <lambda> returned None" in msg
    assert MetadataCatalog.get("own_strict").conditions == ["day", "night"]
    # A hold-out by position.
    own("own_holdout", f"{d}/rgb", f"{d}/thermal", f"{d}/labels", CLASSES, select=lambda rs: rs[::2])
    assert [r["image_id"] for r in DatasetCatalog.get("own_holdout")] == ["day_1", "dusk_1"]


def test_unlabelled_set(tmp_path, own):
    rgb, thermal, _ = make_set(tmp_path)
    own("own_demo", rgb, thermal, None, CLASSES)
    records = DatasetCatalog.get("own_demo")
    assert len(records) == 3 and all("sem_seg_file_name" not in r for r in records)
    assert "sem_seg_root" not in MetadataCatalog.get("own_demo").as_dict()
    sample = RGBTDatasetMapper(is_train=False, augmentations=[], num_label_classes=3)(records[0])
    assert "sem_seg" not in sample and tuple(sample["image"].shape) == (4, *SIZE)
    with pytest.raises(ValueError, match=r"a\.jpg.*no 'sem_seg_file_name'"):
        RGBTDatasetMapper(is_train=True, augmentations=[], num_label_classes=3)(records[0])


def test_registration_is_lazy_and_replaces(tmp_path, own):
    own("own_lazy", tmp_path / "no" / "rgb", tmp_path / "no" / "thermal", tmp_path / "no" / "gt", CLASSES)
    assert not (tmp_path / "no").exists()
    with pytest.raises(FileNotFoundError) as e:
        DatasetCatalog.get("own_lazy")
    assert str(tmp_path / "no" / "rgb") in str(e.value) and "rgb_root" in str(e.value)
    rgb, thermal, labels = make_set(tmp_path)
    own("own_lazy", rgb, thermal, labels, ["x", "y", "z"], colors=[(1, 2, 3), (4, 5, 6), (7, 8, 9)])
    assert len(DatasetCatalog.get("own_lazy")) == 3
    assert MetadataCatalog.get("own_lazy").stuff_colors[2] == [7, 8, 9]


def test_registration_refuses_bad_metadata(tmp_path):
    with pytest.raises(ValueError, match="one .R, G, B. .* per class .3."):
        register_rgbt_sem_seg("own_bad", tmp_path, None, tmp_path, CLASSES, colors=[(0, 0, 0)])
    with pytest.raises(ValueError, match="ignore_label 1 .* not a class id"):
        register_rgbt_sem_seg("own_bad", tmp_path, None, tmp_path, CLASSES, ignore_label=1)
    with pytest.raises(ValueError, match="non-empty list of names"):
        register_rgbt_sem_seg("own_bad", tmp_path, None, tmp_path, "person")
    with pytest.raises(ValueError, match=r"\['dusk'\].*not in conditions"):
        register_rgbt_sem_seg("own_bad", tmp_path, None, tmp_path, CLASSES, conditions=["day"],
                              condition_lists={"dusk": tmp_path / "dusk.txt"})
    assert "own_bad" not in DatasetCatalog


def test_default_palette():
    colors = default_palette(256)
    assert colors[:4] == [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0)]
    assert len(set(colors)) == 256 and default_palette(5) == colors[:5]


# ----------------------------------------------------------------------------- errors
def test_missing_thermal_partners_reported_together(tmp_path, own):
    rgb, thermal, labels = make_set(tmp_path, names=("a", "b", "c", "d"))
    os.remove(os.path.join(thermal, "b.tiff"))
    os.remove(os.path.join(thermal, "d.tiff"))
    os.remove(os.path.join(labels, "d.png"))
    own("own_missing", rgb, thermal, labels, CLASSES)
    with pytest.raises(FileNotFoundError) as e:
        DatasetCatalog.get("own_missing")
    msg = str(e.value)
    assert f"2 name(s) of {rgb!r} have no image in {thermal!r}" in msg
    assert repr(os.path.join(thermal, "b.*")) in msg and repr(os.path.join(thermal, "d.*")) in msg
    assert f"1 name(s) of {rgb!r} have no image in {labels!r}" in msg
    records, problems = scan_split("own_missing")
    assert [r["image_id"] for r in records] == ["a", "c"] and len(problems) == 2


def test_duplicate_stems_name_both_files(tmp_path, own):
    rgb, thermal, labels = make_set(tmp_path)
    write(os.path.join(thermal, "b.png"), np.zeros(SIZE, np.uint8))
    own("own_dup", rgb, thermal, labels, CLASSES)
    with pytest.raises(ValueError) as e:
        DatasetCatalog.get("own_dup")
    msg = str(e.value)
    assert "several files" in msg and repr(os.path.join(thermal, "b.png")) in msg
    assert repr(os.path.join(thermal, "b.tiff")) in msg


def test_jpeg_labels_are_refused(tmp_path, own):
    rgb, thermal, _ = make_set(tmp_path)
    labels = make_set(tmp_path / "j", gt_ext=".jpg")[2]
    own("own_jpg", rgb, thermal, labels, CLASSES)
    with pytest.raises(ValueError, match=r"a\.jpg' is a JPEG: its lossy compression.*PNG") as e:
        DatasetCatalog.get("own_jpg")
    assert "3 JPEG label(s)" in str(e.value)
    with pytest.raises(ValueError, match=r"c\.jpg' is a JPEG"):
        read_label(os.path.join(labels, "c.jpg"))


def test_empty_folder_and_absent_list(tmp_path, own):
    (tmp_path / "rgb").mkdir()
    (tmp_path / "rgb" / "notes.txt").write_text("not an image")
    own("own_empty", tmp_path / "rgb", tmp_path / "th", tmp_path / "gt", CLASSES)
    with pytest.raises(ValueError, match=r"'own_empty': the set is empty: '.*rgb' holds no image"):
        DatasetCatalog.get("own_empty")
    own("own_nolist", tmp_path / "rgb", tmp_path / "th", None, CLASSES, image_list=tmp_path / "train.txt")
    with pytest.raises(FileNotFoundError, match=r"'own_nolist': image list '.*train\.txt' \(image_list\)"):
        DatasetCatalog.get("own_nolist")
    (tmp_path / "train.txt").write_text("x\n")
    with pytest.raises(FileNotFoundError, match=r"thermal folder '.*th' \(thermal_root\)"):
        DatasetCatalog.get("own_nolist")


def test_unknown_name():
    with pytest.raises(KeyError, match="'own_unknown' is not registered"):
        scan_split("own_unknown")


# ----------------------------------------------------------------------------- datasets/check.py
def _load_check():
    spec = importlib.util.spec_from_file_location("sartm_check", os.path.join(_ROOT, "datasets", "check.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


USER_MODULE = """
from sartm_d2.data import register_rgbt_sem_seg

ROOT = {root!r}
register_rgbt_sem_seg(
    "{name}_train", ROOT + "/rgb", ROOT + "/thermal", ROOT + "/labels",
    ["background", "person", "car"], condition_fn=lambda n: "night" if n == "b" else "day",
)
register_rgbt_sem_seg("{name}_demo", ROOT + "/rgb", ROOT + "/thermal", None, ["background", "person", "car"])
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A user's module in tmp_path that registers two sets; the catalogs are cleaned afterwards."""
    make_set(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)
    created = []

    def write_module(name):
        (tmp_path / f"{name}.py").write_text(USER_MODULE.format(root=str(tmp_path), name=name))
        created.append(name)
        return str(tmp_path / f"{name}.py")

    yield write_module
    for name in created:
        sys.modules.pop(name, None)
        for n in (f"{name}_train", f"{name}_demo"):
            if n in DatasetCatalog:
                DatasetCatalog.remove(n)
                MetadataCatalog.remove(n)


def test_check_registers_a_user_module(tmp_path, user_module, caplog):
    check = _load_check()
    path = user_module("my_sets_by_path")
    assert check.main(["--register", path, "my_sets_by_path_train", "my_sets_by_path_demo"]) == 0
    user_module("my_sets_by_name")
    caplog.set_level(logging.INFO, logger="sartm_d2.check")
    assert check.main(["--register", "my_sets_by_name", "my_sets_by_name_demo"]) == 0
    assert "unlabelled" in caplog.text
    # A label outside the classes is found in the labelled set only.
    write(tmp_path / "labels" / "a.png", np.full(SIZE, 9, np.uint8))
    problems = check.check_dataset("my_sets_by_name_train")
    assert len(problems) == 1 and "a.png" in problems[0] and "9" in problems[0]
    assert check.check_dataset("my_sets_by_name_demo") == []
    assert check.main(["--register", "no_such_module_xyz", "my_sets_by_name_demo"]) == 1


def test_check_names_foreign_and_unknown_sets(tmp_path):
    check = _load_check()
    DatasetCatalog.register("plain_d2_set", lambda: [{"file_name": "x.jpg", "sem_seg_file_name": "x.png"}])
    MetadataCatalog.get("plain_d2_set").set(stuff_classes=["a", "b"])
    try:
        (problem,) = check.check_dataset("plain_d2_set")
        assert "not by sartm_d2's RGB-T loader" in problem and "thermal_file_name" in problem
    finally:
        DatasetCatalog.remove("plain_d2_set")
        MetadataCatalog.remove("plain_d2_set")
    (problem,) = check.check_dataset("my_unknown_set")
    assert "'my_unknown_set' is not registered" in problem and "--register MODULE" in problem


def test_errors_of_user_functions_name_the_set(tmp_path, own):
    rgb, thermal, labels = make_set(tmp_path)
    own("own_fn", rgb, thermal, labels, CLASSES, condition_fn=lambda n: {"a": "day"}[n])
    with pytest.raises(ValueError, match=r"'own_fn': condition_fn <lambda> raised for 2 name.*'b': KeyError"):
        DatasetCatalog.get("own_fn")
    own("own_sel", rgb, thermal, labels, CLASSES, select=lambda rs: [r for r in rs if r["condition"]])
    with pytest.raises(ValueError, match=r"'own_sel': select <lambda> raised KeyError"):
        DatasetCatalog.get("own_sel")
