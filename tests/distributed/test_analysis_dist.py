"""FeatureCollector with ``sync_dist``: two gloo processes equal one process on all the data.

Each rank runs the same model over its own (uneven) share of two domains, in batches; ``compute()``
returns, on every rank, what one process gets from the concatenation of the shares in rank order:
without a bound, with ``subsample="first"``, and when one rank has no data at all. With
``subsample="random"`` the kept rows are a bounded sample of the union, the same on every rank.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from lacmfer.analysis import FeatureCollector
from lacmfer.modules import LACMFEROutput
from tests.distributed.harness import run_ranks

pytestmark = pytest.mark.distributed

WORLD = 2
N = 13
SPLITS = {"uneven": [9, 4], "rank1_empty": [13, 0]}
SETTINGS: dict[str, dict[str, Any]] = {
    "all": {},
    # 11 of 13 rows per domain: with the uneven split both ranks contribute to the kept rows
    "first": {"max_samples": 11, "subsample": "first"},
    "random": {"max_samples": 5, "subsample": "random", "seed": 5},
}


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Dropout(0.3))
        self.head = nn.Linear(6, 3)

    def forward(self, x: Tensor) -> LACMFEROutput:
        f = self.body(x)
        z = self.head(f)
        return LACMFEROutput(f, f, z, z, z)


def all_data() -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "source": torch.randn(N, 4, generator=g),
        "source_labels": torch.randint(0, 3, (N,), generator=g),
        "target": torch.randn(N, 4, generator=g) + 1.0,
        "target_labels": torch.randint(0, 3, (N,), generator=g),
    }


def _share(collector: FeatureCollector, data: dict[str, Tensor], start: int, n: int) -> None:
    """Collect rows ``start:start + n`` of the source (domain 0) and target (domain 1)."""
    model = Toy()
    rows = slice(start, start + n)
    source = list(zip(data["source"][rows].split(4), data["source_labels"][rows].split(4)))
    target = list(zip(data["target"][rows].split(3), data["target_labels"][rows].split(3)))
    collector.collect(model, source, domain=0).collect(model, target, domain=1, use_labels=False)


def single_process(split: str, setting: str) -> Any:
    """One process that reads rank 0's share, then rank 1's: the concatenation in rank order."""
    data = all_data()
    collector = FeatureCollector(**SETTINGS[setting])
    for rank, n in enumerate(SPLITS[split]):
        _share(collector, data, sum(SPLITS[split][:rank]), n)
    return collector.compute()


def _rank_results(rank: int) -> dict[Any, Any]:
    data = all_data()
    results: dict[Any, Any] = {}
    for split_name, split in SPLITS.items():
        start = sum(split[:rank])
        for setting, kwargs in SETTINGS.items():
            collector = FeatureCollector(sync_dist=True, **kwargs)
            _share(collector, data, start, split[rank])
            results[(split_name, setting)] = collector.compute()
    # ranks that disagree on the feature size: every rank raises, none hangs
    collector = FeatureCollector(sync_dist=True)
    collector.update(torch.zeros(2, 3 + rank))
    try:
        collector.compute()
        results["d_mismatch"] = None
    except ValueError as exc:
        results["d_mismatch"] = str(exc)
    try:
        FeatureCollector(sync_dist=True).compute()
        results["no_data"] = None
    except RuntimeError as exc:
        results["no_data"] = str(exc)
    return results


@pytest.fixture(scope="module")
def rank_results() -> list[dict[Any, Any]]:
    return run_ranks(_rank_results, WORLD)


@pytest.mark.parametrize("split", sorted(SPLITS))
@pytest.mark.parametrize("setting", ["all", "first"])
def test_sync_dist_equals_one_process(
    rank_results: list[dict[Any, Any]], split: str, setting: str
) -> None:
    want = single_process(split, setting)
    for res in rank_results:
        got = res[(split, setting)]
        for a, b in zip(got, want):
            assert torch.equal(a, b)


@pytest.mark.parametrize("split", sorted(SPLITS))
def test_random_subsample_is_a_bounded_sample_of_the_union(
    rank_results: list[dict[Any, Any]], split: str
) -> None:
    everything = single_process(split, "all")
    got = rank_results[0][(split, "random")]
    for res in rank_results[1:]:
        for a, b in zip(res[(split, "random")], got):
            assert torch.equal(a, b)
    assert [int((got.domains == d).sum()) for d in range(2)] == [5, 5]
    # every kept row is one of the union's rows, kept whole
    match = (got.features[:, None, :] == everything.features[None, :, :]).all(dim=2)
    assert bool((match.sum(dim=1) == 1).all())
    rows = match.float().argmax(dim=1)
    assert torch.equal(got.domains, everything.domains[rows])
    assert torch.equal(got.labels, everything.labels[rows])
    assert bool((rows[1:] > rows[:-1]).all())  # in rank order


def test_every_rank_raises_on_bad_state(rank_results: list[dict[Any, Any]]) -> None:
    for res in rank_results:
        assert res["d_mismatch"] is not None and "disagree on D: from 3 to 4" in res["d_mismatch"]
        assert (
            res["no_data"] is not None and "before any row was seen on any rank" in res["no_data"]
        )
