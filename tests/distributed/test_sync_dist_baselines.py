"""``sync_dist`` of the baselines: two gloo processes on CPU equal one process on the whole batch.

CORAL (pooled and per source), M3SDA moment matching, Minimum Class Confusion and the DANN
domain-classification loss: the value on every rank equals the single-process loss on the
concatenated batch, and each rank's inputs receive ``world_size`` times the single-process gradient
(DistributedDataParallel's convention, see :mod:`lacmfer.functional`), checked directly with a
DDP-wrapped model too. Ranks hold different batch sizes.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.distributed as dist

from lacmfer.functional import (
    coral,
    domain_adversarial_loss,
    minimum_class_confusion,
    moment_matching,
)
from lacmfer.losses import CORALLoss, MinimumClassConfusionLoss, MomentMatchingLoss
from tests.distributed.harness import run_ranks, value_and_input_grads

pytestmark = pytest.mark.distributed

WORLD = 2
SOURCE_SPLIT = [5, 8]  # uneven on purpose
TARGET_SPLIT = [6, 3]
DOMAINS = 3
DIM = 5
NAMES = ("coral", "coral_per_source", "moment_matching", "mcc", "dann")


def global_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    b_s, b_t = sum(SOURCE_SPLIT), sum(TARGET_SPLIT)
    return {
        "x_s": torch.randn(b_s, DIM, generator=g, dtype=torch.float64),
        "x_t": 1.5 * torch.randn(b_t, DIM, generator=g, dtype=torch.float64) + 0.5,
        # domain 2 only on rank 1; domain 1 has a single sample on each rank
        "domains_s": torch.tensor([0, 0, 1, 0, 0, 2, 2, 1, 2, 0, 2, 2, 0]),
    }


def model() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Linear(DIM, DIM).double()


def objective(net: torch.nn.Module, b: dict[str, torch.Tensor], sync: bool) -> dict[str, Any]:
    """Every baseline loss on a (local or global) batch; features go through ``net``."""
    fs, ft = net(b["x_s"]), net(b["x_t"])
    d = b["domains_s"]
    return {
        "coral": coral(fs, ft, sync_dist=sync),
        "coral_per_source": CORALLoss(num_domains=DOMAINS, sync_dist=sync)(fs, ft, d),
        "moment_matching": MomentMatchingLoss(num_domains=DOMAINS, sync_dist=sync)(fs, d, ft),
        "mcc": minimum_class_confusion(3.0 * ft, sync_dist=sync)
        + MinimumClassConfusionLoss(temperature=1.0, sync_dist=sync)(ft),
        "dann": domain_adversarial_loss(
            fs[:, : DOMAINS + 1],
            ft[:, : DOMAINS + 1],
            domains_s=d,
            num_domains=DOMAINS,
            sync_dist=sync,
        ),
        "functional_mm": moment_matching(fs, d, ft, num_domains=DOMAINS, moments=3, sync_dist=sync),
    }


def _local(b: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    s0, t0 = sum(SOURCE_SPLIT[:rank]), sum(TARGET_SPLIT[:rank])
    s1, t1 = s0 + SOURCE_SPLIT[rank], t0 + TARGET_SPLIT[rank]
    return {k: (v[s0:s1] if k in ("x_s", "domains_s") else v[t0:t1]) for k, v in b.items()}


def _rank_results(rank: int) -> dict[str, Any]:
    """Everything one rank computes on its share of the global batch."""
    local = _local(global_batch(), rank)
    results: dict[str, Any] = {}
    for name in (*NAMES, "functional_mm"):
        results[name] = value_and_input_grads(objective, model(), local, name, sync=True)
    results["ddp_grads"] = _ddp_grads(local)
    return results


def _ddp_grads(local: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Parameter gradients of a DDP-wrapped model: exactly the single-process gradients."""
    net = torch.nn.parallel.DistributedDataParallel(model())
    losses = objective(net, local, sync=True)
    sum(losses[n] for n in NAMES).backward()
    grads = [p.grad.clone() for p in net.parameters() if p.grad is not None]
    del net, losses
    return grads


@pytest.fixture(scope="module")
def rank_results() -> list[dict[str, Any]]:
    return run_ranks(_rank_results, WORLD)


def _single_process(name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return value_and_input_grads(objective, model(), global_batch(), name, sync=False)


@pytest.mark.parametrize("name", [*NAMES, "functional_mm"])
def test_sync_dist_equals_concatenated_batch(rank_results: list[dict[str, Any]], name: str) -> None:
    value, grad_s, grad_t = _single_process(name)
    assert float(value) != 0.0, "the case must exercise the loss"
    for rank, res in enumerate(rank_results):
        got_value, got_s, got_t = res[name]
        torch.testing.assert_close(got_value, value, rtol=1e-8, atol=1e-10)
        s0, t0 = sum(SOURCE_SPLIT[:rank]), sum(TARGET_SPLIT[:rank])
        want_s = grad_s[s0 : s0 + SOURCE_SPLIT[rank]] * WORLD
        want_t = grad_t[t0 : t0 + TARGET_SPLIT[rank]] * WORLD
        torch.testing.assert_close(
            torch.zeros_like(want_s) if got_s is None else got_s, want_s, rtol=1e-8, atol=1e-10
        )
        torch.testing.assert_close(got_t, want_t, rtol=1e-8, atol=1e-10)


def test_ddp_parameter_gradients_equal_single_process(rank_results: list[dict[str, Any]]) -> None:
    net = model()
    losses = objective(net, global_batch(), sync=False)
    sum(losses[n] for n in NAMES).backward()
    want = [p.grad for p in net.parameters()]
    for res in rank_results:
        assert len(res["ddp_grads"]) == len(want)
        for got, w in zip(res["ddp_grads"], want):
            torch.testing.assert_close(got, w, rtol=1e-8, atol=1e-10)


def test_sync_dist_is_a_no_op_without_process_group() -> None:
    assert not dist.is_initialized()
    b = global_batch()
    for name, value in objective(model(), b, sync=True).items():
        torch.testing.assert_close(value, objective(model(), b, sync=False)[name])
