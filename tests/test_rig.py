"""RGB and thermal cameras that are not pixel-aligned: the rig file, the warp, the loader, the
calibration (points, board, scenes), tools/calibrate_rig.py and the alignment in datasets/check.py."""

import json
import logging
import os

import cv2
import numpy as np
import pytest
from conftest import load_script, write_png

import sartm_d2  # noqa: F401  (compat first)

# isort: split
from detectron2.data import DatasetCatalog, MetadataCatalog

from sartm_d2.data import read_rgbt, rig_calibration
from sartm_d2.data.io import read_thermal
from sartm_d2.data.rig import (
    Rig,
    load_rig,
    save_rig,
    size_guess_homography,
    thermal_corners_in_rgb,
    warp_thermal,
)
from sartm_d2.data.rig_calibration import (
    CalibrationError,
    alignment_offset,
    calibrate_from_pattern,
    calibrate_from_points,
    calibrate_from_scenes,
)
from sartm_d2.data.synthetic import render_scene
from sartm_d2.data.synthetic_rig import random_rig_homography, render_board_pair, render_rig_scene

# Small enough to be fast, large enough for a board and for the scenes' edges to fix a homography.
RGB_SIZE, THERMAL_SIZE = (240, 320), (192, 256)


def translation(tx, ty):
    return np.array([[1.0, 0, tx], [0, 1, ty], [0, 0, 1]])


def corner_error(rig: Rig, homography) -> float:
    """Mean distance (RGB pixels) of the thermal image's corners under ``homography`` from ``rig``'s."""
    diff = thermal_corners_in_rgb(rig, homography) - thermal_corners_in_rgb(rig)
    return float(np.linalg.norm(diff, axis=1).mean())


def small_warp(seed):
    """A rig of another resolution, a few pixels off the size guess (the automatic mode's case)."""
    h = random_rig_homography(np.random.default_rng(seed), THERMAL_SIZE, RGB_SIZE, max_shift=8,
                              max_rotation_deg=1.0, scale=(0.97, 1.03))
    return Rig(h, RGB_SIZE, THERMAL_SIZE)


# ----------------------------------------------------------------------------- the file
@pytest.mark.parametrize("ext", [".json", ".yaml", ".yml"])
def test_rig_round_trip(tmp_path, ext):
    rig = Rig(random_rig_homography(np.random.default_rng(0), (384, 512), (480, 640)), (480, 640), (384, 512),
              "ecc", residual_px=0.4, frame_residuals_px={"a": 0.3, "b": 0.5})
    path = save_rig(rig, tmp_path / f"rig{ext}")
    assert os.listdir(tmp_path) == [f"rig{ext}"]  # written through a temporary file, none left behind
    back = load_rig(path)
    assert back == rig and back.path == path
    np.testing.assert_array_equal(back.homography, rig.homography)  # every digit survives the text
    assert back.frame_residuals_px == {"a": 0.3, "b": 0.5} and back.method == "ecc"
    text = open(path).read()
    data = json.loads(text) if ext == ".json" else __import__("yaml").safe_load(text)
    assert data["rgb_size"] == [480, 640] and data["thermal_size"] == [384, 512] and data["version"] == 1
    # A homography saved at any scale is the same rig: stored with H[2][2] == 1.
    scaled = Rig(rig.homography * 3.0, rig.rgb_size, rig.thermal_size, "ecc", 0.4, {"a": 0.3, "b": 0.5})
    assert scaled == rig


