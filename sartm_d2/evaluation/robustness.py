"""Robustness checks that need the model's predictions, not only the per-setting metrics.

``thermal_gain_agreement``: how often the prediction stays the same when the thermal image is scaled,
as an AGC step or another camera would. With ``INPUT.THERMAL_NORM "stretch"`` the per-image stretch
absorbs the gain, so the prediction agrees up to float rounding, whatever the training; with "none"
the agreement shows how much the model depends on the camera's gain.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

__all__ = ["thermal_gain_agreement"]


@torch.no_grad()
def thermal_gain_agreement(
    model: torch.nn.Module, mapper, records: Iterable[dict], gains: Sequence[float] = (0.5, 1.5)
) -> dict[float, dict]:
    """Pixel agreement of the argmax before and after the thermal image is multiplied by each gain.

    The pair compared is (clean input, thermal times the gain). Where a gain > 1 would saturate a
    pixel (then it is not a pure gain change any more), the pair is instead (thermal dimmed to leave
    just enough headroom, that dimmed image times the gain): again one input ``gain`` times the other,
    neither clipped.

    Args:
        model: a SARTM in eval mode (the ``--eval-only`` model).
        mapper: the test mapper (``RGBTDatasetMapper(cfg, is_train=False)``): images as evaluated.
        records: dataset records.
        gains: thermal gains (> 0).
    Returns:
        gain -> {"agreement": fraction of pixels with the same class, "images": images compared,
        "dimmed": how many of them needed the headroom, "pixels": pixels compared}.
    """
    if any(g <= 0 for g in gains):
        raise ValueError(f"Thermal gains must be > 0, got {list(gains)}.")

    def predict(d: dict, thermal_scale: float) -> torch.Tensor:
        scaled = dict(d, image=d["image"].clone())
        scaled["image"][3] *= thermal_scale
        return model([scaled])[0]["sem_seg"].argmax(0)

    stats = {float(g): [0, 0, 0, 0] for g in gains}  # agreeing pixels, pixels, images, dimmed images
    for record in records:
        d = mapper(record)
        clean = model([d])[0]["sem_seg"].argmax(0)
        thermal_max = float(d["image"][3].max())
        for gain, s in stats.items():
            base = 1.0 if gain * thermal_max <= 255.0 else 255.0 / (gain * thermal_max)
            reference = clean if base == 1.0 else predict(d, base)
            s[0] += int((predict(d, base * gain) == reference).sum())
            s[1] += reference.numel()
            s[2] += 1
            s[3] += int(base != 1.0)
    return {
        gain: {"agreement": agree / pixels if pixels else float("nan"), "images": n, "dimmed": dimmed,
               "pixels": pixels}
        for gain, (agree, pixels, n, dimmed) in stats.items()
    }
