"""RGBTDatasetMapper: thermal formats, the 4-channel output, and RGB/thermal/label correspondence."""

import os

import cv2
import numpy as np
import pytest
import torch

import sartm_d2  # noqa: F401  (compat first)

# isort: split
from conftest import tiny_cfg
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from sartm_d2.config import add_sartm_config, get_sartm_cfg
from sartm_d2.data import RGBTDatasetMapper, read_rgbt

PALETTE = np.array([[10, 200, 30], [60, 20, 220], [120, 90, 10], [180, 250, 140], [240, 130, 80]], np.float32)
TEMP = np.array([20, 60, 100, 140, 180], np.float32)  # thermal value of each class


def _pattern_record(tmp_path, seed=0, blocks=(6, 9), block=4):
    """Random 4x4-aligned blocks of classes; RGB = PALETTE[label], thermal = TEMP[label] (both decodable)."""
    rng = np.random.default_rng(seed)
    label = np.kron(rng.integers(0, 5, size=blocks), np.ones((block, block), np.int64)).astype(np.uint8)
    rgb = PALETTE[label].astype(np.uint8)
    cv2.imwrite(str(tmp_path / "rgb.png"), rgb[:, :, ::-1])
    cv2.imwrite(str(tmp_path / "th.png"), TEMP[label].astype(np.uint8))
    cv2.imwrite(str(tmp_path / "lab.png"), label)
    record = {
        "file_name": str(tmp_path / "rgb.png"),
        "thermal_file_name": str(tmp_path / "th.png"),
        "sem_seg_file_name": str(tmp_path / "lab.png"),
        "image_id": "p",
    }
    return record, label


def _decode(out):
    """Class maps read back from the RGB channels and from the thermal channel."""
    img = out["image"].numpy()
    rgb = img[:3].transpose(1, 2, 0)
    from_rgb = np.argmin(((rgb[:, :, None, :] - PALETTE[None, None]) ** 2).sum(-1), axis=-1)
    from_thermal = np.argmin(np.abs(img[3][:, :, None] - TEMP[None, None]), axis=-1)
    return from_rgb, from_thermal


def _interior(label):
    """Pixels whose 3x3 neighbourhood has one class (bilinear resizing can only blend elsewhere).

    The outer 1-pixel frame is excluded: after resize + crop its unseen neighbours were blended in.
    """
    lab = label.astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    inside = cv2.dilate(lab, kernel) == cv2.erode(lab, kernel)
    inside[[0, -1], :] = False
    inside[:, [0, -1]] = False
    return inside


def _mapper(augs, **kw):
    return RGBTDatasetMapper(is_train=True, augmentations=augs, num_label_classes=5, **kw)


@pytest.mark.parametrize(
    "augs, expected",
    [
        ([], lambda lab: lab),
        ([T.RandomFlip(prob=1.0)], lambda lab: lab[:, ::-1]),
        ([T.RandomFlip(prob=1.0, horizontal=False, vertical=True)], lambda lab: lab[::-1]),
        ([T.ResizeShortestEdge(12, 1000)], lambda lab: lab[1::2, 1::2]),  # exact x0.5 (blocks 4-aligned)
        ([T.ResizeShortestEdge(12, 1000), T.RandomFlip(prob=1.0)], lambda lab: lab[1::2, 1::2][:, ::-1]),
    ],
)
def test_exact_geometric_correspondence(tmp_path, augs, expected):
    record, label = _pattern_record(tmp_path)
    out = _mapper(augs)(record)
    sem = out["sem_seg"].numpy()
    np.testing.assert_array_equal(sem, expected(label))
    from_rgb, from_thermal = _decode(out)
    np.testing.assert_array_equal(from_rgb, sem)
    np.testing.assert_array_equal(from_thermal, sem)
    # Values are exact too (no colour jitter configured), not only the nearest class.
    np.testing.assert_allclose(out["image"][3].numpy(), TEMP[sem], atol=1e-4)


def test_crop_keeps_correspondence_and_takes_a_window(tmp_path):
    np.random.seed(0)  # detectron2's augmentations draw from numpy's global generator
    record, label = _pattern_record(tmp_path, seed=1)
    mapper = _mapper([T.RandomCrop("absolute", (13, 17)), T.RandomFlip(prob=0.5)])
    for _ in range(5):
        out = mapper(record)
        sem = out["sem_seg"].numpy()
        assert sem.shape == (13, 17) and out["image"].shape == (4, 13, 17)
        from_rgb, from_thermal = _decode(out)
        np.testing.assert_array_equal(from_rgb, sem)
        np.testing.assert_array_equal(from_thermal, sem)
        windows = [label[y : y + 13, x : x + 17] for y in range(24 - 12) for x in range(36 - 16)]
        assert any(np.array_equal(sem, w) or np.array_equal(sem, w[:, ::-1]) for w in windows)


