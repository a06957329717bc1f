"""Multi-view clustering consistency (and its similarity matrix), function and module.

Loop reference of ``tests/reference.py``, identities, empty clusters, gradients (gradcheck, and finite
gradients for saturated probabilities), input errors, hypothesis properties, the module, compile and
autocast.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lacmfer.functional import multi_view_clustering_consistency, prediction_similarity_matrix
from lacmfer.losses import MultiViewClusteringConsistency
from tests.reference import mcc_reference

from .cases import (
    ANY_FINITE32,
    check_keyword_only,
    check_pickle_and_state_dict_round_trip,
    check_signatures_agree,
    check_view_errors,
    matrix,
    random_case,
    view_cases,
    views,
)

CASES = view_cases()
TOL = {"rtol": 1e-10, "atol": 1e-10}


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
    zg, zl = views(3)
    m = prediction_similarity_matrix(zg, zl)
    r = m / m.sum(1, keepdim=True)
    c = m / m.sum(0, keepdim=True)
    want = 1 - (torch.trace(r) + torch.trace(c)) / (2 * 4)
    torch.testing.assert_close(multi_view_clustering_consistency(zg, zl), want, **TOL)
    # Bounded for probabilities: 0 <= L <= 1 (both traces lie in [0, K]).
    for seed in range(20):
        a, b = views(100 + seed, b=5, k=4, scale=5.0)
        assert -1e-12 <= float(multi_view_clustering_consistency(a, b)) <= 1 + 1e-12


def test_similarity_matrix() -> None:
    zg, zl = views(4)
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
    zg, zl = views(5, b=6, k=3, scale=1.0)
    assert torch.autograd.gradcheck(
        lambda a, b: multi_view_clustering_consistency(a, b, from_logits=from_logits),
        (zg.clone().requires_grad_(), zl.clone().requires_grad_()),
    )


def test_extreme_logits_finite() -> None:
    for dtype in (torch.float32, torch.float64):
        info = torch.finfo(dtype)
        zg = torch.tensor([[info.max, -info.max], [-info.max, info.max]], dtype=dtype)
        zl = torch.tensor([[info.max, -info.max], [info.max, -info.max]], dtype=dtype)
        for from_logits in (False, True):
            assert torch.isfinite(
                multi_view_clustering_consistency(zg, zl, from_logits=from_logits)
            )


def test_saturated_small_batch_regression() -> None:
    """Saturated softmax and a target batch of 3: the loss was finite but its gradient NaN.

    Logits of magnitude ~100 make some class columns of the probabilities underflow to subnormal
    numbers, so row and column sums of M were subnormal and the gradient of ``M / rowsum`` divided
    by their (zero) square. The value must stay what the formula gives; the gradient must be finite.
    """
    g = torch.Generator().manual_seed(3)
    for dtype in (torch.float32, torch.float64):
        zg = (200 * torch.randn(3, 4, generator=g, dtype=torch.float64)).to(dtype).requires_grad_()
        zl = (200 * torch.randn(3, 4, generator=g, dtype=torch.float64)).to(dtype).requires_grad_()
        loss = multi_view_clustering_consistency(zg, zl)
        loss.backward()
        assert torch.isfinite(loss)
        assert zg.grad is not None and torch.isfinite(zg.grad).all()
        assert zl.grad is not None and torch.isfinite(zl.grad).all()
    # The fixed case of the report: float32, B_t = 3, logits 200 * N(0, 1).
    g = torch.Generator().manual_seed(3)
    zg = (200 * torch.randn(3, 4, generator=g)).requires_grad_()
    zl = (200 * torch.randn(3, 4, generator=g)).requires_grad_()
    loss = multi_view_clustering_consistency(zg, zl)
    loss.backward()
    assert zg.grad is not None and torch.isfinite(zg.grad).all()
    assert zl.grad is not None and torch.isfinite(zl.grad).all()
    # In float64 the same logits give a value that the loop reference reproduces.
    z64g, z64l = zg.detach().double(), zl.detach().double()
    torch.testing.assert_close(
        multi_view_clustering_consistency(z64g, z64l), mcc_reference(z64g, z64l), **TOL
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_saturated_half_precision_gradients_finite(dtype: torch.dtype) -> None:
    zg = torch.tensor([[150.0, -150.0, 0.0], [-120.0, 130.0, 10.0]], dtype=dtype).requires_grad_()
    zl = torch.tensor([[-140.0, 150.0, 0.0], [130.0, -120.0, 5.0]], dtype=dtype).requires_grad_()
    loss = multi_view_clustering_consistency(zg, zl)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert zg.grad is not None and torch.isfinite(zg.grad).all()
    assert zl.grad is not None and torch.isfinite(zl.grad).all()


EXTREME = st.one_of(
    st.sampled_from([1e4, -1e4, 0.0, 100.0, -100.0]),
    st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32),
)


@given(
    st.integers(1, 5).flatmap(
        lambda b: st.tuples(
            arrays(np.float64, (b, 4), elements=EXTREME),
            arrays(np.float64, (b, 4), elements=EXTREME),
        )
    ),
    st.sampled_from([torch.float32, torch.float64]),
    st.booleans(),
)
def test_extreme_logits_tiny_batches_give_finite_gradients(views_np, dtype, from_logits) -> None:  # type: ignore[no-untyped-def]
    zg = torch.from_numpy(views_np[0]).to(dtype).requires_grad_()
    zl = torch.from_numpy(views_np[1]).to(dtype).requires_grad_()
    loss = multi_view_clustering_consistency(zg, zl, from_logits=from_logits)
    loss.backward()
    assert torch.isfinite(loss)
    assert zg.grad is not None and torch.isfinite(zg.grad).all()
    assert zl.grad is not None and torch.isfinite(zl.grad).all()
    if not from_logits:
        assert -1e-6 <= float(loss.detach()) <= 1 + 1e-6


# ------------------------------------------------------------------ properties


@given(
    matrix(st.integers(1, 6), 3, ANY_FINITE32.map(lambda v: v)),
    st.booleans(),
)
def test_finite_and_permutation_invariant(z: torch.Tensor, from_logits: bool) -> None:
    zg = z.float().requires_grad_()
    zl = z.flip(1).float().requires_grad_()
    mcc = multi_view_clustering_consistency(zg, zl, from_logits=from_logits)
    mcc.backward()
    assert torch.isfinite(mcc)
    assert zg.grad is not None and torch.isfinite(zg.grad).all()
    perm = torch.arange(z.shape[0]).flip(0)
    mcc_p = multi_view_clustering_consistency(zg[perm], zl[perm], from_logits=from_logits)
    torch.testing.assert_close(mcc_p, mcc, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ errors, module, compile


@pytest.mark.parametrize("fn", [multi_view_clustering_consistency, prediction_similarity_matrix])
def test_view_errors(fn) -> None:  # type: ignore[no-untyped-def]
    check_view_errors(fn)


def test_module_signature_agrees_with_function() -> None:
    check_signatures_agree(MultiViewClusteringConsistency, multi_view_clustering_consistency)


def test_module_equals_function() -> None:
    g = torch.Generator().manual_seed(0)
    zg, zl = 4 * torch.randn(10, 5, generator=g), 4 * torch.randn(10, 5, generator=g)
    for from_logits in (False, True):
        torch.testing.assert_close(
            MultiViewClusteringConsistency(from_logits=from_logits)(zg, zl),
            multi_view_clustering_consistency(zg, zl, from_logits=from_logits),
            rtol=0,
            atol=0,
        )


def test_module_settings_validated_at_construction() -> None:
    with pytest.raises(TypeError, match="`from_logits`"):
        MultiViewClusteringConsistency(from_logits="yes")  # type: ignore[arg-type]


def test_module_settings_are_keyword_only() -> None:
    check_keyword_only(MultiViewClusteringConsistency)


def test_module_extra_repr_shows_settings() -> None:
    assert "from_logits=True" in repr(MultiViewClusteringConsistency(from_logits=True))


def test_module_pickle_and_state_dict_round_trip() -> None:
    check_pickle_and_state_dict_round_trip(MultiViewClusteringConsistency())


def test_compiled_function_equals_eager() -> None:
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(1)
    zg, zl = 4 * torch.randn(12, 7, generator=g), 4 * torch.randn(12, 7, generator=g)
    mcc = torch.compile(multi_view_clustering_consistency, fullgraph=True)
    torch.testing.assert_close(mcc(zg, zl), multi_view_clustering_consistency(zg, zl))


def test_compiled_module_equals_eager() -> None:
    torch._dynamo.reset()
    c = random_case(2, dtype=torch.float32)
    mcc = MultiViewClusteringConsistency()
    torch.testing.assert_close(
        torch.compile(mcc, fullgraph=True)(c.logits_t, c.logits_t.flip(0)),
        mcc(c.logits_t, c.logits_t.flip(0)),
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_cpu_matches_fp32(dtype: torch.dtype) -> None:
    c = random_case(3, b_s=16, b_t=16, dim=32, num_classes=7, dtype=torch.float32)
    head = torch.nn.Linear(32, 32)
    torch.nn.init.eye_(head.weight)
    torch.nn.init.zeros_(head.bias)

    def loss() -> torch.Tensor:
        zt = head(c.feat_t)[:, :7] + c.logits_t
        return multi_view_clustering_consistency(zt, zt.flip(0))

    want = loss()
    with torch.autocast("cpu", dtype=dtype):
        got = loss()
    assert got.dtype == torch.float32
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=5e-2, atol=5e-2)
