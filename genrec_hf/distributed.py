"""Data-parallel helpers for runs under torchrun / accelerate launch / DeepSpeed.

The Trainer already shards training and its own eval loop; these cover what runs beside it: the
shared evaluator (users sharded over ranks, per-user ranks gathered, so every rank gets the exact
single-process metrics) and the files one process must write. Outside a distributed run every
helper is the single-process no-op.
"""

from __future__ import annotations

import os

import torch


def world() -> tuple[int, int]:
    """(rank, world size) of the initialised default process group, else (0, 1)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """Rank 0 of the process group, or before the Trainer initialises it, the launcher's RANK."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def barrier() -> None:
    if world()[1] > 1:
        torch.distributed.barrier()


def shard_bounds(num_rows: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of this rank's contiguous share of `num_rows`: sizes differ by at most one."""
    base, extra = divmod(num_rows, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def gather_in_rank_order(shard):
    """Every rank's `shard` (any picklable object), listed by rank, on every rank."""
    size = world()[1]
    if size == 1:
        return [shard]
    shards = [None] * size
    torch.distributed.all_gather_object(shards, shard)
    return shards


def broadcast_from_main(value):
    """Rank 0's `value` (picklable) on every rank: a decision every rank must take alike."""
    if world()[1] == 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]
