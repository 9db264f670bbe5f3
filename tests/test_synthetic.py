"""The embedded synthetic RGB-T set: determinism, idempotence, layout, and what each modality shows."""

import json
import os

import cv2
import numpy as np
import pytest
from conftest import folder_bytes, local_contrast

import sartm_d2  # noqa: F401  (compat first)
from sartm_d2.data.synthetic import (
    CAR,
    MARKING,
    PERSON,
    SIGN,
    generate_synthetic_rgbt,
    main,
    render_scene,
)
from sartm_d2.data.synthetic_mfnet import generate_synthetic_mfnet

SMALL = {"num_train": 3, "num_val": 1, "num_test": 2, "height": 64, "width": 96}


@pytest.mark.parametrize("generate", [generate_synthetic_rgbt, generate_synthetic_mfnet],
                         ids=["embedded", "mfnet_like"])
def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path, generate):
    a = folder_bytes(generate(tmp_path / "a", seed=3, **SMALL))
    b = folder_bytes(generate(tmp_path / "b", seed=3, **SMALL))
    c = folder_bytes(generate(tmp_path / "c", seed=4, **SMALL))
    assert a == b
    assert sorted(a) == sorted(c)
    images = [k for k in a if k.startswith("images")]
    assert len(images) == 6
    assert all(a[k] != c[k] for k in images)
    # Scene i depends on (seed, i) only: a longer set starts with the same files.
    d = folder_bytes(generate(tmp_path / "d", seed=3, **{**SMALL, "num_test": 4}))
    assert all(d[k] == a[k] for k in images)


def test_layout_names_and_formats(tmp_path):
    out = generate_synthetic_rgbt(tmp_path, **SMALL)
    assert out == os.path.join(str(tmp_path), "SyntheticRGBT")
    splits = {s: open(os.path.join(out, f"{s}.txt")).read().split() for s in ("train", "val", "test")}
    assert [len(splits[s]) for s in ("train", "val", "test")] == [3, 1, 2]
    every = splits["train"] + splits["val"] + splits["test"]
    assert len(set(every)) == 6 and all(n[-1] in "DN" for n in every)
    assert sum(n.endswith("N") for n in every) == 3  # half night
    img = cv2.imread(os.path.join(out, "images", f"{every[0]}.png"), cv2.IMREAD_UNCHANGED)
    lab = cv2.imread(os.path.join(out, "labels", f"{every[0]}.png"), cv2.IMREAD_UNCHANGED)
    assert img.shape == (64, 96, 4) and img.dtype == np.uint8
    assert lab.shape == (64, 96) and set(np.unique(lab)) <= {0, 1, 2, 3, 4}


@pytest.mark.parametrize("generate", [generate_synthetic_rgbt, generate_synthetic_mfnet],
                         ids=["embedded", "mfnet_like"])
def test_idempotent_and_rebuilt_on_new_parameters(tmp_path, generate):
    out = generate(tmp_path, **SMALL)
    probe = os.path.join(out, "images", "00000D.png")
    os.utime(probe, (1, 1))
    generate(tmp_path, **SMALL)
    assert os.stat(probe).st_mtime == 1  # not rewritten
    generate(tmp_path, **{**SMALL, "num_test": 1})
    assert os.stat(probe).st_mtime != 1
    assert not os.path.exists(os.path.join(out, "images", "00005N.png"))  # old extra file removed
    with open(os.path.join(out, "manifest.json")) as f:
        assert json.load(f)["num_test"] == 1


def test_refuses_foreign_folder_and_bad_parameters(tmp_path):
    (tmp_path / "SyntheticRGBT").mkdir()
    (tmp_path / "SyntheticRGBT" / "mine.txt").write_text("x")
    with pytest.raises(ValueError, match="no manifest.json"):
        generate_synthetic_rgbt(tmp_path, **SMALL)
    with pytest.raises(ValueError, match="num_val"):
        generate_synthetic_rgbt(tmp_path / "x", num_val=0)


def test_cli_writes_the_set(tmp_path):
    out = main(
        ["--root", str(tmp_path), "--num-train", "2", "--num-val", "1", "--num-test", "1", "--height", "64"]
    )
    assert len(os.listdir(os.path.join(out, "images"))) == 4


def test_night_warm_objects_are_thermal_only_and_painted_objects_rgb_only():
    contrast = {}
    for day in (True, False):
        for i in range(24):
            rgb, thermal, label = render_scene(np.random.default_rng([0, i]), 128, 160, day)
            grey = rgb.astype(np.float32).mean(axis=2)
            for cls in (PERSON, CAR, SIGN, MARKING):
                c_rgb = local_contrast(grey, label, cls)
                if c_rgb is not None:
                    c_t = local_contrast(thermal.astype(np.float32), label, cls)
                    contrast.setdefault((day, cls), []).append((c_rgb, c_t))
    med = {k: np.median(np.array(v), axis=0) for k, v in contrast.items()}
    for cls in (PERSON, CAR):
        rgb_c, t_c = med[(False, cls)]
        assert rgb_c < 5 and t_c > 50, (cls, rgb_c, t_c)  # night: invisible in RGB, hot in thermal
        assert med[(True, cls)][1] > 40  # warm by day as well
    for cls in (SIGN, MARKING):
        for day in (True, False):
            rgb_c, t_c = med[(day, cls)]
            assert rgb_c > 25 and t_c < 6, (day, cls, rgb_c, t_c)  # painted: RGB only
