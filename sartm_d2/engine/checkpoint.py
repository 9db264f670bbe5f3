"""A DetectionCheckpointer that never leaves a half-written file, never unpickles code, and never loads
a checkpoint that does not fit the model."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import torch
from detectron2.checkpoint import DetectionCheckpointer
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from ..file_io import atomic_torch_save
from ..modeling.sam2_checkpoint import SAM2_KEY_MAP

__all__ = ["RGBTCheckpointer", "atomic_torch_save"]

logger = logging.getLogger(__name__)
_SHOWN = 8  # keys listed per kind of mismatch


def _shape(t) -> tuple[int, ...]:
    return tuple(getattr(t, "shape", ()))


class RGBTCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer with atomic saves, ``weights_only=True`` loads and strict matching.

    A checkpoint is untrusted input: ``.pkl`` files (pickles that can run code) are refused, and
    ``.pth`` files are read with ``torch.load(..., weights_only=True)``. A missing or unreadable
    file raises one error naming the file (the default is an ``assert``).

    detectron2 skips every tensor whose shape does not fit, with a warning, and evaluates those
    layers at their random initialisation. Here a loaded model is exactly the checkpoint:

    - by default (inference, ``--resume``) a missing, unexpected or wrongly shaped tensor is an
      error that names the keys and both shapes;
    - ``load(path, fresh=prefixes)`` (training from MODEL.WEIGHTS, e.g. fine-tuning to another
      class count): when a tensor under ``prefixes`` does not fit, all of them start fresh and are
      listed in the log; any other mismatch is still an error;
    - ``load(path, fresh=..., new_parts=prefixes)`` (training from MODEL.WEIGHTS): model tensors under
      ``prefixes`` may be absent from the file (a plain model's checkpoint has no trust gates): they
      keep their initialisation and are listed in the log;
    - a file written by ``tools/convert_sam2_checkpoint.py`` (``"__author__": "sam2"``) only holds
      SAM2's tensors: when training starts from it, the model's own parts (LoRA, fusion, heads) may
      be absent; for inference it is refused like any checkpoint that lacks them.
    """

    _fresh: tuple[str, ...] | None = None
    _new_parts: tuple[str, ...] = ()

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        atomic_torch_save(data, save_file)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        tmp = f"{path}.tmp.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(last_filename_basename)
        os.replace(tmp, path)

    def load(self, path: str, checkpointables=None, *, fresh: Sequence[str] | None = None,
             new_parts: Sequence[str] = ()):
        """Load ``path`` strictly; ``fresh``: class-dependent key prefixes that may restart (fine-tuning);
        ``new_parts``: key prefixes of parts the checkpoint may lack (they start fresh)."""
        if path and "://" not in path and not os.path.isfile(path):
            raise FileNotFoundError(
                f"Checkpoint '{path}' (MODEL.WEIGHTS) does not exist. Pass the path of a .pth written by "
                "train_net.py or tools/convert_sam2_checkpoint.py, or leave MODEL.WEIGHTS empty."
            )
        self._fresh = None if fresh is None else tuple(fresh)
        self._new_parts = tuple(new_parts)
        try:
            return super().load(path, checkpointables)
        finally:
            self._fresh, self._new_parts = None, ()
            # detectron2 main sets this during a load and asserts it is unset on entry, but leaves it
            # set when the load raises (a refused file); 0.6 has no such attribute.
            if getattr(self, "_parsed_url_during_load", None) is not None:
                self._parsed_url_during_load = None

    def _load_file(self, filename: str):
        if not filename.endswith((".pth", ".pt")):
            raise ValueError(
                f"Checkpoint '{filename}': only .pth/.pt files are loaded (read with weights_only=True); "
                "pickle formats (.pkl, .pyth) can execute code and are refused. Re-save the state dict "
                "with torch.save."
            )
        try:
            loaded = torch.load(filename, map_location="cpu", weights_only=True)
        except Exception as e:
            raise RuntimeError(
                f"Cannot read checkpoint '{filename}' with torch.load(weights_only=True): {e}. The file "
                "is truncated, corrupt, or holds objects other than tensors and plain containers."
            ) from e
        if not isinstance(loaded, dict):
            raise ValueError(f"Checkpoint '{filename}' holds a {type(loaded).__name__}, not a state dict.")
        if "model" not in loaded:
            loaded = {"model": loaded}
        loaded["__file__"] = filename
        return loaded

    def _load_model(self, checkpoint):
        filename = checkpoint.pop("__file__", "<checkpoint>")
        state = checkpoint["model"]
        consume_prefix_in_state_dict_if_present(state, "module.")
        target = self.model.state_dict()
        allowed_missing: set[str] = set()
        if self._fresh:
            dependent = sorted({k for k in (*state, *target) if k.startswith(self._fresh)})
            fits = all(
                k in state and k in target and _shape(state[k]) == _shape(target[k]) for k in dependent
            )
            if not fits:
                logger.info(
                    "Checkpoint %s was trained for other classes: these %d tensors start fresh: %s",
                    filename, len(dependent),
                    ", ".join(f"{k} {_shape(state[k]) if k in state else '-'} -> "
                              f"{_shape(target[k]) if k in target else '-'}" for k in dependent),
                )
                for k in dependent:
                    state.pop(k, None)
                allowed_missing.update(k for k in dependent if k in target)
        if self._fresh is not None and checkpoint.get("__author__") == "sam2":  # training starts from it
            sam2_parts = tuple(dst for _, dst in SAM2_KEY_MAP)
            allowed_missing.update(
                k for k in target if not k.startswith(sam2_parts) or k.endswith((".lora_A", ".lora_B"))
            )
        if self._new_parts:
            new = [k for k in target if k not in state and k.startswith(self._new_parts)]
            if new:
                logger.info("Checkpoint %s has no %d tensor(s) of the parts %s: they start fresh.",
                            filename, len(new), ", ".join(p.rstrip(".") for p in self._new_parts))
            allowed_missing.update(new)
        missing = [k for k in target if k not in state and k not in allowed_missing]
        unexpected = [k for k in state if k not in target]
        shapes = [(k, _shape(state[k]), _shape(target[k])) for k in state
                  if k in target and _shape(state[k]) != _shape(target[k])]
        if missing or unexpected or shapes:
            raise ValueError(self._mismatch_message(filename, missing, unexpected, shapes))
        return super()._load_model(checkpoint)

    def _mismatch_message(self, filename, missing, unexpected, shapes) -> str:
        lines = [f"Checkpoint '{filename}' does not fit the model built from the config:"]
        if shapes:
            shown = "; ".join(f"{k}: checkpoint {a} vs model {b}" for k, a, b in shapes[:_SHOWN])
            lines.append(f"  {len(shapes)} tensor(s) of another shape: {shown}")
        if missing:
            lines.append(f"  {len(missing)} model tensor(s) missing from the checkpoint: {missing[:_SHOWN]}")
        if unexpected:
            lines.append(f"  {len(unexpected)} checkpoint tensor(s) the model lacks: {unexpected[:_SHOWN]}")
        lines.append(
            "Build the model with the config the checkpoint was trained with (MODEL.SAM2.SIZE, D_MODEL, "
            "CUSTOM.*, MODEL.SARTM.*, MODEL.SEM_SEG_HEAD.NUM_CLASSES, DATASETS.BACKGROUND_AS_IGNORE). "
            "To fine-tune it to other classes, train from it (MODEL.WEIGHTS without --eval-only)."
        )
        return "\n".join(lines)
