"""Hypothesis properties of the losses on small shapes."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lacmfer.functional import (
    cluster_level_alignment,
    dual_level_alignment,
    gaussian_kernel,
    mmd2,
    multi_view_clustering_consistency,
    pseudo_label_refinement,
    sample_level_alignment,
)

FINITE64 = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=64)
ANY_FINITE32 = st.floats(allow_nan=False, allow_infinity=False, width=32)


def matrix(
    rows: st.SearchStrategy[int], cols: int, elements: st.SearchStrategy[float]
) -> st.SearchStrategy[torch.Tensor]:
    import numpy as np

    return rows.flatmap(
        lambda n: arrays(np.float64, (n, cols), elements=elements).map(torch.from_numpy)
    )


@st.composite
def batches(
    draw: st.DrawFn,
    elements: st.SearchStrategy[float] = FINITE64,
    dtype: torch.dtype = torch.float64,
):  # type: ignore[no-untyped-def]
    import numpy as np

    b_s = draw(st.integers(1, 6))
    b_t = draw(st.integers(1, 6))
    d = draw(st.integers(1, 4))
    k = draw(st.integers(1, 4))
    np_dtype = np.float64 if dtype == torch.float64 else np.float32

    def arr(shape: tuple[int, int]) -> torch.Tensor:
        return torch.from_numpy(draw(arrays(np_dtype, shape, elements=elements))).to(dtype)

    labels = torch.tensor(draw(st.lists(st.integers(0, k - 1), min_size=b_s, max_size=b_s)))
    return arr((b_s, d)), arr((b_s, k)), labels, arr((b_t, d)), arr((b_t, k))


@given(matrix(st.integers(1, 6), 3, FINITE64))
def test_mmd_of_a_sample_with_itself_is_zero(x: torch.Tensor) -> None:
    assert abs(float(mmd2(x, x))) <= 1e-9 * 4 * 5


@given(matrix(st.integers(1, 5), 2, FINITE64), matrix(st.integers(1, 5), 2, FINITE64))
def test_mmd_symmetry_and_kernel_transpose(x: torch.Tensor, y: torch.Tensor) -> None:
    torch.testing.assert_close(mmd2(x, y), mmd2(y, x), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(gaussian_kernel(x, y), gaussian_kernel(y, x).T, rtol=1e-9, atol=1e-9)
    k = gaussian_kernel(x, y)
    assert bool(((k >= 0) & (k <= 5 + 1e-9)).all())


@given(batches(), st.randoms(use_true_random=False))
def test_alignment_permutation_invariance(batch, rnd) -> None:  # type: ignore[no-untyped-def]
    feat_s, logits_s, labels_s, feat_t, logits_t = batch
    ps = torch.tensor(rnd.sample(range(feat_s.shape[0]), feat_s.shape[0]))
    pt = torch.tensor(rnd.sample(range(feat_t.shape[0]), feat_t.shape[0]))
    a = dual_level_alignment(feat_s, logits_s, labels_s, feat_t, logits_t, return_terms=True)
    b = dual_level_alignment(
        feat_s[ps], logits_s[ps], labels_s[ps], feat_t[pt], logits_t[pt], return_terms=True
    )
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-7, atol=1e-7)


@given(batches(elements=ANY_FINITE32, dtype=torch.float32))
def test_alignment_finite_for_any_finite_input(batch) -> None:  # type: ignore[no-untyped-def]
    feat_s, logits_s, labels_s, feat_t, logits_t = batch
    feat_s.requires_grad_()
    feat_t.requires_grad_()
    loss = sample_level_alignment(feat_s, logits_s, labels_s, feat_t, logits_t) + (
        cluster_level_alignment(feat_s, logits_s, labels_s, feat_t, logits_t)
    )
    loss.backward()
    assert torch.isfinite(loss)
    assert feat_s.grad is not None and torch.isfinite(feat_s.grad).all()
    assert feat_t.grad is not None and torch.isfinite(feat_t.grad).all()


@given(
    matrix(st.integers(1, 6), 3, ANY_FINITE32.map(lambda v: v)),
    st.booleans(),
)
def test_views_finite_and_permutation_invariant(z: torch.Tensor, from_logits: bool) -> None:
    zg = z.float().requires_grad_()
    zl = z.flip(1).float().requires_grad_()
    mcc = multi_view_clustering_consistency(zg, zl, from_logits=from_logits)
    out = pseudo_label_refinement(zg, zl)
    (mcc + out.loss).backward()
    assert torch.isfinite(mcc) and torch.isfinite(out.loss)
    assert zg.grad is not None and torch.isfinite(zg.grad).all()
    assert out.mask.dtype == torch.bool
    assert bool(((out.labels >= 0) & (out.labels < 3)).all())
    perm = torch.arange(z.shape[0]).flip(0)
    mcc_p = multi_view_clustering_consistency(zg[perm], zl[perm], from_logits=from_logits)
    torch.testing.assert_close(mcc_p, mcc, rtol=1e-4, atol=1e-4)
