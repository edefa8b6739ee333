"""Data-parallel training under ``torchrun``: who am I, which device, and a process group that closes itself.

``torchrun --nproc_per_node N -m reidtrain.cli fit ...`` (or the ``reidtrain`` script through ``torchrun
--no-python``) sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; without them training runs in one process. The
backend is ``nccl`` for CUDA and ``gloo`` for CPU; each CUDA rank takes the GPU ``cuda:LOCAL_RANK``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistEnv", "broadcast_object", "dist_env", "process_group"]


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_env() -> DistEnv:
    """Read ``torchrun``'s environment; a plain process is rank 0 of 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size < 1:
        raise ValueError(f"WORLD_SIZE must be >= 1, got {world_size}")
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    return DistEnv(rank, local_rank, world_size)


@contextmanager
def process_group(env: DistEnv, device: torch.device) -> Iterator[torch.device]:
    """Join the job's process group (when ``env`` spans several processes) and yield this rank's device."""
    if not env.enabled:
        yield device
        return
    if device.type == "cuda":
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=env.rank, world_size=env.world_size)
    try:
        yield device
    finally:
        dist.destroy_process_group()


def broadcast_object(value: Any, env: DistEnv) -> Any:
    """``value`` of rank 0 on every rank (identity in a single process)."""
    if not env.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