def test_upscaling_blends_only_at_boundaries(tmp_path):
    record, label = _pattern_record(tmp_path, seed=2)
    out = _mapper([T.ResizeShortestEdge(48, 1000)])(record)
    sem = out["sem_seg"].numpy()
    np.testing.assert_array_equal(sem, np.kron(label, np.ones((2, 2), np.uint8)))  # nearest, x2
    inside = _interior(sem)
    assert inside.mean() > 0.5
    img = out["image"].numpy()
    np.testing.assert_allclose(img[3][inside], TEMP[sem[inside]], atol=1e-3)
    np.testing.assert_allclose(img[:3].transpose(1, 2, 0)[inside], PALETTE[sem[inside]], atol=1e-3)


def _cfg(**overrides):
    cfg = get_cfg()
    add_sartm_config(cfg)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 5
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


def test_train_mapper_from_cfg_all_augmentations(tmp_path):
    np.random.seed(0)  # detectron2's augmentations draw from numpy's global generator
    record, label = _pattern_record(tmp_path, seed=3)
    cfg = _cfg(
        **{
            "INPUT.MIN_SIZE_TRAIN": (20, 24, 32),
            "INPUT.MAX_SIZE_TRAIN": 1000,
            "INPUT.CROP.ENABLED": True,
            "INPUT.CROP.TYPE": "absolute",
            "INPUT.CROP.SIZE": [16, 16],
            "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA": 0.75,
            "INPUT.RANDOM_FLIP": "horizontal",
            "INPUT.COLOR_AUG": True,
            "INPUT.THERMAL_AUG": False,
        }
    )
    mapper = RGBTDatasetMapper(cfg, is_train=True)
    names = [type(a).__name__ for a in mapper.augmentations.augs]
    assert names == ["ResizeShortestEdge", "RandomCrop_CategoryAreaConstraint", "RandomFlip"]
    rgb_changed = False
    for _ in range(6):
        out = mapper(record)
        sem = out["sem_seg"].numpy()
        assert out["image"].shape == (4, 16, 16) and out["image"].dtype == torch.float32
        assert out["sem_seg"].dtype == torch.int64
        assert (out["height"], out["width"]) == (24, 36)
        inside = _interior(sem)
        # Thermal is never jittered here: exact where resizing did not blend.
        np.testing.assert_allclose(out["image"][3].numpy()[inside], TEMP[sem[inside]], atol=1e-3)
        rgb = out["image"][:3].numpy().transpose(1, 2, 0)
        assert rgb.min() >= 0 and rgb.max() <= 255
        rgb_changed |= not np.allclose(rgb[inside], PALETTE[sem[inside]], atol=0.5)
    assert rgb_changed  # colour jitter reaches RGB only


SYNTHETIC = "configs/synthetic.yaml"


def test_replaced_keys_and_values_fail_naming_their_replacement(tmp_path):
    """INPUT.THERMAL_AUG became INPUT.THERMAL_PHOTOMETRIC, INPUT.THERMAL_NORM "percentile" "stretch"."""
    old = tmp_path / "old.yaml"
    old.write_text(f'_BASE_: "{os.path.abspath(SYNTHETIC)}"\nINPUT:\n  THERMAL_AUG: True\n')
    renamed = r"INPUT\.THERMAL_AUG was renamed to INPUT\.THERMAL_PHOTOMETRIC\.PROB"
    for call in (lambda: get_sartm_cfg(str(old)), lambda: get_sartm_cfg("", ["INPUT.THERMAL_AUG", "True"])):
        with pytest.raises(KeyError, match=renamed):
            call()
    with pytest.raises(ValueError, match="INPUT.THERMAL_NORM 'percentile' was renamed to 'stretch'"):
        build_model(tiny_cfg(SYNTHETIC, "INPUT.THERMAL_NORM", "percentile", "MODEL.SARTM.DISTILL.ENABLED",
                             "False", "MODEL.SARTM.FUSION_LANGUAGE", "False"))


def test_test_mapper_resizes_but_reports_original_size(tmp_path):
    record, label = _pattern_record(tmp_path)
    out = RGBTDatasetMapper(_cfg(**{"INPUT.MIN_SIZE_TEST": 48, "INPUT.MAX_SIZE_TEST": 1000}), False)(record)
    assert out["image"].shape == (4, 48, 72) and (out["height"], out["width"]) == (24, 36)
    assert out["sem_seg"].shape == (48, 72)
    out = RGBTDatasetMapper(_cfg(**{"INPUT.MIN_SIZE_TEST": 0}), is_train=False)(record)
    np.testing.assert_array_equal(out["sem_seg"].numpy(), label)
    assert out["file_name"] == record["file_name"] and out["thermal_file_name"] == record["thermal_file_name"]
    no_label = {k: v for k, v in record.items() if k != "sem_seg_file_name"}
    assert "sem_seg" not in RGBTDatasetMapper(_cfg(**{"INPUT.MIN_SIZE_TEST": 0}), False)(no_label)


