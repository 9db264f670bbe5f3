"""A user's own degradation family: one registered class in a --register module, no package edit; it then
works in training (INPUT.DEGRADATION_AUG_KINDS), evaluation (TEST.MODALITIES, the settings table) and
tools/eval_onnx.py, like a built-in family."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from conftest import load_script
from detectron2.engine import default_argument_parser

from sartm_d2.data.degradations import DEGRADATION_REGISTRY, degrade, parse_setting, setting_names
from sartm_d2.engine import main

CONFIG = "configs/quick_schedules/synthetic_instant_test.yaml"
MODULE = '''
import numpy as np

from sartm_d2.data.degradations import DEGRADATION_REGISTRY, Degradation

CALLS = []


@DEGRADATION_REGISTRY.register()
class LensDropsForTest(Degradation):
    """Black drops on the RGB lens, 3 per level."""

    name = "lensdrops"
    cameras = ("rgb",)
    levels = (1, 2)

    def __call__(self, image, level, rng):
        CALLS.append(level)
        out = image.copy()
        h, w = image.shape[:2]
        for _ in range(3 * level):
            y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
            out[max(0, y - 4):y + 4, max(0, x - 4):x + 4] = 0.0
        return out
'''


@pytest.fixture(scope="module")
def own_module(tmp_path_factory):
    path = tmp_path_factory.mktemp("own") / "lens_drops_for_test.py"
    path.write_text(MODULE)
    yield str(path)
    DEGRADATION_REGISTRY._obj_map.pop("LensDropsForTest", None)  # the rest of the suite sees the built-ins
    sys.modules.pop("lens_drops_for_test", None)


@pytest.fixture(scope="module")
def exported(synthetic, tiny_checkpoint):
    return tiny_checkpoint(CONFIG)


@pytest.mark.slow
def test_own_family_trains_evaluates_and_runs_on_the_exported_graph(own_module, exported, tmp_path):
    opts = [*exported["opts"], "OUTPUT_DIR", str(tmp_path / "train"), "SOLVER.MAX_ITER", "2",
            "INPUT.DEGRADATION_AUG_PROB", "1.0", "INPUT.DEGRADATION_AUG_KINDS", "('lensdrops',)",
            "TEST.MODALITIES", "('rgbt', 'seen')"]
    args = default_argument_parser().parse_args(["--config-file", CONFIG, *opts])
    args.register = [own_module]
    results = main(args)
    user = sys.modules["lens_drops_for_test"]
    assert set(user.CALLS) <= {1, 2} and len(user.CALLS) >= 8  # every training sample was degraded
    table = tmp_path / "train" / "inference" / "synthetic_rgbt_test" / "settings.json"
    settings = json.loads(table.read_text())
    assert list(settings["settings"]) == ["rgbt", "rgb-lensdrops-1", "rgb-lensdrops-2"]
    assert settings["families"]["rgb-lensdrops-2"] == "seen"
    assert set(results) == {f"synthetic_rgbt_test/{s}" for s in settings["settings"]}

    # The exported graph runs the same settings through the same loader: --eval-only's numbers.
    export_model = load_script("tools/export_model.py", "export_model_for_own_degradation")
    export_model.main(["--config-file", CONFIG, "--output", str(tmp_path / "onnx_model"), "--height", "64",
                       "--width", "96", "--register", own_module, *exported["opts"]])
    eval_onnx = load_script("tools/eval_onnx.py", "eval_onnx_for_own_degradation")
    onnx = str(tmp_path / "onnx_model" / "model.onnx")
    onnx_results = eval_onnx.main(["--config-file", CONFIG, "--onnx", onnx, "--register", own_module,
                                   "--output", str(tmp_path / "onnx"), *exported["opts"],
                                   "TEST.MODALITIES", "('rgb-lensdrops-1', 'rgb-lensdrops-2')"])
    eval_args = default_argument_parser().parse_args(
        ["--eval-only", "--config-file", CONFIG, *exported["opts"], "OUTPUT_DIR", str(tmp_path / "eval"),
         "TEST.MODALITIES", "('rgb-lensdrops-1', 'rgb-lensdrops-2')"])
    eval_args.register = [own_module]
    torch_results = main(eval_args)
    for key in ("synthetic_rgbt_test/rgb-lensdrops-1", "synthetic_rgbt_test/rgb-lensdrops-2"):
        assert onnx_results[key]["sem_seg"]["mIoU_all"] == pytest.approx(
            torch_results[key]["sem_seg"]["mIoU_all"], abs=0.2)


def test_own_family_names_levels_and_cameras(own_module):
    from sartm_d2.utils.env import import_user_module

    import_user_module(own_module)
    names = setting_names()
    at = names.index("rgb-glare-3") + 1  # after the built-in RGB families, at its own levels
    assert names[at:at + 3] == ["rgb-lensdrops-1", "rgb-lensdrops-2", "thermal-noise-1"]
    assert parse_setting("rgb-lensdrops-2") == ("rgbt", ("rgb", "lensdrops", 2))
    with pytest.raises(ValueError, match=r"lensdrops \(rgb; levels 1/2\)"):
        parse_setting("rgb-lensdrops-3")
    with pytest.raises(ValueError, match="Unknown input setting 'thermal-lensdrops-1'"):
        parse_setting("thermal-lensdrops-1")
    image = np.full((32, 48, 3), 200.0, np.float32)
    out = degrade(image, "lensdrops", 2, seed_key="a")
    assert (out == 0).any() and np.array_equal(out, degrade(image, "lensdrops", 2, seed_key="a"))
    assert not np.array_equal(out, degrade(image, "lensdrops", 2, seed_key="b"))


def test_a_bad_family_is_refused_with_its_name():
    from sartm_d2.data.degradations import Degradation, degradation_kinds

    class BadNameForTest(Degradation):
        name = "rain-drops"

        def __call__(self, image, level, rng):
            return image

    DEGRADATION_REGISTRY.register(BadNameForTest)
    try:
        with pytest.raises(ValueError, match="BadNameForTest: name 'rain-drops' must be letters"):
            degradation_kinds()
    finally:
        DEGRADATION_REGISTRY._obj_map.pop("BadNameForTest")
