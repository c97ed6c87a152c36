"""Cross-rank agreement on a verdict.

Every rank must take the same action at the same step: if rank 1 skips an update that rank 0
applies, the replicas silently diverge; if rank 1 raises while rank 0 enters the next
all-reduce, rank 0 hangs. So each rank reduces a small vector of int flags with MAX (a flag,
never the raw values) and acts on the agreed result. Outside distributed training these are
plain pass-throughs with no communication.
"""
from __future__ import annotations

from typing import Any

import torch
from mmengine import dist

from .finite_check import any_nonfinite

__all__ = ['agree_any', 'agree_any_flags', 'agreed_nonfinite', 'gather_from_ranks',
           'rank_and_world']


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` when not distributed."""
    return dist.get_rank(), dist.get_world_size()


def agree_any(flags: torch.Tensor) -> list[bool]:
    """Element-wise "is this flag set on ANY rank", as host booleans.

    ``flags`` is a 1-d integer tensor (0/1 per flag). This is the one host sync of an audit.
    """
    flags = flags.to(torch.int32)
    if dist.is_distributed():
        dist.all_reduce(flags, op='max')
    return [bool(value) for value in flags.tolist()]


def agree_any_flags(flags: list[bool]) -> list[bool]:
    """:func:`agree_any` for host booleans; no tensor at all outside distributed training."""
    if not dist.is_distributed():
        return list(flags)
    return agree_any(torch.tensor(flags, dtype=torch.int32))


def gather_from_ranks(obj: Any) -> list[Any]:
    """Every rank's picklable ``obj``, indexed by rank (a collective: all ranks must call it).

    Only used on the diagnostic path, after all ranks agreed that an event happened.
    """
    if not dist.is_distributed():
        return [obj]
    return dist.all_gather_object(obj)


def agreed_nonfinite(named: list) -> bool:
    """Agreed across ranks: does any of these ``(name, tensor)`` pairs hold NaN/Inf?"""
    return agree_any_flags(any_nonfinite([[t for _, t in named]]))[0]
