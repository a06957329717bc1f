"""SID, CID and the dual-level alignment against the loop references of tests/reference.py."""

from __future__ import annotations

import pytest
import torch

from lacmfer.functional import (
    cluster_level_alignment,
    dual_level_alignment,
    hardness_weights,
    mmd2,
    sample_level_alignment,
)
from tests.reference import cid_reference, hardness_reference, sid_reference

from .cases import all_cases, random_case

CASES = all_cases()
TOL = {"rtol": 1e-10, "atol": 1e-10}


@pytest.mark.parametrize("name", sorted(CASES))
def test_sid_matches_reference(name: str) -> None:
    c = CASES[name]()
    got = sample_level_alignment(*c.args, **c.kwargs)
    want = sid_reference(*c.args, threshold=c.threshold, domains_s=c.domains_s)
    torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("name", sorted(CASES))
def test_cid_matches_reference(name: str) -> None:
    c = CASES[name]()
    got = cluster_level_alignment(*c.args, **c.kwargs)
    want = cid_reference(*c.args, threshold=c.threshold, domains_s=c.domains_s)
    torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("kernel_num, kernel_mul", [(1, 2.0), (3, 1.5), (4, 3.0), (5, 1.0)])
def test_kernel_settings_match_reference(kernel_num: int, kernel_mul: float) -> None:
    c = random_case(21, num_classes=3, logit_scale=5.0)
    kw = {"kernel_num": kernel_num, "kernel_mul": kernel_mul}
    torch.testing.assert_close(
        sample_level_alignment(*c.args, **kw),
        sid_reference(*c.args, **kw),  # type: ignore[arg-type]
        **TOL,
    )
    torch.testing.assert_close(
        cluster_level_alignment(*c.args, **kw),
        cid_reference(*c.args, **kw),  # type: ignore[arg-type]
        **TOL,
    )


def test_the_cases_exercise_both_terms() -> None:
    """Guard against vacuous comparisons: the random cases give non-zero SID and CID."""
    c = CASES["confident_and_cross_pairs"]()
    assert float(sample_level_alignment(*c.args)) > 1e-3
    assert abs(float(cluster_level_alignment(*c.args))) > 1e-3


def test_edge_case_values() -> None:
    """What the edge cases must give, from the definitions."""
    cases = all_cases()
    # Nothing passes the mask: no hardness, no clusters.
    c = cases["nothing_masked"]()
    assert float(sample_level_alignment(*c.args)) == 0.0
    assert float(cluster_level_alignment(*c.args)) == 0.0
    # One class everywhere: the cross-class set of pairs is empty, so CID is 0.
    c = cases["one_class"]()
    assert float(cluster_level_alignment(*c.args)) == 0.0
    # Identical features: every kernel value equals Q, so CID's MMDs vanish.
    c = cases["identical_features"]()
    assert abs(float(cluster_level_alignment(*c.args))) < 1e-12


@pytest.mark.parametrize("name", sorted(CASES))
def test_dual_is_sid_plus_weighted_cid(name: str) -> None:
    c = CASES[name]()
    sid = sample_level_alignment(*c.args, **c.kwargs)
    cid = cluster_level_alignment(*c.args, **c.kwargs)
    terms = dual_level_alignment(*c.args, **c.kwargs, cluster_weight=0.3, return_terms=True)
    torch.testing.assert_close(terms.sid, sid, rtol=0, atol=0)
    torch.testing.assert_close(terms.cid, cid, rtol=0, atol=0)
    torch.testing.assert_close(terms.loss, sid + 0.3 * cid, rtol=1e-12, atol=1e-12)
    loss = dual_level_alignment(*c.args, **c.kwargs, cluster_weight=0.3)
    torch.testing.assert_close(loss, terms.loss, rtol=0, atol=0)


