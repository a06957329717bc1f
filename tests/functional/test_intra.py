"""Multi-view clustering consistency and pseudo-label voting against the loop references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lacmfer.functional import (
    multi_view_clustering_consistency,
    multi_view_pseudo_label_loss,
    prediction_similarity_matrix,
    pseudo_label_refinement,
    refine_pseudo_labels,
)
from tests.reference import mcc_reference, mvv_reference, refine_reference

TOL = {"rtol": 1e-10, "atol": 1e-10}


def _views(seed: int, b: int = 9, k: int = 4, scale: float = 3.0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    zg = scale * torch.randn(b, k, generator=g, dtype=torch.float64)
    zl = scale * torch.randn(b, k, generator=g, dtype=torch.float64)
    return zg, zl


def _view_cases() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    zg, zl = _views(0)
    agree = _views(1, scale=6.0)[0]
    one = _views(2, b=1)
    zeros = torch.zeros(6, 7, dtype=torch.float64)
    one_class = torch.zeros(5, 3, dtype=torch.float64)
    one_class[:, 1] = 40.0
    return {
        "random": (zg, zl),
        "views_agree": (agree, agree + 0.1),
        "batch_of_one": one,
        "all_zero_logits": (zeros, zeros),
        "one_cluster": (one_class, one_class),
        "k1": (torch.randn(4, 1, dtype=torch.float64), torch.randn(4, 1, dtype=torch.float64)),
        "large_logits": (zg * 50, zl * 50),
    }


CASES = _view_cases()


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("from_logits", [False, True])
def test_mcc_matches_reference(name: str, from_logits: bool) -> None:
    zg, zl = CASES[name]
    if from_logits and name == "large_logits":
        pytest.skip("reference has no guard for near-zero logit sums")
    got = multi_view_clustering_consistency(zg, zl, from_logits=from_logits)
    torch.testing.assert_close(got, mcc_reference(zg, zl, from_logits), **TOL)


def test_mcc_identities() -> None:
    # Identical one-hot views give exactly zero.
    labels = torch.tensor([0, 2, 2, 1, 0])
    onehot = F.one_hot(labels, 4).to(torch.float64)
    assert float(multi_view_clustering_consistency(onehot, onehot, from_logits=True)) == 0.0
    # Every sample in one cluster in both views (saturated softmax): zero.
    saturated = torch.full((6, 3), -200.0)
    saturated[:, 2] = 200.0
    assert float(multi_view_clustering_consistency(saturated, saturated)) == 0.0
    # No empty rows/columns: L = 1 - (tr R + tr C) / 2K.
    zg, zl = _views(3)
    m = prediction_similarity_matrix(zg, zl)
    r = m / m.sum(1, keepdim=True)
    c = m / m.sum(0, keepdim=True)
    want = 1 - (torch.trace(r) + torch.trace(c)) / (2 * 4)
    torch.testing.assert_close(multi_view_clustering_consistency(zg, zl), want, **TOL)
    # Bounded for probabilities: 0 <= L <= 1 (both traces lie in [0, K]).
    for seed in range(20):
        a, b = _views(100 + seed, b=5, k=4, scale=5.0)
        assert -1e-12 <= float(multi_view_clustering_consistency(a, b)) <= 1 + 1e-12


def test_similarity_matrix() -> None:
    zg, zl = _views(4)
    m = prediction_similarity_matrix(zg, zl)
    want = torch.softmax(zg, 1).T @ torch.softmax(zl, 1)
    torch.testing.assert_close(m, want, **TOL)
    torch.testing.assert_close(m.sum(), torch.tensor(9.0, dtype=torch.float64), **TOL)
    torch.testing.assert_close(prediction_similarity_matrix(zg, zl, from_logits=True), zg.T @ zl)


def test_mcc_empty_rows_no_nan() -> None:
    zg = torch.zeros(3, 4)
    zl = torch.zeros(3, 4)
    zg[:, 0] = 1.0
    zl[:, 1] = 1.0
    loss = multi_view_clustering_consistency(zg, zl, from_logits=True)
    assert torch.isfinite(loss)
    # M has a single non-zero entry (0, 1): R and C each contribute one off-diagonal 1.
    assert float(loss) == pytest.approx(2 / 8)
    zero = torch.zeros(3, 4, requires_grad=True)
    loss = multi_view_clustering_consistency(zero, zero, from_logits=True)
    loss.backward()
    assert float(loss.detach()) == 0.0 and zero.grad is not None and torch.isfinite(zero.grad).all()


@pytest.mark.parametrize("from_logits", [False, True])
def test_mcc_gradcheck(from_logits: bool) -> None:
    zg, zl = _views(5, b=6, k=3, scale=1.0)
    assert torch.autograd.gradcheck(
        lambda a, b: multi_view_clustering_consistency(a, b, from_logits=from_logits),
        (zg.clone().requires_grad_(), zl.clone().requires_grad_()),
    )


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("threshold", [0.9, 0.5, 1.0])
def test_refine_matches_reference(name: str, threshold: float) -> None:
    zg, zl = CASES[name]
    labels, mask = refine_pseudo_labels(zg, zl, threshold=threshold)
    ref_labels, ref_mask = refine_reference(zg, zl, threshold)
    assert labels.dtype == torch.int64 and mask.dtype == torch.bool
    assert labels.tolist() == ref_labels
    assert mask.tolist() == ref_mask


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("threshold", [0.9, 0.5])
def test_mvv_matches_reference(name: str, threshold: float) -> None:
    zg, zl = CASES[name]
    got = multi_view_pseudo_label_loss(zg, zl, threshold=threshold)
    torch.testing.assert_close(got, mvv_reference(zg, zl, threshold), **TOL)


def test_vote_rule_details() -> None:
    # Strict ">": a confidence of exactly tau is not enough.
    half = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    _, mask = refine_pseudo_labels(half, half, threshold=0.5)
    assert not bool(mask[0])
    # One confident view suffices if the views agree; disagreement never keeps.
    zg = torch.tensor([[6.0, 0.0], [6.0, 0.0], [0.1, 0.0]])
    zl = torch.tensor([[0.1, 0.0], [0.0, 6.0], [0.2, 0.0]])
    labels, mask = refine_pseudo_labels(zg, zl, threshold=0.9)
    assert mask.tolist() == [True, False, False]
    assert labels.tolist() == [0, 0, 0]


def test_mvv_nothing_kept_is_exact_zero_and_connected() -> None:
    zg = torch.zeros(4, 3, requires_grad=True)
    zl = torch.zeros(4, 3, requires_grad=True)
    loss = multi_view_pseudo_label_loss(zg, zl)
    assert float(loss.detach()) == 0.0 and loss.requires_grad
    loss.backward()
    assert zg.grad is not None and zl.grad is not None
    assert float(zg.grad.abs().sum()) == 0.0


def test_mvv_labels_detached_and_gradcheck() -> None:
    zg, zl = _views(6, b=7, k=3, scale=4.0)
    _, mask = refine_pseudo_labels(zg, zl, threshold=0.6)
    assert 0 < int(mask.sum()) < 7, "the case must keep some samples and drop others"
    assert torch.autograd.gradcheck(
        lambda a, b: multi_view_pseudo_label_loss(a, b, threshold=0.6),
        (zg.clone().requires_grad_(), zl.clone().requires_grad_()),
    )


def test_refinement_bundle_matches_parts() -> None:
    zg, zl = _views(7, scale=4.0)
    out = pseudo_label_refinement(zg, zl, threshold=0.7)
    labels, mask = refine_pseudo_labels(zg, zl, threshold=0.7)
    assert torch.equal(out.labels, labels) and torch.equal(out.mask, mask)
    torch.testing.assert_close(out.loss, multi_view_pseudo_label_loss(zg, zl, threshold=0.7))
    torch.testing.assert_close(out.kept_fraction, mask.to(torch.float64).mean())
    assert not out.kept_fraction.requires_grad


def test_extreme_logits_finite() -> None:
    for dtype in (torch.float32, torch.float64):
        info = torch.finfo(dtype)
        zg = torch.tensor([[info.max, -info.max], [-info.max, info.max]], dtype=dtype)
        zl = torch.tensor([[info.max, -info.max], [info.max, -info.max]], dtype=dtype)
        for from_logits in (False, True):
            assert torch.isfinite(
                multi_view_clustering_consistency(zg, zl, from_logits=from_logits)
            )
        a, b = zg.clone().requires_grad_(), zl.clone().requires_grad_()
        loss = multi_view_pseudo_label_loss(a, b)
        loss.backward()
        assert torch.isfinite(loss)
        assert a.grad is not None and torch.isfinite(a.grad).all()
