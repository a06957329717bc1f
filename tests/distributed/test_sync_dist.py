"""``sync_dist``: two gloo processes on CPU equal one process on the concatenated batch.

The loss value on every rank equals the single-process loss on the concatenated batch. Gradients
follow DistributedDataParallel's convention (see :mod:`lacmfer.functional`): each rank's inputs
receive ``world_size`` times the single-process gradient, so that after DDP averages parameter
gradients over the ranks, the parameters receive exactly the single-process gradient — checked
directly with a DDP-wrapped model. Ranks hold different batch sizes.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from lacmfer.functional import (
    dual_level_alignment,
    lacmfer_loss,
    multi_view_clustering_consistency,
    pseudo_label_refinement,
)
from lacmfer.losses import (
    DualLevelInterDomainAlignment,
    MultiViewClusteringConsistency,
    PseudoLabelRefiner,
)
from tests.distributed.harness import run_ranks, value_and_input_grads

pytestmark = pytest.mark.distributed

WORLD = 2
SOURCE_SPLIT = [5, 7]  # uneven on purpose
TARGET_SPLIT = [6, 4]
K = 4
DIM = 6
PSEUDO_THRESHOLD = 0.95  # keeps 5 of 6 samples on rank 0, 2 of 4 on rank 1: 7 of 10 in all


def global_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    b_s, b_t = sum(SOURCE_SPLIT), sum(TARGET_SPLIT)
    labels = torch.randint(0, K, (b_s,), generator=g)
    pseudo = torch.randint(0, K, (b_t,), generator=g)
    return {
        "x_s": torch.randn(b_s, DIM, generator=g, dtype=torch.float64),
        "x_t": torch.randn(b_t, DIM, generator=g, dtype=torch.float64) + 0.5,
        "logits_s": 4 * F.one_hot(labels, K).double() + torch.randn(b_s, K, generator=g).double(),
        "logits_t": 4 * F.one_hot(pseudo, K).double() + torch.randn(b_t, K, generator=g).double(),
        "logits_l": 4 * F.one_hot(pseudo, K).double() + torch.randn(b_t, K, generator=g).double(),
        "labels_s": labels,
        "domains_s": torch.randint(0, 3, (b_s,), generator=g),
    }


def model() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Linear(DIM, DIM).double()


def objective(net: torch.nn.Module, b: dict[str, torch.Tensor], sync: bool) -> dict[str, Any]:
    """All losses on a (local or global) batch; features go through ``net``."""
    fs, ft = net(b["x_s"]), net(b["x_t"])
    zt = b["logits_t"] + ft[:, :K]
    zl = b["logits_l"] + ft[:, DIM - K :].flip(1)
    out = {
        "pooled": dual_level_alignment(
            fs, b["logits_s"], b["labels_s"], ft, zt, sync_dist=sync, cluster_weight=0.5
        ),
        "per_source": DualLevelInterDomainAlignment(num_domains=3, sync_dist=sync)(
            fs, b["logits_s"], b["labels_s"], ft, zt, b["domains_s"]
        ),
        "mcc": multi_view_clustering_consistency(zt, zl, sync_dist=sync),
        "mcc_logits": MultiViewClusteringConsistency(from_logits=True, sync_dist=sync)(zt, zl),
        "mvv": pseudo_label_refinement(zt, zl, threshold=PSEUDO_THRESHOLD, sync_dist=sync).loss,
    }
    refiner = PseudoLabelRefiner(threshold=PSEUDO_THRESHOLD, sync_dist=sync)
    refiner(zt, zl)
    out["kept"] = refiner.kept_fraction
    views = SimpleNamespace(feat_g=fs, logits_g=b["logits_s"], feat_l=fs, logits_l=b["logits_s"])
    target = SimpleNamespace(feat_g=ft, logits_g=zt, feat_l=ft, logits_l=zl)
    for voting in (True, False):  # the objective's kept fraction, with the voting loss on and off
        terms = lacmfer_loss(
            views, b["labels_s"], target, pseudo_threshold=PSEUDO_THRESHOLD, voting=voting,
            sync_dist=sync,
        )  # fmt: skip
        out[f"objective_kept_voting_{voting}"] = terms.kept_fraction
    return out


def _local(b: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    s0, t0 = sum(SOURCE_SPLIT[:rank]), sum(TARGET_SPLIT[:rank])
    s1, t1 = s0 + SOURCE_SPLIT[rank], t0 + TARGET_SPLIT[rank]
    return {
        k: (v[s0:s1] if k in ("x_s", "logits_s", "labels_s", "domains_s") else v[t0:t1])
        for k, v in b.items()
    }


def _rank_results(rank: int) -> dict[str, Any]:
    """Everything one rank computes on its share of the global batch."""
    local = _local(global_batch(), rank)
    results: dict[str, Any] = {}
    for name in ("pooled", "per_source", "mcc", "mcc_logits", "mvv"):
        results[name] = value_and_input_grads(objective, model(), local, name, sync=True)
    computed = objective(model(), local, sync=True)
    results.update({k: v for k, v in computed.items() if "kept" in k})
    results["ddp_grads"] = _ddp_grads(local)
    return results


def _ddp_grads(local: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Parameter gradients of a DDP-wrapped model: exactly the single-process gradients."""
    net = torch.nn.parallel.DistributedDataParallel(model())
    losses = objective(net, local, sync=True)
    sum(losses[n] for n in ("pooled", "per_source", "mcc", "mvv")).backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None for g in grads)
    return [g.clone() for g in grads if g is not None]