def test_background_as_ignore_from_cfg(tmp_path):
    record, label = _pattern_record(tmp_path, seed=5)
    cfg = _cfg(**{"INPUT.MIN_SIZE_TEST": 0, "DATASETS.BACKGROUND_AS_IGNORE": True})
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 4  # 5 stored ids, class 0 ignored
    sem = RGBTDatasetMapper(cfg, is_train=False)(record)["sem_seg"].numpy()
    np.testing.assert_array_equal(sem[label == 0], 255)
    np.testing.assert_array_equal(sem[label > 0], label[label > 0].astype(np.int64) - 1)
    cfg.DATASETS.BACKGROUND_AS_IGNORE = False  # now 4 classes: stored id 4 is out of range
    with pytest.raises(ValueError, match=r"lab\.png.*\b4\b.*0\.\.3"):
        RGBTDatasetMapper(cfg, is_train=False)(record)


# ------------------------------------------------------------------ thermal formats


def _rgbt_files(tmp_path, thermal):
    cv2.imwrite(str(tmp_path / "rgb.png"), np.zeros((*thermal.shape[:2], 3), np.uint8))
    assert cv2.imwrite(str(tmp_path / "th.png"), thermal)
    return {"file_name": str(tmp_path / "rgb.png"), "thermal_file_name": str(tmp_path / "th.png")}


def test_8bit_thermal_one_and_three_channels(tmp_path):
    t = np.random.default_rng(0).integers(0, 256, size=(10, 14)).astype(np.uint8)
    _, th = read_rgbt(_rgbt_files(tmp_path, t))
    assert th.dtype == np.float32
    np.testing.assert_array_equal(th, t)
    _, th3 = read_rgbt(_rgbt_files(tmp_path, np.dstack([t, t, t])))
    np.testing.assert_array_equal(th3, t)
    false_colour = np.dstack([t, 255 - t, t // 2])
    _, thc = read_rgbt(_rgbt_files(tmp_path, false_colour))
    np.testing.assert_array_equal(thc, cv2.cvtColor(false_colour, cv2.COLOR_BGR2GRAY))


def test_16bit_thermal_normalisations(tmp_path):
    t = np.arange(10000, dtype=np.uint16).reshape(100, 100)
    record = _rgbt_files(tmp_path, t)
    # percentile: numpy's linear percentiles of 0..9999 are 99.99 (1st) and 9899.01 (99th)
    _, th = read_rgbt(record, "percentile")
    lo, hi = 99.99, 9899.01
    for v in (0, 50, 99, 150, 5000, 9899, 9950, 9999):
        expected = min(max((v - lo) / (hi - lo) * 255.0, 0.0), 255.0)
        assert th.flat[v] == pytest.approx(expected, abs=1e-3), v
    _, th = read_rgbt(record, "minmax")
    np.testing.assert_allclose(th.ravel(), np.arange(10000) * 255.0 / 9999.0, atol=1e-3)
    _, th = read_rgbt(record, "fixed")
    np.testing.assert_allclose(th.ravel(), np.arange(10000) / 257.0, atol=1e-4)
    _, th = read_rgbt(_rgbt_files(tmp_path, np.full((4, 4), 65535, np.uint16)), "fixed")
    np.testing.assert_allclose(th, 255.0)
    for norm in ("percentile", "minmax"):  # a constant image carries no contrast: mid-grey
        _, th = read_rgbt(_rgbt_files(tmp_path, np.full((4, 4), 300, np.uint16)), norm)
        np.testing.assert_array_equal(th, 127.5)


def test_16bit_norm_from_cfg(tmp_path):
    t = np.arange(10000, dtype=np.uint16).reshape(100, 100)
    record = _rgbt_files(tmp_path, t)
    cfg = _cfg(**{"INPUT.MIN_SIZE_TEST": 0, "INPUT.THERMAL_16BIT_NORM": "fixed"})
    out = RGBTDatasetMapper(cfg, is_train=False)(record)
    np.testing.assert_allclose(out["image"][3].numpy().ravel(), np.arange(10000) / 257.0, atol=1e-4)


def test_mfnet_4channel_png_channel_order(tmp_path):
    bgra = np.zeros((6, 8, 4), np.uint8)
    bgra[..., 0], bgra[..., 1], bgra[..., 2], bgra[..., 3] = 30, 20, 10, 40  # stored R=10 G=20 B=30 T=40
    cv2.imwrite(str(tmp_path / "x.png"), bgra)
    lab = np.zeros((6, 8), np.uint8)
    cv2.imwrite(str(tmp_path / "l.png"), lab)
    p = str(tmp_path / "x.png")
    record = {
        "file_name": p,
        "thermal_file_name": p,
        "sem_seg_file_name": str(tmp_path / "l.png"),
        "condition": "day",
    }
    out = _mapper([])(record)
    assert out["image"].shape == (4, 6, 8)
    assert out["image"][:, 0, 0].tolist() == [10.0, 20.0, 30.0, 40.0]
    assert out["condition"] == "day"


def test_palette_label_png_reads_indices(tmp_path):
    from PIL import Image

    from sartm_d2.data import read_label

    ids = np.array([[0, 1, 2], [3, 4, 255]], np.uint8)
    pil = Image.fromarray(ids, mode="P")
    pil.putpalette([v for c in PALETTE.astype(int) for v in c] + [0] * (3 * 251))
    pil.save(tmp_path / "pal.png")
    np.testing.assert_array_equal(read_label(str(tmp_path / "pal.png")), ids)
