"""The synthetic MFNet-like family: determinism, idempotence, registration, and what each modality shows."""

import json
import os

import cv2
import numpy as np
import pytest
from conftest import local_contrast

import sartm_d2  # noqa: F401  (compat first)

# isort: split
from detectron2.data import DatasetCatalog, MetadataCatalog

from sartm_d2.data import read_label, read_rgbt, register_all_rgbt, synthetic, synthetic_mfnet
from sartm_d2.data.datasets import MFNET_CLASSES, MFNET_COLORS
from sartm_d2.data.synthetic_mfnet import (
    BIKE,
    CAR,
    COLD_CLASSES,
    PERSON,
    UNLABELED,
    WARM_CLASSES,
    generate_synthetic_mfnet,
    main,
    render_scene,
)

SMALL = {"num_train": 3, "num_val": 1, "num_test": 2, "height": 64, "width": 96}


def _scenes(render, n, height=96, width=128):
    """Scenes 0..n-1 of a seed-0 set as a generator writes them (even index = day)."""
    for i in range(n):
        yield (i % 2 == 0, *render(np.random.default_rng([0, i]), height, width, i % 2 == 0))


def _thermal_noise(thermal):
    """The sensor noise of a thermal image, from the differences of neighbouring columns (robust MAD)."""
    diff = np.diff(thermal.astype(np.float64), axis=1)
    return 1.4826 * float(np.median(np.abs(diff - np.median(diff)))) / np.sqrt(2)


def _objects(label):
    """(number of objects, their areas as fractions of the image): connected regions of each class."""
    areas = []
    for cls in np.unique(label):
        if cls != UNLABELED:
            _, _, stats, _ = cv2.connectedComponentsWithStats((label == cls).astype(np.uint8), connectivity=8)
            areas += list(stats[1:, cv2.CC_STAT_AREA] / label.size)
    return len(areas), areas


def test_one_folder_per_size(tmp_path):
    """Each size has its own folder, and rebuilding one leaves the other (idempotence and rebuilding:
    tests/test_synthetic.py, for both generators)."""
    out = generate_synthetic_mfnet(tmp_path, **SMALL)
    assert out == os.path.join(str(tmp_path), "SyntheticMFNet_64x96")
    other = generate_synthetic_mfnet(tmp_path, **{**SMALL, "height": 32, "width": 64})
    assert other == os.path.join(str(tmp_path), "SyntheticMFNet_32x64")
    generate_synthetic_mfnet(tmp_path, **{**SMALL, "num_test": 1})
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest["num_test"] == 1 and manifest["generator"] == "synthetic_mfnet"
    assert len(os.listdir(os.path.join(other, "images"))) == 6  # the other size is untouched
    (tmp_path / "x" / "SyntheticMFNet_64x96").mkdir(parents=True)
    (tmp_path / "x" / "SyntheticMFNet_64x96" / "mine.txt").write_text("x")
    with pytest.raises(ValueError, match="no manifest.json.*generate_synthetic_mfnet"):
        generate_synthetic_mfnet(tmp_path / "x", **SMALL)
    with pytest.raises(ValueError, match="generate_synthetic_mfnet: num_val"):
        generate_synthetic_mfnet(tmp_path / "y", num_val=0)


def test_cli_defaults_to_96x128(tmp_path):
    out = main(["--root", str(tmp_path), "--num-train", "2", "--num-val", "1", "--num-test", "1"])
    assert out == os.path.join(str(tmp_path), "SyntheticMFNet_96x128")
    names = sorted(os.listdir(os.path.join(out, "images")))
    assert names == ["00000D.png", "00001N.png", "00002D.png", "00003N.png"]
    assert cv2.imread(os.path.join(out, "images", names[0]), cv2.IMREAD_UNCHANGED).shape == (96, 128, 4)


def test_registered_names_load_the_layout_with_mfnet_classes(tmp_path, restore_registration):
    generate_synthetic_mfnet(tmp_path, num_train=4, num_val=2, num_test=2)
    names = register_all_rgbt(tmp_path, only=["synthetic_mfnet"])
    assert names == ["synthetic_mfnet_train", "synthetic_mfnet_val", "synthetic_mfnet_test"]
    splits = {n: DatasetCatalog.get(n) for n in names}
    assert [len(r) for r in splits.values()] == [4, 2, 2]
    for records in splits.values():  # day and night alternate: every even-sized split is balanced
        conditions = [r["condition"] for r in records]
        assert conditions.count("day") == conditions.count("night") == len(records) // 2
    seen = set()
    for r in (r for records in splits.values() for r in records):
        rgb, thermal = read_rgbt(r)
        label = read_label(r["sem_seg_file_name"])
        assert rgb.shape == (96, 128, 3) and thermal.shape == (96, 128) and label.shape == (96, 128)
        assert cv2.imread(r["file_name"], cv2.IMREAD_UNCHANGED).shape[2] == 4
        assert r["condition"] == ("day" if r["image_id"].endswith("D") else "night")
        seen |= set(np.unique(label).tolist())
    assert seen <= set(range(9)) and {CAR, PERSON} <= seen
    meta = MetadataCatalog.get("synthetic_mfnet_test")
    assert meta.stuff_classes == MFNET_CLASSES and [tuple(c) for c in meta.stuff_colors] == MFNET_COLORS
    assert meta.conditions == ["day", "night"] and meta.test_split is True
    assert MetadataCatalog.get("synthetic_mfnet_val").test_split is False