@pytest.fixture(scope="module")
def rank_results() -> list[dict[str, Any]]:
    return run_ranks(_rank_results, WORLD)


def _single_process(name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return value_and_input_grads(objective, model(), global_batch(), name, sync=False)


@pytest.mark.parametrize("name", ["pooled", "per_source", "mcc", "mcc_logits", "mvv"])
def test_sync_dist_equals_concatenated_batch(rank_results: list[dict[str, Any]], name: str) -> None:
    value, grad_s, grad_t = _single_process(name)
    assert float(value) != 0.0, "the case must exercise the loss"
    for rank, res in enumerate(rank_results):
        got_value, got_s, got_t = res[name]
        torch.testing.assert_close(got_value, value, rtol=1e-6, atol=1e-8)
        s0, t0 = sum(SOURCE_SPLIT[:rank]), sum(TARGET_SPLIT[:rank])
        want_s = grad_s[s0 : s0 + SOURCE_SPLIT[rank]] * WORLD
        want_t = grad_t[t0 : t0 + TARGET_SPLIT[rank]] * WORLD
        if got_s is None:
            got_s = torch.zeros_like(want_s)
        torch.testing.assert_close(got_s, want_s, rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(got_t, want_t, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(
    "key", ["kept", "objective_kept_voting_True", "objective_kept_voting_False"]
)
def test_kept_fraction_is_global(rank_results: list[dict[str, Any]], key: str) -> None:
    want = objective(model(), global_batch(), sync=False)[key]
    local = [objective(model(), _local(global_batch(), r), sync=False)[key] for r in range(WORLD)]
    assert all(float(x) != float(want) for x in local), "the ranks' own fractions must differ"
    for res in rank_results:
        torch.testing.assert_close(res[key], want)


def test_ddp_parameter_gradients_equal_single_process(rank_results: list[dict[str, Any]]) -> None:
    net = model()
    losses = objective(net, global_batch(), sync=False)
    sum(losses[n] for n in ("pooled", "per_source", "mcc", "mvv")).backward()
    want = [p.grad for p in net.parameters()]
    for res in rank_results:
        for got, w in zip(res["ddp_grads"], want):
            torch.testing.assert_close(got, w, rtol=1e-6, atol=1e-8)


def test_sync_dist_is_a_no_op_without_process_group() -> None:
    assert not dist.is_initialized()
    b = global_batch()
    for name, value in objective(model(), b, sync=True).items():
        torch.testing.assert_close(value, objective(model(), b, sync=False)[name])
