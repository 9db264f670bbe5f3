"""OHEM cross-entropy and the language distillation loss against independent computations."""

import math

import pytest
import torch
import torch.nn.functional as F

import sartm_d2  # noqa: F401  (compat patches before detectron2)
from sartm_d2.modeling.losses import (
    cross_entropy,
    language_distillation_loss,
    ohem_cross_entropy,
    semantic_loss,
)


def _reference_ohem(logits, target, ignore, thresh, frac):
    """Sort-based reference: losses above -log(thresh), or the n hardest if too few."""
    losses = F.cross_entropy(logits.double(), target, reduction="none", ignore_index=ignore)[target != ignore]
    n_min = max(1, int(losses.numel() * frac))
    above = losses[losses > -math.log(thresh)]
    if above.numel() >= n_min:
        return above.mean()
    return torch.sort(losses, descending=True).values[:n_min].mean()


def _random_batch(seed=0, b=2, k=5, h=12, w=17, ignore_frac=0.2):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, k, h, w, generator=g) * 3
    target = torch.randint(0, k, (b, h, w), generator=g)
    target[torch.rand(b, h, w, generator=g) < ignore_frac] = 255
    return logits, target


def test_ohem_equals_plain_ce_when_every_pixel_is_kept():
    logits, target = _random_batch()
    # thresh 1.0: -log(1) = 0, every pixel with a positive loss is kept.
    ohem = ohem_cross_entropy(logits, target, thresh=1.0)
    plain = F.cross_entropy(logits, target, ignore_index=255)
    torch.testing.assert_close(ohem, plain)
    torch.testing.assert_close(cross_entropy(logits, target), plain)


@pytest.mark.parametrize("scale", [0.1, 1.0, 30.0])
def test_ohem_matches_reference_selection(scale):
    logits, target = _random_batch(seed=1)
    logits = logits * scale  # 0.1: almost all pixels hard; 30: almost all easy -> n_min hardest
    ref = _reference_ohem(logits, target, 255, 0.7, 1 / 16)
    torch.testing.assert_close(ohem_cross_entropy(logits, target).double(), ref, rtol=1e-5, atol=1e-6)


def test_ohem_keeps_at_least_valid_over_16_hardest():
    b, k, h, w = 1, 3, 16, 16
    target = torch.zeros(b, h, w, dtype=torch.long)
    target[0, 0, :] = 255  # 240 valid pixels -> at least 15 kept
    logits = torch.zeros(b, k, h, w)
    logits[:, 0] = 20.0  # every pixel confidently right: all losses far below -log(0.7)
    hard = torch.arange(40)  # give 40 pixels graded, still-easy losses
    rows, cols = 1 + hard // w, hard % w
    logits[0, 0, rows, cols] = 20.0 - 12.0 - hard.float() * 0.1
    pixel_loss = F.cross_entropy(logits, target, reduction="none", ignore_index=255)[target != 255]
    assert (pixel_loss < -math.log(0.7)).all()
    expected = torch.sort(pixel_loss, descending=True).values[:15].mean()
    torch.testing.assert_close(ohem_cross_entropy(logits, target), expected)


def test_ohem_ignores_255_and_all_ignored_is_zero_with_graph():
    logits, target = _random_batch(seed=2)
    changed = logits.clone()
    mask = (target == 255).unsqueeze(1).expand_as(logits)
    changed[mask] = torch.randn(int(mask.sum())) * 100
    torch.testing.assert_close(ohem_cross_entropy(changed, target), ohem_cross_entropy(logits, target))

    logits.requires_grad_(True)
    loss = ohem_cross_entropy(logits, torch.full_like(target, 255))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() == 0


