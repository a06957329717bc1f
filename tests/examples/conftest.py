"""Fixtures for the tests of ``examples/train_cmfer.py`` (imported from its path: ``examples/`` is
not a package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` once per session."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def script() -> ModuleType:
    """The training script as a module."""
    return load_example("train_cmfer")


@pytest.fixture(scope="session")
def benchmark_driver() -> ModuleType:
    """The benchmark driver as a module."""
    return load_example("run_synthetic_benchmark")
