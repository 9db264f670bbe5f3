"""Per-modality LoRA on Hiera's fused qkv: slicing, independence, merge/unmerge, helpers."""

import math

import pytest
import torch
from torch import nn

import sartm_d2  # noqa: F401  (compat before detectron2)
from sartm_d2.modeling.lora import (
    LoRAQKVLinear,
    inject_lora,
    lora_parameters,
    mark_only_lora_as_trainable,
    merge_lora,
    unmerge_lora,
)


def _tiny_hiera():
    from sam2.modeling.backbones.hieradet import Hiera

    return Hiera(
        embed_dim=8,
        num_heads=1,
        stages=(1, 2, 1, 1),
        global_att_blocks=(2,),
        window_spec=(8, 4, 14, 7),
        window_pos_embed_bkg_spatial_size=(7, 7),
    )


def _layer(dim=8, dim_out=16, rank=2, alpha=4.0, m=2, seed=0):
    """A stage-transition-like qkv (dim -> 3 * dim_out, dim_out = 2 * dim) with random, non-zero LoRA."""
    torch.manual_seed(seed)
    layer = LoRAQKVLinear.from_linear(nn.Linear(dim, 3 * dim_out), rank=rank, alpha=alpha, num_modalities=m)
    with torch.no_grad():
        layer.lora_B.normal_()
    return layer


def _explicit(layer: LoRAQKVLinear, x: torch.Tensor) -> torch.Tensor:
    """Reference: per sample, frozen linear plus s * B A x on q and v of that sample's modality."""
    m, d, s = layer.num_modalities, layer.dim_out, layer.alpha / layer.rank
    per_mod = x.shape[0] // m
    outs = []
    for i in range(x.shape[0]):
        mod = i // per_mod
        base = x[i] @ layer.weight.T + layer.bias
        dq = s * (x[i] @ layer.lora_A[mod, 0].T @ layer.lora_B[mod, 0].T)
        dv = s * (x[i] @ layer.lora_A[mod, 1].T @ layer.lora_B[mod, 1].T)
        outs.append(torch.cat([base[..., :d] + dq, base[..., d : 2 * d], base[..., 2 * d :] + dv], -1))
    return torch.stack(outs)


def test_init_is_frozen_linear_exactly():
    lin = nn.Linear(8, 48)
    layer = LoRAQKVLinear.from_linear(lin, rank=4, alpha=8.0, num_modalities=2)
    assert layer.weight is lin.weight and layer.bias is lin.bias  # shared, keys stay weight/bias
    assert sorted(layer.state_dict()) == ["bias", "lora_A", "lora_B", "weight"]
    assert layer.lora_A.shape == (2, 2, 4, 8) and layer.lora_B.shape == (2, 2, 16, 4)
    assert torch.count_nonzero(layer.lora_B) == 0
    bound = 1 / math.sqrt(8)
    assert layer.lora_A.abs().max() <= bound and layer.lora_A.std() > bound / 4  # Kaiming-uniform, not zero
    x = torch.randn(4, 3, 5, 8)
    assert torch.equal(layer(x), lin(x))


def test_stage_transition_slicing_q_and_v_only():
    # The transition block of a real Hiera has qkv dim -> 3 * (2 * dim).
    hiera = _tiny_hiera()
    qkv = hiera.blocks[1].attn.qkv
    assert (qkv.in_features, qkv.out_features) == (8, 3 * 16)

    layer = _layer(dim=8, dim_out=16)
    x = torch.randn(4, 5, 8)  # modality-major: rows 0-1 RGB, 2-3 thermal
    out = layer(x)
    ref = _explicit(layer, x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    frozen = nn.functional.linear(x, layer.weight, layer.bias)
    assert torch.equal(out[..., 16:32], frozen[..., 16:32])  # k untouched
    assert not torch.allclose(out[..., :16], frozen[..., :16])  # q adapted
    assert not torch.allclose(out[..., 32:], frozen[..., 32:])  # v adapted over the whole v slice
    assert (out[..., 40:] - frozen[..., 40:]).abs().min() > 0  # incl. the second half (dim_out = 2 * dim)


def test_modalities_use_only_their_own_lora():
    layer = _layer()
    x = torch.randn(4, 5, 8)
    before = layer(x)
    with torch.no_grad():
        layer.lora_B[1].add_(1.0)
        layer.lora_A[1].mul_(3.0)
    after = layer(x)
    assert torch.equal(before[:2], after[:2])
    assert not torch.allclose(before[2:], after[2:])


def test_batch_not_divisible_by_modalities():
    with pytest.raises(ValueError, match="modality-major"):
        _layer()(torch.randn(3, 5, 8))


def test_merge_unmerge_and_refusal():
    layer = _layer().eval()
    x = torch.randn(4, 6, 8)
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    ref = layer(x)
    layer.merge()
    assert layer.merged and layer.merged_weight.shape == (2, 48, 8)
    assert sorted(layer.state_dict()) == sorted(state)  # merged weights are never saved
    torch.testing.assert_close(layer(x), ref, atol=1e-5, rtol=1e-5)
    # The merged delta of each modality is zero on k.
    assert torch.equal(layer.merged_weight[:, 16:32], layer.weight[16:32].expand(2, -1, -1))
    with pytest.raises(RuntimeError, match="unmerge"):
        layer.train()(x)
    layer.eval()
    layer.unmerge()
    assert not layer.merged
    assert all(torch.equal(v, state[k]) for k, v in layer.state_dict().items())
    assert torch.equal(layer(x), ref)

    with torch.no_grad():
        layer.lora_B[1, 1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        layer.merge()
    assert not layer.merged


def test_merge_lora_is_all_or_nothing():
    hiera = _tiny_hiera()
    assert inject_lora(hiera, rank=2, alpha=2.0) == 5
    layers = [m for m in hiera.modules() if isinstance(m, LoRAQKVLinear)]
    with torch.no_grad():
        layers[-1].lora_A[0, 0, 0, 0] = float("inf")
        layers[-1].lora_B.fill_(1.0)
    with pytest.raises(ValueError, match="non-finite"):
        merge_lora(hiera)
    assert not any(layer.merged for layer in layers)


def test_eval_train_do_not_merge():
    hiera = _tiny_hiera()
    inject_lora(hiera, rank=2, alpha=2.0)
    hiera.eval()
    hiera.train()
    hiera.eval()
    assert not any(m.merged for m in hiera.modules() if isinstance(m, LoRAQKVLinear))
    assert merge_lora(hiera) == 5 and unmerge_lora(hiera) == 5


def test_inject_keeps_official_keys_and_trainable_marking():
    hiera = _tiny_hiera()
    keys = set(hiera.state_dict())
    assert inject_lora(hiera, rank=0, alpha=1.0) == 0  # rank 0: plain frozen linears stay
    assert not any(isinstance(m, LoRAQKVLinear) for m in hiera.modules())
    assert inject_lora(hiera, rank=3, alpha=6.0, dropout=0.1, num_modalities=2) == 5
    new_keys = set(hiera.state_dict())
    assert keys <= new_keys
    assert {k.rsplit(".", 1)[1] for k in new_keys - keys} == {"lora_A", "lora_B"}
    assert len(new_keys - keys) == 10
    mark_only_lora_as_trainable(hiera)
    trainable = {n for n, p in hiera.named_parameters() if p.requires_grad}
    assert trainable == {k for k in new_keys - keys}
    assert len(lora_parameters(hiera)) == 10
    assert hiera.blocks[0].attn.qkv.scaling == 2.0


def test_dropout_only_in_training():
    torch.manual_seed(0)
    layer = LoRAQKVLinear.from_linear(nn.Linear(8, 24), rank=2, alpha=2.0, dropout=0.5)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(2, 50, 8)
    layer.eval()
    assert torch.equal(layer(x), layer(x))
    layer.train()
    assert not torch.equal(layer(x), layer(x))


def test_bf16_autocast_and_gradients():
    layer = _layer()
    x = torch.randn(4, 5, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), _explicit(layer, x), atol=0.1, rtol=0.05)
    layer.weight.requires_grad_(False)
    layer.bias.requires_grad_(False)
    out.float().square().sum().backward()
    assert layer.lora_A.grad is not None and layer.lora_B.grad is not None and x.grad is not None
    assert layer.weight.grad is None
    # Merged inference under autocast keeps the same dtype as the unmerged path.
    layer.eval().merge()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        merged = layer(x)
    assert merged.dtype == torch.bfloat16
    torch.testing.assert_close(merged.float(), out.detach().float(), atol=0.1, rtol=0.05)
