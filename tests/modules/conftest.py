"""Fixtures for the lacmfer.modules tests: deterministic seeds, small models."""

from __future__ import annotations

from typing import Callable

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _randomise_bn_stats(module: torch.nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)


@pytest.fixture
def randomise_bn() -> Callable[[torch.nn.Module], None]:
    """A function giving every BatchNorm non-trivial running statistics and affine parameters."""
    return _randomise_bn_stats
