"""The trainer, the standard ``setup``/``main`` of ``train_net.py``, and the inference model builder.

They live in the package (not in ``train_net.py``) so that a user's own script can import them:
``from sartm_d2.engine import Trainer, launch, main, setup``.
"""

from __future__ import annotations

import logging
import os
import sys
import weakref
from collections import OrderedDict

from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.engine import (
    DefaultTrainer,
    TrainerBase,
    create_ddp_model,
    default_argument_parser,
    default_setup,
    hooks,
)
from detectron2.evaluation import DatasetEvaluators, inference_on_dataset, verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from torch import nn

from ..config import get_sartm_cfg
from ..data import RGBTDatasetMapper
from ..data.degradations import check_kinds, expand_settings
from ..evaluation import RGBTSemSegEvaluator, write_settings_table
from ..modeling import load_pretrained, load_text_embeddings
from ..utils.env import import_user_module
from .checkpoint import RGBTCheckpointer
from .data import build_resumable_train_loader
from .solver import build_lr_scheduler, build_optimizer
from .train_loop import MixedPrecisionTrainer

__all__ = ["Trainer", "argument_parser", "build_inference_model", "main", "setup"]


class Trainer(DefaultTrainer):
    """DefaultTrainer with the RGB-T mapper and evaluator, AdamW + poly, and exact resume.

    ``__init__`` repeats DefaultTrainer's construction order (``auto_scale_workers`` included) with
    three changes that detectron2 cannot be told through its hooks: the training loop autocasts to
    bf16/fp16 on any device, DDP gets ``device_ids=None`` for CPU processes, and the checkpointer
    saves atomically, loads with ``weights_only=True`` and refuses tensors that do not fit.

    What training starts from (``resume_or_load``):

    - ``--resume`` with a checkpoint in OUTPUT_DIR: that checkpoint, strictly (model, optimizer,
      scheduler, iteration, data position); no other file is read;
    - else MODEL.WEIGHTS: its model tensors (class-count-dependent ones restart when the classes
      differ; robust parts a plain model's checkpoint lacks start fresh), and the class-name
      embeddings of the current dataset from the text teacher's cache;
    - else MODEL.SAM2.CHECKPOINT and the text embeddings (``sartm_d2.modeling.load_pretrained``).
    """

    def __init__(self, cfg):
        TrainerBase.__init__(self)
        logger = logging.getLogger("detectron2")
        if not logger.isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
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
    def build_test_loader(cls, cfg, dataset_name, setting: str = "rgbt"):
        mapper = RGBTDatasetMapper(cfg, is_train=False, setting=setting)
        return build_detection_test_loader(cfg, dataset_name, mapper=mapper)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """DefaultTrainer.test, once per input setting of TEST.MODALITIES (missing or degraded inputs).

        With the single default setting "rgbt" it is detectron2's: results keyed by dataset, files in
        OUTPUT_DIR/inference/<dataset>/. With several, each setting is evaluated on its own
        (``<dataset>/<setting>`` keys, files in OUTPUT_DIR/inference/<dataset>/<setting>/), and one
        table of all settings is logged and written to inference/<dataset>/settings.json.
        """
        settings = expand_settings(cfg.TEST.MODALITIES, trained_degradation_kinds(cfg))  # fails early
        if settings == ["rgbt"] or evaluators is not None:
            return super().test(cfg, model, evaluators)
        return cls.test_settings(cfg, model, settings, os.path.join(cfg.OUTPUT_DIR, "inference"))

    @classmethod
    def test_settings(cls, cfg, model, settings, output_dir: str) -> OrderedDict:
        """Evaluate ``model`` on each of ``settings`` (TEST.MODALITIES names) of every DATASETS.TEST
        dataset: results keyed ``<dataset>/<setting>``, files in ``output_dir/<dataset>/<setting>/``, the
        table of all settings in ``output_dir/<dataset>/settings.json``. Also ``tools/eval_onnx.py``'s."""
        seen = trained_degradation_kinds(cfg)
        results = OrderedDict()
        for name in cfg.DATASETS.TEST:
            summary = OrderedDict()
            for setting in settings:
                folder = os.path.join(output_dir, name, setting)
                result = inference_on_dataset(
                    model, cls.build_test_loader(cfg, name, setting), cls.build_evaluator(cfg, name, folder)
                )
                results[f"{name}/{setting}"] = result
                summary[setting] = result.get("sem_seg", {})
            if comm.is_main_process():
                write_settings_table(summary, name, os.path.join(output_dir, name), seen_kinds=seen)
        return results

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
        # detectron2 0.6 checkpoints only the iteration and hooks (main adds "_trainer" itself):
        # without the optimizer state a resumed run would diverge from an uninterrupted one.
        ret = super().state_dict()
        ret["_trainer"] = self._trainer.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "load_state_dict" not in vars(DefaultTrainer):  # 0.6; main's DefaultTrainer loads it itself
            self._trainer.load_state_dict(state_dict["_trainer"])

    def resume_or_load(self, resume=True):
        """Load what training starts from (see the class docstring)."""
        model: nn.Module = self.checkpointer.model
        if resume and self.checkpointer.has_checkpoint():
            self.checkpointer.load(self.checkpointer.get_checkpoint_file())
            # The checkpoint stores the iteration that just finished; continue the data stream there.
            self.start_iter = self.iter + 1
            self._trainer.replace_data_loader(self.build_train_loader(self.cfg, start_iter=self.start_iter))
        elif self.cfg.MODEL.WEIGHTS:
            fresh = model.class_dependent_keys() if hasattr(model, "class_dependent_keys") else ()
            new_parts = model.robust_part_prefixes() if hasattr(model, "robust_part_prefixes") else ()
            self.checkpointer.load(self.cfg.MODEL.WEIGHTS, checkpointables=[], fresh=fresh,
                                   new_parts=new_parts)
            load_text_embeddings(model, self.cfg)
        else:
            load_pretrained(model, self.cfg)

    def build_hooks(self):
        """DefaultTrainer's hooks, with periodic evaluation on DATASETS.VAL instead of DATASETS.TEST."""
        ret = [h for h in super().build_hooks() if not isinstance(h, hooks.EvalHook)]
        if self.cfg.DATASETS.VAL:
            val_cfg = self.cfg.clone()
            val_cfg.defrost()
            val_cfg.DATASETS.TEST = self.cfg.DATASETS.VAL
            val_cfg.TEST.MODALITIES = ("rgbt",)  # model selection on the full input

            def evaluate_val():
                self._last_eval_results = self.test(val_cfg, self.model)
                return self._last_eval_results

            # Evaluate before the writer hook so that the metrics reach the event files.
            ret.insert(len(ret) - 1 if comm.is_main_process() else len(ret),
                       hooks.EvalHook(self.cfg.TEST.EVAL_PERIOD, evaluate_val))
        return ret


