#!/usr/bin/env python
"""What a rig is worth to segmentation: a model trained on aligned pairs, evaluated on misaligned ones.

    DETECTRON2_DATASETS=datasets python tools/measure_rig_segmentation.py \\
        --weights output/synthetic/model_final.pth [--partial-view-weights PATH] \\
        --json benchmarks/results/cpu_rig_segmentation.json

The embedded set's test split (``configs/synthetic.yaml``, 128x160) becomes misaligned pairs: each
aligned thermal image is seen by a thermal camera of ``--thermal-size`` through a known rig
(``sartm_d2.data.synthetic_rig.thermal_camera_view``: anti-aliased, the scene mirrored beyond the RGB
image's borders). The pairs are written to ``--work`` and registered as datasets with their rig file
(``register_rgbt_sem_seg(..., rig=)``), so each evaluation goes through the normal test loader,
mapper and evaluator (``Trainer.test``), as a user's would. Rows, each mIoU_all over the test split:

- aligned: the embedded test split itself;
- the true rig, and the rig that ``tools/calibrate_rig.py ecc`` recovers from 8 unlabelled pairs of
  the train split (started from ``--fov-ratio``, the thermal over RGB field of view as a datasheet
  gives it);
- no rig: the thermal image resized to the RGB size (the size-guess rig, which is ``cv2.resize``);
- a partial view: a second rig whose thermal camera sees part of the RGB view; NaN outside it (what
  the loader gives) against the outside filled with a constant (0: OpenCV's default warp border, and
  128), over all pixels, inside and outside the view (the labels set to ignore outside / inside it).
  The filled thermal images are stored as 16-bit PNGs read with INPUT.THERMAL_16BIT_NORM "fixed"
  (value / 257: within 1/500 of a grey level of the float warp).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile

import sartm_d2  # noqa: F401  (compat patches + registration before detectron2)

# isort: split

import cv2
import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.utils.logger import setup_logger

from sartm_d2 import get_sartm_cfg
from sartm_d2.benchmark.measure import cpu_flags, machine_info
from sartm_d2.data import get_classes, read_label, read_rgbt, register_rgbt_sem_seg
from sartm_d2.data.rig import Rig, corner_error, load_rig, save_rig, size_guess_homography, warp_thermal
from sartm_d2.data.synthetic_rig import rig_homography, thermal_camera_view
from sartm_d2.engine import Trainer, build_inference_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST, TRAIN = "synthetic_rgbt_test", "synthetic_rgbt_train"
# The known rigs, about the RGB centre on top of the size guess, within tools/measure_rig.py's ranges
# scaled to a 128x160 image (shift up to 7.5 px, rotation up to 3 degrees). FULL: a wider thermal view
# that covers the whole RGB image; PARTIAL: a narrower one.
FULL = {"shift": (6.0, -4.0), "rotation_deg": 2.5, "scale": 1.15, "keystone": (0.01, -0.01)}
PARTIAL = {"shift": (-14.0, 8.0), "rotation_deg": -2.0, "scale": 0.7, "keystone": (0.0, 0.0)}
FILLS = (0.0, 128.0)
IGNORE = 255

logger = logging.getLogger("sartm_d2.tools.measure_rig_segmentation")


def _size(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def _write(path: str, image: np.ndarray) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not cv2.imwrite(path, image):
        raise OSError(f"Could not write {path!r}.")
    return path


class Sets:
    """The misaligned pairs, written once under ``work`` and registered as ``rigseg_<variant>``."""

    def __init__(self, work: str, thermal_size: tuple[int, int]):
        self.work = work
        records = DatasetCatalog.get(TEST)
        rgb, _ = read_rgbt(records[0])
        self.rgb_size = rgb.shape[:2]
        self.thermal_size = thermal_size
        sizes = (self.rgb_size, thermal_size)
        self.full = Rig(rig_homography(thermal_size, self.rgb_size, **FULL), *sizes)
        self.partial = Rig(rig_homography(thermal_size, self.rgb_size, **PARTIAL), *sizes)
        self.resize = Rig(size_guess_homography(thermal_size, self.rgb_size), *sizes)
        if not warp_thermal(np.zeros(thermal_size, np.float32), self.full)[1].all():
            raise ValueError("The full-view rig does not cover the whole RGB image: widen FULL.")
        self.view = warp_thermal(np.zeros(thermal_size, np.float32), self.partial)[1]
        rigs = {"true": self.full, "partial": self.partial, "resize": self.resize}
        self.files = {n: save_rig(rig, os.path.join(work, f"rig_{n}.json")) for n, rig in rigs.items()}
        self.classes, self.colors = get_classes(TEST, False)
        self.names = [r["image_id"] for r in records]
        self.test_list = os.path.join(work, "test.txt")
        with open(self.test_list, "w") as f:
            f.write("\n".join(self.names) + "\n")
        for record in records:
            self._write_pair(record)
        self.calibration = os.path.join(work, "calibration")
        for record in DatasetCatalog.get(TRAIN)[:8]:  # unlabelled pairs: no label is written
            rgb, thermal = read_rgbt(record)
            _write(os.path.join(self.calibration, "rgb", f"{record['image_id']}.png"), rgb[:, :, ::-1])
            seen = thermal_camera_view(thermal, self.full.homography, thermal_size)
            _write(os.path.join(self.calibration, "thermal", f"{record['image_id']}.png"), seen)

    def _write_pair(self, record: dict) -> None:
        name, w = record["image_id"], self.work
        rgb, thermal = read_rgbt(record)  # the aligned pair: thermal in the RGB frame
        _write(os.path.join(w, "rgb", f"{name}.png"), rgb[:, :, ::-1])
        _write(os.path.join(w, "thermal_full", f"{name}.png"),
               thermal_camera_view(thermal, self.full.homography, self.thermal_size))
        partial = thermal_camera_view(thermal, self.partial.homography, self.thermal_size)
        _write(os.path.join(w, "thermal_partial", f"{name}.png"), partial)
        warped, seen = warp_thermal(partial, self.partial)
        for fill in FILLS:
            filled = np.where(seen, warped, np.float32(fill))
            _write(os.path.join(w, f"thermal_fill{fill:g}", f"{name}.png"),
                   np.round(np.clip(filled, 0, 255) * 257).astype(np.uint16))
        label = read_label(record["sem_seg_file_name"])
        _write(os.path.join(w, "labels", f"{name}.png"), label)
        for region, keep in (("inside", self.view), ("outside", ~self.view)):
            kept = np.where(keep, label, IGNORE).astype(np.uint8)
            _write(os.path.join(w, f"labels_{region}", f"{name}.png"), kept)

    def register(self, variant: str, thermal: str | None, rig: str | None, labels: str = "labels") -> str:
        """``rigseg_<variant>``: the RGB images, the thermal folder ``thermal`` (None: the embedded set's
        own RGBT images) under ``rig``, the labels folder ``labels``."""
        name = f"rigseg_{variant}"
        rgb_root = os.path.join(self.work, "rgb") if thermal else os.path.dirname(DatasetCatalog.get(TEST)[0]
                                                                                  ["file_name"])
        register_rgbt_sem_seg(name, rgb_root, os.path.join(self.work, thermal) if thermal else None,
                              os.path.join(self.work, labels), self.classes, colors=self.colors,
                              image_list=self.test_list, test_split=True, rig=rig)
        return name


def recover(sets: Sets, fov_ratio: float) -> tuple[Rig, str]:
    """tools/calibrate_rig.py's automatic mode on the 8 calibration pairs, as a user runs it."""
    out = os.path.join(sets.work, "rig_recovered.json")
    folder = sets.calibration
    cmd = [sys.executable, os.path.join(REPO, "tools", "calibrate_rig.py"), "ecc",
           "--rgb", os.path.join(folder, "rgb"), "--thermal", os.path.join(folder, "thermal"),
           "--fov-ratio", f"{fov_ratio:g}", "--output", out]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"tools/calibrate_rig.py refused: {proc.stderr.strip()}")
    return load_rig(out), proc.stdout