def _write(tmp_path, data, name="rig.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


GOOD = {"homography": [[1.25, 0, 3], [0, 1.25, -2], [0, 0, 1]], "rgb_size": [480, 640],
        "thermal_size": [384, 512], "method": "manual"}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"homography": None}, "has no homography"),
        ({"homography": [[1, 0, 0], [0, 1, 0]]}, "3x3 matrix"),
        ({"homography": [[1, 2, 0], [2, 4, 0], [0, 0, 1]]}, "singular or ill-conditioned"),
        ({"homography": [[1e-7, 0, 0], [0, 1, 0], [0, 0, 1]]}, "singular or ill-conditioned"),
        ({"homography": [[1, 0, 0], [0, 1, 0], [-0.01, 0, 1]]}, "to infinity"),
        ({"homography": [[0.8, 0, 0], [0, 0.8, 0], [0, 0, 1]], "rgb_size": [480, 640],
          "thermal_size": [384, 512]}, None),  # a valid narrower view: no error
        ({"homography": [[0.8, 0, 5000], [0, 0.8, 0], [0, 0, 1]]}, "covers 0.00% of the RGB image"),
        ({"rgb_size": [480]}, "rgb_size must be \\[H, W\\]"),
        ({"thermal_size": [384.5, 512]}, "thermal_size must be \\[H, W\\]"),
        ({"method": "guess"}, "method 'guess' is not one of"),
        ({"version": 2}, "version 2"),
        ({"homograpy": 1}, "unknown field"),
        ({"residual_px": -1}, "residual_px must be a number >= 0"),
    ],
)
def test_malformed_rig_files_are_named_with_the_fix(tmp_path, change, message):
    data = {**GOOD, **change}
    data = {k: v for k, v in data.items() if v is not None}
    path = _write(tmp_path, data)
    if message is None:
        load_rig(path)
        return
    with pytest.raises(ValueError, match=message) as e:
        load_rig(path)
    assert path in str(e.value)


def test_missing_unreadable_and_misnamed_rig_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="tools/calibrate_rig.py") as e:
        load_rig(tmp_path / "nope.json")
    assert str(tmp_path / "nope.json") in str(e.value)
    with pytest.raises(ValueError, match="cannot be read as JSON"):
        load_rig(_write(tmp_path, "{not json"))
    with pytest.raises(ValueError, match="cannot be read as YAML"):
        load_rig(_write(tmp_path, "homography: [1, 2\n", "rig.yaml"))
    with pytest.raises(ValueError, match="not a mapping"):
        load_rig(_write(tmp_path, "[1, 2]"))
    with pytest.raises(ValueError, match="must end in .json, .yaml, .yml"):
        load_rig(_write(tmp_path, json.dumps(GOOD), "rig.txt"))
    # A rewritten file is read again (the cache keys on size and modification time).
    path = _write(tmp_path, GOOD)
    assert load_rig(path).homography[0, 2] == 3
    os.utime(path, ns=(1, 1))
    _write(tmp_path, {**GOOD, "homography": [[1.25, 0, 4], [0, 1.25, -2], [0, 0, 1]]})
    assert load_rig(path).homography[0, 2] == 4


# ----------------------------------------------------------------------------- the warp
def test_translation_rig_moves_the_image_by_exactly_that_and_masks_the_rest():
    thermal = np.random.default_rng(0).uniform(0, 255, (6, 8)).astype(np.float32)
    rig = Rig(translation(3, -2), rgb_size=(10, 12), thermal_size=(6, 8))
    warped, valid = warp_thermal(thermal, rig)
    assert warped.shape == valid.shape == (10, 12) and warped.dtype == np.float32
    ys, xs = np.mgrid[0:10, 0:12]
    expected_valid = (xs - 3 >= 0) & (xs - 3 < 8) & (ys + 2 >= 0) & (ys + 2 < 6)
    np.testing.assert_array_equal(valid, expected_valid)
    np.testing.assert_array_equal(np.isnan(warped), ~expected_valid)
    np.testing.assert_allclose(warped[valid], thermal[ys[valid] + 2, xs[valid] - 3], atol=1e-4)


def test_a_half_pixel_shift_keeps_the_outer_half_pixels_and_interpolates():
    thermal = np.arange(6 * 8, dtype=np.float32).reshape(6, 8)
    warped, valid = warp_thermal(thermal, Rig(translation(0.5, 0), rgb_size=(6, 10), thermal_size=(6, 8)))
    # RGB x sees thermal x - 0.5: valid for x - 0.5 in [-0.5, 7.5], so x = 0..8; value: mean of neighbours,
    # the border pixel replicated at x = 0 and x = 8.
    assert valid.all(axis=0).tolist() == [True] * 9 + [False]
    row = thermal[0]
    expected = np.concatenate([[row[0]], (row[:-1] + row[1:]) / 2, [row[-1]]])
    np.testing.assert_allclose(warped[0, :9], expected, atol=0.05)


