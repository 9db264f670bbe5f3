"""Evaluation of RGB-T semantic segmentation (Detectron2's metrics plus the RGB-T papers' mIoU)."""

from .robustness import thermal_gain_agreement
from .sem_seg_evaluation import (
    RGBTSemSegEvaluator,
    confusion_matrix,
    segmentation_metrics,
    write_settings_table,
)

__all__ = [
    "RGBTSemSegEvaluator", "confusion_matrix", "segmentation_metrics", "thermal_gain_agreement",
    "write_settings_table",
]