def evaluate(cfg, model, name: str) -> float:
    """mIoU_all of ``model`` on the registered ``name`` through the test loader and evaluator."""
    c = cfg.clone()
    c.defrost()
    c.DATASETS.TEST = (name,)
    c.OUTPUT_DIR = os.path.join(cfg.OUTPUT_DIR, name)
    c.freeze()
    results = Trainer.test(c, model)
    result = results.get(name, results)
    return float(result["sem_seg"]["mIoU_all"])


def measure_model(cfg, name: str, weights: str, sets: Sets, rigs: dict[str, str]) -> dict:
    """Every row of the tables for one model (its evaluation files under OUTPUT_DIR/``name``)."""
    c = cfg.clone()
    c.defrost()
    c.MODEL.WEIGHTS = weights
    c.OUTPUT_DIR = os.path.join(cfg.OUTPUT_DIR, name)
    c.freeze()
    model = build_inference_model(c)
    out = {"aligned": evaluate(c, model, TEST)}
    for variant, thermal, rig in (("true_rig", "thermal_full", rigs["true"]),
                                  ("recovered_rig", "thermal_full", rigs["recovered"]),
                                  ("no_rig_resized", "thermal_full", rigs["resize"])):
        out[variant] = evaluate(c, model, sets.register(variant, thermal, rig))
    for region, labels in (("all", "labels"), ("inside", "labels_inside"), ("outside", "labels_outside")):
        out[f"aligned_{region}"] = out["aligned"] if region == "all" else evaluate(
            c, model, sets.register(f"aligned_{region}", None, None, labels))
        out[f"partial_nan_{region}"] = evaluate(
            c, model, sets.register(f"partial_nan_{region}", "thermal_partial", rigs["partial"], labels))
        for fill in FILLS:
            key = f"partial_fill{fill:g}_{region}"
            out[key] = evaluate(c, model, sets.register(key, f"thermal_fill{fill:g}", None, labels))
    return out


