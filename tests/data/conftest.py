"""Fixtures for the lacmfer.data tests: the real FER lists (skipped when absent), small files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
_CANDIDATES = (
    os.environ.get("LACMFER_FER_LISTS", ""),
    str(ROOT.parent / "shared" / "data" / "fer_lists"),
    "/work/shared/data/fer_lists",
)


def find_fer_lists() -> Path | None:
    """The folder of the protocol's real lists, or ``None``."""
    for cand in _CANDIDATES:
        if cand and (Path(cand) / "RAF_test.txt").is_file():
            return Path(cand)
    return None


@pytest.fixture(scope="session")
def fer_lists() -> Path:
    """The real lists folder; skips the test when it is not there."""
    found = find_fer_lists()
    if found is None:
        pytest.skip(
            "the real FER lists are absent (looked for RAF_test.txt in $LACMFER_FER_LISTS, "
            "../shared/data/fer_lists relative to the repository and /work/shared/data/fer_lists)"
        )
    return found


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
