"""From raw R, G, B, T in 0..255 to the network's input: the thermal normalisation and the mean/std.

It is a module of the model (not of the data loader) so that training, ``--eval-only``, the demo and
the exported graph apply it identically: the graph takes raw images.

``INPUT.THERMAL_NORM`` chooses what happens to the thermal channel before MODEL.PIXEL_MEAN / STD:

- ``"none"``: nothing (the paper): the absolute thermal level is kept, which is real information for
  a radiometric or stable-gain camera;
- ``"stretch"``: :func:`thermal_stretch` per image, invariant to the gain and offset that an AGC camera
  changes from frame to frame, at the price of that absolute level.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "RENAMED_THERMAL_NORMS", "THERMAL_NORMS", "RGBTInputNorm", "ThermalGainCorrection", "check_thermal_norm",
    "sorted_measurements", "thermal_stretch",
]

THERMAL_NORMS = ("none", "stretch")
# Values of INPUT.THERMAL_NORM that were renamed: a config that still holds one gets its new name.
RENAMED_THERMAL_NORMS = {"percentile": "stretch"}
# Pixels at most in the sample the thermal quantiles are taken from (a regular sub-grid): exact
# order statistics of a 480x640 image would sort 307k values per image.
_QUANTILE_SAMPLES = 1 << 14
# Values at or above this (of 0..255) are saturated: the sensor clipped, the value is no measurement.
SATURATED = 254.5


def sorted_measurements(
    thermal: torch.Tensor, max_samples: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The order statistics of a regular sub-grid (at most ``max_samples`` pixels) of (B, 1, H, W) thermal.

    Returns ``(sample, ranked, last)``: the (B, N) sub-grid; its values sorted with the pixels that are
    no measurement (saturated, ``>= SATURATED``, or NaN: no data) set to +inf, so they sort last; and the
    (B, 1) rank of the largest measurement (0 when there is none), so that quantile ranks count the
    measurements only (the stretch's and the gain correction's inputs; sorting is TopK in ONNX).
    """
    h, w = thermal.shape[-2:]
    step = max(1, int(math.ceil(math.sqrt(h * w / max_samples))))
    sample = thermal[:, :, ::step, ::step].flatten(1).float()
    valid = (sample < SATURATED) & torch.isfinite(sample)
    ranked = torch.sort(torch.where(valid, sample, torch.full_like(sample, float("inf"))), dim=1).values
    return sample, ranked, (valid.sum(dim=1, keepdim=True) - 1).clamp(min=0)


def thermal_stretch(
    thermal: torch.Tensor, low: float = 0.01, high: float = 0.99, to: tuple[float, float] = (64.0, 192.0)
) -> torch.Tensor:
    """Per image, the ``low``..``high`` quantiles of (B, 1, H, W) thermal mapped linearly to ``to``,
    clipped to 0..255.

    The quantiles are order statistics of a regular sub-grid of at most ``_QUANTILE_SAMPLES`` pixels,
    taken over the pixels that are not saturated (>= ``SATURATED``) and hold data (not NaN, see
    :meth:`RGBTInputNorm.split_valid`): a clipped hot source (the sun, an exhaust) is no measurement,
    and counting it would pin the upper quantile at 255 and squeeze the rest of the scene. Any gain > 0
    and offset of the input that saturate nothing new give the same output (up to float rounding): the
    8-bit image of an AGC camera then means the same whatever gain and offset the camera chose for the
    frame. The quantile range goes to the middle half of 0..255: people and engines are the hottest few
    percent of a scene, so the upper quantile falls inside them and a full-range stretch would clip
    their texture away. An image without contrast (flat, or all saturated) maps to the middle of ``to``,
    the rule the 16-bit conversion
    (``sartm_d2.data.io.normalize_thermal``) follows too.
    """
    _, ranked, last = sorted_measurements(thermal, _QUANTILE_SAMPLES)
    lo = ranked.gather(1, torch.floor(low * last.float()).long())
    hi = ranked.gather(1, torch.ceil(high * last.float()).long())
    lo = torch.where(torch.isfinite(lo), lo, torch.zeros_like(lo)).view(-1, 1, 1, 1)
    hi = torch.where(torch.isfinite(hi), hi, torch.zeros_like(hi)).view(-1, 1, 1, 1)
    span = hi - lo
    has_contrast = span > 0
    scale = torch.where(has_contrast, (to[1] - to[0]) / span.clamp(min=1e-6), torch.zeros_like(span))
    middle = 0.5 * (to[0] + to[1])
    shift = torch.where(has_contrast, torch.full_like(span, to[0]), torch.full_like(span, middle))
    return ((thermal - lo) * scale + shift).clamp(0.0, 255.0)


def check_thermal_norm(value: str) -> str:
    """``value`` if it is an INPUT.THERMAL_NORM choice; a renamed one's error names its new name."""
    if value in RENAMED_THERMAL_NORMS:
        raise ValueError(
            f"INPUT.THERMAL_NORM {value!r} was renamed to {RENAMED_THERMAL_NORMS[value]!r} (the in-model "
            "per-image stretch; INPUT.THERMAL_16BIT_NORM's 'percentile' is the 16-bit file conversion): "
            "update the config."
        )
    if value not in THERMAL_NORMS:
        raise ValueError(f"INPUT.THERMAL_NORM must be one of {THERMAL_NORMS}, got {value!r}.")
    return value


class RGBTInputNorm(nn.Module):
    """Raw (B, 4, H, W) R, G, B, T in 0..255 -> the network's input (see the module docstring)."""

    def __init__(self, pixel_mean, pixel_std, thermal_norm: str = "none",
                 gain_correction: ThermalGainCorrection | None = None):
        """
        Args:
            pixel_mean, pixel_std: 4 values each (R, G, B, T), for inputs in the 0..255 range.
            thermal_norm: an INPUT.THERMAL_NORM choice (``THERMAL_NORMS``).
            gain_correction: optional learned inverse of thermal gain steps, applied first
                (MODEL.SARTM.ROBUST.THERMAL_GAIN_CORRECTION).
        """
        super().__init__()
        if len(pixel_mean) != 4 or len(pixel_std) != 4:
            raise ValueError(
                f"MODEL.PIXEL_MEAN / MODEL.PIXEL_STD need 4 values (R, G, B, T), got {list(pixel_mean)} / "
                f"{list(pixel_std)}."
            )
        for name, values in (("pixel_mean", pixel_mean), ("pixel_std", pixel_std)):
            self.register_buffer(name, torch.tensor(values, dtype=torch.float32).view(-1, 1, 1), False)
        self.thermal_norm = check_thermal_norm(thermal_norm)
        self.gain_correction = gain_correction

    @staticmethod
    def split_valid(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x with its thermal NaN set to 0, (B, 1, H, W) float 1 where the thermal pixel holds data).

        NaN in the thermal channel marks pixels the thermal camera does not see (a rig's warp into the
        RGB frame, ``sartm_d2.data.rig``); 0 after normalisation is the thermal mean, and the fusion is
        told (``thermal_valid``) to treat those pixels as a missing camera.
        """
        valid = torch.isfinite(x[:, 3:4])
        filled = torch.cat([x[:, :3], torch.where(valid, x[:, 3:4], torch.zeros_like(x[:, 3:4]))], dim=1)
        return filled, valid.to(x.dtype)

    def saturation(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2, H, W) float: 1 where the input was saturated (RGB: any channel; thermal), from the
        normalised ``x`` of ``forward`` (padding, 0 after normalisation, is never saturated)."""
        raw = x.float() * self.pixel_std + self.pixel_mean
        return torch.stack([(raw[:, :3] >= SATURATED).any(dim=1), raw[:, 3] >= SATURATED], dim=1).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize_with_gain(x)[0]

    def normalize_with_gain(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(the normalised input, the gain correction's raw (B, 2) prediction or None without one)."""
        params = None
        if self.gain_correction is not None:
            corrected, params = self.gain_correction(x[:, 3:4])
            x = torch.cat([x[:, :3], corrected], dim=1)
        if self.thermal_norm == "stretch":
            x = torch.cat([x[:, :3], thermal_stretch(x[:, 3:4])], dim=1)
        return (x - self.pixel_mean) / self.pixel_std, params


class ThermalGainCorrection(nn.Module):
    """A learned inverse of a thermal camera's gain and offset steps (AGC), that leaves healthy images
    alone: the robust recipe's answer to gain changes that keeps the absolute thermal level.

    From the sorted values of a sub-grid of the unsaturated pixels (``quantiles`` of them, as fractions
    of 255) and the saturated share, a small MLP predicts ``(log a, b)``; the image becomes ``a * x + b``
    (saturated pixels stay saturated, NaN stays NaN). It learns from examples: a thermal image
    changed by the photometric augmentation or a gain-like degradation should come back as its clean
    copy, a clean image as itself (``losses.gain_correction_loss``). A prediction inside the dead zone
    (``|log a| <= dead_log_gain`` and ``|b| <= dead_offset``) is applied as exactly the identity, so a
    healthy image reaches the network unchanged (the plain model's clean path); only a clear gain or
    offset step is corrected. The MLP's last layer starts at zero: at first every image is left alone.
    """

    def __init__(self, quantiles: int = 16, hidden: int = 64, dead_log_gain: float = 0.3,
                 dead_offset: float = 16.0):
        super().__init__()
        self.register_buffer("fractions", torch.linspace(0.02, 0.98, quantiles), persistent=False)
        self.mlp = nn.Sequential(
            nn.Linear(quantiles + 1, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
            nn.Linear(hidden, 2),
        )
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)
        self.dead_log_gain = float(dead_log_gain)
        self.dead_offset = float(dead_offset)

    def predict(self, thermal: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) raw thermal in 0..255 -> (B, 2): the predicted log gain and offset (0..255 units)."""
        sample, ranked, last = sorted_measurements(thermal, 4096)
        q = ranked.gather(1, torch.round(self.fractions[None] * last.float()).long())
        q = torch.where(torch.isfinite(q), q, torch.zeros_like(q)) / 255.0
        finite = torch.isfinite(sample).float().sum(1, keepdim=True).clamp(min=1)
        saturated = (sample >= SATURATED).float().sum(1, keepdim=True) / finite
        out = self.mlp(torch.cat([q, saturated.clamp(0, 1)], dim=1))
        return torch.stack([out[:, 0], 64.0 * out[:, 1]], dim=1)

    @staticmethod
    def apply(thermal: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """``a * x + b`` per image (``params`` (B, 2) log gain, offset), saturated pixels kept, 0..255."""
        a = params[:, 0].exp().view(-1, 1, 1, 1)
        b = params[:, 1].view(-1, 1, 1, 1)
        corrected = (thermal * a + b).clamp(0.0, 255.0)
        return torch.where(thermal >= SATURATED, thermal, corrected)

    def forward(self, thermal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(corrected thermal, the raw (B, 2) prediction); the correction applied is the dead-zoned one
        and carries no gradient (the prediction learns from ``gain_correction_loss`` alone)."""
        params = self.predict(thermal)
        used = params.detach()
        inside = (used[:, 0].abs() <= self.dead_log_gain) & (used[:, 1].abs() <= self.dead_offset)
        used = torch.where(inside[:, None], torch.zeros_like(used), used)
        return self.apply(thermal, used), params