def test_tensor_cluster_weight() -> None:
    c = random_case(30)
    w = torch.tensor(0.25, dtype=torch.float64)
    torch.testing.assert_close(
        dual_level_alignment(*c.args, cluster_weight=w),
        dual_level_alignment(*c.args, cluster_weight=0.25),
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_hardness_weights_match_reference(name: str) -> None:
    c = CASES[name]()
    if c.domains_s is not None:
        pytest.skip("pooled reference; per-source weights are tested below")
    w_s, w_t = hardness_weights(c.logits_s, c.labels_s, c.logits_t, threshold=c.threshold)
    ref_s, ref_t = hardness_reference(
        c.logits_s, [int(y) for y in c.labels_s], c.logits_t, c.threshold
    )
    torch.testing.assert_close(w_s, torch.tensor(ref_s, dtype=w_s.dtype), **TOL)
    torch.testing.assert_close(w_t, torch.tensor(ref_t, dtype=w_t.dtype), **TOL)


def test_per_source_hardness_weights_are_per_domain() -> None:
    c = random_case(31, b_s=14, num_domains=3, logit_scale=5.0)
    assert c.domains_s is not None
    w_s, w_t = hardness_weights(
        c.logits_s, c.labels_s, c.logits_t, domains_s=c.domains_s, num_domains=3
    )
    assert w_t.shape == (3, c.logits_t.shape[0])
    for g in range(3):
        idx = (c.domains_s == g).nonzero().flatten().tolist()
        ref_s, ref_t = hardness_reference(
            c.logits_s[idx], [int(c.labels_s[i]) for i in idx], c.logits_t, 0.4
        )
        torch.testing.assert_close(w_s[idx], torch.tensor(ref_s, dtype=w_s.dtype), **TOL)
        torch.testing.assert_close(w_t[g], torch.tensor(ref_t, dtype=w_t.dtype), **TOL)


def test_uniform_hardness_reduces_sid_to_plain_mmd() -> None:
    """Identity: when every sample is equally hard, SID is the plain (biased) MMD²."""
    g = torch.Generator().manual_seed(40)
    b_s, b_t, k = 6, 5, 3
    feat_s = torch.randn(b_s, 4, generator=g, dtype=torch.float64)
    feat_t = torch.randn(b_t, 4, generator=g, dtype=torch.float64)
    # Logits (a, 0, 0) with label 1 and pseudo-label 0: same margin error for every sample,
    # every class present in both domains' label sets.
    labels_s = torch.tensor([0, 1, 2, 0, 1, 2])
    logits_s = 5.0 * torch.nn.functional.one_hot((labels_s + 1) % k, k).to(torch.float64)
    pseudo = torch.tensor([0, 1, 2, 0, 1])
    logits_t = 5.0 * torch.nn.functional.one_hot(pseudo, k).to(torch.float64)
    logits_s = logits_s.clone()
    w_s, w_t = hardness_weights(logits_s, labels_s, logits_t)
    torch.testing.assert_close(w_s, torch.full((b_s,), 1 / b_s, dtype=torch.float64))
    sid = sample_level_alignment(feat_s, logits_s, labels_s, feat_t, logits_t)
    # Target hardness of an argmax pseudo-label is the mean of the other logits squared: 0 here.
    assert float(w_t.sum()) == 0.0
    torch.testing.assert_close(sid, mmd2(feat_s, feat_t, weights_x=w_s, weights_y=w_t))

    logits_t = logits_t + torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64)
    logits_t = torch.where(logits_t > 4, logits_t, torch.full_like(logits_t, 1.0))
    w_s, w_t = hardness_weights(logits_s, labels_s, logits_t)
    torch.testing.assert_close(w_t, torch.full((b_t,), 1 / b_t, dtype=torch.float64))
    torch.testing.assert_close(
        sample_level_alignment(feat_s, logits_s, labels_s, feat_t, logits_t), mmd2(feat_s, feat_t)
    )


def test_single_domain_per_source_equals_pooled() -> None:
    c = random_case(41)
    zeros = torch.zeros_like(c.labels_s)
    pooled = dual_level_alignment(*c.args, return_terms=True)
    grouped = dual_level_alignment(*c.args, domains_s=zeros, num_domains=1, return_terms=True)
    for a, b in zip(pooled, grouped):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)
    # Unused domain ids do not count in the average.
    grouped4 = dual_level_alignment(*c.args, domains_s=zeros + 2, num_domains=4, return_terms=True)
    for a, b in zip(pooled, grouped4):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)


