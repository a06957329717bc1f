"""Dual-level inter-domain alignment (SID, CID, hardness weights), function and module.

Loop references of ``tests/reference.py`` on random and edge-case inputs, identities, gradients,
input errors, hypothesis properties, the module (equal to the function, settings, ramp state,
pickling), ``torch.compile`` and autocast.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lacmfer.functional import (
    cluster_level_alignment,
    dual_level_alignment,
    hardness_weights,
    mmd2,
    sample_level_alignment,
)
from lacmfer.losses import DualLevelInterDomainAlignment
from tests.reference import cid_reference, hardness_reference, sid_reference

from .cases import (
    ANY_FINITE32,
    FINITE64,
    all_cases,
    check_keyword_only,
    check_pickle_and_state_dict_round_trip,
    check_signatures_agree,
    random_case,
)

CASES = all_cases()
TOL = {"rtol": 1e-10, "atol": 1e-10}
ALIGNMENT = [sample_level_alignment, cluster_level_alignment, dual_level_alignment]


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
    for s in (1e-200, 1e-40, 1e-6, 1e6, 1e150):
        feat_s = (c.feat_s * s).requires_grad_()
        scaled = dual_level_alignment(
            feat_s, c.logits_s, c.labels_s, c.feat_t * s, c.logits_t, return_terms=True
        )
        torch.testing.assert_close(scaled.sid, base.sid, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(scaled.cid, base.cid, rtol=1e-9, atol=1e-12)
        scaled.loss.backward()
        assert feat_s.grad is not None and bool(torch.isfinite(feat_s.grad).all())
    # float32 down to 1e-25: the scale is clamped only below (finite gradients).
    c32 = [t.float() if t.is_floating_point() else t for t in c.args]
    base32 = dual_level_alignment(*c32, return_terms=True)
    for s in (1e-25, 1e25):
        feat_s = (c32[0] * s).requires_grad_()
        scaled = dual_level_alignment(feat_s, c32[1], c32[2], c32[3] * s, c32[4], return_terms=True)
        torch.testing.assert_close(scaled.sid, base32.sid, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(scaled.cid, base32.cid, rtol=1e-4, atol=1e-6)
        scaled.loss.backward()
        assert feat_s.grad is not None and bool(torch.isfinite(feat_s.grad).all())


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


# ------------------------------------------------------------------ errors


def _args() -> dict[str, Any]:
    c = random_case(0, b_s=6, b_t=5, dim=4, num_classes=3, dtype=torch.float32)
    return {
        "feat_s": c.feat_s,
        "logits_s": c.logits_s,
        "labels_s": c.labels_s,
        "feat_t": c.feat_t,
        "logits_t": c.logits_t,
    }


def _call(fn: Callable[..., Any], args: dict[str, Any], **kwargs: Any) -> Any:
    order = ("feat_s", "logits_s", "labels_s", "feat_t", "logits_t")
    return fn(*(args[k] for k in order), **kwargs)


BAD_INPUTS = [
    # (description, changes, exception, message regex)
    ("feat_s ndim", {"feat_s": torch.randn(6, 4, 1)}, ValueError, r"`feat_s`.*2 dimensions.*\(6, 4, 1\)"),
    ("feat_t ndim", {"feat_t": torch.randn(5)}, ValueError, r"`feat_t`.*2 dimensions.*\(5\)"),
    ("logits_s ndim", {"logits_s": torch.randn(6)}, ValueError, r"`logits_s`.*\(6\)"),
    ("labels ndim", {"labels_s": torch.zeros(6, 1, dtype=torch.long)}, ValueError, r"`labels_s`.*\(6, 1\)"),
    ("batch s", {"logits_s": torch.randn(7, 3)}, ValueError, r"`feat_s`.*\(6, 4\).*`logits_s`.*\(7, 3\)"),
    ("batch labels", {"labels_s": torch.zeros(5, dtype=torch.long)}, ValueError, r"`labels_s`.*\(5\)"),
    ("batch t", {"logits_t": torch.randn(4, 3)}, ValueError, r"`feat_t`.*\(5, 4\).*`logits_t`.*\(4, 3\)"),
    ("feature size", {"feat_t": torch.randn(5, 3)}, ValueError, r"Feature sizes.*`feat_s`.*\(6, 4\).*`feat_t`.*\(5, 3\)"),
    ("K differs", {"logits_t": torch.randn(5, 4)}, ValueError, r"classes.*`logits_s`.*\(6, 3\).*`logits_t`.*\(5, 4\)"),
    ("float labels", {"labels_s": torch.zeros(6)}, TypeError, r"`labels_s`.*integer.*float32"),
    ("bool labels", {"labels_s": torch.zeros(6, dtype=torch.bool)}, TypeError, r"`labels_s`.*integer"),
    ("int feats", {"feat_s": torch.zeros(6, 4, dtype=torch.long)}, TypeError, r"`feat_s`.*floating"),
    ("not a tensor", {"feat_t": [[0.0] * 4] * 5}, TypeError, r"`feat_t`.*torch.Tensor.*list"),
    ("label too big", {"labels_s": torch.tensor([0, 1, 2, 3, 0, 1])}, ValueError, r"`labels_s`.*\[0, 3\).*\[0, 3\]"),
    ("negative label", {"labels_s": torch.tensor([0, -1, 2, 0, 0, 1])}, ValueError, r"`labels_s`.*\[-1, 2\]"),
    ("empty source", {"feat_s": torch.randn(0, 4), "logits_s": torch.randn(0, 3), "labels_s": torch.zeros(0, dtype=torch.long)}, ValueError, r"`feat_s`.*at least one"),
]  # fmt: skip


@pytest.mark.parametrize("fn", ALIGNMENT, ids=lambda f: f.__name__)
@pytest.mark.parametrize("desc, changes, exc, match", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_alignment_bad_inputs(
    fn: Callable[..., Any], desc: str, changes: dict[str, Any], exc: type, match: str
) -> None:
    args = _args()
    args.update(changes)
    with pytest.raises(exc, match=match):
        _call(fn, args)


BAD_SETTINGS = [
    ({"threshold": 0.0}, ValueError, r"`threshold`.*\(0, 1\].*0.0"),
    ({"threshold": 1.5}, ValueError, r"`threshold`.*1.5"),
    ({"threshold": float("nan")}, ValueError, r"`threshold`"),
    ({"threshold": "0.4"}, TypeError, r"`threshold`.*str"),
    ({"kernel_num": 0}, ValueError, r"`kernel_num`.*>= 1.*0"),
    ({"kernel_num": 2.5}, TypeError, r"`kernel_num`.*int.*float"),
    ({"kernel_mul": 0.0}, ValueError, r"`kernel_mul`.*> 0"),
    ({"kernel_mul": float("inf")}, ValueError, r"`kernel_mul`.*finite"),
    ({"num_domains": 2}, None, None),  # allowed without domains_s (ignored)
    ({"domains_s": torch.zeros(6, dtype=torch.long)}, ValueError, r"`num_domains` must be given"),
    ({"domains_s": torch.zeros(6, dtype=torch.long), "num_domains": 0}, ValueError, r"`num_domains`"),
    ({"domains_s": torch.tensor([0, 1, 2, 0, 1, 2]), "num_domains": 2}, ValueError, r"`domains_s` must hold values in \[0, 2\) \(num_domains = 2\)"),
    ({"domains_s": torch.zeros(5, dtype=torch.long), "num_domains": 1}, ValueError, r"`domains_s`.*\(5\)"),
    ({"domains_s": torch.zeros(6), "num_domains": 1}, TypeError, r"`domains_s`.*integer"),
]  # fmt: skip


@pytest.mark.parametrize("settings, exc, match", BAD_SETTINGS)
def test_alignment_bad_settings(settings: dict[str, Any], exc: Any, match: Any) -> None:
    for fn in ALIGNMENT:
        if exc is None:
            _call(fn, _args(), **settings)
            continue
        with pytest.raises(exc, match=match):
            _call(fn, _args(), **settings)


def test_cluster_weight_checked() -> None:
    with pytest.raises(ValueError, match=r"`cluster_weight`.*>= 0"):
        _call(dual_level_alignment, _args(), cluster_weight=-1.0)
    with pytest.raises(ValueError, match=r"`cluster_weight`.*0-dim tensor.*shape \(3\)"):
        _call(dual_level_alignment, _args(), cluster_weight=torch.ones(3))
    ramped = _call(dual_level_alignment, _args(), cluster_weight=torch.tensor(0.5))
    torch.testing.assert_close(ramped, _call(dual_level_alignment, _args(), cluster_weight=0.5))


def test_label_check_can_be_disabled_and_forced() -> None:
    args = _args()
    args["labels_s"] = torch.tensor([0, 1, 2, 5, 0, 1])
    assert torch.isfinite(_call(dual_level_alignment, args, validate_args=False))
    with pytest.raises(ValueError, match="labels_s"):
        _call(dual_level_alignment, args, validate_args=True)


def test_hardness_weights_errors() -> None:
    a = _args()
    with pytest.raises(ValueError, match=r"`logits_s`.*\(6, 3\).*`logits_t`.*\(5, 4\)"):
        hardness_weights(a["logits_s"], a["labels_s"], torch.randn(5, 4))
    with pytest.raises(TypeError, match="`labels_s`"):
        hardness_weights(a["logits_s"], a["labels_s"].float(), a["logits_t"])
    with pytest.raises(ValueError, match="`labels_s`"):
        hardness_weights(a["logits_s"], a["labels_s"] + 3, a["logits_t"])


# ------------------------------------------------------------------ properties


@st.composite
def batches(
    draw: st.DrawFn,
    elements: st.SearchStrategy[float] = FINITE64,
    dtype: torch.dtype = torch.float64,
):  # type: ignore[no-untyped-def]
    b_s = draw(st.integers(1, 6))
    b_t = draw(st.integers(1, 6))
    d = draw(st.integers(1, 4))
    k = draw(st.integers(1, 4))
    np_dtype = np.float64 if dtype == torch.float64 else np.float32

    def arr(shape: tuple[int, int]) -> torch.Tensor:
        return torch.from_numpy(draw(arrays(np_dtype, shape, elements=elements))).to(dtype)

    labels = torch.tensor(draw(st.lists(st.integers(0, k - 1), min_size=b_s, max_size=b_s)))
    return arr((b_s, d)), arr((b_s, k)), labels, arr((b_t, d)), arr((b_t, k))


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


# ------------------------------------------------------------------ module


def test_module_signature_agrees_with_function() -> None:
    check_signatures_agree(DualLevelInterDomainAlignment, dual_level_alignment)


def test_alignment_module_equals_function() -> None:
    c = random_case(0)
    for settings in (
        {},
        {"threshold": 0.6, "kernel_num": 3, "kernel_mul": 1.5, "cluster_weight": 0.5},
    ):
        module = DualLevelInterDomainAlignment(**settings)
        torch.testing.assert_close(
            module(*c.args), dual_level_alignment(*c.args, **settings), rtol=0, atol=0
        )
    c = random_case(1, num_domains=3)
    module = DualLevelInterDomainAlignment(num_domains=3)
    got = module(*c.args, domains_s=c.domains_s, return_terms=True)
    want = dual_level_alignment(*c.args, domains_s=c.domains_s, num_domains=3, return_terms=True)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_cluster_ramp() -> None:
    c = random_case(2)
    module = DualLevelInterDomainAlignment(
        cluster_ramp="dann_sigmoid", ramp_steps=10, cluster_weight=0.5
    )
    terms = dual_level_alignment(*c.args, return_terms=True)
    for step in range(13):
        p = min(step / 10, 1.0)
        weight = 0.5 * (2 / (1 + math.exp(-10 * p)) - 1)
        torch.testing.assert_close(
            torch.as_tensor(module.current_cluster_weight()),
            torch.tensor(weight),
            rtol=1e-6,
            atol=1e-7,
        )
        # Float64 inputs get the schedule in float64: exact to the formula.
        assert math.isclose(
            float(module.current_cluster_weight(dtype=torch.float64)), weight, rel_tol=1e-15
        )
        torch.testing.assert_close(
            module(*c.args), terms.sid + weight * terms.cid, rtol=1e-14, atol=1e-15
        )
        module.step()
    assert int(module.num_steps) == 13
    # The progress lives in state_dict: a fresh module resumes the ramp.
    fresh = DualLevelInterDomainAlignment(
        cluster_ramp="dann_sigmoid", ramp_steps=10, cluster_weight=0.5
    )
    fresh.load_state_dict(module.state_dict())
    assert int(fresh.num_steps) == 13
    assert float(fresh.progress) == 1.0
    # The constant schedule ignores the progress.
    const = DualLevelInterDomainAlignment()
    const.step(100)
    assert const.current_cluster_weight() == 0.02


def test_per_source_module_requires_domains() -> None:
    c = random_case(3)
    with pytest.raises(ValueError, match=r"`domains_s` is required.*num_domains=2"):
        DualLevelInterDomainAlignment(num_domains=2)(*c.args)


MODULE_BAD_SETTINGS = [
    ({"threshold": 0}, ValueError, "`threshold`"),
    ({"threshold": 1.2}, ValueError, "`threshold`"),
    ({"kernel_num": 0}, ValueError, "`kernel_num`"),
    ({"kernel_num": 2.0}, TypeError, "`kernel_num`"),
    ({"kernel_mul": -1.0}, ValueError, "`kernel_mul`"),
    ({"cluster_weight": -0.1}, ValueError, "`cluster_weight`"),
    ({"cluster_ramp": "linear"}, ValueError, r"`cluster_ramp`.*'none', 'dann_sigmoid'.*'linear'"),
    ({"ramp_steps": 0}, ValueError, "`ramp_steps`"),
    ({"num_domains": 0}, ValueError, "`num_domains`"),
    ({"validate_args": 1}, TypeError, "`validate_args` must be a bool, got int"),
    ({"cluster_weight": torch.ones(2)}, ValueError, r"`cluster_weight`.*shape \(2\)"),
]  # fmt: skip


@pytest.mark.parametrize("settings, exc, match", MODULE_BAD_SETTINGS)
def test_module_settings_validated_at_construction(
    settings: dict[str, Any], exc: type, match: str
) -> None:
    with pytest.raises(exc, match=match):
        DualLevelInterDomainAlignment(**settings)


def test_module_settings_are_keyword_only() -> None:
    check_keyword_only(DualLevelInterDomainAlignment)


def test_module_extra_repr_shows_settings() -> None:
    text = repr(
        DualLevelInterDomainAlignment(threshold=0.5, cluster_ramp="dann_sigmoid", num_domains=5)
    )
    for part in ("threshold=0.5", "kernel_num=5", "cluster_ramp='dann_sigmoid'", "num_domains=5"):
        assert part in text


def test_module_pickle_and_state_dict_round_trip() -> None:
    module = DualLevelInterDomainAlignment()
    module.step(7)
    fresh = check_pickle_and_state_dict_round_trip(module)
    assert isinstance(fresh, DualLevelInterDomainAlignment)
    assert int(fresh.num_steps) == 7


def test_module_follows_device_and_dtype_moves() -> None:
    module = DualLevelInterDomainAlignment(cluster_ramp="dann_sigmoid").double()
    assert module.num_steps.dtype == torch.int64  # integer buffers are not cast
    c = random_case(4)
    assert module(*c.args).dtype == torch.float64


# ------------------------------------------------------------------ torch.compile


def test_compiled_alignment_equals_eager() -> None:
    torch._dynamo.reset()
    c = random_case(0, dtype=torch.float32, num_domains=2)
    kwargs = {"domains_s": c.domains_s, "num_domains": 2, "return_terms": True}
    fn = torch.compile(dual_level_alignment, fullgraph=True)
    feat_s = c.feat_s.clone().requires_grad_()
    got = fn(feat_s, c.logits_s, c.labels_s, c.feat_t, c.logits_t, **kwargs)
    got.loss.backward()
    eager_feat = c.feat_s.clone().requires_grad_()
    want = dual_level_alignment(eager_feat, c.logits_s, c.labels_s, c.feat_t, c.logits_t, **kwargs)
    want.loss.backward()
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert feat_s.grad is not None and eager_feat.grad is not None
    torch.testing.assert_close(feat_s.grad, eager_feat.grad, rtol=1e-4, atol=1e-5)


def test_compiled_module_equals_eager() -> None:
    torch._dynamo.reset()
    c = random_case(2, dtype=torch.float32)
    align = DualLevelInterDomainAlignment(cluster_ramp="dann_sigmoid", ramp_steps=10)
    align.step(3)
    compiled = torch.compile(align, fullgraph=True)
    torch.testing.assert_close(compiled(*c.args), align(*c.args), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_cpu_matches_fp32(dtype: torch.dtype) -> None:
    c = random_case(3, b_s=16, b_t=16, dim=32, num_classes=7, dtype=torch.float32)
    head = torch.nn.Linear(32, 32)
    torch.nn.init.eye_(head.weight)
    torch.nn.init.zeros_(head.bias)

    def loss() -> torch.Tensor:
        fs, ft = head(c.feat_s), head(c.feat_t)
        zs, zt = head(c.feat_s)[:, :7] + c.logits_s, head(c.feat_t)[:, :7] + c.logits_t
        return dual_level_alignment(fs, zs, c.labels_s, ft, zt)

    want = loss()
    with torch.autocast("cpu", dtype=dtype):
        got = loss()
    assert got.dtype == torch.float32
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=5e-2, atol=5e-2)
