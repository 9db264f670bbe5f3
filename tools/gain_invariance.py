#!/usr/bin/env python
"""Does a thermal gain change the prediction? Pixel agreement with the clean prediction, per gain.

    python tools/gain_invariance.py --config-file configs/synthetic-anymodal.yaml \\
        MODEL.WEIGHTS output/synthetic-anymodal/model_final.pth

Runs the ``--eval-only`` model on DATASETS.TEST[0] (test mapper, clean input) and again with the
thermal image times each ``--gains`` value, and prints the argmax agreement (where a gain > 1 would
saturate a pixel, the pair is the image dimmed to leave headroom and that image times the gain:
``sartm_d2.evaluation.thermal_gain_agreement``). With ``INPUT.THERMAL_NORM "stretch"`` it is 100%
up to float rounding, by construction; with "none" it shows what an AGC step does to the model.
"""

from __future__ import annotations

import argparse

import sartm_d2  # noqa: F401  (compat patches + registration before detectron2)

# isort: split

from detectron2.data import DatasetCatalog

from sartm_d2 import get_sartm_cfg
from sartm_d2.data import RGBTDatasetMapper
from sartm_d2.engine import build_inference_model
from sartm_d2.evaluation import thermal_gain_agreement


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config-file", required=True)
    p.add_argument("--gains", type=float, nargs="+", default=[0.5, 1.5])
    p.add_argument("--min-agreement", type=float, default=0.99, help="exit status 1 below it")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs (MODEL.WEIGHTS ...)")
    args = p.parse_args(argv)
    cfg = get_sartm_cfg(args.config_file, args.opts)
    cfg.freeze()
    model = build_inference_model(cfg)
    dataset = cfg.DATASETS.TEST[0]
    mapper = RGBTDatasetMapper(cfg, is_train=False)
    result = thermal_gain_agreement(model, mapper, DatasetCatalog.get(dataset), args.gains)
    ok = True
    print(f"{dataset}, INPUT.THERMAL_NORM {cfg.INPUT.THERMAL_NORM}:")
    for gain, r in result.items():
        ok = ok and r["agreement"] >= args.min_agreement
        print(f"  thermal x {gain:g}: {100 * r['agreement']:.2f}% of pixels keep their class "
              f"({r['images']} images, {r['dimmed']} dimmed for headroom)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
