"""Running a function on several gloo ranks on the CPU, for the ``sync_dist`` tests.

:func:`run_ranks` spawns ``world`` processes that join one gloo process group, calls
``compute(rank)`` in each and returns every rank's result. ``compute`` must be a module-level
function (spawned processes import it by name).
"""

from __future__ import annotations

import gc
import os
import tempfile
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _entry(
    rank: int, compute: Callable[[int], Any], init_file: str, out_dir: str, world: int
) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        torch.save(compute(rank), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        # A DDP reducer that outlives its process group aborts the process at exit now and then
        # ("terminate called without an active exception"): collect it before the group goes.
        gc.collect()
        dist.destroy_process_group()


def run_ranks(compute: Callable[[int], Any], world: int = 2) -> list[Any]:
    """``[compute(0), ..., compute(world - 1)]``, each computed on its own rank of one group."""
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        mp.start_processes(
            _entry, args=(compute, init_file, tmp, world), nprocs=world, join=True,
            start_method="spawn",
        )  # fmt: skip
        return [
            torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=False) for r in range(world)
        ]


def value_and_input_grads(
    objective: Callable[..., dict[str, Any]], net: torch.nn.Module, batch: dict[str, Any], name: str,
    sync: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """The loss ``name`` of ``objective(net, batch, sync)`` and its gradients with respect to the
    batch's ``x_s`` and ``x_t`` (zeros for an input the loss does not see)."""
    x_s = batch["x_s"].clone().requires_grad_()
    x_t = batch["x_t"].clone().requires_grad_()
    value = objective(net, dict(batch, x_s=x_s, x_t=x_t), sync=sync)[name]
    value.backward()
    grad_s = torch.zeros_like(x_s) if x_s.grad is None else x_s.grad
    grad_t = torch.zeros_like(x_t) if x_t.grad is None else x_t.grad
    return value.detach(), grad_s, grad_t
