"""Differentiable collectives for the ``sync_dist`` option, and the base of the modules that have it.

Conventions (shared by every loss in :mod:`lacmfer`):

* With ``sync_dist=True`` under an initialised :mod:`torch.distributed` process group, a loss gathers
  the tensors it needs from every rank and returns the **global-batch** value, the same on every rank.
* Gradients follow the convention of :class:`torch.nn.parallel.DistributedDataParallel`, which
  *averages* parameter gradients over ranks: the backward of a gather (or all-reduce) *sums* the
  incoming gradients over ranks, so each rank's inputs receive ``world_size`` times the partial
  derivative of the global loss, and after DDP's averaging the parameters receive exactly the gradient
  of the single-process loss on the concatenated batch.
* When :mod:`torch.distributed` is not available or not initialised, or the group has one rank,
  ``sync_dist=True`` is a no-op, so the same code runs in one process.
* Ranks may hold different batch sizes: sizes are exchanged first (one small collective and a host
  read, paid only with ``sync_dist=True``), tensors are padded to the largest size for the gather, and
  the padding is cut off again.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ._checks import check_bool

__all__: list[str] = []


def is_distributed(process_group: Optional[Any] = None) -> bool:
    """Whether collectives over ``process_group`` would involve more than one rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return False
    return dist.get_world_size(process_group) > 1


def _exchange_sizes(n: int, device: torch.device, group: Optional[Any]) -> list[int]:
    world = dist.get_world_size(group)
    size = torch.tensor([n], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size, group=group)
    return [int(s) for s in sizes]


def _gather_padded(x: Tensor, sizes: list[int], group: Optional[Any]) -> Tensor:
    longest = max(sizes)
    if x.shape[0] < longest:
        pad = x.new_zeros((longest - x.shape[0], *x.shape[1:]))
        x = torch.cat([x, pad])
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in sizes]
    dist.all_gather(parts, x, group=group)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)])


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, sizes: list[int], group: Optional[Any]) -> Tensor:
        ctx.sizes = sizes
        ctx.group = group
        ctx.rank = dist.get_rank(group)
        return _gather_padded(x, sizes, group)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None, None


class _AllReduceSumWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, group: Optional[Any]) -> Tensor:
        ctx.group = group
        out = x.contiguous().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad, None


def gather_batch(*tensors: Optional[Tensor], process_group: Optional[Any] = None) -> list[Any]:
    """All-gather tensors that share their first (batch) dimension, concatenated in rank order.

    Floating-point tensors keep their autograd graph (see the module docstring for the gradient
    convention); integer and boolean tensors are gathered as data. ``None`` entries pass through.
    Without an initialised multi-rank group the tensors are returned unchanged.
    """
    present = [t for t in tensors if t is not None]
    if not present or not is_distributed(process_group):
        return list(tensors)
    sizes = _exchange_sizes(present[0].shape[0], present[0].device, process_group)
    out: list[Any] = []
    for t in tensors:
        if t is None:
            out.append(None)
        elif t.is_floating_point() and t.requires_grad:
            out.append(_GatherWithGrad.apply(t, sizes, process_group))
        elif t.dtype == torch.bool:
            out.append(_gather_padded(t.to(torch.uint8), sizes, process_group).bool())
        else:
            out.append(_gather_padded(t, sizes, process_group))
    return out


def all_reduce_sum(x: Tensor, process_group: Optional[Any] = None) -> Tensor:
    """Differentiable sum over ranks (identity without an initialised multi-rank group)."""
    if not is_distributed(process_group):
        return x
    if x.requires_grad:
        return _AllReduceSumWithGrad.apply(x, process_group)
    out = x.contiguous().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM, group=process_group)
    return out


def all_reduce_max(x: Tensor, process_group: Optional[Any] = None) -> Tensor:
    """Element-wise maximum over ranks of a tensor that carries no gradient."""
    if not is_distributed(process_group):
        return x
    out = x.detach().contiguous().clone()
    dist.all_reduce(out, op=dist.ReduceOp.MAX, group=process_group)
    return out


class SyncDistModule(nn.Module):
    """Base of the modules with a ``sync_dist`` setting: the loss modules and the validators.

    Stores ``sync_dist`` (a bool: compute over the global batch of all ranks) and ``process_group``
    (the group of those ranks; ``None``: the world). Pickling (and so :func:`copy.deepcopy`) drops
    the process group, which cannot be pickled: the copy uses the world group.
    """

    def __init__(self, *, sync_dist: bool = False, process_group: Optional[Any] = None) -> None:
        super().__init__()
        self.sync_dist = check_bool(sync_dist, "sync_dist")
        self.process_group = process_group

    def _settings_repr(self, *parts: str) -> str:
        """``extra_repr`` of the settings ``parts``, with ``sync_dist=True`` when set."""
        return ", ".join([*parts, "sync_dist=True"] if self.sync_dist else parts)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["process_group"] = None  # process groups cannot be pickled
        return state
