#!/usr/bin/env python
"""Your own RGB + thermal pairs, end to end: a template to copy and edit (sartm_d2 stays untouched).

As a MODULE it registers three splits of one folder with ``sartm_d2.data.register_rgbt_sem_seg``;
train_net.py, demo/demo.py and datasets/check.py import it with ``--register``::

    $OWN_RGBT_ROOT (default datasets/OwnRGBT)/
      rgb/<name>.<png|jpg|bmp|tif>      RGB images
      thermal/<name>.<png|tif>          8- or 16-bit thermal images of the same size (aligned), or
      rig.json                          with this rig file (tools/calibrate_rig.py) of any size
      labels/<name>.png                 class ids 0..K-1 (CLASSES below), 255 = ignore, RGB frame
      train.txt val.txt test.txt        one name per line

    python train_net.py --register datasets/own_dataset_example.py --config-file configs/own-dataset.yaml

As a SCRIPT it runs the whole path on that folder, one command after the other, printing each:
``datasets/check.py``, training, ``--eval-only`` and the demo on the first test images::

    OWN_RGBT_ROOT=/data/my_rgbt python datasets/own_dataset_example.py --output output/own [KEY VALUE ...]

KEY VALUE pairs override the config in all three runs (e.g. ``SOLVER.MAX_ITER 2000``).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import subprocess
import sys

import sartm_d2  # noqa: F401  (detectron2 compatibility fixes, built-in datasets)

# isort: split
from detectron2.data import DatasetCatalog

from sartm_d2.data import register_rgbt_sem_seg

# Label id i is CLASSES[i]. Edit both lists (and NUM_CLASSES in configs/own-dataset.yaml).
CLASSES = ["background", "person", "car"]
COLORS = [(0, 0, 0), (220, 20, 60), (0, 0, 142)]
SPLITS = ("train", "val", "test")
HERE = os.path.abspath(__file__)
REPO = os.path.dirname(os.path.dirname(HERE))


def register(root: str) -> list[str]:
    """Register own_rgbt_{train,val,test}; the test split is evaluation-only (never used for selection).

    A ``rig.json`` in ``root`` maps the thermal images into the RGB frame (cameras not pixel-aligned).
    """
    rig = os.path.join(root, "rig.json")
    names = []
    for split in SPLITS:
        name = f"own_rgbt_{split}"
        register_rgbt_sem_seg(
            name,
            rgb_root=os.path.join(root, "rgb"),
            thermal_root=os.path.join(root, "thermal"),
            gt_root=os.path.join(root, "labels"),
            classes=CLASSES,
            colors=COLORS,
            image_list=os.path.join(root, f"{split}.txt"),
            test_split=split == "test",
            rig=rig if os.path.isfile(rig) else None,
        )
        names.append(name)
    return names


NAMES = register(os.getenv("OWN_RGBT_ROOT", os.path.join("datasets", "OwnRGBT")))


logger = logging.getLogger("own_dataset_example")


def _run(cmd: list[str]) -> None:
    logger.info("+ %s", shlex.join(cmd))
    subprocess.run(cmd, check=True, cwd=REPO)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", default=os.path.join(REPO, "configs", "own-dataset.yaml"))
    parser.add_argument("--output", default=os.path.join("output", "own-dataset"))
    parser.add_argument("--demo-images", type=int, default=4, help="test images drawn by the demo")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    output = os.path.abspath(args.output)
    python, register_me = sys.executable, ["--register", HERE]
    common = ["--config-file", os.path.abspath(args.config_file)]
    opts = [*args.opts, "OUTPUT_DIR", output]

    _run([python, "datasets/check.py", *register_me, *NAMES])
    _run([python, "train_net.py", *register_me, *common, *opts])
    weights = os.path.join(output, "model_final.pth")
    _run([python, "train_net.py", *register_me, *common, "--eval-only", *opts, "MODEL.WEIGHTS", weights])
    test = DatasetCatalog.get("own_rgbt_test")[: args.demo_images]
    _run([python, "demo/demo.py", *register_me, *common,
          "--input", *[r["file_name"] for r in test], "--thermal", *[r["thermal_file_name"] for r in test],
          "--output", os.path.join(output, "demo"), "--opts", *args.opts, "MODEL.WEIGHTS", weights])
    return output


if __name__ == "__main__":
    main()
