"""Process-level plumbing of the training script: device, DDP, RNG state, checkpoints.

Nothing here knows about LA-CMFER; it is the part of a training script that has to be right for a
run to be resumable and to behave the same on one process and under ``torchrun``.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistInfo",
    "autocast",
    "broadcast_buffers",
    "capture_rng",
    "cleanup_distributed",
    "gather_objects",
    "resolve_device",
    "restore_rng",
    "save_atomic",
    "seed_everything",
    "setup_distributed",
    "state_hash",
]


@dataclass(frozen=True)
class DistInfo:
    """Rank layout of this process (``world_size == 1`` without ``torchrun``)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``."""
    if name == "auto":
        name = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    elif name == "cuda":
        name = f"cuda:{local_rank}"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"`device` is {name!r} but CUDA is not available")
    return device


def setup_distributed(device_name: str) -> tuple[DistInfo, torch.device]:
    """Initialise the process group when started by ``torchrun`` (``WORLD_SIZE`` > 1).

    The backend is NCCL on CUDA and gloo on CPU. Returns the rank layout and this rank's device.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world_size, local_rank), device


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        # A DistributedDataParallel reducer still alive when its process group is destroyed can
        # abort the process at exit; collect any that a reference cycle kept.
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj``, in rank order (a one-element list without DDP)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


@torch.no_grad()
def broadcast_buffers(model: nn.Module, info: DistInfo) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics).

    DDP broadcasts them at the start of each forward anyway, so this does not change training; it
    makes evaluation, checkpoints and weight hashes agree across ranks after the last forward.
    """
    if not info.enabled:
        return
    for buf in model.buffers():
        dist.broadcast(buf, src=0)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (the legacy global state is what we seed)
    torch.manual_seed(seed)


def capture_rng() -> dict[str, Any]:
    """Every global RNG state this process uses (python, numpy, torch CPU, all CUDA devices)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager[Any]:
    """bf16/fp16 autocast on ``device`` (``none`` -> a no-op context)."""
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary name, then rename: a crash never leaves half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _tensors(state: dict[str, Any]) -> Iterator[tuple[str, torch.Tensor]]:
    for key in sorted(state):
        value = state[key]
        if isinstance(value, torch.Tensor):
            yield key, value


def state_hash(state_dict: dict[str, Any]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of a state dict's tensors."""
    h = hashlib.sha256()
    for key, tensor in _tensors(state_dict):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