def _inference_weights(weights: str) -> str:
    """MODEL.WEIGHTS of an inference run (the demo, export, evaluation): set, and a file unless a URL."""
    if not weights:
        raise ValueError(
            "MODEL.WEIGHTS is empty: inference needs trained weights, e.g. MODEL.WEIGHTS "
            "output/mfnet/model_final.pth (demo/demo.py: --opts MODEL.WEIGHTS ...), or --resume with a "
            "checkpoint in OUTPUT_DIR."
        )
    if "://" not in weights and not os.path.isfile(weights):
        raise FileNotFoundError(
            f"MODEL.WEIGHTS file not found: {weights!r}. Train first (train_net.py) or point MODEL.WEIGHTS "
            "at a checkpoint, e.g. output/mfnet/model_final.pth."
        )
    return weights


def trained_degradation_kinds(cfg) -> tuple[str, ...]:
    """The degradation families training augmented with ("seen"); none when the augmentation is off."""
    kinds = check_kinds(cfg.INPUT.DEGRADATION_AUG_KINDS)
    return kinds if cfg.INPUT.DEGRADATION_AUG_PROB > 0 else ()


def build_inference_model(cfg, *, resume: bool = False, prepare: bool = True) -> nn.Module:
    """The model of ``cfg`` with its trained weights, ready for inference; reads no other file.

    The weights are the last checkpoint of OUTPUT_DIR with ``resume``, else MODEL.WEIGHTS; they
    must fit the model exactly (a checkpoint carries the text embeddings, so neither the text
    teacher nor the SAM2 checkpoint is needed). ``prepare`` merges LoRA and stores the
    INFERENCE_DTYPE weights once (``SARTM.prepare_for_inference``); the model is then inference-only.
    """
    if not resume:
        _inference_weights(cfg.MODEL.WEIGHTS)  # fail before the (slow) build
    model = Trainer.build_model(cfg)
    checkpointer = RGBTCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
    if resume and checkpointer.has_checkpoint():
        path = checkpointer.get_checkpoint_file()
    else:
        path = _inference_weights(cfg.MODEL.WEIGHTS)
    checkpointer.load(path, checkpointables=[])
    if prepare and hasattr(model, "prepare_for_inference"):
        model.prepare_for_inference()  # LoRA merged; INFERENCE_DTYPE weights stored once, not cast per call
    return model.eval()


