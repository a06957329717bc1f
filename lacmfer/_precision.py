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


def tiny_scale(dtype: torch.dtype) -> float:
    """The smallest scale a loss divides its inputs by (their largest magnitude, clamped here).

    ``finfo.max ** -0.75`` (about 1e-29 in float32, 1e-231 in float64): a scale-invariant loss is
    exact for inputs above it, and its gradient, which grows as ``1 / scale``, keeps a quarter of
    the exponent range for its other factors, so it stays finite.
    """
    return float(torch.finfo(dtype).max) ** -0.75


def no_autocast(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """A context that disables autocast on ``device`` (the maths stays in full precision)."""
    return torch.autocast(device_type=device.type, enabled=False)
