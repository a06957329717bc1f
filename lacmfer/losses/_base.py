"""The step counter of the modules whose settings follow a schedule over training, and its ramps."""

from __future__ import annotations

from typing import Union

import torch
from torch import Tensor, nn

from .._checks import check_positive_int
from ..functional import sigmoid_ramp

__all__ = ["CLUSTER_RAMPS", "schedule_dtype"]

#: Schedules of a weight over training: ``"none"`` (constant, the authors' code for the cluster-level
#: weight) and ``"dann_sigmoid"`` (:math:`2 / (1 + e^{-10 p}) - 1` of the training progress
#: :math:`p`). The choices of ``cluster_ramp`` (the alignment and the objective) and of
#: ``coeff_ramp`` (the gradient reversal of DANN).
CLUSTER_RAMPS = ("none", "dann_sigmoid")


def schedule_dtype(x: object) -> torch.dtype:
    """The dtype a module computes its schedules in for the input ``x``: float64 for a float64
    tensor (so that double-precision losses equal their references exactly), else float32."""
    return torch.float64 if isinstance(x, Tensor) and x.dtype == torch.float64 else torch.float32


class StepCounter(nn.Module):
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

    def _progress(self, horizon: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """``min(num_steps / horizon, 1)``, a 0-dim tensor of ``dtype``."""
        return (self.num_steps.to(dtype) / horizon).clamp(max=1.0)

    def _ramped(
        self, value: Union[float, Tensor], ramp: str, horizon: int, dtype: torch.dtype
    ) -> Union[float, Tensor]:
        """``value`` under the ramp ``ramp`` (one of :data:`CLUSTER_RAMPS`) over ``horizon`` steps:
        the float itself for ``"none"``, else a 0-dim tensor of ``dtype``."""
        if ramp == "none":
            return value
        return value * sigmoid_ramp(self._progress(horizon, dtype))
