"""Training and inference: the trainer, resumable data, CPU launch, AMP, safe checkpoints."""

from .checkpoint import RGBTCheckpointer, atomic_torch_save
from .data import ResumableBatchSampler, SeededMapDataset, build_resumable_train_loader
from .defaults import Trainer, argument_parser, build_inference_model, main, setup
from .launch import launch
from .solver import build_lr_scheduler, build_optimizer
from .train_loop import MixedPrecisionTrainer, replace_data_loader

__all__ = [
    "MixedPrecisionTrainer",
    "RGBTCheckpointer",
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
    "replace_data_loader",
    "setup",
]
