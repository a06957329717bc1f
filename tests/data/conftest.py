"""Fixtures for the lacmfer.data tests: the protocol's lists shipped with the package, seeds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lacmfer.data import protocol_lists_dir


@pytest.fixture(scope="session")
def fer_lists() -> Path:
    """The folder of the protocol's real lists, as shipped in ``lacmfer/data/protocol_lists``."""
    folder = protocol_lists_dir()
    assert (folder / "RAF_test.txt").is_file(), f"the packaged lists are missing from {folder}"
    return folder


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
