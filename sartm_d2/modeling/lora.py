"""Per-modality LoRA on the q and v projections of Hiera's fused ``attn.qkv`` linear layers.

SARTM adapts the frozen SAM2 image encoder with LoRA, one set of low-rank matrices *per modality*
(paper §III-B: "the LoRA parameters are modality specific"). Both modalities run through the frozen
weights in one batched pass; the batch is MODALITY-MAJOR (rows ``0..N/M-1`` are modality 0, RGB,
the next ``N/M`` rows modality 1, thermal, ...). Hiera's window partition and q-pooling keep that
order (windows of sample ``b`` precede those of sample ``b + 1``), so a block's qkv input can be
viewed as ``(M, tokens, in)`` and each modality's slab multiplied by its own LoRA matrices in one
batched matmul, without loops over samples.

Hiera's qkv is ``nn.Linear(dim, 3 * dim_out)``; at the three stage-transition blocks
``dim_out = 2 * dim``, so q is ``out[..., :dim_out]`` and v is ``out[..., 2 * dim_out:]`` (never
``3 * in``).

A batch may also hold unequal numbers of images per modality (a missing camera, modality dropout):
the backbone then sets ``ModalityLayout.counts`` (images per modality, in stacking order) and each
layer splits its rows in those proportions; a modality with no image costs nothing.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from sam2.modeling.backbones.hieradet import MultiScaleAttention
from torch import nn

logger = logging.getLogger(__name__)

__all__ = [
    "LoRAQKVLinear",
    "ModalityLayout",
    "inject_lora",
    "lora_parameters",
    "mark_only_lora_as_trainable",
    "merge_lora",
    "unmerge_lora",
]


class ModalityLayout:
    """Images per modality in the current batch, shared by one backbone's LoRA layers.

    ``counts`` None means equal halves (the usual RGB-T batch). Not a module or buffer: it is state
    of one forward call, set by the backbone around its trunk.
    """

    def __init__(self):
        self.counts: tuple[int, ...] | None = None


class LoRAQKVLinear(nn.Linear):
    """A frozen fused qkv ``nn.Linear(in, 3 * dim_out)`` plus one LoRA pair on q and on v per modality.

    It subclasses ``nn.Linear`` so the frozen parameters keep the names ``weight``/``bias`` and an
    official SAM2 state dict (``...attn.qkv.weight``) loads unchanged. LoRA parameters:

    * ``lora_A``: ``(M, 2, r, in)`` (index 1: 0 = q, 1 = v), Kaiming-uniform like ``nn.Linear``;
    * ``lora_B``: ``(M, 2, dim_out, r)``, zeros, so at initialisation the layer equals the frozen one.

    Output for modality ``m``: ``q += s * B_q[m] A_q[m] x``, ``v += s * B_v[m] A_v[m] x`` with
    ``s = alpha / r``; k is never touched. q and v share one fused ``x @ A`` product (``2r`` columns).

    ``merge()`` / ``unmerge()`` are explicit (never triggered by ``.eval()``/``.train()``, which
    detectron2 toggles around every evaluation): merged, the layer holds per-modality full weights
    ``(M, out, in)`` and runs one batched matmul, for inference only.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool = True,
        rank: int = 16,
        alpha: float = 16.0,
        dropout: float = 0.0,
        num_modalities: int = 2,
        layout: ModalityLayout | None = None,
        device=None,
        dtype=None,
    ):
        """
        Args:
            in_features, out_features, bias: as ``nn.Linear``; ``out_features`` must be ``3 * dim_out``.
            rank: LoRA rank r (0: no LoRA, the plain frozen linear).
            alpha: LoRA scaling numerator; the delta is multiplied by ``alpha / rank``.
            dropout: dropout probability on the LoRA input (training only).
            num_modalities: M, the number of modality groups the batch is split into.
            layout: the images per modality of the current batch (None: always equal groups).
        """
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        if out_features % 3 != 0:
            raise ValueError(f"LoRAQKVLinear needs a fused qkv layer (out = 3 * dim_out), got {out_features}")
        if rank < 0:
            raise ValueError(f"LoRA rank must be >= 0 (0 disables LoRA), got {rank}")
        if num_modalities < 1:
            raise ValueError(f"num_modalities must be >= 1, got {num_modalities}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")
        self.dim_out = out_features // 3
        self.rank = rank
        self.alpha = float(alpha)
        self.scaling = self.alpha / rank if rank > 0 else 0.0
        self.num_modalities = num_modalities
        self.layout = layout
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if rank > 0:
            factory = {"device": device, "dtype": dtype}
            self.lora_A = nn.Parameter(torch.empty(num_modalities, 2, rank, in_features, **factory))
            self.lora_B = nn.Parameter(torch.empty(num_modalities, 2, self.dim_out, rank, **factory))
        else:
            self.register_parameter("lora_A", None)
            self.register_parameter("lora_B", None)
        # Per-modality merged weights (M, out, in); non-persistent so checkpoints never contain them.
        self.register_buffer("merged_weight", None, persistent=False)
        self.reset_lora_parameters()

    @classmethod
    def from_linear(cls, linear: nn.Linear, **lora_kwargs) -> LoRAQKVLinear:
        """Wrap an existing qkv linear, sharing (not copying) its frozen weight and bias tensors."""
        new = cls(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            device=linear.weight.device,
            dtype=linear.weight.dtype,
            **lora_kwargs,
        )
        new.weight = linear.weight
        new.bias = linear.bias
        return new

    def reset_lora_parameters(self) -> None:
        """A: Kaiming-uniform with nn.Linear's fan-in bound (per modality and q/v); B: zeros."""
        if self.rank == 0:
            return
        with torch.no_grad():
            # kaiming_uniform_(a=sqrt(5)) on an (r, in) matrix is U(-1/sqrt(in), 1/sqrt(in)).
            bound = 1.0 / math.sqrt(self.in_features)
            self.lora_A.uniform_(-bound, bound)
            self.lora_B.zero_()

    def reset_parameters(self) -> None:
        # nn.Linear.__init__ calls this before the LoRA attributes exist.
        super().reset_parameters()
        if hasattr(self, "lora_A"):
            self.reset_lora_parameters()

    @property
    def merged(self) -> bool:
        return self.merged_weight is not None

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, rank={self.rank}, alpha={self.alpha}, "
            f"num_modalities={self.num_modalities}, merged={self.merged}"
        )

    def _split_modalities(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if n % self.num_modalities != 0:
            raise ValueError(
                f"LoRAQKVLinear: leading dim {n} is not divisible by num_modalities={self.num_modalities}; "
                "the batch must be modality-major (all RGB rows, then all thermal rows)."
            )
        return x.reshape(self.num_modalities, -1, self.in_features)

    def delta_weight(self) -> torch.Tensor:
        """Per-modality full-size weight delta ``(M, out, in)``: zero rows for k, ``s * B A`` for q and v."""
        m, d = self.num_modalities, self.dim_out
        if self.rank == 0:
            return self.weight.new_zeros(m, self.out_features, self.in_features)
        qv = torch.matmul(self.lora_B, self.lora_A) * self.scaling  # (M, 2, dim_out, in)
        zeros_k = qv.new_zeros(m, 1, d, self.in_features)
        full = torch.cat([qv[:, :1], zeros_k, qv[:, 1:]], dim=1)  # (M, 3 [q, k, v], dim_out, in)
        return full.reshape(m, self.out_features, self.in_features)

    @torch.no_grad()
    def merge(self) -> None:
        """Materialise ``W + delta_m`` per modality for inference (LoRA gets no gradient while merged)."""
        if self.merged:
            return
        if self.rank == 0:
            self.merged_weight = self.weight.detach().unsqueeze(0).expand(self.num_modalities, -1, -1)
            return
        merged = self.weight.detach().unsqueeze(0) + self.delta_weight().to(self.weight.dtype)
        if not torch.isfinite(merged).all():
            raise ValueError(
                "LoRAQKVLinear.merge(): the merged weights contain NaN/Inf (non-finite LoRA parameters "
                "or frozen weight); refusing to merge. Check the training run or checkpoint behind them."
            )
        self.merged_weight = merged

    def unmerge(self) -> None:
        """Drop the merged weights; the forward is again the frozen linear plus the LoRA path (exactly)."""
        self.merged_weight = None

    def _row_counts(self, x: torch.Tensor) -> list[int] | None:
        """Rows of ``x`` per modality when the batch is not split into equal groups, else None."""
        counts = self.layout.counts if self.layout is not None else None
        if counts is None or len(set(counts)) == 1:
            return None
        images = sum(counts)
        if x.shape[0] % images != 0:
            raise ValueError(
                f"LoRAQKVLinear: {x.shape[0]} rows do not split into {images} images {tuple(counts)}."
            )
        per_image = x.shape[0] // images
        return [c * per_image for c in counts]

    def _delta(self, x: torch.Tensor, m: int) -> torch.Tensor:
        """LoRA deltas of q and v for rows of modality ``m``: (..., 2, dim_out)."""
        r = self.rank
        h = F.linear(x, self.lora_A[m].reshape(2 * r, self.in_features)) * self.scaling
        return torch.einsum("...jr,jdr->...jd", h.unflatten(-1, (2, r)), self.lora_B[m])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = self._row_counts(x)
        if self.merged:
            if self.training:
                raise RuntimeError(
                    "LoRAQKVLinear is merged (inference only: LoRA gets no gradient). Call unmerge() "
                    "(or the backbone's unmerge_lora()) before training."
                )
            weight = self.merged_weight
            if rows is not None:
                # One matmul per modality present; an absent modality costs nothing.
                parts = [F.linear(xm, weight[m], self.bias) for m, xm in enumerate(x.split(rows)) if len(xm)]
                return torch.cat(parts) if len(parts) > 1 else parts[0]
            xm = self._split_modalities(x)
            # baddbmm keeps autocast's output dtype (bf16) including the bias, like F.linear.
            if self.bias is not None:
                out = torch.baddbmm(self.bias, xm, weight.transpose(1, 2))
            else:
                out = torch.bmm(xm, weight.transpose(1, 2))
            return out.reshape(*x.shape[:-1], self.out_features)

        out = F.linear(x, self.weight, self.bias)
        if self.rank == 0:
            return out
        m, r, d = self.num_modalities, self.rank, self.dim_out
        x = self.lora_dropout(x)
        if rows is not None:
            # Unequal groups: each modality's rows with its own matrices (every modality enters the
            # graph, an empty one with zero rows, so that DDP sees all parameters used).
            delta = torch.cat([self._delta(xm, i) for i, xm in enumerate(x.split(rows))])
            out_v = out.view(*out.shape[:-1], 3, d)
            out_v[..., 0, :].add_(delta[..., 0, :].to(out.dtype))
            out_v[..., 2, :].add_(delta[..., 1, :].to(out.dtype))
            return out
        xm = self._split_modalities(x)  # (M, N, in)
        # One fused low-rank product for q and v: (M, N, in) @ (M, in, 2r) -> (M, N, 2r).
        h = torch.bmm(xm, self.lora_A.reshape(m, 2 * r, self.in_features).transpose(1, 2)) * self.scaling
        # (M, N, 2, r) -> (M, 2, N, r) @ (M, 2, r, dim_out) -> (M, 2, N, dim_out)
        delta = torch.matmul(h.unflatten(-1, (2, r)).transpose(1, 2), self.lora_B.transpose(-1, -2))
        out_v = out.view(m, -1, 3, d)  # a view: the in-place adds below land in ``out``
        out_v[:, :, 0].add_(delta[:, 0].to(out.dtype))
        out_v[:, :, 2].add_(delta[:, 1].to(out.dtype))
        return out


def inject_lora(
    module: nn.Module, rank: int, alpha: float, dropout: float = 0.0, num_modalities: int = 2,
    layout: ModalityLayout | None = None,
) -> int:
    """Replace the fused ``attn.qkv`` of every Hiera block under ``module`` by a ``LoRAQKVLinear``.

    Returns the number of layers replaced (0 when ``rank == 0``: the plain frozen linears stay, the
    same for every modality). ``layout``: the images per modality of the current batch, shared.
    """
    if rank == 0:
        return 0
    targets = [
        sub
        for sub in module.modules()
        if isinstance(sub, MultiScaleAttention) and not isinstance(sub.qkv, LoRAQKVLinear)
    ]
    for attn in targets:
        attn.qkv = LoRAQKVLinear.from_linear(
            attn.qkv, rank=rank, alpha=alpha, dropout=dropout, num_modalities=num_modalities, layout=layout
        )
    logger.debug("Injected LoRA (rank %d) into %d qkv layers.", rank, len(targets))
    return len(targets)


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """All LoRA parameters (``lora_A``/``lora_B`` of every ``LoRAQKVLinear``) under ``model``."""
    params = []
    for mod in model.modules():
        if isinstance(mod, LoRAQKVLinear) and mod.rank > 0:
            params.extend([mod.lora_A, mod.lora_B])
    return params


def mark_only_lora_as_trainable(module: nn.Module) -> None:
    """Freeze every parameter of ``module`` except the LoRA ones (which are set trainable)."""
    for p in module.parameters():
        p.requires_grad_(False)
    for p in lora_parameters(module):
        p.requires_grad_(True)


def merge_lora(module: nn.Module) -> int:
    """Merge every ``LoRAQKVLinear`` under ``module``; returns how many were merged.

    All or nothing: if one layer refuses (non-finite weights), the others are unmerged again.
    """
    layers = [m for m in module.modules() if isinstance(m, LoRAQKVLinear)]
    try:
        for layer in layers:
            layer.merge()
    except ValueError:
        for layer in layers:
            layer.unmerge()
        raise
    return len(layers)


def unmerge_lora(module: nn.Module) -> int:
    """Unmerge every ``LoRAQKVLinear`` under ``module``; returns how many there were."""
    layers = [m for m in module.modules() if isinstance(m, LoRAQKVLinear)]
    for layer in layers:
        layer.unmerge()
    return len(layers)
