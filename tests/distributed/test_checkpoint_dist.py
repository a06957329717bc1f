"""lacmfer.utils random states under DDP: one file from rank 0 resumes every rank's draws."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from lacmfer.utils import get_rng_state, set_rng_state
from tests.distributed.harness import run_ranks

pytestmark = pytest.mark.distributed


def gather_then_restore(rank: int) -> dict[str, Any]:
    torch.manual_seed(100 + rank)  # each rank its own stream, as augmentation seeds are
    gen = torch.Generator().manual_seed(200 + rank)
    states = get_rng_state(gen, sync_dist=True)  # what rank 0 would write into the checkpoint
    expected = (torch.rand(3), torch.rand(3, generator=gen))
    torch.manual_seed(0)
    gen.manual_seed(0)
    set_rng_state(states, gen)  # every rank reads the same list, takes its own entry
    again = (torch.rand(3), torch.rand(3, generator=gen))
    try:
        set_rng_state(states[:1], gen)
        error = ""
    except ValueError as err:
        error = str(err)
    local = get_rng_state(gen)  # without sync_dist: this rank alone
    return {"states": states, "expected": expected, "again": again, "error": error,
            "local": len(local)}  # fmt: skip


def test_every_rank_resumes_its_own_draws() -> None:
    results = run_ranks(gather_then_restore, world=2)
    for r in results:
        assert len(r["states"]) == 2
        for a, b in zip(r["expected"], r["again"]):
            assert torch.equal(a, b)
        assert "random states of 1 ranks; this run has 2" in r["error"]
        assert r["local"] == 1
    # the gathered lists agree across ranks, and entry r is rank r's state
    for a, b in zip(results[0]["states"], results[1]["states"]):
        assert torch.equal(a["torch"], b["torch"])
        assert torch.equal(a["generators"][0], b["generators"][0])
    assert not torch.equal(results[0]["expected"][0], results[1]["expected"][0])
