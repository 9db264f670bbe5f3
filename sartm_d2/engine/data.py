"""A training data stream that can stop at any iteration and resume exactly where it was.

Detectron2's ``TrainingSampler`` restarts its stream on ``--resume`` and its augmentations draw from
the worker's global RNG, so a resumed run sees different batches than an uninterrupted one. Here
every sample carries its position in the global stream: the index comes from a per-epoch
permutation seeded by ``(seed, epoch)``, and the augmentation RNG is seeded by ``(seed, position)``.
A run resumed at iteration ``i`` therefore continues with exactly the batches (and crops, flips,
jitter) that the uninterrupted run used, for any number of loader workers.
"""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.utils.data as torchdata
from detectron2.data.build import trivial_batch_collator, worker_init_reset_seed
from detectron2.utils import comm


class ResumableBatchSampler(torchdata.Sampler):
    """Infinite batches of ``(position, index)`` pairs for this process.

    Global position ``p`` belongs to iteration ``p // total_batch_size`` and to rank
    ``p % world_size``; ``start_iter`` skips the positions of earlier iterations.
    """

    def __init__(self, size: int, total_batch_size: int, *, seed: int, start_iter: int = 0, shuffle=True):
        if size <= 0:
            raise ValueError("The training set is empty: check DATASETS.TRAIN.")
        self._rank, self._world = comm.get_rank(), comm.get_world_size()
        if total_batch_size % self._world:
            raise ValueError(
                f"SOLVER.IMS_PER_BATCH={total_batch_size} must be divisible by the number of processes "
                f"({self._world})."
            )
        self._size, self._total, self._seed = size, total_batch_size, int(seed)
        self._start = start_iter * total_batch_size
        self._shuffle = shuffle

    def _permutation(self, epoch: int) -> list[int]:
        if not self._shuffle:
            return list(range(self._size))
        g = torch.Generator().manual_seed(self._seed * 1_000_003 + epoch)
        return torch.randperm(self._size, generator=g).tolist()

    def __iter__(self):
        per_rank = self._total // self._world
        pos = self._start + self._rank
        epoch, perm = -1, []
        batch = []
        while True:
            e, offset = divmod(pos, self._size)
            if e != epoch:
                epoch, perm = e, self._permutation(e)
            batch.append((pos, perm[offset]))
            pos += self._world
            if len(batch) == per_rank:
                yield batch
                batch = []


class SeededMapDataset(torchdata.Dataset):
    """Maps ``(position, index)`` to ``mapper(dataset[index])`` with RNGs seeded by the position.

    The RNG state of the calling process is restored afterwards, so mapping in the main process
    (no workers) does not disturb the model's random stream. A mapper whose ``uses_iteration`` is
    true is also told the sample's training iteration (``position // total_batch_size``), which is
    as reproducible as the position (augmentation schedules, e.g. INPUT.CORRUPTION_RAMP).
    """

    def __init__(self, dataset, mapper, seed: int, total_batch_size: int = 1):
        self._dataset, self._mapper, self._seed = dataset, mapper, int(seed)
        self._total = int(total_batch_size)

    def __len__(self):
        return len(self._dataset)

    def __getitem__(self, item):
        pos, idx = item
        np_state, py_state = np.random.get_state(), random.getstate()
        seed = (self._seed * 2_654_435_761 + pos) % (2**32)
        np.random.seed(seed)
        random.seed(seed)
        try:
            if getattr(self._mapper, "uses_iteration", False):
                return self._mapper(self._dataset[idx], iteration=pos // self._total)
            return self._mapper(self._dataset[idx])
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def build_resumable_train_loader(dataset, mapper, *, total_batch_size: int, seed: int, start_iter: int = 0,
                                 num_workers: int = 0, pin_memory: bool = False):
    """A map-style DataLoader over ``dataset`` (a list of records) that starts at ``start_iter``."""
    sampler = ResumableBatchSampler(len(dataset), total_batch_size, seed=seed, start_iter=start_iter)
    return torchdata.DataLoader(
        SeededMapDataset(dataset, mapper, seed, total_batch_size),
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=trivial_batch_collator,
        worker_init_fn=worker_init_reset_seed,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )
