"""The package's predictor (sartm_d2.engine.RGBTPredictor): --eval-only's logits for one image under every
kind of input setting, and the README's Python lines, run as written.

The session's 64x96 synthetic set and a tiny random model (conftest.tiny_checkpoint); the test-time
resize is on (INPUT.MIN_SIZE_TEST 32), so that the mapper's resize is part of what is compared.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY_MODEL, capture_eval_logits

import sartm_d2  # noqa: F401  (compat patches before detectron2)

# isort: split
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog
from detectron2.engine import default_argument_parser
from detectron2.modeling import build_model

from sartm_d2 import get_sartm_cfg
from sartm_d2.data import RGBTDatasetMapper
from sartm_d2.data.io import read_rgbt
from sartm_d2.engine import RGBTPredictor, build_inference_model
from sartm_d2.engine import main as engine_main

CONFIG = os.path.join(ROOT, "configs", "quick_schedules", "synthetic_instant_test.yaml")
H, W = 64, 96
RESIZE = ["INPUT.MIN_SIZE_TEST", "32", "INPUT.MAX_SIZE_TEST", "1000"]


@pytest.fixture(scope="module")
def setup(synthetic, tiny_checkpoint):
    return tiny_checkpoint(CONFIG)


@pytest.mark.parametrize("setting", ["rgbt", "thermal", "rgb-occlude-2"])
def test_predictor_gives_eval_only_logits(setup, setting, monkeypatch):
    """Each test image read as the loader reads it: the predictor's logits are exactly those that
    ``--eval-only`` computes for it under the same TEST.MODALITIES setting (both cameras; one camera,
    the other passed as None; a degradation, seeded by the image id)."""
    opts = [*setup["opts"], *RESIZE]
    seen = capture_eval_logits(monkeypatch)
    args = default_argument_parser().parse_args(
        ["--config-file", CONFIG, "--eval-only", *opts, "TEST.MODALITIES", f"('{setting}',)",
         "OUTPUT_DIR", str(setup["work"] / f"eval_{setting}")])
    engine_main(args)
    records = DatasetCatalog.get("synthetic_rgbt_test")
    assert sorted(seen) == sorted(r["image_id"] for r in records)

    predictor = RGBTPredictor(get_sartm_cfg(CONFIG, opts))
    for record in records:
        rgb, thermal = read_rgbt(record, predictor.thermal_16bit_norm)
        if setting == "thermal":
            rgb = None  # no RGB camera: the model does not compute that stream
        out = predictor(rgb, thermal, setting, image_id=record["image_id"])
        logits = out["sem_seg"]
        assert logits.dtype == torch.float32 and logits.shape == (5, H, W) and logits.device.type == "cpu"
        assert torch.equal(logits, seen[record["image_id"]]), record["image_id"]
        assert out["trust"] is None  # the "paper" fusion estimates no trust
    if setting == "rgb-occlude-2":  # the blob lands where the image id says: another id, other logits
        assert not torch.equal(predictor(rgb, thermal, setting, image_id="another")["sem_seg"], logits)


def _readme_python() -> str:
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    section = text[text.index("\n## Python\n"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_lines_run_as_written(synthetic, tmp_path):
    """The README's lines with a tiny random model in place of the trained weights: the labels are the
    argmax of the model run on the test mapper's own reading of the image."""
    record = DatasetCatalog.get("synthetic_rgbt_test")[0]  # a night image, as the README's
    config = tmp_path / "tiny.yaml"
    config.write_text(f'_BASE_: ["{os.path.join(ROOT, "configs", "synthetic.yaml")}", "{TINY_MODEL}"]\n'
                      "MODEL: {SARTM: {DISTILL: {ENABLED: False}}}\n")
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(get_sartm_cfg(str(config))), save_dir=str(tmp_path)).save("model_final")
    weights = str(tmp_path / "model_final.pth")

    code = _readme_python()
    paths = (("configs/synthetic.yaml", str(config)), ("output/synthetic/model_final.pth", weights),
             ("datasets/SyntheticRGBT/images/00121N.png", record["file_name"]))
    for written, here in paths:
        assert code.count(f'"{written}"') == 1, written
        code = code.replace(f'"{written}"', repr(here))
    names = {}
    exec(compile(code, "README.md", "exec"), names)

    cfg = get_sartm_cfg(str(config), ["MODEL.WEIGHTS", weights])
    model = build_inference_model(cfg)
    with torch.no_grad():
        expected = model([RGBTDatasetMapper(cfg, is_train=False)(record)])[0]["sem_seg"].argmax(0)
    assert names["labels"].shape == (H, W)
    np.testing.assert_array_equal(names["labels"].numpy(), expected.numpy())
    assert names["predictor"].metadata.stuff_classes == ["background", "person", "car", "traffic sign",
                                                         "road marking"]