def test_per_source_mode_averages_domains() -> None:
    c = random_case(42, b_s=14, num_domains=2)
    assert c.domains_s is not None
    got = dual_level_alignment(*c.args, domains_s=c.domains_s, num_domains=2, return_terms=True)
    parts = []
    for g in range(2):
        idx = c.domains_s == g
        parts.append(
            dual_level_alignment(
                c.feat_s[idx],
                c.logits_s[idx],
                c.labels_s[idx],
                c.feat_t,
                c.logits_t,
                return_terms=True,
            )
        )
    # SID's bandwidth floor uses the scale of the whole batch; with these features it is inactive.
    torch.testing.assert_close(got.sid, (parts[0].sid + parts[1].sid) / 2, **TOL)
    torch.testing.assert_close(got.cid, (parts[0].cid + parts[1].cid) / 2, **TOL)


def test_scale_invariance() -> None:
    """The kernel's bandwidth follows the data: scaling all features leaves the losses unchanged."""
    c = random_case(43)
    base = dual_level_alignment(*c.args, return_terms=True)
    for s in (1e-6, 1e6):
        scaled = dual_level_alignment(
            c.feat_s * s, c.logits_s, c.labels_s, c.feat_t * s, c.logits_t, return_terms=True
        )
        torch.testing.assert_close(scaled.sid, base.sid, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(scaled.cid, base.cid, rtol=1e-9, atol=1e-12)


def test_weights_and_labels_are_detached() -> None:
    """Gradients reach the features only: hardness weights, masks and pseudo-labels are detached."""
    c = random_case(44)
    logits_s = c.logits_s.clone().requires_grad_()
    logits_t = c.logits_t.clone().requires_grad_()
    feat_s = c.feat_s.clone().requires_grad_()
    feat_t = c.feat_t.clone().requires_grad_()
    loss = dual_level_alignment(feat_s, logits_s, c.labels_s, feat_t, logits_t)
    grads = torch.autograd.grad(loss, [feat_s, feat_t, logits_s, logits_t], allow_unused=True)
    assert grads[0] is not None and grads[0].abs().sum() > 0
    assert grads[1] is not None and grads[1].abs().sum() > 0
    assert grads[2] is None and grads[3] is None


def test_bandwidth_is_detached() -> None:
    """The gradient equals that of the same kernel with the bandwidth frozen at its value."""
    g = torch.Generator().manual_seed(45)
    x = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    (grad_x,) = torch.autograd.grad(mmd2(x, y), [x])
    z = torch.cat([x, y]).detach()
    d = torch.cdist(z, z) ** 2
    beta = d.sum() / (9 * 9 - 9)
    d_xy = torch.cdist(x, y) ** 2
    d_xx = torch.cdist(x, x) ** 2
    coef = torch.tensor([2.0 ** -(q - 2) for q in range(5)], dtype=torch.float64)

    def k(dist: torch.Tensor) -> torch.Tensor:
        return torch.exp(-dist[..., None] / beta * coef).sum(-1)

    frozen = k(d_xx).mean() - 2 * k(d_xy).mean()
    (want,) = torch.autograd.grad(frozen, [x])
    torch.testing.assert_close(grad_x, want, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize(
    "name", ["random_0", "random_per_source", "class_only_in_target", "batch_of_one", "one_class"]
)
def test_gradients_match_reference(name: str) -> None:
    """Autograd through the vectorised losses equals autograd through the loop references.

    ``gradcheck`` (finite differences) cannot apply to SID/CID themselves: the method detaches the
    bandwidth, so a finite difference sees the bandwidth move while the analytic gradient, by
    design, does not. The references hold the bandwidth as a Python float, i.e. detached the same way.
    """
    c = CASES[name]()
    for fn, ref in (
        (sample_level_alignment, sid_reference),
        (cluster_level_alignment, cid_reference),
    ):
        fs = c.feat_s.clone().requires_grad_()
        ft = c.feat_t.clone().requires_grad_()
        got = torch.autograd.grad(
            fn(fs, c.logits_s, c.labels_s, ft, c.logits_t, **c.kwargs), [fs, ft], allow_unused=True
        )
        fs_r = c.feat_s.clone().requires_grad_()
        ft_r = c.feat_t.clone().requires_grad_()
        want_loss = ref(
            fs_r,
            c.logits_s,
            c.labels_s,
            ft_r,
            c.logits_t,
            threshold=c.threshold,
            domains_s=c.domains_s,
        )
        if not want_loss.requires_grad:  # the reference never touched a feature: zero gradient
            want = (torch.zeros_like(fs_r), torch.zeros_like(ft_r))
        else:
            want = torch.autograd.grad(want_loss, [fs_r, ft_r], allow_unused=True)
            want = tuple(
                torch.zeros_like(x) if w is None else w for w, x in zip(want, (fs_r, ft_r))
            )
        got = tuple(torch.zeros_like(x) if w is None else w for w, x in zip(got, (fs, ft)))
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def test_gradcheck_with_frozen_bandwidth() -> None:
    """gradcheck of the kernel maths with the bandwidth held fixed (the detached quantity)."""
    g = torch.Generator().manual_seed(50)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    wx = torch.rand(6, generator=g, dtype=torch.float64, requires_grad=True)
    wy = torch.rand(5, generator=g, dtype=torch.float64, requires_grad=True)

    def fn(x: torch.Tensor, y: torch.Tensor, wx: torch.Tensor, wy: torch.Tensor) -> torch.Tensor:
        return mmd2(x, y, weights_x=wx, weights_y=wy, bandwidth=1.7)

    assert torch.autograd.gradcheck(fn, (x, y, wx, wy))


def test_gradients_finite_at_identical_features() -> None:
    c = CASES["identical_features"]()
    feat_s = c.feat_s.clone().requires_grad_()
    feat_t = c.feat_t.clone().requires_grad_()
    loss = dual_level_alignment(feat_s, c.logits_s, c.labels_s, feat_t, c.logits_t)
    loss.backward()
    assert torch.isfinite(loss)
    assert feat_s.grad is not None and torch.isfinite(feat_s.grad).all()
    assert feat_t.grad is not None and torch.isfinite(feat_t.grad).all()


def test_half_precision_inputs_upcast() -> None:
    c = random_case(46, dtype=torch.float32)
    want = dual_level_alignment(*c.args)
    for dtype in (torch.bfloat16, torch.float16):
        args = [t.to(dtype) if t.is_floating_point() else t for t in c.args]
        got = dual_level_alignment(*args)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=5e-2, atol=5e-2)


def test_autocast_bf16_cpu() -> None:
    c = random_case(47, dtype=torch.float32)
    lin = torch.nn.Linear(5, 5).to(torch.float32)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(5) + 0.01)
        lin.bias.zero_()
    want = dual_level_alignment(lin(c.feat_s), c.logits_s, c.labels_s, lin(c.feat_t), c.logits_t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fs, ft = lin(c.feat_s), lin(c.feat_t)
        assert fs.dtype == torch.bfloat16
        got = dual_level_alignment(fs, c.logits_s, c.labels_s, ft, c.logits_t)
    assert got.dtype == torch.float32 and torch.isfinite(got)
    torch.testing.assert_close(got, want, rtol=5e-2, atol=2e-2)


def test_extreme_inputs_stay_finite() -> None:
    c = random_case(48, dtype=torch.float32)
    for scale in (1e-30, 1e30):
        feat_s = (c.feat_s * scale).requires_grad_()
        feat_t = (c.feat_t * scale).requires_grad_()
        logits_s, logits_t = c.logits_s * scale, c.logits_t * scale
        loss = dual_level_alignment(feat_s, logits_s, c.labels_s, feat_t, logits_t)
        loss.backward()
        assert torch.isfinite(loss)
        assert feat_s.grad is not None and torch.isfinite(feat_s.grad).all()
        assert feat_t.grad is not None and torch.isfinite(feat_t.grad).all()
    huge = torch.full_like(c.feat_s, 3e38)
    assert torch.isfinite(dual_level_alignment(huge, c.logits_s, c.labels_s, -c.feat_t, c.logits_t))


def test_out_of_range_labels_ignored_without_validation() -> None:
    """With validation off, an invalid label makes its sample fall out of every set: no crash, no NaN."""
    c = random_case(49)
    labels = c.labels_s.clone()
    labels[0] = 99
    loss = dual_level_alignment(
        c.feat_s, c.logits_s, labels, c.feat_t, c.logits_t, validate_args=False
    )
    assert torch.isfinite(loss)
