"""Data-parallel training of one run under torchrun (NCCL on GPUs, gloo on CPU).

Each rank draws its share of the balanced sampler; after each backward the gradients of
G (and of the heads) are averaged over ranks, which is the same update as
DistributedDataParallel but also works when a module is called more than once per step
(G runs once per group). Rank 0 evaluates and writes the run folder; BatchNorm statistics
stay per rank, as in DDP without SyncBatchNorm.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as tdist


def setup() -> tuple[int, int]:
    """(rank, world size); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if not tdist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        tdist.init_process_group(backend)
    return tdist.get_rank(), world


def device_for(name: str) -> torch.device:
    if torch.cuda.is_available() and name in ("auto", "cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def barrier() -> None:
    if tdist.is_available() and tdist.is_initialized():
        tdist.barrier()


def average_gradients(params) -> None:
    world = tdist.get_world_size()
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        tdist.all_reduce(p.grad, op=tdist.ReduceOp.SUM)
        p.grad /= world


def assert_in_sync(params) -> None:
    """Raise if any rank's parameters differ from rank 0's (they get the same averaged updates)."""
    flat = torch.cat([p.detach().reshape(-1).float() for p in params])
    ref = flat.clone()
    tdist.broadcast(ref, src=0)
    diff = (flat - ref).abs().max()
    tdist.all_reduce(diff, op=tdist.ReduceOp.MAX)
    if diff.item() > 0:
        raise RuntimeError(f"ranks diverged: parameters differ by up to {diff.item():.3g}")
