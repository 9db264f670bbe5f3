"""Training-loop pieces: resumable data stream, safe checkpoints, optimizer groups, schedule."""

import math
import os

import numpy as np
import pytest
import torch
from torch import nn

import sartm_d2  # noqa: F401
from sartm_d2.engine import (
    ResumableBatchSampler,
    RGBTCheckpointer,
    SeededMapDataset,
    atomic_torch_save,
    build_resumable_train_loader,
)
from sartm_d2.engine.solver import optimizer_param_groups


def _take(it, n):
    return [next(it) for _ in range(n)]


def test_resumed_stream_continues_the_uninterrupted_one():
    full = _take(iter(ResumableBatchSampler(10, 4, seed=3)), 8)
    resumed = _take(iter(ResumableBatchSampler(10, 4, seed=3, start_iter=5)), 3)
    assert resumed == full[5:]
    positions = [p for batch in full for p, _ in batch]
    assert positions == list(range(32))
    # every epoch is a permutation of the whole set
    idx = [i for batch in full for _, i in batch]
    assert sorted(idx[:10]) == list(range(10)) and sorted(idx[10:20]) == list(range(10))
    assert idx[:10] != idx[10:20]


def test_sampler_rejects_indivisible_batch_and_empty_set(monkeypatch):
    with pytest.raises(ValueError, match="empty"):
        ResumableBatchSampler(0, 4, seed=0)
    monkeypatch.setattr("detectron2.utils.comm.get_world_size", lambda: 3)
    with pytest.raises(ValueError, match="IMS_PER_BATCH=4.*3"):
        ResumableBatchSampler(10, 4, seed=0)


def test_ranks_split_each_global_batch(monkeypatch):
    batches = {}
    for rank in (0, 1):
        monkeypatch.setattr("detectron2.utils.comm.get_world_size", lambda: 2)
        monkeypatch.setattr("detectron2.utils.comm.get_rank", lambda r=rank: r)
        batches[rank] = _take(iter(ResumableBatchSampler(7, 4, seed=1)), 3)
    monkeypatch.undo()
    single = _take(iter(ResumableBatchSampler(7, 4, seed=1)), 3)
    for it in range(3):
        merged = sorted(batches[0][it] + batches[1][it])
        assert merged == sorted(single[it])


def test_augmentation_rng_depends_on_position_only():
    data = list(range(5))

    def mapper(x):
        return (x, float(np.random.rand()))

    ds = SeededMapDataset(data, mapper, seed=7)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = ds[(11, 2)]
    assert np.array_equal(np.random.get_state()[1], before)  # caller's RNG untouched
    np.random.rand(5)
    assert ds[(11, 2)] == a and ds[(12, 2)] != a


def test_loader_is_deterministic_across_workers_and_resume():
    data = list(range(9))

    def mapper(x):
        return x * 1000 + int(np.random.randint(0, 1000))

    def run(start, workers, n):
        loader = build_resumable_train_loader(data, mapper, total_batch_size=2, seed=5, start_iter=start,
                                              num_workers=workers)
        return _take(iter(loader), n)

    full = run(0, 0, 6)
    assert run(4, 0, 2) == full[4:]
    assert run(0, 2, 6) == full


def test_atomic_save_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = str(tmp_path / "model.pth")
    atomic_torch_save({"a": torch.ones(2)}, path)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        atomic_torch_save({"a": torch.zeros(2)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert os.listdir(tmp_path) == ["model.pth"]


def test_checkpointer_roundtrip_and_refusals(tmp_path):
    model = nn.Linear(3, 2)
    ckpt = RGBTCheckpointer(model, save_dir=str(tmp_path))
    ckpt.save("model_0000009", iteration=9)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"
    other = nn.Linear(3, 2)
    extra = RGBTCheckpointer(other, save_dir=str(tmp_path)).resume_or_load("", resume=True)
    assert extra["iteration"] == 9 and torch.equal(other.weight, model.weight)

    with pytest.raises(FileNotFoundError, match="MODEL.WEIGHTS"):
        ckpt.load(str(tmp_path / "nope.pth"))
    (tmp_path / "m.pkl").write_bytes(b"x")
    with pytest.raises(ValueError, match="pickle"):
        ckpt.load(str(tmp_path / "m.pkl"))
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="bad.pth.*weights_only"):
        ckpt.load(str(tmp_path / "bad.pth"))


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)
        self.norm = nn.LayerNorm(2)
        self.tok = nn.Embedding(3, 2)
        self.scale = nn.Parameter(torch.zeros(2))
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def test_param_groups_by_kind():
    m = _Toy()
    groups = optimizer_param_groups(m, base_lr=1.0, weight_decay=0.01, weight_decay_norm=0.1,
                                    weight_decay_bias=0.2, weight_decay_embed=0.3)
    wd = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert wd[id(m.conv.weight)] == 0.01 and wd[id(m.conv.bias)] == 0.2
    assert wd[id(m.norm.weight)] == 0.1 and wd[id(m.norm.bias)] == 0.1
    assert wd[id(m.tok.weight)] == 0.3 and wd[id(m.scale)] == 0.3
    assert id(m.frozen.weight) not in wd and len(wd) == 6


def test_warmup_poly_schedule():
    from detectron2.config import get_cfg

    from sartm_d2 import add_sartm_config
    from sartm_d2.engine import build_lr_scheduler

    cfg = get_cfg()
    add_sartm_config(cfg)
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.WARMUP_FACTOR = 100, 10, 0.1
    cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupPolyLR"  # Base-SARTM.yaml's choice
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_lr_scheduler(cfg, opt)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[50] == pytest.approx((1 - 0.5) ** 0.9)
    assert lrs[99] == pytest.approx((1 - 0.99) ** 0.9) and all(math.isfinite(x) for x in lrs)
