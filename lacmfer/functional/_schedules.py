r"""Schedules of the adaptation weights over training, as plain functions of the step.

The loss modules hold a step counter (a buffer, saved in ``state_dict``) and call these; a training
loop that uses the functional losses calls them with its own step.
"""

from __future__ import annotations

from typing import Union

import torch
from torch import Tensor

from .._checks import check_positive_int

__all__ = ["linear_warmup", "sigmoid_ramp"]


def _as_float_tensor(value: Union[int, float, Tensor]) -> Tensor:
    """A 0-dim tensor: float64 for a float64 tensor (schedules of double-precision losses stay
    exact), else float32."""
    if isinstance(value, Tensor):
        dtype = torch.float64 if value.dtype == torch.float64 else torch.float32
        return value.detach().to(dtype)
    return torch.tensor(float(value), dtype=torch.float32)


def sigmoid_ramp(progress: Union[float, Tensor], *, gamma: float = 10.0) -> Tensor:
    r"""DANN's ramp of an adaptation weight, :math:`2 / (1 + e^{-\gamma p}) - 1`.

    Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR 2016, §5.2.2: 0 at the
    start of training (:math:`p = 0`), rising smoothly to :math:`\approx 1` (0.9999 at :math:`p = 1`
    with :math:`\gamma = 10`). It schedules the cluster-level weight of
    :class:`~lacmfer.losses.DualLevelInterDomainAlignment` (``cluster_ramp="dann_sigmoid"``) and
    the gradient-reversal coefficient of DANN.

    Args:
        progress: training progress :math:`p \in [0, 1]` (values outside are clamped).
        gamma: steepness :math:`\gamma`.

    Returns:
        A 0-dim tensor, float64 when ``progress`` is a float64 tensor, else float32 (on the
        device of ``progress`` when it is a tensor).

    Example:
        >>> sigmoid_ramp(0.0), sigmoid_ramp(0.5), sigmoid_ramp(1.0)
        (tensor(0.), tensor(0.9866), tensor(0.9999))
    """
    p = _as_float_tensor(progress).clamp(0.0, 1.0)
    return 2.0 / (1.0 + torch.exp(-gamma * p)) - 1.0


def linear_warmup(step: Union[int, Tensor], *, delay: int = 0, duration: int = 0) -> Tensor:
    r"""A weight that is 0 for ``delay`` steps, then rises linearly to 1 over ``duration`` steps.

    .. math::

        w(t) = \operatorname{clamp}\!\Big(\frac{t - t_0}{T_w}, 0, 1\Big)
        \quad\text{(a step from 0 to 1 at } t = t_0 \text{ when } T_w = 0\text{)}

    with :math:`t_0` = ``delay`` and :math:`T_w` = ``duration``. It is the source-only phase and
    warm-up of :class:`~lacmfer.losses.LACMFERLoss` (``adapt_after``, ``adapt_warmup``): a model
    trained from scratch first learns the sources, then the adaptation terms come in (see
    ``docs/method.rst``, section "Sample level", on why SID needs confident samples).

    Args:
        step: the number of optimiser steps taken so far (an int or a 0-dim tensor).
        delay: :math:`t_0 \ge 0`, steps with weight 0.
        duration: :math:`T_w \ge 0`, steps of the linear rise.

    Returns:
        A 0-dim tensor in :math:`[0, 1]`, float64 when ``step`` is a float64 tensor, else float32.

    Example:
        >>> [float(linear_warmup(t, delay=2, duration=4)) for t in (0, 2, 3, 6, 9)]
        [0.0, 0.0, 0.25, 1.0, 1.0]
        >>> float(linear_warmup(5, delay=5))
        1.0
    """
    delay = check_positive_int(delay, "delay", minimum=0)
    duration = check_positive_int(duration, "duration", minimum=0)
    since = _as_float_tensor(step) - delay
    if duration == 0:
        return (since >= 0).to(since.dtype)
    return (since / duration).clamp(0.0, 1.0)