def test_480x640_names_point_where_the_generator_writes(tmp_path, monkeypatch, restore_registration):
    written = []
    monkeypatch.setattr(synthetic_mfnet, "_write_mfnet_layout", lambda out, *a: written.append(out) or out)
    generate_synthetic_mfnet(tmp_path, height=480, width=640)
    generate_synthetic_mfnet(tmp_path)
    names = register_all_rgbt(tmp_path, only=["synthetic_mfnet_480x640", "synthetic_mfnet"])
    assert names[:3] == [f"synthetic_mfnet_480x640_{s}" for s in ("train", "val", "test")]
    assert MetadataCatalog.get("synthetic_mfnet_480x640_train").dataset_root == written[0]
    assert MetadataCatalog.get("synthetic_mfnet_train").dataset_root == written[1]
    assert MetadataCatalog.get("synthetic_mfnet_480x640_val").stuff_classes == MFNET_CLASSES
    # Absent: the error names the folder and the command that writes it.
    for name, size in (("synthetic_mfnet_480x640_val", "--height 480 --width 640"),
                       ("synthetic_mfnet_test", "--height 96 --width 128")):
        with pytest.raises(FileNotFoundError) as e:
            DatasetCatalog.get(name)
        assert MetadataCatalog.get(name).dataset_root in str(e.value)
        assert f"python -m sartm_d2.data.synthetic_mfnet --root <DETECTRON2_DATASETS> {size}" in str(e.value)


def test_warm_classes_are_warm_ordered_by_level_and_dark_in_rgb_at_night():
    pooled, contrast = {}, {}
    for day, rgb, thermal, label in _scenes(render_scene, 32):
        noise = _thermal_noise(thermal)
        for cls in (UNLABELED, *WARM_CLASSES):
            pooled.setdefault(cls, []).append(thermal[label == cls].astype(np.float64))
        for cls in WARM_CLASSES:
            c_rgb = local_contrast(rgb.astype(np.float32), label, cls)
            if c_rgb is not None:
                c_t = local_contrast(thermal.astype(np.float32), label, cls) / noise
                contrast.setdefault((day, cls), []).append((c_rgb, c_t))
    mean = {cls: float(np.concatenate(v).mean()) for cls, v in pooled.items()}
    # Thermal level as well as shape: car < bike < person in mean, all above the street.
    assert mean[UNLABELED] + 30 < mean[CAR] < mean[BIKE] - 10 < mean[PERSON] - 20, mean
    med = {k: np.median(np.array(v), axis=0) for k, v in contrast.items()}
    for cls in WARM_CLASSES:
        assert med[(True, cls)][1] > 5 and med[(False, cls)][1] > 15, (cls, med)  # in noise units
        assert med[(False, cls)][0] < 6, (cls, med)  # night: nearly invisible in RGB
        assert med[(True, cls)][0] > 25, (cls, med)  # day: its own colours


def test_cold_classes_are_invisible_in_thermal_and_visible_in_rgb():
    contrast = {}
    for day, rgb, thermal, label in _scenes(render_scene, 32):
        noise = _thermal_noise(thermal)
        for cls in COLD_CLASSES:
            c_rgb = local_contrast(rgb.astype(np.float32), label, cls, ring=5)
            if c_rgb is not None:
                c_t = local_contrast(thermal.astype(np.float32), label, cls, ring=5) / noise
                contrast.setdefault((day, cls), []).append((c_rgb, c_t))
    assert {cls for _, cls in contrast} == set(COLD_CLASSES)
    for (day, cls), values in contrast.items():
        c_rgb, c_t = np.median(np.array(values), axis=0)
        assert c_t < 1.0, (day, MFNET_CLASSES[cls], c_t)  # within the noise of the street behind
        assert c_rgb > 40, (day, MFNET_CLASSES[cls], c_rgb)  # painted, retro-reflective at night


def test_more_and_smaller_objects_than_the_embedded_set():
    stats = {}
    for name, render in (("embedded", synthetic.render_scene), ("mfnet", render_scene)):
        counts, areas = [], []
        for _, _, _, label in _scenes(render, 24):
            n, a = _objects(label)
            counts.append(n)
            areas += a
        stats[name] = (np.mean(counts), np.mean(areas))
    assert stats["mfnet"][0] > 1.6 * stats["embedded"][0], stats
    assert stats["mfnet"][1] < 0.75 * stats["embedded"][1], stats


def test_one_480x640_scene_keeps_the_modalities_apart():
    rgb, thermal, label = render_scene(np.random.default_rng([0, 1]), 480, 640, day=False)
    assert rgb.shape == (480, 640, 3) and thermal.shape == label.shape == (480, 640)
    present = set(np.unique(label).tolist())
    assert present <= set(range(9)) and {CAR, PERSON} <= present and present & set(COLD_CLASSES)
    noise = _thermal_noise(thermal)
    t, colour = thermal.astype(np.float32), rgb.astype(np.float32)
    for cls in sorted(present - {UNLABELED}):
        c_t = local_contrast(t, label, cls, ring=15) / noise
        c_rgb = local_contrast(colour, label, cls, ring=15)
        if cls in WARM_CLASSES:
            assert c_t > 15 and c_rgb < 6, (MFNET_CLASSES[cls], c_t, c_rgb)
        else:
            assert c_t < 1.0 and c_rgb > 40, (MFNET_CLASSES[cls], c_t, c_rgb)
