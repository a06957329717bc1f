"""Precision rules shared by every loss and validator: statistics in float32 (or the input's
float64), autocast disabled around them."""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

__all__: list[str] = []


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float32 for half/bfloat16 inputs, else the promoted floating dtype (e.g. float64)."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def no_autocast(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """A context that disables autocast on ``device`` (the maths stays in full precision)."""
    return torch.autocast(device_type=device.type, enabled=False)
