"""Fixtures for the tests of the example scripts. ``examples/`` is on the test path (pytest's
``pythonpath`` setting), so the scripts import as modules, as they import each other."""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest


@pytest.fixture(scope="session")
def script() -> ModuleType:
    """The training script as a module."""
    return importlib.import_module("train_cmfer")


@pytest.fixture(scope="session")
def benchmark_driver() -> ModuleType:
    """The benchmark driver (examples/benchmark/run_benchmark.py) as a module."""
    return importlib.import_module("run_benchmark")
