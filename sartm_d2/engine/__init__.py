"""Training-loop pieces that detectron2 0.6 lacks: resumable data, CPU launch, AMP, safe checkpoints."""

from .checkpoint import RGBTCheckpointer, atomic_torch_save
from .data import ResumableBatchSampler, SeededMapDataset, build_resumable_train_loader
from .launch import launch
from .solver import build_lr_scheduler, build_optimizer
from .train_loop import MixedPrecisionTrainer

__all__ = [
    "RGBTCheckpointer",
    "atomic_torch_save",
    "ResumableBatchSampler",
    "SeededMapDataset",
    "build_resumable_train_loader",
    "launch",
    "build_optimizer",
    "build_lr_scheduler",
    "MixedPrecisionTrainer",
]