def table(results: dict) -> list[str]:
    models = list(results)
    rows = [
        ("aligned pairs (the embedded test split)", "aligned"),
        ("misaligned, the true rig", "true_rig"),
        ("misaligned, the recovered rig (calibrate_rig.py ecc, 8 pairs)", "recovered_rig"),
        ("misaligned, no rig: thermal resized to the RGB size", "no_rig_resized"),
    ]
    lines = ["| evaluation | " + " | ".join(f"{m} mIoU_all" for m in models) + " |",
             "|---|" + "---|" * len(models)]
    for label, key in rows:
        lines.append(f"| {label} | " + " | ".join(f"{results[m][key]:.2f}" for m in models) + " |")
    lines += ["", "| partial view | region | " + " | ".join(models) + " |",
              "|---|---|" + "---|" * len(models)]
    variants = [("aligned (full thermal, reference)", "aligned"),
                ("NaN outside (the rig's warp)", "partial_nan"),
                *((f"outside filled with {fill:g}", f"partial_fill{fill:g}") for fill in FILLS)]
    for label, key in variants:
        for region in ("all", "inside", "outside"):
            lines.append(f"| {label} | {region} | " + " | ".join(f"{results[m][f'{key}_{region}']:.2f}"
                                                               for m in models) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config-file", default=os.path.join(REPO, "configs", "synthetic.yaml"))
    p.add_argument("--weights", required=True, help="a model trained on aligned pairs (MODEL.WEIGHTS)")
    p.add_argument("--partial-view-weights",
                   help="optional: a model trained with INPUT.MODALITY_DROPOUT.PARTIAL_VIEW")
    p.add_argument("--partial-view-config",
                   help="the config of --partial-view-weights (default: --config-file), e.g. "
                   "configs/synthetic-anymodal.yaml")
    p.add_argument("--thermal-size", type=_size, default=(160, 200), help="HxW of the thermal camera")
    p.add_argument("--fov-ratio", type=float, default=FULL["scale"],
                   help="calibrate_rig.py ecc's start: thermal over RGB horizontal field of view")
    p.add_argument("--work", help="folder for the generated pairs and results (default: a temporary one)")
    p.add_argument("--json", help="write every figure here")
    args = p.parse_args(argv)
    setup_logger(name="sartm_d2")
    work = args.work or tempfile.mkdtemp(prefix="rig_segmentation_")
    opts = ["TEST.MODALITIES", "('rgbt',)", "INPUT.THERMAL_16BIT_NORM", "fixed", "OUTPUT_DIR",
            os.path.join(work, "eval")]
    cfg = get_sartm_cfg(args.config_file, opts)
    sets = Sets(work, args.thermal_size)
    recovered, log = recover(sets, args.fov_ratio)
    rigs = {**sets.files, "recovered": recovered.path}
    models = {"plain": (cfg, args.weights)}
    if args.partial_view_weights:
        other = get_sartm_cfg(args.partial_view_config, opts) if args.partial_view_config else cfg
        models["partial-view"] = (other, args.partial_view_weights)
    results = {name: measure_model(c, name, weights, sets, rigs) for name, (c, weights) in models.items()}
    summary = {
        "thermal_size": list(args.thermal_size), "rgb_size": list(sets.rgb_size), "images": len(sets.names),
        "rigs": {"true": sets.full.to_dict(), "partial": sets.partial.to_dict(),
                 "recovered": recovered.to_dict()},
        "recovered_corner_error_px": corner_error(sets.full, recovered.homography),
        "resize_corner_error_px": corner_error(sets.full, sets.resize.homography),
        "partial_view_fraction": float(sets.view.mean()),
        "calibrate_rig_output": log, "models": {n: w for n, (_, w) in models.items()}, "mIoU_all": results,
        "machine": machine_info(torch.device("cpu")), "torch_threads": torch.get_num_threads(),
    }
    (rh, rw), (th, tw) = sets.rgb_size, args.thermal_size
    err, off = summary["recovered_corner_error_px"], summary["resize_corner_error_px"]
    print(f"RGB {rh}x{rw}, thermal {th}x{tw}, {len(sets.names)} test images; recovered rig: corner error "
          f"{err:.2f} px (residual {recovered.residual_px:.2f} px); the resize is {off:.1f} px off; the "
          f"partial view covers {100 * summary['partial_view_fraction']:.1f}% of the RGB image")
    print("\n".join(table(results)))
    print("CPU flags: " + ", ".join(k for k, v in cpu_flags().items() if v))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
