"""datasets/own_dataset_example.py end to end on a generated folder of your own pairs: JPEG RGB,
16-bit TIFF thermal, PNG labels; check, a few training iterations, --eval-only and the demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import demo_panel_ok

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W = 64, 96


def _write_own_folder(root, names):
    rng = np.random.default_rng(0)
    for sub in ("rgb", "thermal", "labels"):
        os.makedirs(root / sub)
    for i, name in enumerate(names):
        label = np.zeros((H, W), np.uint8)
        label[10:30, 10 + 5 * (i % 4):40] = 1  # a warm person
        label[40:60, 50:90] = 2  # a warm car
        rgb = rng.integers(60, 120, (H, W, 3), dtype=np.uint8)
        thermal = (20000 + 15000 * (label > 0) + rng.integers(0, 2000, (H, W))).astype(np.uint16)
        assert cv2.imwrite(str(root / "rgb" / f"{name}.jpg"), rgb)
        assert cv2.imwrite(str(root / "thermal" / f"{name}.tiff"), thermal)
        assert cv2.imwrite(str(root / "labels" / f"{name}.png"), label)


@pytest.mark.slow
def test_own_dataset_example_runs_check_train_eval_and_demo(tmp_path):
    data = tmp_path / "OwnRGBT"
    names = [f"scene{i:02d}" for i in range(8)]
    _write_own_folder(data, names)
    for split, subset in (("train", names[:4]), ("val", names[4:6]), ("test", names[6:])):
        (data / f"{split}.txt").write_text("\n".join(subset) + "\n")
    # The example's config with the tiny model and a few iterations (the test's time).
    config = tmp_path / "own_tiny.yaml"
    config.write_text(
        f'_BASE_: ["{ROOT}/configs/own-dataset.yaml", "{ROOT}/configs/quick_schedules/tiny-model.yaml"]\n'
        "MODEL: {DEVICE: cpu, SARTM: {DISTILL: {TEACHER: minilm}}}\n"
        "SOLVER: {MAX_ITER: 3, IMS_PER_BATCH: 2, CHECKPOINT_PERIOD: 1000}\n"
        "INPUT: {MIN_SIZE_TRAIN: [0]}\n"  # no resize to detectron2's default 800 px: the test's time
        "TEST: {EVAL_PERIOD: 0}\nDATALOADER: {NUM_WORKERS: 0}\n"
    )
    out = tmp_path / "out"
    env = {**os.environ, "OWN_RGBT_ROOT": str(data), "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "datasets/own_dataset_example.py", "--config-file", str(config),
           "--output", str(out), "MODEL.SARTM.DISTILL.CACHE_DIR", str(tmp_path / "cache")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "own_rgbt_train: OK" in log and "own_rgbt_test: OK" in log  # datasets/check.py
    assert (out / "model_final.pth").is_file()
    results = json.loads((out / "inference" / "own_rgbt_test" / "sem_seg_results.json").read_text())
    assert results["protocol"]["num_images"] == 2 and results["protocol"]["class_names"] == [
        "background", "person", "car"]
    panels = sorted(os.listdir(out / "demo"))
    assert panels == ["scene06.png", "scene07.png"]
    assert demo_panel_ok(out / "demo" / panels[0], H, W)
