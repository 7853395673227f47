"""Thin torch.distributed helpers. Every rank must call each of them, in the same order.

In one process (no process group) they degrade to identities, so the loop runs unchanged in tests.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn

# torch 2.14 renamed all_gather_into_tensor (still there, with a FutureWarning on every call).
_gather_into = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def all_gather_rows(local: Tensor) -> Tensor:
    """All ranks' rows concatenated in rank order; ranks may hold different row counts.

    A plain all-gather with unequal sizes does not raise under gloo: it aborts the worker. So the
    counts go first, every rank pads to the largest, and the padding is cut off afterwards.
    """
    if not is_distributed():
        return local
    world = dist.get_world_size()
    count = torch.tensor([local.shape[0]], device=local.device, dtype=torch.long)
    counts = torch.empty(world, device=local.device, dtype=torch.long)
    _gather_into(counts, count)
    sizes = counts.tolist()
    most = max(sizes)
    if most == 0:
        return local[:0]
    padded = local.new_zeros((most, *local.shape[1:]))
    padded[: local.shape[0]] = local
    gathered = local.new_empty((world * most, *local.shape[1:]))
    _gather_into(gathered, padded)
    parts = [gathered[r * most : r * most + n] for r, n in enumerate(sizes)]
    return torch.cat(parts)


def all_reduce_sum_(tensor: Tensor) -> Tensor:
    """Sums `tensor` in place across ranks and returns it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_rank(flag: bool, device: torch.device) -> bool:
    """True when `flag` is true on any rank (so that every rank takes the same branch)."""
    if not is_distributed():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def mean_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Averages a flat dict of floats across ranks with one all-reduce."""
    if not is_distributed() or not values:
        return dict(values)
    keys = sorted(values)
    packed = torch.tensor([float(values[k]) for k in keys], device=device, dtype=torch.float64)
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    packed /= dist.get_world_size()
    return dict(zip(keys, packed.tolist()))


def broadcast_buffers_(module: nn.Module, src: int = 0) -> None:
    """Gives every rank rank `src`'s buffers (BN running stats), as DDP's broadcast_buffers does."""
    if not is_distributed():
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src)


def all_gather_objects(obj: object) -> list:
    """Every rank's `obj` (small, picklable), in rank order, on every rank."""
    if not is_distributed():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if is_distributed():
        dist.barrier()


GatherFn = Callable[[Tensor], Tensor]
