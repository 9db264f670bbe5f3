"""What training starts from when no checkpoint is loaded: SAM2's weights and the class-name embeddings.

Building a model reads no file (``build_model`` is cheap and works anywhere). The files a fresh
training run needs are read here, once, by ``sartm_d2.engine.Trainer`` at start-up:

- ``MODEL.SAM2.CHECKPOINT`` (official SAM2 / SAM2.1 weights, a file or a URL downloaded once) only
  when training starts without ``MODEL.WEIGHTS`` and without a checkpoint to resume;
- the text teacher (or its cache) whenever training starts or fine-tunes without resuming, for the
  class names of the current dataset. A resumed run and inference take both from the checkpoint.
"""

from __future__ import annotations

import logging

from detectron2.utils import comm
from torch import nn

from .sam2_checkpoint import load_sam2_checkpoint
from .text_teacher import text_embeddings_from_config

__all__ = ["load_pretrained", "load_text_embeddings"]

logger = logging.getLogger(__name__)


def load_text_embeddings(model: nn.Module, cfg) -> None:
    """Fill ``model``'s class-name embeddings from MODEL.SARTM.DISTILL.TEACHER (cache first).

    The main process computes first and writes the cache, so that the other processes of a
    distributed run read it instead of building the teacher each.
    """
    if getattr(model, "text_embeddings", None) is None:
        return
    if comm.get_world_size() > 1 and not comm.is_main_process():
        comm.synchronize()
    embeddings = text_embeddings_from_config(cfg, model.class_names)
    if comm.get_world_size() > 1 and comm.is_main_process():
        comm.synchronize()
    model.set_text_embeddings(embeddings)


def load_pretrained(model: nn.Module, cfg) -> dict | None:
    """Initialise a freshly built SARTM for training: SAM2 checkpoint (if set) and text embeddings.

    Returns the SAM2 loading report (None without a checkpoint, when the SAM2 parts stay random).
    """
    path = cfg.MODEL.SAM2.CHECKPOINT
    report = None
    if path:
        report = load_sam2_checkpoint(model, path)
    else:
        logger.warning(
            "MODEL.SAM2.CHECKPOINT is empty and no MODEL.WEIGHTS is given: training starts from RANDOM "
            "SAM2 trunk, neck and mask-decoder weights (fine for tests and the synthetic demo; for real "
            "training set it to an official sam2(.1)_hiera_*.pt file)."
        )
    load_text_embeddings(model, cfg)
    return report
