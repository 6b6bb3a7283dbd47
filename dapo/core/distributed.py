"""Splitting work across ranks and merging it back in a fixed order, so 1 or N processes give the same output.

Work items are dealt round-robin (`items[rank::world]`); results come back with `gather` (every rank's part,
in rank order) and `interleave` (the original order). When the model is sharded (FSDP2) every rank must also
make the same sequence of forward calls, so `lockstep_share` pads short shares with repeats to be dropped.
Outside an initialized process group everything degrades to the single-process case.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) outside an initialized process group."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def barrier() -> None:
    """Wait for every rank (nothing to wait for outside a process group)."""
    if world()[1] > 1:
        torch.distributed.barrier()


def gather(part: Any, world_size: int) -> list[Any]:
    """Every rank's `part`, in rank order (a collective: every rank must call it)."""
    if world_size == 1 or not torch.distributed.is_initialized():
        return [part]
    parts: list[Any] = [None] * world_size
    torch.distributed.all_gather_object(parts, part)
    return parts


def interleave(shards: Sequence[Sequence[T]]) -> list[T]:
    """Undo `items[rank::world]` sharding: shard r held items r, r + world, r + 2 * world, ..."""
    merged: list[T] = []
    for i in range(max((len(shard) for shard in shards), default=0)):
        merged += [shard[i] for shard in shards if i < len(shard)]
    return merged


def lockstep_share(items: Sequence[T], rank: int, world_size: int) -> tuple[list[T], int]:
    """This rank's items (`items[rank::world]`) padded with repeats of the first item to the longest share's
    length, and how many of them are real. Requires a non-empty `items` when padding is needed."""
    mine = list(items[rank::world_size])
    longest = -(-len(items) // world_size)
    return mine + [items[0]] * (longest - len(mine)), len(mine)
