"""AdamW with the paper's settings and a warmup + poly schedule, from the config."""

from __future__ import annotations

import torch
from detectron2.solver.build import build_lr_scheduler as d2_build_lr_scheduler
from detectron2.solver.build import maybe_add_gradient_clipping, reduce_param_groups
from detectron2.solver.lr_scheduler import LRMultiplier, WarmupParamScheduler
from fvcore.common.param_scheduler import PolynomialDecayParamScheduler
from torch import nn

# detectron2's get_default_optimizer_params treats these as norms; it has no notion of embeddings.
_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm,
               nn.modules.instancenorm._InstanceNorm)


def optimizer_param_groups(model: nn.Module, *, base_lr: float, weight_decay: float, weight_decay_norm: float,
                           weight_decay_bias: float, weight_decay_embed: float) -> list[dict]:
    """Parameter groups of the trainable parameters, with decay by kind of parameter.

    Norm parameters and biases follow SOLVER.WEIGHT_DECAY_NORM/BIAS as in detectron2; embeddings
    (``nn.Embedding`` such as the mask tokens, and other 0-/1-D parameters such as fusion weights
    and scales) follow SOLVER.WEIGHT_DECAY_EMBED. Frozen tensors are not given to the optimizer.
    """
    groups, seen = [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or p in seen:
                continue
            seen.add(p)
            if isinstance(module, _NORM_TYPES):
                wd = weight_decay_norm
            elif name == "bias":
                wd = weight_decay_bias
            elif isinstance(module, nn.Embedding) or p.ndim <= 1:
                wd = weight_decay_embed
            else:
                wd = weight_decay
            groups.append({"params": [p], "lr": base_lr, "weight_decay": wd})
    return reduce_param_groups(groups)


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """SOLVER.OPTIMIZER "ADAMW" (paper: lr 1e-4, wd 0.01) or "SGD", with optional gradient clipping."""
    groups = optimizer_param_groups(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        # detectron2: None means "as SOLVER.WEIGHT_DECAY".
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY if cfg.SOLVER.WEIGHT_DECAY_BIAS is None
        else cfg.SOLVER.WEIGHT_DECAY_BIAS,
        weight_decay_embed=cfg.SOLVER.WEIGHT_DECAY_EMBED,
    )
    if not groups:
        raise ValueError("The model has no trainable parameters: check MODEL.SARTM.LORA.RANK and the heads.")
    name = cfg.SOLVER.OPTIMIZER.upper()
    on_cuda = all(p.is_cuda for g in groups for p in g["params"])
    # One fused kernel per step on CUDA; multi-tensor (foreach) updates elsewhere.
    fast = {"fused": True} if on_cuda else {"foreach": True}
    if name == "ADAMW":
        opt_cls, kwargs = torch.optim.AdamW, {"betas": (0.9, 0.999), **fast}
    elif name == "SGD":
        opt_cls, kwargs = torch.optim.SGD, {"momentum": cfg.SOLVER.MOMENTUM, "nesterov": cfg.SOLVER.NESTEROV,
                                            "foreach": True}
    else:
        raise ValueError(f"SOLVER.OPTIMIZER must be 'ADAMW' or 'SGD', got '{cfg.SOLVER.OPTIMIZER}'.")
    return maybe_add_gradient_clipping(cfg, opt_cls)(groups, lr=cfg.SOLVER.BASE_LR, **kwargs)


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer):
    """SOLVER.LR_SCHEDULER_NAME "WarmupPolyLR" (linear warmup, then (1 - t) ** POLY_LR_POWER)."""
    if cfg.SOLVER.LR_SCHEDULER_NAME != "WarmupPolyLR":
        return d2_build_lr_scheduler(cfg, optimizer)
    sched = WarmupParamScheduler(
        PolynomialDecayParamScheduler(1.0, cfg.SOLVER.POLY_LR_POWER),
        cfg.SOLVER.WARMUP_FACTOR,
        min(cfg.SOLVER.WARMUP_ITERS / max(cfg.SOLVER.MAX_ITER, 1), 1.0),
        cfg.SOLVER.WARMUP_METHOD,
    )
    return LRMultiplier(optimizer, multiplier=sched, max_iter=cfg.SOLVER.MAX_ITER)
