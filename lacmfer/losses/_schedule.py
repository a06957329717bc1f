"""The step counter that the scheduled loss modules share."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import check_positive_int

__all__: list[str] = []


class ScheduledLoss(nn.Module):
    """A module with a training-step counter ``num_steps`` (a buffer, saved in ``state_dict``)
    advanced by :meth:`step`; subclasses derive their schedules from it."""

    num_steps: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.int64))

    def step(self, n: int = 1) -> None:
        """Advance the schedules by ``n`` training iterations (call once per optimiser step)."""
        with torch.no_grad():
            self.num_steps.add_(check_positive_int(n, "n", minimum=0))

    def _progress(self, horizon: int) -> Tensor:
        """``min(num_steps / horizon, 1)``, a 0-dim float tensor."""
        return (self.num_steps.to(torch.float32) / horizon).clamp(max=1.0)
