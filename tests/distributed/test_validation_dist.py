"""Streaming validators with ``sync_dist``: two gloo processes equal one process on all the data.

Each rank feeds its own (uneven) share of the evaluation set in chunks; ``compute()`` returns, on
every rank, the score of the concatenation in rank order. One run gives a rank no data at all, and
one gives the ranks different class counts (both ranks must raise).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from lacmfer.validation import (
    AgreementScore,
    BNMScore,
    EntropyScore,
    IMScore,
    SNDScore,
    SourceAccuracy,
    ValidatorSuite,
    agreement_score,
    bnm_score,
    entropy_score,
    im_score,
    score_all,
    snd_score,
    source_accuracy,
)
from tests.distributed.harness import run_ranks

pytestmark = pytest.mark.distributed

WORLD = 2
K = 5
SPLITS = {"uneven": [9, 4], "rank1_empty": [13, 0]}
SND = {"temperature": 0.1, "max_samples": 10, "seed": 3}


def all_data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    n = 13
    return {
        "logits": 3 * torch.randn(n, K, generator=g, dtype=torch.float64),
        "logits_g": 3 * torch.randn(n, K, generator=g, dtype=torch.float64),
        "logits_l": 3 * torch.randn(n, K, generator=g, dtype=torch.float64),
        "labels": torch.randint(0, K, (n,), generator=g),
    }


def validators() -> dict[str, tuple[Any, tuple[str, ...]]]:
    return {
        "entropy": (EntropyScore(sync_dist=True), ("logits",)),
        "im": (IMScore(sync_dist=True), ("logits",)),
        "snd": (SNDScore(**SND, sync_dist=True), ("logits",)),
        "bnm": (BNMScore(sync_dist=True), ("logits",)),
        "agreement": (AgreementScore(sync_dist=True), ("logits_g", "logits_l")),
        "accuracy": (SourceAccuracy(sync_dist=True), ("logits", "labels")),
        "suite": (ValidatorSuite(**SND, sync_dist=True), ("logits", "logits_g", "logits_l")),
    }


def single_process() -> dict[str, Any]:
    d = all_data()
    return {
        "entropy": entropy_score(d["logits"]),
        "im": im_score(d["logits"]),
        "snd": snd_score(d["logits"], **SND),
        "bnm": bnm_score(d["logits"]),
        "agreement": agreement_score(d["logits_g"], d["logits_l"]),
        "accuracy": source_accuracy(d["logits"], d["labels"]),
        "suite": score_all(d["logits"], d["logits_g"], d["logits_l"], **SND),
    }


def _rank_results(rank: int) -> dict[Any, Any]:
    """Every validator on this rank's share, streamed in chunks, then the error cases."""
    data = all_data()
    results: dict[str, Any] = {}
    for split_name, split in SPLITS.items():
        start = sum(split[:rank])
        local = {k: v[start : start + split[rank]] for k, v in data.items()}
        for name, (metric, args) in validators().items():
            for chunk in range(0, split[rank], 3):  # chunks of 3 (and a shorter last one)
                metric.update(*(local[a][chunk : chunk + 3] for a in args))
            results[(split_name, name)] = metric.compute()
    # Ranks that disagree on K: every rank raises, none hangs.
    metric = EntropyScore(sync_dist=True)
    metric.update(torch.zeros(2, 3 + rank))
    try:
        metric.compute()
        results["k_mismatch"] = None
    except ValueError as exc:
        results["k_mismatch"] = str(exc)
    # No data on any rank.
    try:
        BNMScore(sync_dist=True).compute()
        results["no_data"] = None
    except RuntimeError as exc:
        results["no_data"] = str(exc)
    return results


@pytest.fixture(scope="module")
def rank_results() -> list[dict[Any, Any]]:
    return run_ranks(_rank_results, WORLD)


@pytest.mark.parametrize("split", sorted(SPLITS))
@pytest.mark.parametrize("name", ["entropy", "im", "snd", "bnm", "agreement", "accuracy", "suite"])
def test_sync_dist_equals_one_process(
    rank_results: list[dict[Any, Any]], split: str, name: str
) -> None:
    want = single_process()[name]
    for res in rank_results:
        got = res[(split, name)]
        if name == "suite":
            assert list(got) == list(want)
            for key in want:
                torch.testing.assert_close(got[key], want[key], rtol=1e-12, atol=1e-12)
        else:
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_every_rank_raises_on_bad_state(rank_results: list[dict[Any, Any]]) -> None:
    for res in rank_results:
        assert res["k_mismatch"] is not None and "K from 3 to 4" in res["k_mismatch"]
        assert res["no_data"] is not None and "before any update" in res["no_data"]
