"""Losses of SARTM: OHEM cross-entropy for both heads and the language-aided distillation loss.

Everything here is computed in float32 (also under bf16/fp16 autocast) and without host syncs or
Python loops over samples or classes, so it costs the same at any batch size and class count.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "consistency_loss", "cross_entropy", "ohem_cross_entropy", "semantic_loss", "language_distillation_loss",
    "gain_correction_loss", "standin_loss", "trust_fidelity_loss",
]

LOSS_TYPES = ("ohem", "cross_entropy")


def _no_autocast(device: torch.device):
    return torch.autocast(device_type=device.type, enabled=False)


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Plain pixel-wise cross-entropy, mean over the non-ignored pixels (0 if there are none).

    Args:
        logits: (B, K, H, W) class scores.
        target: (B, H, W) int64 labels; ``ignore_index`` marks pixels without a label.
    """
    with _no_autocast(logits.device):
        pixel_loss = F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="none")
        valid = (target != ignore_index).to(pixel_loss.dtype)
        # Ignored pixels already contribute 0; dividing by clamp(count, 1) keeps an all-ignored batch
        # at an exact, differentiable 0 instead of NaN.
        return pixel_loss.sum() / valid.sum().clamp(min=1.0)


def ohem_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = 255,
    thresh: float = 0.7,
    min_kept_fraction: float = 1.0 / 16,
) -> torch.Tensor:
    """Online hard example mining cross-entropy, the RGB-X segmentation convention.

    Pixels whose loss exceeds ``-log(thresh)`` (predicted probability of the true class below
    ``thresh``) are kept; if fewer than ``max(1, floor(valid * min_kept_fraction))`` qualify, the
    that-many hardest pixels are kept instead. The kept losses are averaged. Selection is global
    over the batch, as in the paper's Eq. (11).

    The "at least n hardest" rule is computed without a host sync: with ``kth`` the n-th largest
    loss, ``keep = (loss > -log(thresh)) | (loss >= kth)`` is exactly "above threshold" when at
    least n pixels pass it, and "the n hardest" otherwise.

    Args:
        logits: (B, K, H, W) class scores.
        target: (B, H, W) int64 labels; ``ignore_index`` marks pixels without a label.
        thresh: probability threshold (0 < thresh <= 1); 1.0 keeps every pixel with loss > 0.
        min_kept_fraction: fraction of the valid pixels that is always kept (the hardest ones).
    """
    if not 0.0 < thresh <= 1.0:
        raise ValueError(f"OHEM threshold must be in (0, 1] (MODEL.SEM_SEG_HEAD.OHEM_THRESH), got {thresh}.")
    if not 0.0 <= min_kept_fraction <= 1.0:
        raise ValueError(
            "OHEM minimum kept fraction must be in [0, 1] (MODEL.SEM_SEG_HEAD.OHEM_MIN_KEPT_FRACTION), "
            f"got {min_kept_fraction}."
        )
    with _no_autocast(logits.device):
        pixel_loss = F.cross_entropy(
            logits.float(), target, ignore_index=ignore_index, reduction="none"
        ).flatten()
        valid = (target != ignore_index).flatten()
        n_valid = valid.sum()
        n_min = torch.floor(n_valid.to(torch.float64) * min_kept_fraction).long().clamp(min=1)
        # Losses are >= 0, so -1 puts ignored pixels below every valid one in the ranking.
        ranked = torch.where(valid, pixel_loss, pixel_loss.new_full((), -1.0))
        ranked = torch.sort(ranked, descending=True).values
        kth = ranked.gather(0, (n_min - 1).clamp(max=ranked.numel() - 1).reshape(1))
        keep = valid & ((pixel_loss > -math.log(thresh)) | (pixel_loss >= kth))
        keep_f = keep.to(pixel_loss.dtype)
        return (pixel_loss * keep_f).sum() / keep_f.sum().clamp(min=1.0)


