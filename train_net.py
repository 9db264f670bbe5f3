#!/usr/bin/env python
"""Train and evaluate SARTM with Detectron2's usual commands.

    python train_net.py --config-file configs/mfnet.yaml --num-gpus 2
    python train_net.py --config-file configs/mfnet.yaml --eval-only MODEL.WEIGHTS output/model_final.pth
    python train_net.py --config-file configs/mfnet.yaml --resume

Without CUDA, MODEL.DEVICE falls back to "cpu" and ``--num-gpus N`` runs N CPU processes (gloo).
"""

import logging
import os
import weakref

import sartm_d2  # noqa: F401  (before detectron2: compatibility fixes and registrations)

# isort: split
from detectron2.data import DatasetCatalog, build_detection_test_loader
from detectron2.engine import (
    DefaultTrainer,
    TrainerBase,
    create_ddp_model,
    default_argument_parser,
    default_setup,
    hooks,
)
from detectron2.evaluation import DatasetEvaluators, verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from sartm_d2 import get_sartm_cfg
from sartm_d2.data import RGBTDatasetMapper
from sartm_d2.engine import (
    MixedPrecisionTrainer,
    RGBTCheckpointer,
    build_lr_scheduler,
    build_optimizer,
    build_resumable_train_loader,
    launch,
)
from sartm_d2.evaluation import RGBTSemSegEvaluator


class Trainer(DefaultTrainer):
    """DefaultTrainer with the RGB-T mapper and evaluator, AdamW + poly, and exact resume.

    ``__init__`` repeats DefaultTrainer's construction order with three changes that detectron2
    0.6 cannot be told through its hooks: the training loop autocasts to bf16/fp16 on any device,
    DDP gets ``device_ids=None`` for CPU processes, and the checkpointer saves atomically and loads
    with ``weights_only=True``. Checkpoints also carry the optimizer state, which 0.6 omits.
    """

    def __init__(self, cfg):
        TrainerBase.__init__(self)
        logger = logging.getLogger("detectron2")
        if not logger.isEnabledFor(logging.INFO):
            setup_logger()
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        ddp_kwargs = {} if cfg.MODEL.DEVICE.startswith("cuda") else {"device_ids": None}
        model = create_ddp_model(model, broadcast_buffers=False, **ddp_kwargs)
        self._trainer = MixedPrecisionTrainer(
            model, data_loader, optimizer,
            amp_enabled=cfg.SOLVER.AMP.ENABLED, amp_dtype=cfg.SOLVER.AMP.DTYPE, device=cfg.MODEL.DEVICE,
        )
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = RGBTCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    @classmethod
    def build_model(cls, cfg):
        model = super().build_model(cfg)
        if cfg.MODEL.SARTM.COMPILE:
            # In-place compile keeps the state-dict keys, so checkpoints stay interchangeable.
            model.compile(mode=cfg.MODEL.SARTM.COMPILE)
        return model

    @classmethod
    def build_train_loader(cls, cfg, start_iter: int = 0):
        dataset = [r for name in cfg.DATASETS.TRAIN for r in DatasetCatalog.get(name)]
        seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
        return build_resumable_train_loader(
            dataset, RGBTDatasetMapper(cfg, is_train=True),
            total_batch_size=cfg.SOLVER.IMS_PER_BATCH, seed=seed, start_iter=start_iter,
            num_workers=cfg.DATALOADER.NUM_WORKERS, pin_memory=cfg.MODEL.DEVICE.startswith("cuda"),
        )

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=RGBTDatasetMapper(cfg, is_train=False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return DatasetEvaluators([RGBTSemSegEvaluator(cfg, dataset_name, output_folder)])

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)

    def state_dict(self):
        # detectron2 0.6 checkpoints only the iteration and hooks: without the optimizer state
        # (AdamW moments, step counts) a resumed run would diverge from an uninterrupted one.
        ret = super().state_dict()
        ret["_trainer"] = self._trainer.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._trainer.load_state_dict(state_dict["_trainer"])

    def resume_or_load(self, resume=True):
        super().resume_or_load(resume=resume)
        if self.start_iter > 0:
            # Continue the data stream at the checkpoint's iteration, as the uninterrupted run would.
            self._trainer.replace_data_loader(self.build_train_loader(self.cfg, start_iter=self.start_iter))

    def build_hooks(self):
        """DefaultTrainer's hooks, with periodic evaluation on DATASETS.VAL instead of DATASETS.TEST."""
        ret = [h for h in super().build_hooks() if not isinstance(h, hooks.EvalHook)]
        if self.cfg.DATASETS.VAL:
            val_cfg = self.cfg.clone()
            val_cfg.defrost()
            val_cfg.DATASETS.TEST = self.cfg.DATASETS.VAL

            def evaluate_val():
                self._last_eval_results = self.test(val_cfg, self.model)
                return self._last_eval_results

            # Evaluate before the writer hook so that the metrics reach the event files.
            ret.insert(len(ret) - 1 if comm.is_main_process() else len(ret),
                       hooks.EvalHook(self.cfg.TEST.EVAL_PERIOD, evaluate_val))
        return ret


def setup(args):
    """Config from file + command line, with the checks that save a user a failed run."""
    cfg = get_sartm_cfg(args.config_file, args.opts)
    for name in cfg.DATASETS.VAL:
        if "test" in name:
            raise ValueError(
                f"DATASETS.VAL contains '{name}': validation during training must not use a test split "
                "(model selection on test). Use the dataset's val split (e.g. mfnet_val, pst900_val)."
            )
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="sartm_d2")
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        RGBTCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        model.prepare_for_inference()  # LoRA merged; INFERENCE_DTYPE weights stored once, not cast per call
        results = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        return results
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    trainer.train()
    # The reported numbers: DATASETS.TEST evaluated once, after training (never used for selection).
    return Trainer.test(cfg, trainer.model) if cfg.DATASETS.TEST else {}


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