def test_the_size_guess_rig_is_opencvs_resize():
    thermal = np.random.default_rng(1).uniform(0, 255, (24, 32)).astype(np.float32)
    rig = Rig(size_guess_homography((24, 32), (48, 64)), rgb_size=(48, 64), thermal_size=(24, 32))
    warped, valid = warp_thermal(thermal, rig)
    assert valid.all()  # the thermal image covers the whole RGB image, to the outer pixel edges
    resized = cv2.resize(thermal, (64, 48), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(warped, resized, atol=0.5)


def test_warp_refuses_a_thermal_image_of_another_size():
    rig = Rig(translation(0, 0), rgb_size=(10, 12), thermal_size=(6, 8), path="cams/rig.json")
    expected = "thermal image 'img_7.png' is 9x6 .*'cams/rig.json' was made for thermal images of 8x6"
    with pytest.raises(ValueError, match=expected):
        warp_thermal(np.zeros((6, 9), np.float32), rig, path="img_7.png")


# ----------------------------------------------------------------------------- the loader
def _rig_pair(tmp_path, rgb_size=(12, 16), thermal_size=(6, 8), name="a"):
    rgb = write_png(tmp_path / "rgb" / f"{name}.png", np.full((*rgb_size, 3), 90, np.uint8))
    values = np.random.default_rng(2).integers(1000, 60000, thermal_size).astype(np.uint16)
    thermal = str(tmp_path / "thermal" / f"{name}.tiff")
    os.makedirs(os.path.dirname(thermal), exist_ok=True)
    assert cv2.imwrite(thermal, values)
    # Thermal pixels twice as large, 3 RGB pixels to the right: x_rgb = 2 x_thermal + 3.
    rig = save_rig(Rig(translation(3, 0) @ np.diag([2.0, 2.0, 1.0]), (12, 16), (6, 8)), tmp_path / "rig.json")
    return {"file_name": rgb, "thermal_file_name": thermal}, rig


def test_read_rgbt_with_a_rig_accepts_two_sizes_and_warps_once(tmp_path):
    record, rig_file = _rig_pair(tmp_path)
    with pytest.raises(ValueError, match="sizes differ") as e:
        read_rgbt(record)
    assert "rig file" in str(e.value) and "tools/calibrate_rig.py" in str(e.value)
    for rgb, thermal in (read_rgbt(record, "percentile", rig=rig_file),
                         read_rgbt({**record, "rig_file": rig_file}, "percentile"),
                         read_rgbt(record, "percentile", rig=load_rig(rig_file))):
        assert rgb.shape == (12, 16, 3) and thermal.shape == (12, 16) and thermal.dtype == np.float32
        # Normalised in the thermal frame (the 16-bit stretch of the whole thermal image), then warped.
        normalised = read_thermal(record["thermal_file_name"], "percentile")
        expected, valid = warp_thermal(normalised, load_rig(rig_file))
        np.testing.assert_array_equal(np.isfinite(thermal), valid)
        np.testing.assert_allclose(thermal[valid], expected[valid], atol=1e-5)
        # x_thermal = (x - 3) / 2 in [-0.5, 7.5]: RGB columns 2..15 (every row: y / 2 in [-0.5, 5.5]).
        assert not valid[:, :2].any() and valid[:, 2:].all()


def test_read_rgbt_names_the_image_whose_size_is_not_the_rigs(tmp_path):
    record, rig_file = _rig_pair(tmp_path)
    other = write_png(tmp_path / "rgb" / "big.png", np.zeros((14, 16, 3), np.uint8))
    with pytest.raises(ValueError) as e:
        read_rgbt({**record, "file_name": other}, rig=rig_file)
    assert all(s in str(e.value) for s in (other, "16x14", rig_file, "16x12", "RGB image"))
    small = write_png(tmp_path / "thermal" / "small.png", np.zeros((5, 8), np.uint8))
    with pytest.raises(ValueError) as e:
        read_rgbt({**record, "thermal_file_name": small, "rig_file": rig_file})
    assert all(s in str(e.value) for s in (small, "8x5", rig_file, "8x6", "thermal image"))


def test_registration_with_a_rig_puts_it_on_every_record_and_checks_it_once(tmp_path, own):
    _rig_pair(tmp_path, name="a")
    record, rig_file = _rig_pair(tmp_path, name="b")
    own("rig_set", tmp_path / "rgb", tmp_path / "thermal", None, ["bg", "person"], rig=rig_file)
    records = DatasetCatalog.get("rig_set")
    assert [r["rig_file"] for r in records] == [rig_file, rig_file]
    assert MetadataCatalog.get("rig_set").rig_file == rig_file
    _, thermal = read_rgbt(records[1])
    assert thermal.shape == (12, 16) and np.isnan(thermal).any()
    with pytest.raises(FileNotFoundError, match="'rig_missing' \\(rig=\\): Rig file .*nope.json' not found"):
        own("rig_missing", tmp_path / "rgb", tmp_path / "thermal", None, ["bg"], rig=tmp_path / "nope.json")
    bad = _write(tmp_path, {**GOOD, "homography": [[1, 2, 0], [2, 4, 0], [0, 0, 1]]}, "bad.json")
    with pytest.raises(ValueError, match="'rig_bad' \\(rig=\\): .*bad.json.*singular"):
        own("rig_bad", tmp_path / "rgb", tmp_path / "thermal", None, ["bg"], rig=bad)
    assert "rig_missing" not in DatasetCatalog and "rig_bad" not in DatasetCatalog


def test_the_example_module_registers_its_folders_rig(tmp_path, monkeypatch):
    _rig_pair(tmp_path, name="a")
    os.rename(tmp_path / "rig.json", tmp_path / "rig.json.off")
    for split in ("train", "val", "test"):
        (tmp_path / f"{split}.txt").write_text("a\n")
    os.makedirs(tmp_path / "labels")
    # The example's import registers the sets at its default root (test_configs.py's import does, for
    # configs/own-dataset.yaml): put them back there after, or remove them if they were not registered.
    registered = "own_rgbt_train" in DatasetCatalog
    default_root = os.getenv("OWN_RGBT_ROOT", os.path.join("datasets", "OwnRGBT"))
    monkeypatch.setenv("OWN_RGBT_ROOT", str(tmp_path))
    example = load_script("datasets/own_dataset_example.py", "own_example_rig")
    try:
        assert "rig_file" not in MetadataCatalog.get("own_rgbt_train").as_dict()  # aligned: no rig
        os.rename(tmp_path / "rig.json.off", tmp_path / "rig.json")
        example.register(str(tmp_path))
        assert MetadataCatalog.get("own_rgbt_test").rig_file == str(tmp_path / "rig.json")
    finally:
        if registered:
            example.register(default_root)
        else:
            for split in ("train", "val", "test"):
                DatasetCatalog.remove(f"own_rgbt_{split}")
                MetadataCatalog.remove(f"own_rgbt_{split}")


# ----------------------------------------------------------------------------- calibration
def test_points_recover_a_known_homography_and_drop_a_misclick():
    rig = Rig(random_rig_homography(np.random.default_rng(3), THERMAL_SIZE, RGB_SIZE), RGB_SIZE, THERMAL_SIZE)
    rng = np.random.default_rng(4)
    src = np.stack([rng.uniform(0, 255, 12), rng.uniform(0, 191, 12)], 1)
    dst = cv2.perspectiveTransform(src[None], rig.homography)[0]
    exact = calibrate_from_points(src, dst, thermal_size=THERMAL_SIZE, rgb_size=RGB_SIZE)
    assert corner_error(rig, exact.rig.homography) < 1e-3 and exact.rig.method == "points"
    assert exact.rig.residual_px < 1e-3 and len(exact.residuals_px) == 12
    clicked = dst + np.random.default_rng(5).normal(0, 0.5, dst.shape)
    clicked[7] += (25, -10)  # a mis-click
    cal = calibrate_from_points(src, clicked, thermal_size=THERMAL_SIZE, rgb_size=RGB_SIZE)
    assert corner_error(rig, cal.rig.homography) < 1.0
    assert cal.residuals_px["pair 8"] > 20 and any("pair 8" in n for n in cal.notes)
    assert cal.rig.residual_px < 1.0  # the mean of the kept pairs
    with pytest.raises(CalibrationError, match="3 point pair\\(s\\): a homography needs at least 4"):
        calibrate_from_points(src[:3], dst[:3], thermal_size=THERMAL_SIZE, rgb_size=RGB_SIZE)
    line = np.stack([np.linspace(0, 200, 6), np.linspace(0, 100, 6)], 1)
    with pytest.raises(CalibrationError, match="on a line"):
        calibrate_from_points(line, line * 1.25, thermal_size=THERMAL_SIZE, rgb_size=RGB_SIZE)
    with pytest.raises(CalibrationError, match="exceeds 0.1 px"):
        calibrate_from_points(src, clicked, thermal_size=THERMAL_SIZE, rgb_size=RGB_SIZE, max_residual_px=0.1)


def _boards(rig, n=2, **kwargs):
    """(name, thermal, RGB) of ``n`` board poses seen through ``rig``."""
    out = []
    for i in range(n):
        rng = np.random.default_rng([7, i])
        rgb, thermal = render_board_pair(rng, rig.homography, RGB_SIZE, THERMAL_SIZE, **kwargs)
        out.append((f"board{i}", thermal, rgb))
    return out


@pytest.mark.parametrize("kind, pattern", [("checkerboard", (9, 6)), ("circles", (7, 5))])
def test_a_heated_board_recovers_a_known_homography(kind, pattern):
    rig = Rig(random_rig_homography(np.random.default_rng(6), THERMAL_SIZE, RGB_SIZE), RGB_SIZE, THERMAL_SIZE)
    frames = _boards(rig, pattern=pattern, kind=kind)
    cal = calibrate_from_pattern(frames, pattern, kind=kind)
    assert corner_error(rig, cal.rig.homography) < 0.25  # sub-pixel points (whole pixels: about 0.35)
    assert cal.rig.method == kind and set(cal.rig.frame_residuals_px) == {"board0", "board1"}
    blank = [("blank", np.full(THERMAL_SIZE, 100, np.uint8), np.full((*RGB_SIZE, 3), 100, np.uint8))]
    with pytest.raises(CalibrationError, match="No frame shows the .* in both images"):
        calibrate_from_pattern(blank, pattern, kind=kind)


def test_a_board_found_from_another_corner_in_one_camera_is_matched(monkeypatch):
    """Detectors may start the grid at the opposite corner in one camera (a heated board's inverted
    polarity): the calibration must pair the points by the upright order, not trust the detector's."""
    rig = Rig(random_rig_homography(np.random.default_rng(6), THERMAL_SIZE, RGB_SIZE), RGB_SIZE, THERMAL_SIZE)
    frames = _boards(rig)
    plain = calibrate_from_pattern(frames, (9, 6)).rig.homography
    detect = rig_calibration.detect_pattern

    def reversed_in_thermal(image, pattern, kind="checkerboard"):
        points = detect(image, pattern, kind)
        return points[::-1] if image.ndim == 2 else points

    monkeypatch.setattr(rig_calibration, "detect_pattern", reversed_in_thermal)
    cal = calibrate_from_pattern(frames, (9, 6))
    assert corner_error(rig, cal.rig.homography) < 0.25
    np.testing.assert_allclose(cal.rig.homography, plain, rtol=1e-6, atol=1e-9)  # the very same pairs


def _scenes(rig, n, seed=0):
    """(name, thermal, RGB) of ``n`` day scenes seen through ``rig``."""
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        rgb, thermal, _ = render_rig_scene(rng, rig.homography, RGB_SIZE, THERMAL_SIZE)
        out.append((f"pair{i}", thermal, rgb))
    return out


def test_scenes_recover_a_small_warp_within_a_pixel():
    rig = small_warp(0)
    assert corner_error(rig, size_guess_homography(THERMAL_SIZE, RGB_SIZE)) > 5  # the start is off
    cal = calibrate_from_scenes(_scenes(rig, 4))
    assert corner_error(rig, cal.rig.homography) <= 1.0
    assert cal.rig.method == "ecc" and set(cal.residuals_px) <= {f"pair{i}" for i in range(4)}
    assert all(v < 1.5 for v in cal.residuals_px.values())


def test_scenes_refuse_flat_pairs_too_few_frames_and_a_frame_that_disagrees():
    noise = np.random.default_rng(8)
    flat = [(f"flat{i}", noise.normal(100, 2, THERMAL_SIZE).astype(np.float32),
             noise.normal(120, 3, (*RGB_SIZE, 3)).clip(0, 255).astype(np.uint8)) for i in range(4)]
    with pytest.raises(CalibrationError, match="0 frame\\(s\\) of 4 with edges in both images") as e:
        calibrate_from_scenes(flat)
    assert "flat0: the thermal and RGB image is flat" in str(e.value)
    rig = small_warp(1)
    scenes = _scenes(rig, 4, seed=1)
    with pytest.raises(CalibrationError, match="2 frame\\(s\\) of 2; at least 3"):
        calibrate_from_scenes(scenes[:2])
    # One pair out of sync: its thermal image shows the scene 6 pixels further right.
    name, thermal, rgb = scenes[2]
    drifted = cv2.warpAffine(thermal, np.float32([[1, 0, 6 / 1.25], [0, 1, 0]]), thermal.shape[::-1],
                             borderMode=cv2.BORDER_REFLECT)
    with pytest.raises(CalibrationError, match="disagree with the others.*pair2 [4-7]\\.\\d\\d px"):
        calibrate_from_scenes([*scenes[:2], (name, drifted, rgb), scenes[3]])


# ----------------------------------------------------------------------------- the tool
def test_calibrate_rig_tool_writes_a_rig_or_refuses_without_writing(tmp_path, capsys):
    tool = load_script("tools/calibrate_rig.py", "calibrate_rig_tool")
    rig = small_warp(2)
    rng = np.random.default_rng(9)
    src = np.stack([rng.uniform(0, 255, 10), rng.uniform(0, 191, 10)], 1)
    dst = cv2.perspectiveTransform(src[None], rig.homography)[0]
    csv_file = tmp_path / "clicks.csv"
    csv_file.write_text("x_rgb,y_rgb,x_thermal,y_thermal\n" + "".join(
        f"{b[0]},{b[1]},{a[0]},{a[1]}\n" for a, b in zip(src, dst)))
    out = tmp_path / "rig.yaml"
    argv = ["points", "--points", str(csv_file), "--rgb-size", "240x320", "--thermal-size", "192x256"]
    assert tool.main([*argv, "--output", str(out)]) == 0
    assert corner_error(rig, load_rig(out).homography) < 1e-3
    assert "pair 10: 0.00" in capsys.readouterr().out
    # Too few pairs: refused, status 1, no file.
    csv_file.write_text("x_thermal,y_thermal,x_rgb,y_rgb\n1,2,3,4\n5,6,7,8\n")
    assert tool.main([*argv, "--output", str(tmp_path / "no.json")]) == 1
    assert "refused (points)" in capsys.readouterr().err and not (tmp_path / "no.json").exists()
    csv_file.write_text("x_thermal,y_thermal,x_rgb\n1,2,3\n")
    assert tool.main([*argv, "--output", str(tmp_path / "no.json")]) == 2
    assert "no column(s) ['y_rgb']" in capsys.readouterr().err
    # Scenes from folders paired by stem; a flat scene is refused.
    for d in ("rgb", "thermal"):
        os.makedirs(tmp_path / d)
    for i in range(3):
        write_png(tmp_path / "rgb" / f"{i}.png", np.full((*RGB_SIZE, 3), 50, np.uint8))
        write_png(tmp_path / "thermal" / f"{i}.png", np.full(THERMAL_SIZE, 80, np.uint8))
    argv = ["ecc", "--rgb", str(tmp_path / "rgb"), "--thermal", str(tmp_path / "thermal")]
    assert tool.main([*argv, "--output", str(tmp_path / "no.json")]) == 1
    assert "is flat" in capsys.readouterr().err and not (tmp_path / "no.json").exists()


# ----------------------------------------------------------------------------- the checker
def _check_module():
    return load_script("datasets/check.py", "sartm_check_rig")


def test_alignment_offset_measures_a_known_shift():
    rgb, thermal, _ = render_scene(np.random.default_rng([0, 3]), 240, 320, day=True)
    for dx, dy in ((0, 0), (5, -3), (-12, 7)):
        moved = cv2.warpAffine(thermal.astype(np.float32), np.float32([[1, 0, dx], [0, 1, dy]]), (320, 240),
                               borderMode=cv2.BORDER_REFLECT)
        found = alignment_offset(rgb, moved)
        assert found is not None and abs(found.dx - dx) < 0.5 and abs(found.dy - dy) < 0.5, (dx, dy, found)
    flat = np.full((240, 320), 100, np.float32)
    assert alignment_offset(rgb, flat) is None and alignment_offset(rgb[:20, :20], thermal[:20, :20]) is None
    # Edges along one direction only (a horizon and nothing else): the shift along it cannot be told.
    horizon = np.zeros((240, 320), np.float32)
    horizon[120:] = 200
    assert alignment_offset(np.repeat(horizon[:, :, None], 3, 2).astype(np.uint8), horizon) is None
    # A repeating pattern one period off looks aligned: no answer rather than a wrong one.
    stripes = np.tile(((np.arange(320) // 8) % 2 * 150 + 50).astype(np.float32), (240, 1))
    stripes[120:] += 40
    rolled = np.roll(stripes, 16, axis=1)
    assert alignment_offset(np.repeat(stripes[:, :, None], 3, 2).astype(np.uint8), rolled) is None


def test_check_names_a_misaligned_pair_and_keeps_its_other_checks(tmp_path, own, caplog):
    check = _check_module()
    for i, seed in enumerate((1, 3, 4)):  # scenes whose edges run both ways (see the horizon above)
        rgb, thermal, label = render_scene(np.random.default_rng([0, seed]), 240, 320, day=True)
        if i == 1:  # a bumped mount: this pair's thermal image is 8 px off
            thermal = cv2.warpAffine(thermal, np.float32([[1, 0, 8], [0, 1, 0]]), (320, 240),
                                     borderMode=cv2.BORDER_REFLECT)
        write_png(tmp_path / "rgb" / f"p{i}.png", rgb[:, :, ::-1])
        write_png(tmp_path / "thermal" / f"p{i}.png", thermal)
        write_png(tmp_path / "labels" / f"p{i}.png", label)
    write_png(tmp_path / "labels" / "p2.png", np.full((240, 320), 9, np.uint8))  # a label outside the classes
    classes = [f"c{k}" for k in range(5)]
    own("aligned_set", tmp_path / "rgb", tmp_path / "thermal", tmp_path / "labels", classes)
    rows = []
    problems = check.check_dataset("aligned_set", rows=rows)
    assert len(problems) == 2, problems
    off = next(p for p in problems if "offset" in p)
    assert str(tmp_path / "thermal" / "p1.png") in off and "no rig file" in off and "--max-offset 4" in off
    assert any("p2.png" in p and "9" in p for p in problems)
    assert [r["status"] for r in rows] == ["ok", "off", "ok"]
    assert abs(float(rows[1]["dx_px"]) - 8) < 0.5 and abs(float(rows[1]["dy_px"])) < 0.5
    assert all(float(r["offset_px"]) < 0.5 for r in (rows[0], rows[2]))
    (label_problem,) = [p for p in problems if p != off]
    assert check.check_dataset("aligned_set", max_offset=10) == [label_problem]
    assert check.check_dataset("aligned_set", alignment=False) == [label_problem]
    csv_file = tmp_path / "alignment.csv"
    caplog.set_level(logging.INFO, logger="sartm_d2.check")
    assert check.main(["aligned_set", "--alignment-csv", str(csv_file)]) == 1
    assert csv_file.read_text().splitlines()[0].startswith("dataset,image_id,file_name")
    assert "3 of 3 pairs measured" in caplog.text


def test_check_measures_the_alignment_under_the_rig(tmp_path, own):
    check = _check_module()
    rig = small_warp(3)
    rig_file = save_rig(rig, tmp_path / "rig.json")
    for i in (2, 3):
        rng = np.random.default_rng([4, i])
        rgb, thermal, _ = render_rig_scene(rng, rig.homography, RGB_SIZE, THERMAL_SIZE)
        write_png(tmp_path / "rgb" / f"p{i}.png", rgb[:, :, ::-1])
        write_png(tmp_path / "thermal" / f"p{i}.png", thermal)
    own("rig_checked", tmp_path / "rgb", tmp_path / "thermal", None, ["bg", "person"], rig=rig_file)
    assert check.check_dataset("rig_checked") == []
    # The same pairs under a rig 6 px off: both named, with the rig file.
    save_rig(rig.replace(homography=translation(6, 0) @ rig.homography), rig_file)
    problems = check.check_dataset("rig_checked")
    assert len(problems) == 2 and all(rig_file in p and "under rig file" in p for p in problems)
