"""A DetectionCheckpointer that never leaves a half-written file and never unpickles code."""

from __future__ import annotations

import os

import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..file_io import atomic_torch_save


class RGBTCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer with atomic saves and ``weights_only=True`` loads.

    A checkpoint is untrusted input: ``.pkl`` files (pickles that can run code) are refused, and
    ``.pth`` files are read with ``torch.load(..., weights_only=True)``. A missing or unreadable
    file raises one error naming the file (the default is an ``assert``).
    """

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

    def load(self, path: str, checkpointables=None):
        if path and not os.path.isfile(path):
            raise FileNotFoundError(
                f"Checkpoint '{path}' (MODEL.WEIGHTS) does not exist. Pass the path of a .pth written by "
                "train_net.py or tools/convert_sam2_checkpoint.py, or leave MODEL.WEIGHTS empty."
            )
        return super().load(path, checkpointables)

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
        return loaded
