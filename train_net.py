#!/usr/bin/env python
"""Train and evaluate SARTM with Detectron2's usual commands.

    python train_net.py --config-file configs/mfnet.yaml --num-gpus 2
    python train_net.py --config-file configs/mfnet.yaml --eval-only MODEL.WEIGHTS output/model_final.pth
    python train_net.py --config-file configs/mfnet.yaml --resume
    python train_net.py --register my_datasets.py --config-file my_config.yaml   # your own data/parts

Without CUDA, MODEL.DEVICE falls back to "cpu" and ``--num-gpus N`` runs N CPU processes (gloo).
The trainer and ``main`` live in ``sartm_d2.engine``, so a script of your own can reuse them.
"""

import sartm_d2  # noqa: F401  (before detectron2: compatibility fixes and registrations)

# isort: split
from sartm_d2.engine import RGBTCheckpointer, Trainer, argument_parser, launch, main, setup

__all__ = ["RGBTCheckpointer", "Trainer", "main", "setup"]

if __name__ == "__main__":
    args = argument_parser().parse_args()
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
