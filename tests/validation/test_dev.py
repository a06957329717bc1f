"""DEV (dev_score) and its domain-classifier weights (density_ratio_weights) against references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lacmfer.validation import density_ratio_weights, dev_score

from .reference import density_ratio_reference, dev_reference

TOL = {"rtol": 1e-10, "atol": 1e-10}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _dev_cases() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    g = _gen(0)
    losses = torch.rand(12, generator=g, dtype=torch.float64) * 3
    weights = torch.exp(torch.randn(12, generator=g, dtype=torch.float64))
    errors = (torch.rand(12, generator=g) < 0.3).double()
    return {
        "random": (losses, weights),
        "zero_one_errors": (errors, weights),
        "batch_of_2": (losses[:2], weights[:2]),
        "equal_weights": (losses, torch.full((12,), 1.7, dtype=torch.float64)),
        "unit_weights": (losses, torch.ones(12, dtype=torch.float64)),
        "one_large_weight": (losses, torch.cat([weights[:11], weights.new_tensor([80.0])])),
        "zero_losses": (torch.zeros(12, dtype=torch.float64), weights),
        "some_zero_weights": (
            losses,
            torch.cat([weights[:6], torch.zeros(6, dtype=torch.float64)]),
        ),
        "large_scale": (losses * 1e30, weights * 1e40),
        "small_scale": (losses * 1e-30, weights * 1e-40),
    }


DEV_CASES = _dev_cases()


@pytest.mark.parametrize("name", sorted(DEV_CASES))
def test_dev_matches_reference(name: str) -> None:
    losses, weights = DEV_CASES[name]
    want = torch.tensor(dev_reference(losses, weights), dtype=torch.float64)
    torch.testing.assert_close(
        dev_score(losses, weights), want, rtol=1e-10, atol=1e-10 * abs(float(want)) + 1e-300
    )


def test_dev_identities() -> None:
    losses, weights = DEV_CASES["random"]
    # Equal weights (degenerate variance): no control variate, minus the weighted mean loss.
    for c in (1.0, 1.7, 1e-3, 1e3):
        torch.testing.assert_close(
            dev_score(losses, torch.full_like(losses, c)), -c * losses.mean(), **TOL
        )
    # Weights with sample mean exactly 1: the control variate term vanishes.
    w = weights / weights.mean()
    torch.testing.assert_close(dev_score(losses, w), -(w * losses).mean(), rtol=1e-12, atol=1e-12)
    # Linear in the losses (eta scales with them too).
    torch.testing.assert_close(
        dev_score(3.0 * losses, weights), 3.0 * dev_score(losses, weights), **TOL
    )
    # A control variate built from the weights alone reduces to the exact baseline: if the loss is
    # constant, L = c w, Cov(L, w) = c Var(w), eta = -c, and R = c mean(w) - c mean(w) + c = c.
    torch.testing.assert_close(
        dev_score(torch.full_like(weights, 0.4), weights),
        torch.tensor(-0.4, dtype=torch.float64),
        **TOL,
    )


def test_dev_float32_and_huge_weights_stay_finite() -> None:
    losses, weights = DEV_CASES["random"]
    got = dev_score(losses.float(), weights.float())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), dev_score(losses, weights), rtol=1e-5, atol=1e-6)
    huge = torch.tensor([3e38, 1.0, 2.0, 0.0])
    assert torch.isfinite(dev_score(torch.tensor([1e38, 2.0, 3e38, 0.5]), huge))
    assert torch.isfinite(dev_score(torch.tensor([1.0, 2.0, 3.0, 0.5]), torch.zeros(4)))


def test_dev_float32_weights_over_many_decades_match_float64() -> None:
    # in float32 the cancellation in L-bar + eta (w-bar - 1) flipped the score's sign
    losses = torch.rand(5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for weights in ([1e9, 1.0, 2.0, 3.0, 10.0], [1e19, 1.0, 2.0, 3.0, 1e10]):
        w = torch.tensor(weights).double()  # the float32 inputs, exactly
        want = torch.tensor(dev_reference(losses.float().double(), w), dtype=torch.float64)
        got = dev_score(losses.float(), w.float())
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=0.0)


@st.composite
def loss_weight_pairs(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    n = draw(st.integers(2, 8))
    wide = draw(st.booleans())
    dtype = np.float64 if wide else np.float32
    width = 64 if wide else 32
    losses = draw(
        arrays(dtype, (n,), elements=st.floats(allow_nan=False, allow_infinity=False, width=width))
    )
    weights = draw(
        arrays(dtype, (n,), elements=st.floats(0, None, allow_infinity=False, width=width))
    )
    return torch.from_numpy(losses), torch.from_numpy(weights)


@given(loss_weight_pairs())
def test_dev_finite_for_any_finite_input(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    losses, weights = pair
    assert torch.isfinite(dev_score(losses, weights))


# -- density-ratio weights -----------------------------------------------------------------------


def _shifted_sets(seed: int, dim: int = 3, shift: float = 0.8) -> tuple[torch.Tensor, ...]:
    g = _gen(seed)
    fs = torch.randn(14, dim, generator=g, dtype=torch.float64)
    ft = torch.randn(11, dim, generator=g, dtype=torch.float64) * 1.3 + shift
    fv = torch.randn(6, dim, generator=g, dtype=torch.float64) + 0.3
    return fs, ft, fv


@pytest.mark.parametrize("l2", [1e-2, 1.0, 1e-4])
@pytest.mark.parametrize("seed", [0, 1])
def test_weights_match_reference(seed: int, l2: float) -> None:
    fs, ft, fv = _shifted_sets(seed)
    got = density_ratio_weights(fs, ft, fv, l2=l2)
    want = torch.tensor(density_ratio_reference(fs, ft, fv, l2), dtype=torch.float64)
    torch.testing.assert_close(got, want, **TOL)


def test_weights_reference_edge_cases() -> None:
    fs, ft, fv = _shifted_sets(2, dim=2)
    # One sample per domain; a constant feature; offset and scale of the features.
    cases = [
        (fs[:1], ft[:1], fv),
        (
            torch.cat([fs, torch.full((14, 1), 2.0, dtype=torch.float64)], 1),
            torch.cat([ft, torch.full((11, 1), 2.0, dtype=torch.float64)], 1),
            torch.cat([fv, torch.full((6, 1), 5.0, dtype=torch.float64)], 1),
        ),
        (fs * 1e6 + 3e7, ft * 1e6 + 3e7, fv * 1e6 + 3e7),
    ]
    for a, b, c in cases:
        want = torch.tensor(density_ratio_reference(a, b, c, 1e-2), dtype=torch.float64)
        torch.testing.assert_close(density_ratio_weights(a, b, c), want, **TOL)
    capped = density_ratio_weights(fs, ft, fv, max_weight=1.1)
    want = torch.tensor(
        density_ratio_reference(fs, ft, fv, 1e-2, max_weight=1.1), dtype=torch.float64
    )
    torch.testing.assert_close(capped, want, **TOL)
    assert float(capped.max()) <= 1.1


def test_weights_identities() -> None:
    fs, ft, fv = _shifted_sets(3)
    # Same source and target sets: the balanced classifier is indifferent, every weight is 1.
    torch.testing.assert_close(
        density_ratio_weights(fs, fs.clone(), fv), torch.ones(6, dtype=torch.float64), **TOL
    )
    # Invariant to an affine change of every feature set together (standardisation).
    torch.testing.assert_close(
        density_ratio_weights(2 * fs - 5, 2 * ft - 5, 2 * fv - 5),
        density_ratio_weights(fs, ft, fv),
        **TOL,
    )
    # A source sample that looks like the target weighs more; more regularisation: closer to 1.
    probe = torch.tensor([[-2.0, -2.0, -2.0], [2.0, 2.0, 2.0]], dtype=torch.float64)
    w = density_ratio_weights(fs, ft, probe)
    assert float(w[0]) < 1.0 < float(w[1])
    w_smooth = density_ratio_weights(fs, ft, probe, l2=10.0)
    assert float(w[0]) < float(w_smooth[0]) < 1.0 < float(w_smooth[1]) < float(w[1])
    # Deterministic, and the float32 path agrees with float64.
    assert torch.equal(density_ratio_weights(fs, ft, fv), density_ratio_weights(fs, ft, fv))
    w32 = density_ratio_weights(fs.float(), ft.float(), fv.float())
    assert w32.dtype == torch.float32
    torch.testing.assert_close(
        w32.double(), density_ratio_weights(fs, ft, fv), rtol=1e-4, atol=1e-5
    )


def test_separable_domains_stay_finite() -> None:
    # Perfectly separable domains with almost no regularisation: the odds grow huge but stay finite.
    fs = torch.randn(20, 2, generator=_gen(4)) - 50.0
    ft = torch.randn(20, 2, generator=_gen(5)) + 50.0
    probe = torch.tensor([[-60.0, -50.0], [0.0, 0.0], [60.0, 50.0]])
    w = density_ratio_weights(fs, ft, probe, l2=1e-12, max_iter=50)
    assert torch.isfinite(w).all() and float(w[0]) < 1e-3 and float(w[2]) > 1e3
    assert float(w.max()) <= math.sqrt(torch.finfo(torch.float32).max)


@given(
    st.integers(1, 5),
    st.integers(1, 5),
    st.integers(1, 3),
    st.integers(1, 3),
    st.data(),
)
def test_weights_finite_for_any_finite_features(
    n_s: int, n_t: int, n_v: int, dim: int, data: st.DataObject
) -> None:
    elements = st.floats(allow_nan=False, allow_infinity=False, width=32)

    def draw(n: int) -> torch.Tensor:
        return torch.from_numpy(data.draw(arrays(np.float32, (n, dim), elements=elements)))

    w = density_ratio_weights(draw(n_s), draw(n_t), draw(n_v), max_iter=5)
    assert torch.isfinite(w).all() and bool((w >= 0).all())
    assert torch.isfinite(dev_score(torch.ones(n_v + 1), torch.cat([w, w[:1]])))


def test_dev_selects_the_model_that_is_better_where_the_target_lies() -> None:
    # Source on both sides of 0, target on the right. Model A errs on the right, B on the left: the
    # plain source loss prefers A (fewer source errors), the importance-weighted one prefers B.
    g = _gen(6)
    fs = torch.randn(400, 1, generator=g, dtype=torch.float64) * 2
    ft = torch.randn(400, 1, generator=g, dtype=torch.float64) + 2.0
    fv = torch.randn(300, 1, generator=g, dtype=torch.float64) * 2
    right = (fv[:, 0] > 0).double()
    loss_a, loss_b = right.clone(), 1.0 - right
    w = density_ratio_weights(fs, ft, fv)
    assert float(loss_a.mean()) < float(loss_b.mean())
    assert float(dev_score(loss_b, w)) > float(dev_score(loss_a, w)) + 0.3


# -- errors ---------------------------------------------------------------------------------------

X = torch.zeros(5, 3)
BAD = [
    (
        lambda: dev_score(torch.zeros(4), torch.zeros(5)),
        ValueError,
        r"`val_losses`.*\(4\).*`weights`.*\(5\)",
    ),
    (
        lambda: dev_score(torch.zeros(1), torch.zeros(1)),
        ValueError,
        r"`val_losses`.*at least 2.*variance",
    ),
    (
        lambda: dev_score(torch.zeros(4, 1), torch.zeros(4)),
        ValueError,
        r"`val_losses`.*1 dim.*\(4, 1\)",
    ),
    (
        lambda: dev_score(torch.zeros(4), torch.zeros(4, dtype=torch.long)),
        TypeError,
        r"`weights`.*floating",
    ),
    (
        lambda: dev_score(torch.zeros(3), torch.tensor([1.0, -1.0, 2.0])),
        ValueError,
        r"`weights`.*non-negative.*\[-1.0, 2.0\]",
    ),
    (
        lambda: dev_score(torch.tensor([1.0, float("nan")]), torch.ones(2)),
        ValueError,
        r"`val_losses`.*finite",
    ),
    (
        lambda: dev_score(torch.ones(2), torch.tensor([1.0, float("inf")])),
        ValueError,
        r"`weights`.*finite",
    ),
    (
        lambda: density_ratio_weights(X, torch.zeros(4, 2), X),
        ValueError,
        r"Feature sizes.*`feat_s_train`.*\(5, 3\).*`feat_t`.*\(4, 2\)",
    ),
    (lambda: density_ratio_weights(X, X, torch.zeros(2, 4)), ValueError, r"`feat_s_val`.*\(2, 4\)"),
    (
        lambda: density_ratio_weights(X, torch.zeros(0, 3), X),
        ValueError,
        r"`feat_t`.*at least one.*\(0, 3\)",
    ),
    (
        lambda: density_ratio_weights(X, X, torch.zeros(3)),
        ValueError,
        r"`feat_s_val`.*2 dimensions",
    ),
    (lambda: density_ratio_weights(X.long(), X, X), TypeError, r"`feat_s_train`.*floating"),
    (lambda: density_ratio_weights(X, X, X, l2=0.0), ValueError, r"`l2`.*> 0"),
    (lambda: density_ratio_weights(X, X, X, max_iter=0), ValueError, r"`max_iter`.*>= 1"),
    (lambda: density_ratio_weights(X, X, X, max_weight=-1.0), ValueError, r"`max_weight`.*> 0"),
    (  # NaN features gave NaN weights, against "non-negative, finite"
        lambda: density_ratio_weights(X, X * float("nan"), X),
        ValueError,
        r"`feat_t` must be finite.*15 NaN.*\(5, 3\)",
    ),
]


@pytest.mark.parametrize("case", range(len(BAD)))
def test_bad_inputs_raise(case: int) -> None:
    call, exc, match = BAD[case]
    with pytest.raises(exc, match=match):
        call()


def test_value_checks_are_opt_out() -> None:
    assert torch.isfinite(
        dev_score(torch.ones(3), torch.tensor([1.0, -1.0, 2.0]), validate_args=False)
    )
    nan = density_ratio_weights(X, X * float("nan"), X, validate_args=False)
    assert nan.shape == (5,) and torch.isnan(nan).all()


def test_losses_from_cross_entropy() -> None:
    g = _gen(7)
    logits = torch.randn(10, 4, generator=g)
    labels = torch.randint(0, 4, (10,), generator=g)
    losses = F.cross_entropy(logits, labels, reduction="none")
    value = dev_score(losses, torch.exp(torch.randn(10, generator=g)))
    assert value.dtype == torch.float32 and torch.isfinite(value)
