"""The one vocabulary of input modalities: which cameras an input has, and their image channels.

Every part that names a modality set (the mapper's dropout and test settings, the model's per-sample
"modalities", the exported graph's input, the demo's ``--modality``, the benchmark) takes it from
here, so that a name means the same thing everywhere.
"""

from __future__ import annotations

__all__ = ["CAMERAS", "CHANNELS", "MODALITIES", "PRESENCE", "check_modalities", "select_channels"]

# The two cameras, in the order of the model's (B, 2) presence and trust tensors.
CAMERAS = ("rgb", "thermal")
# The modality sets an input may have: both cameras, RGB alone, thermal alone (in the order of
# INPUT.MODALITY_DROPOUT.{BOTH, RGB_ONLY, THERMAL_ONLY}).
MODALITIES = ("rgbt", "rgb", "thermal")
# Per set, whether each camera of ``CAMERAS`` is present.
PRESENCE = {"rgbt": (True, True), "rgb": (True, False), "thermal": (False, True)}
# Per set, the image channels it carries (the 4-channel R, G, B, T image holds all of them).
CHANNELS = {"rgbt": ("R", "G", "B", "T"), "rgb": ("R", "G", "B"), "thermal": ("T",)}


def check_modalities(name: str, where: str = "modalities") -> str:
    """``name`` if it is a modality set, else a ValueError naming ``where`` and the choices."""
    if name not in PRESENCE:
        raise ValueError(f"{where} must be one of {list(MODALITIES)}, got {name!r}.")
    return name


def select_channels(image, modality: str):
    """The channels of ``modality`` of a channels-first R, G, B, T image (a numpy array or a tensor,
    (4, H, W) or (B, 4, H, W)): what a graph or model of that modality takes as its input. Each set's
    channels are contiguous in R, G, B, T, so this is a slice (a view)."""
    first = CHANNELS["rgbt"].index(CHANNELS[check_modalities(modality)][0])
    return image[..., first : first + len(CHANNELS[modality]), :, :]
