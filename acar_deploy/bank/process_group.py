"""The torchrun process group of the sharded bank commands (`bank extract`, `bank project`).

Rank and world size come from torchrun's environment (one process: rank 0 of 1); the processes meet
at gloo barriers (CPU only: they share files, not tensors), joined lazily on the first barrier.
Each process takes the videos `rank, rank + world, ...` and rank 0 writes `bank.json`.
"""

from __future__ import annotations

import os
from typing import Any


def rank_world() -> tuple[int, int]:
    """(RANK, WORLD_SIZE) of this process; (0, 1) outside torchrun."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _joined() -> Any:
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return dist


def barrier(world: int) -> None:
    """Wait for every process of the group (nothing to wait for in a single process)."""
    if world > 1:
        _joined().barrier()


def gather(value: Any, world: int) -> list[Any]:
    """Every process's `value` (picklable), in rank order, on every process; `[value]` in a single one."""
    if world == 1:
        return [value]
    values: list[Any] = [None] * world
    _joined().all_gather_object(values, value)
    return values


__all__ = ["barrier", "gather", "rank_world"]
