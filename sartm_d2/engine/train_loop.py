"""One training step with optional autocast in bf16 or fp16, on CUDA or on the CPU.

detectron2 0.6's ``AMPTrainer`` requires CUDA, autocasts only to fp16 and always uses a grad
scaler. bf16 has fp32's range, so it needs no scaler; fp16 keeps one.

Runs on detectron2 0.6 and on its GitHub main (which still calls itself 0.6), told apart by the
features they have, never by version: main makes ``_data_loader_iter`` a read-only property with
``reset_data_loader``, and has an ``after_backward`` hook stage.
"""

from __future__ import annotations

import time

import torch
from detectron2.engine import SimpleTrainer

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def replace_data_loader(trainer, data_loader) -> None:
    """Make ``trainer`` (a SimpleTrainer) read from ``data_loader`` from its next step on.

    detectron2 main: ``_data_loader_iter`` is a read-only property over a lazily made iterator and
    ``reset_data_loader(builder)`` is the public way. detectron2 0.6: the iterator is a plain
    attribute made in ``__init__``.
    """
    if hasattr(trainer, "reset_data_loader"):
        trainer.reset_data_loader(lambda: data_loader)
    else:
        trainer.data_loader = data_loader
        trainer._data_loader_iter = iter(data_loader)


class MixedPrecisionTrainer(SimpleTrainer):
    """``SimpleTrainer`` whose forward runs under ``torch.autocast(device, dtype)`` when enabled."""

    def __init__(self, model, data_loader, optimizer, *, amp_enabled: bool = False,
                 amp_dtype: str = "bfloat16", device: str = "cpu"):
        super().__init__(model, data_loader, optimizer)
        if amp_dtype not in _DTYPES:
            raise ValueError(f"SOLVER.AMP.DTYPE must be one of {sorted(_DTYPES)}, got '{amp_dtype}'.")
        self.amp_enabled = amp_enabled
        self.amp_dtype = _DTYPES[amp_dtype]
        self.device_type = torch.device(device).type
        use_scaler = amp_enabled and self.amp_dtype == torch.float16
        self.grad_scaler = torch.amp.GradScaler(self.device_type) if use_scaler else None

    def replace_data_loader(self, data_loader) -> None:
        """Swap the training stream (used on resume to continue at the checkpoint's iteration)."""
        replace_data_loader(self, data_loader)

    def run_step(self):
        assert self.model.training, "[MixedPrecisionTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        with torch.autocast(self.device_type, dtype=self.amp_dtype, enabled=self.amp_enabled):
            loss_dict = self.model(data)
        losses = sum(loss_dict.values())

        self.optimizer.zero_grad(set_to_none=True)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(losses).backward()
            self._after_backward()
            self._write_metrics(loss_dict, data_time)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            losses.backward()
            self._after_backward()
            self._write_metrics(loss_dict, data_time)
            self.optimizer.step()

    def _after_backward(self) -> None:
        # detectron2 main runs its hooks' after_backward between backward and step; 0.6 has no such stage.
        after_backward = getattr(self, "after_backward", None)
        if after_backward is not None:
            after_backward()

    def state_dict(self):
        ret = super().state_dict()
        if self.grad_scaler is not None:
            ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if self.grad_scaler is not None and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])