def test_losses_are_fp32_under_bf16_autocast():
    logits, target = _random_batch(seed=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ohem_cross_entropy(logits.bfloat16(), target)
    assert out.dtype == torch.float32


def test_semantic_loss_dispatch_and_bad_type():
    logits, target = _random_batch(seed=4)
    torch.testing.assert_close(
        semantic_loss(logits, target, loss_type="cross_entropy"), cross_entropy(logits, target)
    )
    with pytest.raises(ValueError, match="MODEL.SEM_SEG_HEAD.LOSS_TYPE"):
        semantic_loss(logits, target, loss_type="focal")
    with pytest.raises(ValueError, match="OHEM_THRESH"):
        ohem_cross_entropy(logits, target, thresh=0.0)


# ----------------------------------------------------------------------------- distillation


def _reference_distill(features, labels, text, tau, ignore=255):
    """Loop-based reference: per present class mean feature, row-wise KL(text || proto)."""
    b, c, h, w = features.shape
    small = F.interpolate(labels[:, None].float(), size=(h, w), mode="nearest")[:, 0].long()
    feats = features.permute(0, 2, 3, 1).reshape(-1, c).double()
    small = small.reshape(-1)
    present = [k for k in range(text.shape[0]) if (small == k).any()]
    if len(present) < 2:
        return torch.tensor(0.0, dtype=torch.float64)
    protos = torch.stack([feats[small == k].mean(0) for k in present])
    t = text[present].double()
    s_p = F.cosine_similarity(protos[:, None], protos[None], dim=-1) / tau
    s_t = F.cosine_similarity(t[:, None], t[None], dim=-1) / tau
    p_t = s_t.softmax(1)
    return (p_t * (p_t.log() - s_p.log_softmax(1))).sum(1).mean()


def _distill_batch(seed=0, k=6, present=(0, 2, 3, 5)):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(2, 8, 4, 6, generator=g)
    # full-resolution labels (x4) built from a low-res map so every present class survives the resize
    small = torch.tensor(present)[torch.randint(0, len(present), (2, 4, 6), generator=g)]
    small[0, 0, 0] = 255
    labels = small.repeat_interleave(4, 1).repeat_interleave(4, 2)
    text = torch.randn(k, 10, generator=g)
    return features, labels, text


def test_distillation_matches_loop_reference():
    features, labels, text = _distill_batch()
    for tau in (0.1, 1.0):
        got = language_distillation_loss(features, labels, text, tau=tau)
        torch.testing.assert_close(
            got.double(), _reference_distill(features, labels, text, tau), rtol=1e-4, atol=1e-6
        )
        assert got.item() > 0


def test_distillation_is_zero_when_similarities_agree():
    torch.manual_seed(0)
    k, dt = 4, 7
    text = torch.randn(k, dt)
    h, w = 3, 5
    labels_small = torch.arange(2 * h * w).reshape(2, h, w) % k  # every class present
    # prototypes = text embeddings (per-pixel feature = positive multiple of its class embedding)
    features = (text[labels_small] * 2.5).permute(0, 3, 1, 2).contiguous()
    labels = labels_small.repeat_interleave(2, 1).repeat_interleave(2, 2)
    assert features.shape == (2, dt, h, w)
    assert language_distillation_loss(features, labels, text, tau=0.1).abs().item() < 1e-5
    other = torch.randn(k, dt)  # prototypes of unrelated vectors: a different relation structure
    features_other = other[labels_small].permute(0, 3, 1, 2).contiguous()
    assert language_distillation_loss(features_other, labels, text, tau=0.1).item() > 1e-2


def test_distillation_ignores_absent_classes_and_ignored_pixels():
    features, labels, text = _distill_batch(present=(0, 2, 3, 5))
    base = language_distillation_loss(features, labels, text, tau=0.1)
    absent_changed = text.clone()
    absent_changed[[1, 4]] = torch.randn(2, text.shape[1]) * 10
    torch.testing.assert_close(language_distillation_loss(features, labels, absent_changed, tau=0.1), base)
    present_changed = text.clone()
    present_changed[2] = torch.randn(text.shape[1])
    assert not torch.allclose(language_distillation_loss(features, labels, present_changed, tau=0.1), base)
    # pixel (0, 0, 0) is ignored (255): its feature does not matter
    features2 = features.clone()
    features2[0, :, 0, 0] = 100.0
    torch.testing.assert_close(language_distillation_loss(features2, labels, text, tau=0.1), base)


def test_distillation_fewer_than_two_classes_is_zero_with_graph_and_fp32():
    features, labels, text = _distill_batch(present=(3,))
    features.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = language_distillation_loss(features.bfloat16(), labels, text, tau=0.1)
    assert loss.dtype == torch.float32 and loss.item() == 0.0
    loss.backward()
    assert features.grad is not None and torch.isfinite(features.grad).all()


def test_distillation_gradient_is_finite_and_reaches_features():
    features, labels, text = _distill_batch(seed=5)
    features.requires_grad_(True)
    language_distillation_loss(features, labels, text, tau=0.05).backward()
    assert torch.isfinite(features.grad).all() and features.grad.abs().sum() > 0
