"""``--num-gpus N`` that also works without CUDA.

detectron2 0.6's ``launch`` asserts CUDA and NCCL for more than one process. With CUDA this module
defers to it unchanged. Without CUDA, ``N > 1`` starts N CPU processes joined by a gloo process
group, and sets detectron2's local process group so that ``comm.get_local_rank()``, the
distributed samplers and the evaluators' ``all_gather`` behave as on GPUs. This is how
distributed training and evaluation are tested in CI.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import launch as d2_launch
from detectron2.utils import comm

logger = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_worker(rank: int, main_func, world_size: int, dist_url: str, args, threads: int):
    torch.set_num_threads(threads)
    dist.init_process_group(
        backend="gloo", init_method=dist_url, world_size=world_size, rank=rank, timeout=timedelta(minutes=30)
    )
    comm._LOCAL_PROCESS_GROUP = dist.new_group(list(range(world_size)))
    comm.synchronize()
    try:
        main_func(*args)
        # No rank tears the gloo groups down while a peer may still be in a collective: that made
        # the peer's gloo thread abort (SIGABRT, "terminate called without an active exception").
        comm.synchronize()
    finally:
        comm._LOCAL_PROCESS_GROUP = None
        dist.destroy_process_group()


def launch(main_func, num_gpus_per_machine: int, num_machines: int = 1, machine_rank: int = 0,
           dist_url: str | None = None, args=()):
    """Run ``main_func(*args)`` in ``num_gpus_per_machine`` processes (CUDA: detectron2's launch)."""
    if torch.cuda.is_available() or num_gpus_per_machine <= 1:
        return d2_launch(main_func, num_gpus_per_machine, num_machines=num_machines,
                         machine_rank=machine_rank, dist_url=dist_url or "auto", args=args)
    if num_machines != 1:
        raise ValueError("Multi-machine training without CUDA is not supported; use --num-machines 1.")
    if dist_url in (None, "auto"):
        dist_url = f"tcp://127.0.0.1:{_free_port()}"
    threads = max(1, (os.cpu_count() or 1) // num_gpus_per_machine)
    logger.info(f"No CUDA: running {num_gpus_per_machine} CPU processes with gloo ({threads} threads each)")
    mp.start_processes(_cpu_worker, nprocs=num_gpus_per_machine,
                       args=(main_func, num_gpus_per_machine, dist_url, args, threads),
                       daemon=False, start_method="spawn")
