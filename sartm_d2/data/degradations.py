"""Input settings for robustness evaluation: a missing modality, or one modality degraded.

A setting name is ``"rgbt"`` (both), ``"rgb"`` / ``"thermal"`` (the other stream missing), or
``"<modality>-<kind>-<level>"`` with both streams present and one of them degraded, in the spirit of
the noise protocol of arXiv 2503.18445 (e.g. ``"rgb-noise-2"``, ``"thermal-blur-3"``). Kinds and
their three levels (images in the 0..255 range):

- ``noise``: additive Gaussian noise, sigma 10 / 25 / 50;
- ``blur``: Gaussian blur, sigma 1 / 2 / 4 pixels per 128 pixels of the short side (so a level means
  the same loss of detail at any resolution);
- ``dark``: gain 0.5 / 0.25 / 0.1 (night, an under-exposed or failing sensor);
- ``bright``: gain 2 / 3 / 5, clipped at 255 (glare, over-exposure).

Noise is drawn from a generator seeded by the image id and the level, so every run sees the same
degraded images.
"""

from __future__ import annotations

import zlib

import cv2
import numpy as np

__all__ = [
    "DEGRADATION_KINDS", "LEVELS", "MODALITIES", "degrade", "expand_settings", "parse_setting",
    "setting_names",
]

MODALITIES = ("rgbt", "rgb", "thermal")
DEGRADATION_KINDS = ("noise", "blur", "dark", "bright")
LEVELS = (1, 2, 3)
_NOISE_SIGMA = {1: 10.0, 2: 25.0, 3: 50.0}
_BLUR_SIGMA_PER_128 = {1: 1.0, 2: 2.0, 3: 4.0}
_DARK_GAIN = {1: 0.5, 2: 0.25, 3: 0.1}
_BRIGHT_GAIN = {1: 2.0, 2: 3.0, 3: 5.0}


def setting_names() -> list[str]:
    """Every valid setting name: the three modality sets, then each degradation of each modality."""
    degraded = [f"{m}-{k}-{lv}" for m in ("rgb", "thermal") for k in DEGRADATION_KINDS for lv in LEVELS]
    return [*MODALITIES, *degraded]


def expand_settings(names) -> list[str]:
    """TEST.MODALITIES with its shorthands: "all" (every setting), "missing" (rgbt, rgb, thermal).

    Every name is checked (a typo fails before any evaluation); duplicates are dropped, order kept.
    """
    out = []
    for name in names:
        group = setting_names() if name == "all" else list(MODALITIES) if name == "missing" else [name]
        for setting in group:
            parse_setting(setting)
            if setting not in out:
                out.append(setting)
    return out


def parse_setting(name: str) -> tuple[str, tuple[str, str, int] | None]:
    """``(modalities, degradation)`` of a setting: ``("rgbt", ("rgb", "noise", 2))`` for "rgb-noise-2"."""
    if name in MODALITIES:
        return name, None
    parts = name.split("-")
    if (len(parts) == 3 and parts[0] in ("rgb", "thermal") and parts[1] in DEGRADATION_KINDS
            and parts[2].isdigit() and int(parts[2]) in LEVELS):
        return "rgbt", (parts[0], parts[1], int(parts[2]))
    raise ValueError(
        f"Unknown input setting {name!r} (TEST.MODALITIES): use one of {list(MODALITIES)} or "
        f"'<rgb|thermal>-<{'|'.join(DEGRADATION_KINDS)}>-<1|2|3>', e.g. 'rgb-noise-2'."
    )


def degrade(image: np.ndarray, kind: str, level: int, *, seed_key: str) -> np.ndarray:
    """A degraded copy of a float32 image (H x W or H x W x C, 0..255), clipped to 0..255.

    Args:
        image: the RGB or thermal image.
        kind, level: see the module docstring.
        seed_key: identifies the image (its id) for the noise generator.
    """
    image = np.asarray(image, dtype=np.float32)
    if kind == "noise":
        rng = np.random.default_rng([zlib.crc32(seed_key.encode()), level])
        out = image + rng.normal(0.0, _NOISE_SIGMA[level], size=image.shape).astype(np.float32)
    elif kind == "blur":
        sigma = _BLUR_SIGMA_PER_128[level] * min(image.shape[:2]) / 128.0
        out = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    elif kind == "dark":
        out = image * _DARK_GAIN[level]
    elif kind == "bright":
        out = image * _BRIGHT_GAIN[level]
    else:
        raise ValueError(f"Unknown degradation {kind!r}; choose from {DEGRADATION_KINDS}.")
    return np.clip(out, 0.0, 255.0).astype(np.float32)