def argument_parser(epilog=None):
    """detectron2's ``default_argument_parser`` plus ``--register MODULE`` (repeatable).

    ``--register`` imports a module of yours (dotted name or .py path) in every process before the
    config is read, so that your datasets and parts, registered there, are known: no package edit.
    """
    parser = default_argument_parser(epilog)
    parser.add_argument(
        "--register", action="append", default=[], metavar="MODULE",
        help="import this module (dotted name or .py path) first; it registers your datasets or parts",
    )
    return parser


def setup(args):
    """Config from file + command line, with the checks that save a user a failed run."""
    for module in getattr(args, "register", []):
        import_user_module(module)
    cfg = get_sartm_cfg(args.config_file, args.opts)
    for name in cfg.DATASETS.VAL:
        if name in MetadataCatalog.list() and MetadataCatalog.get(name).get("test_split", False):
            raise ValueError(
                f"DATASETS.VAL contains '{name}', a test split: validation during training selects the "
                "model, which must not happen on test data. Use the dataset's val split (e.g. mfnet_val, "
                "pst900_val), or register your own split without test_split=True."
            )
    cfg.freeze()
    default_setup(cfg, args)
    _setup_sartm_logger(cfg.OUTPUT_DIR)
    return cfg


def _setup_sartm_logger(output_dir: str) -> None:
    """The "sartm_d2" logger as detectron2 sets up its own, but with the console at INFO.

    detectron2's console handler shows DEBUG too, formatted like INFO, and this project's DEBUG lines
    are the long ones (every SAM2 key loaded or ignored); OUTPUT_DIR/log.txt keeps all levels.
    """
    logger = logging.getLogger("sartm_d2")
    before = list(logger.handlers)
    setup_logger(output=output_dir, distributed_rank=comm.get_rank(), name="sartm_d2")
    for handler in logger.handlers:
        if handler not in before and getattr(handler, "stream", None) is sys.stdout:
            handler.setLevel(logging.INFO)


def main(args):
    """``train_net.py``'s main: ``--eval-only`` evaluates DATASETS.TEST, otherwise train then test."""
    cfg = setup(args)
    if args.eval_only:
        model = build_inference_model(cfg, resume=args.resume)
        results = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        return results
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    trainer.train()
    # The reported numbers: DATASETS.TEST evaluated once, after training (never used for selection).
    return Trainer.test(cfg, trainer.model) if cfg.DATASETS.TEST else {}
