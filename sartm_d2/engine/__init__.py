"""Training and inference: the trainer, resumable data, CPU launch, AMP, safe checkpoints, the predictor."""

from .checkpoint import RGBTCheckpointer, atomic_torch_save
from .data import ResumableBatchSampler, SeededMapDataset, build_resumable_train_loader
from .defaults import Trainer, argument_parser, build_inference_model, main, setup
from .launch import launch
from .predictor import RGBTPredictor, predictor_metadata, predictor_rig
from .solver import build_lr_scheduler, build_optimizer
from .train_loop import MixedPrecisionTrainer, replace_data_loader

__all__ = [
    "MixedPrecisionTrainer",
    "RGBTCheckpointer",
    "RGBTPredictor",
    "ResumableBatchSampler",
    "SeededMapDataset",
    "Trainer",
    "argument_parser",
    "atomic_torch_save",
    "build_inference_model",
    "build_lr_scheduler",
    "build_optimizer",
    "build_resumable_train_loader",
    "launch",
    "main",
    "predictor_metadata",
    "predictor_rig",
    "replace_data_loader",
    "setup",
]