def semantic_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    loss_type: str,
    ignore_index: int = 255,
    ohem_thresh: float = 0.7,
    ohem_min_kept_fraction: float = 1.0 / 16,
) -> torch.Tensor:
    """Dispatch on ``loss_type`` ("ohem" or "cross_entropy", MODEL.SEM_SEG_HEAD.LOSS_TYPE)."""
    if loss_type == "ohem":
        return ohem_cross_entropy(
            logits,
            target,
            ignore_index=ignore_index,
            thresh=ohem_thresh,
            min_kept_fraction=ohem_min_kept_fraction,
        )
    if loss_type == "cross_entropy":
        return cross_entropy(logits, target, ignore_index=ignore_index)
    raise ValueError(f"MODEL.SEM_SEG_HEAD.LOSS_TYPE must be one of {LOSS_TYPES}, got {loss_type!r}.")


def consistency_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-pixel ``KL(softmax(teacher / T) || softmax(student / T)) * T^2``, averaged over pixels.

    The self-distillation of CRM_RGBTSeg: ``teacher`` is the fused prediction of the clean input
    (detached by the caller), ``student`` that of the same sample degraded or with a modality dropped,
    both (N, K, h, w) logits. ``T^2`` keeps the gradient's size independent of the temperature.
    """
    if student.shape != teacher.shape:
        raise ValueError(
            f"consistency_loss needs equal shapes, got {tuple(student.shape)} and {tuple(teacher.shape)}."
        )
    log_p_student = F.log_softmax(student.float() / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher.float() / temperature, dim=1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=1)
    return kl.mean() * temperature**2


def trust_fidelity_loss(
    levels: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    corrupted: torch.Tensor,
    clean: torch.Tensor,
    present: torch.Tensor | None,
) -> torch.Tensor:
    """Supervise each stream's trust by how much its features still look like those of the clean input.

    For a degraded sample (rows ``corrupted``) and its clean copy (rows ``clean``, same order), the
    target trust of stream m at a location is ``max(0, cos(g_m(degraded), g_m(clean)))`` (detached),
    ``g`` the features less their per-image spatial mean: 1 where the degradation left the stream's
    features intact, near 0 where it destroyed them. Centring matters: a flat (dead) frame still gives
    features with the stream's constant part, which alone looks like the clean input's. The clean
    copies' own target is 1. Binary cross-entropy on the trust logits, averaged over every present
    stream, location and level (a modality-dropped stream has no trust to learn). No table of how bad
    each corruption is: the target comes from the features, for any corruption.

    Args:
        levels: per level (trust logits (N, 2, h, w), RGB map (N, C, h, w), thermal map, ...) of the fusion.
        corrupted, clean: (n,) row indices of the degraded samples and of their clean copies.
        present: (N, 2) bool of the rows' streams, or None (all present).
    """
    terms, weights = [], []
    for logits, rgb, thermal, *_ in levels.values():
        for m, f in enumerate((rgb, thermal)):
            g = f.float() - f.float().mean(dim=(2, 3), keepdim=True)
            target = F.cosine_similarity(g[corrupted], g[clean], dim=1).clamp(min=0).detach()
            bce = F.binary_cross_entropy_with_logits(logits[corrupted, m].float(), target, reduction="none")
            mask = torch.ones_like(bce[:, 0, 0]) if present is None else present[corrupted, m].float()
            terms.append((bce.mean(dim=(1, 2)) * mask).sum())
            weights.append(mask.sum())
            clean_logits = logits[clean, m].float()
            terms.append(F.binary_cross_entropy_with_logits(
                clean_logits, torch.ones_like(clean_logits), reduction="none").mean(dim=(1, 2)).sum())
            weights.append(torch.tensor(float(len(clean)), device=clean_logits.device))
    return torch.stack(terms).sum() / torch.stack(weights).sum().clamp(min=1.0)


def standin_loss(
    levels: dict[str, tuple[torch.Tensor, ...]], rows: torch.Tensor | None = None
) -> torch.Tensor:
    """How far each stream's stand-in (predicted from the other stream) is from the stream's features.

    Per level and stream: ``mean((s - f)^2) / mean(f^2)`` over the ``rows`` (samples with both streams
    clean; None: all), ``f`` detached (the stand-in learns to imitate the stream, the stream is not
    pulled towards its imitation), averaged over levels and the two streams. Scale-free, so that the
    three levels (of different feature sizes) count alike.

    Args:
        levels: per level (trust logits, RGB map, thermal map, RGB stand-in, thermal stand-in), each map
            (N, C, h, w): the reliability fusion's "trust_levels".
        rows: (n,) row indices of the clean pairs.
    """
    terms = []
    for _, rgb, thermal, standin_rgb, standin_thermal in levels.values():
        for f, s in ((rgb, standin_rgb), (thermal, standin_thermal)):
            if rows is not None:
                f, s = f[rows], s[rows]
            target = f.detach().float()
            terms.append((s.float() - target).square().mean() / target.square().mean().clamp(min=1e-6))
    return torch.stack(terms).mean()


def gain_correction_loss(
    correction: torch.nn.Module,
    params: torch.Tensor,
    thermal: torch.Tensor,
    target_rows: torch.Tensor,
    present: torch.Tensor | None,
    synthetic: int = 8,
    log_gain: tuple[float, float] = (math.log(0.1), math.log(5.0)),
    offset: tuple[float, float] = (-40.0, 40.0),
) -> torch.Tensor:
    """How far the learned gain correction's ``a * x + b`` of a thermal image is from its target.

    Two kinds of examples, averaged alike:

    - the batch's rows: the target of a corrupted row is its clean copy's thermal image
      (``target_rows``), of any other row the image itself (a healthy image must be left alone);
    - ``synthetic`` gain and offset steps of each target image (log-uniform gain in ``log_gain``,
      uniform ``offset``, clipped to 0..255: what an AGC step does), whose target is that image: they
      cost only the correction's small MLP, not a pass of the network, and give it many exact examples.

    Mean squared error in units of 255 over the pixels that hold data and are saturated in neither
    image; rows without a thermal stream, or whose thermal image is flat (a dead camera, which no gain
    undoes), do not count.

    Args:
        correction: the model's ``ThermalGainCorrection``.
        params: (N, 2) its prediction for the rows (``ThermalGainCorrection.predict``).
        thermal: (N, 1, H, W) the rows' raw thermal images in 0..255 (NaN: no data).
        target_rows: (N,) the row of each row's target image.
        present: (N, 2) bool streams of each row, or None (all present).
    """
    from .preprocessing import SATURATED, ThermalGainCorrection

    x = thermal.float()
    target = x[target_rows]
    usable_rows = torch.nan_to_num(target).flatten(1).std(dim=1) >= 1.0
    if present is not None:
        usable_rows &= present[target_rows, 1]
    inputs, wanted, predicted = [x], [target], [params.float()]
    if synthetic > 0:
        n = target.shape[0]
        g = torch.empty(synthetic * n, 1, 1, 1, device=x.device).uniform_(*log_gain).exp()
        o = torch.empty(synthetic * n, 1, 1, 1, device=x.device).uniform_(*offset)
        clean = target.repeat(synthetic, 1, 1, 1)
        stepped = (clean * g + o).clamp(0.0, 255.0)
        inputs.append(stepped)
        wanted.append(clean)
        predicted.append(correction.predict(stepped).float())
        usable_rows = torch.cat([usable_rows, usable_rows.repeat(synthetic)])
    x, target, params = torch.cat(inputs), torch.cat(wanted), torch.cat(predicted)
    corrected = ThermalGainCorrection.apply(torch.nan_to_num(x), params)
    usable = torch.isfinite(x) & torch.isfinite(target) & (x < SATURATED) & (target < SATURATED)
    weight = usable.float()
    err = (corrected - torch.nan_to_num(target)).square() / 255.0**2 * weight
    per_row = err.flatten(1).sum(1) / weight.flatten(1).sum(1).clamp(min=1.0)
    rows = usable_rows.float()
    return (per_row * rows).sum() / rows.sum().clamp(min=1.0)


def language_distillation_loss(
    features: torch.Tensor,
    labels: torch.Tensor,
    text_embeddings: torch.Tensor,
    tau: float,
    ignore_index: int = 255,
) -> torch.Tensor:
    """Relation distillation from class-name text embeddings to visual class prototypes (paper §III-E).

    1. Labels are nearest-resized from full resolution to the feature size (h, w).
    2. Prototypes: masked average pooling of ``features`` per class over the whole batch (one
       one-hot einsum), only for the classes present in the batch.
    3. ``S_p`` / ``S_t``: cosine self-similarity of the prototypes / of the matching text embeddings.
    4. Loss: mean over present classes i of ``KL(softmax(S_t[i]/tau) || softmax(S_p[i]/tau))``,
       with both softmaxes restricted to the present classes; the text relation is the target.

    Why so: at ``tau`` 1 a softmax over cosines in [-1, 1] is almost uniform and the loss carries
    little signal, hence a configurable, smaller temperature; a class absent from the batch has no
    prototype, so it is left out of rows and columns instead of entering as a zero vector. (The
    official release's version of this loss: README, "How this differs from the official release".)

    Fewer than two present classes carry no relation: the result is then an exact 0 that is still
    connected to ``features`` (so DDP and autograd see the usual graph).

    Args:
        features: (B, C, h, w) fused stride-16 features.
        labels: (B, H, W) int64 full-resolution labels; ``ignore_index`` and ids >= K are skipped.
        text_embeddings: (K, Dt) class text embeddings (any norm).
        tau: softmax temperature (> 0, MODEL.SARTM.DISTILL.TAU).
    Returns:
        A float32 scalar.
    """
    if tau <= 0:
        raise ValueError(f"MODEL.SARTM.DISTILL.TAU must be > 0, got {tau}.")
    num_classes = text_embeddings.shape[0]
    with _no_autocast(features.device):
        feats = features.float()
        h, w = feats.shape[-2:]
        small = F.interpolate(labels[:, None].float(), size=(h, w), mode="nearest")[:, 0].long()
        small = torch.where((small >= 0) & (small < num_classes), small, torch.full_like(small, num_classes))
        one_hot = F.one_hot(small, num_classes + 1)[..., :num_classes].to(feats.dtype)  # (B, h, w, K)

        counts = one_hot.sum(dim=(0, 1, 2))  # (K,)
        sums = torch.einsum("bchw,bhwk->kc", feats, one_hot)
        prototypes = sums / counts.clamp(min=1.0)[:, None]
        present = counts > 0

        proto_n = F.normalize(prototypes, dim=1)
        text_n = F.normalize(text_embeddings.to(device=feats.device, dtype=torch.float32), dim=1)
        s_p = proto_n @ proto_n.t() / tau
        s_t = text_n @ text_n.t() / tau

        # Absent columns get a large finite negative logit: their probability is exactly 0 and
        # (unlike -inf) no NaN can reach the gradient.
        col_mask = present[None, :]
        very_negative = torch.finfo(torch.float32).min / 4
        log_p = torch.log_softmax(s_p.masked_fill(~col_mask, very_negative), dim=1)
        log_t = torch.log_softmax(s_t.masked_fill(~col_mask, very_negative), dim=1)
        kl = torch.where(col_mask, log_t.exp() * (log_t - log_p), torch.zeros_like(log_p)).sum(dim=1)

        present_f = present.to(torch.float32)
        n_present = present_f.sum()
        loss = (kl * present_f).sum() / n_present.clamp(min=1.0)
        return loss * (n_present >= 2).to(torch.float32)
