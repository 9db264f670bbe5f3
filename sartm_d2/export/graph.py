"""The module that is exported: one raw RGB-T image in, logits and labels at the input's size out.

Everything the PyTorch inference path does around ``SARTM.inference`` happens inside this module,
so an exported graph cannot drift from it (a step left to the caller, a resize or a normalisation, would
be redone by every runtime in its own way): the test-time resize of ``RGBTDatasetMapper``
(``INPUT.MIN_SIZE_TEST``), the normalisation (``SARTM.normalize``: the per-image thermal stretch of
``INPUT.THERMAL_NORM`` included) and zero padding of ``SARTM.preprocess_image``, and the crop and
resize back of ``sem_seg_postprocess``. Only torch is needed here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from detectron2.data.transforms import ResizeShortestEdge
from torch import nn

from ..modalities import CHANNELS, check_modalities

__all__ = ["ExportGeometry", "ExportableSARTM", "export_geometry"]


@dataclass(frozen=True)
class ExportGeometry:
    """The fixed sizes of one export: input, after the test-time resize, and after padding."""

    height: int
    width: int
    resized_height: int
    resized_width: int
    padded_height: int
    padded_width: int
    min_size_test: int
    max_size_test: int
    size_divisibility: int

    @property
    def resizes(self) -> bool:
        return (self.resized_height, self.resized_width) != (self.height, self.width)

    def to_dict(self) -> dict:
        return asdict(self)


def export_geometry(
    height: int, width: int, *, min_size_test: int, max_size_test: int, size_divisibility: int
) -> ExportGeometry:
    """Sizes of an export at ``height`` x ``width``, the way the test loader and the model compute them.

    The resize is ``ResizeShortestEdge.get_output_shape`` (what ``RGBTDatasetMapper`` applies when
    ``INPUT.MIN_SIZE_TEST`` is not 0); padding rounds up to ``size_divisibility`` like
    ``ImageList.from_tensors``. ``size_divisibility`` is the built model's (``model.size_divisibility``:
    INPUT.SIZE_DIVISIBILITY raised to what its backbone needs), not the config's; ``ExportableSARTM``
    checks the padded size against the backbone.
    """
    if int(height) < 1 or int(width) < 1:
        raise ValueError(f"The export size must be positive, got {height}x{width} (HxW).")
    height, width = int(height), int(width)
    if min_size_test > 0:
        rh, rw = ResizeShortestEdge.get_output_shape(height, width, min_size_test, max_size_test)
    else:
        rh, rw = height, width
    d = int(size_divisibility)
    ph, pw = ((rh + d - 1) // d * d, (rw + d - 1) // d * d) if d > 1 else (rh, rw)
    return ExportGeometry(height, width, rh, rw, ph, pw, int(min_size_test), int(max_size_test), d)


class ExportableSARTM(nn.Module):
    """Raw (1, 4, H, W) R, G, B, T in 0..255 -> (logits (1, K, H, W) fp32, labels (1, H, W) int64), and
    trust (1, 2) fp32 (RGB, thermal) when the model's fusion estimates it (``has_trust``).

    Wraps a model prepared for inference (``build_inference_model``: LoRA merged, auxiliary head
    only when averaged); the normalisation is the model's own ``normalize``.

    ``modality`` "rgb" or "thermal" makes a one-camera graph: its input is that camera alone,
    (1, 3, H, W) R, G, B or (1, 1, H, W) T, and the model runs with the fixed presence mask of
    ``SARTM.inference(x, present)``, so the backbone computes only that stream (the any-modality
    model's single-stream cost) and the missing camera's trust is 0. PyTorch's reference is the test
    mapper's input setting of the same name.
    """

    def __init__(self, model: nn.Module, geometry: ExportGeometry, modality: str = "rgbt"):
        super().__init__()
        check_modalities(modality, "modality")
        need = int(getattr(model.backbone, "size_divisibility", 0) or 0)
        g = geometry
        if need > 1 and (g.padded_height % need or g.padded_width % need):
            resized = f" (resized by INPUT.MIN_SIZE_TEST to {g.resized_height}x{g.resized_width})" if (
                g.resizes) else ""
            raise ValueError(
                f"Input {g.height}x{g.width}{resized} is padded to {g.padded_height}x{g.padded_width} "
                f"(size_divisibility {g.size_divisibility}), which the backbone "
                f"{type(model.backbone).__name__} cannot run: it needs multiples of {need}. Set "
                f"INPUT.SIZE_DIVISIBILITY to a multiple of {need}."
            )
        self.model = model
        self.geometry = geometry
        self.modality = modality
        self.has_trust = bool(getattr(model.fusion, "estimates_trust", False))

    @property
    def input_channels(self) -> int:
        return len(CHANNELS[self.modality])

    @property
    def output_names(self) -> list[str]:
        return ["logits", "labels", "trust"] if self.has_trust else ["logits", "labels"]

    def forward(self, image: torch.Tensor):
        g = self.geometry
        x, present = image, None
        if self.modality != "rgbt":
            # The missing camera's channels are zeros that the model never reads (``present``); they only
            # keep the (1, 4, H, W) layout that ``normalize`` and ``inference`` take.
            b, _, h, w = image.shape
            rgb = image if self.modality == "rgb" else image.new_zeros(b, 3, h, w)
            thermal = image if self.modality == "thermal" else image.new_zeros(b, 1, h, w)
            x = torch.cat([rgb, thermal], dim=1)
            present = torch.tensor([[self.modality == "rgb", self.modality == "thermal"]], device=x.device)
        if g.resizes:  # RGBTDatasetMapper: float bilinear resize of RGB and thermal (detectron2 -> torch)
            size = (g.resized_height, g.resized_width)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        x = self.model.normalize(x)
        # Zeros after normalisation, on the bottom and right (ImageList.from_tensors).
        x = F.pad(x, (0, g.padded_width - g.resized_width, 0, g.padded_height - g.resized_height))
        logits, trust = self.model.inference(x, present)
        logits = logits[:, :, : g.resized_height, : g.resized_width]
        if g.resizes:  # sem_seg_postprocess: back to the input's size
            logits = F.interpolate(logits, size=(g.height, g.width), mode="bilinear", align_corners=False)
        if self.has_trust:
            return logits, logits.argmax(dim=1), trust
        return logits, logits.argmax(dim=1)
