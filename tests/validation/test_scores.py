"""Prediction-based validators against their loop references; edge cases, properties, errors."""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import lacmfer.validation._scores as scores_module
from lacmfer.validation import (
    TARGET_VALIDATORS,
    agreement_score,
    bnm_score,
    entropy_score,
    im_score,
    score_all,
    snd_score,
    source_accuracy,
)

from .reference import (
    accuracy_reference,
    agreement_reference,
    bnm_reference,
    entropy_reference,
    im_reference,
    snd_reference,
)

TOL = {"rtol": 1e-10, "atol": 1e-10}


def _logits(seed: int, b: int = 9, k: int = 4, scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(b, k, generator=g, dtype=torch.float64)


def _cases() -> dict[str, torch.Tensor]:
    identical = _logits(3, b=1, k=5).repeat(6, 1)
    clustered = torch.cat([_logits(4, b=4, k=3) * 0.1 + 5 * torch.eye(3)[i] for i in range(3)])
    return {
        "random": _logits(0),
        "random_k7": _logits(1, b=13, k=7, scale=2.0),
        "batch_of_2": _logits(2, b=2, k=4),
        "one_class": _logits(5, b=5, k=1),
        "identical_rows": identical,
        "all_zero": torch.zeros(6, 3, dtype=torch.float64),
        "huge_logits": _logits(6, b=7, k=4, scale=1e4),
        "clustered": clustered,
        "more_classes_than_samples": _logits(7, b=3, k=7),
    }


CASES = _cases()
ONE_VIEW = [
    (entropy_score, entropy_reference),
    (im_score, im_reference),
    (bnm_score, bnm_reference),
]


def _expected(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float64)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize(("fn", "ref"), ONE_VIEW, ids=["entropy", "im", "bnm"])
def test_matches_reference(name: str, fn: Callable[..., Any], ref: Callable[..., float]) -> None:
    logits = CASES[name]
    torch.testing.assert_close(fn(logits), _expected(ref(logits)), **TOL)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("temperature", [0.05, 1.0])
def test_snd_matches_reference(name: str, temperature: float) -> None:
    logits = CASES[name]
    got = snd_score(logits, temperature=temperature)
    torch.testing.assert_close(got, _expected(snd_reference(logits, temperature)), **TOL)


@pytest.mark.parametrize("name", sorted(CASES))
def test_agreement_matches_reference(name: str) -> None:
    logits_g = CASES[name]
    logits_l = logits_g + _logits(10, *logits_g.shape, scale=0.7 * float(logits_g.abs().max() + 1))
    want = agreement_reference(logits_g, logits_l)
    torch.testing.assert_close(agreement_score(logits_g, logits_l), _expected(want), **TOL)


@pytest.mark.parametrize("name", sorted(CASES))
def test_source_accuracy_matches_reference(name: str) -> None:
    logits = CASES[name]
    labels = torch.randint(
        0, logits.shape[1], (logits.shape[0],), generator=torch.Generator().manual_seed(1)
    )
    want = accuracy_reference(logits, labels)
    torch.testing.assert_close(source_accuracy(logits, labels), _expected(want), **TOL)


def test_known_values_and_identities() -> None:
    k = 7
    # Uniform predictions: entropy score -log K, IM 0, SND log(N - 1), agreement 1.
    zeros = torch.zeros(10, k, dtype=torch.float64)
    torch.testing.assert_close(entropy_score(zeros), _expected(-math.log(k)), **TOL)
    torch.testing.assert_close(im_score(zeros), _expected(0.0), **TOL)
    torch.testing.assert_close(snd_score(zeros), _expected(math.log(9)), **TOL)
    assert float(agreement_score(zeros, zeros)) == 1.0
    # Confident predictions spread evenly over the classes: IM = log K, BNM = sqrt(K / B).
    onehot = 60.0 * torch.eye(k, dtype=torch.float64).repeat(3, 1)
    torch.testing.assert_close(im_score(onehot), _expected(math.log(k)), **TOL)
    torch.testing.assert_close(bnm_score(onehot), _expected(math.sqrt(k / (3 * k))), **TOL)
    # Batch of 2: each neighbourhood holds one sample, entropy 0.
    assert float(snd_score(_logits(0, b=2))) == 0.0
    # One class: every score is at its only possible value.
    one = _logits(1, b=4, k=1)
    assert float(entropy_score(one)) == 0.0 and float(im_score(one)) == 0.0
    torch.testing.assert_close(snd_score(one), _expected(math.log(3)), **TOL)
    torch.testing.assert_close(bnm_score(one), _expected(1 / math.sqrt(4)), **TOL)


def test_ranges() -> None:
    for seed in range(10):
        b, k = 3 + seed, 2 + seed % 5
        z = _logits(100 + seed, b=b, k=k, scale=4.0)
        assert -math.log(k) - 1e-12 <= float(entropy_score(z)) <= 0.0
        assert -1e-12 <= float(im_score(z)) <= math.log(k) + 1e-12
        assert (
            1 / math.sqrt(b * k) - 1e-12 <= float(bnm_score(z)) <= math.sqrt(min(b, k) / b) + 1e-12
        )
        assert -1e-12 <= float(snd_score(z)) <= math.log(b - 1) + 1e-12


def test_permutation_invariance() -> None:
    z = _logits(8, b=11, k=5)
    perm = torch.randperm(11, generator=torch.Generator().manual_seed(0))
    for fn in (entropy_score, im_score, snd_score, bnm_score):
        torch.testing.assert_close(fn(z[perm]), fn(z), **TOL)


def test_snd_excludes_self_exactly() -> None:
    # Two samples: each one's neighbourhood is the other sample alone, whatever the temperature.
    z = torch.tensor([[3.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    for t in (1e-3, 0.05, 10.0):
        assert float(snd_score(z, temperature=t)) == 0.0


def test_snd_row_blocks_equal_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    z = _logits(9, b=23, k=4)
    whole = snd_score(z)
    monkeypatch.setattr(scores_module, "_SND_BLOCK_ENTRIES", 23 * 5)  # blocks of 5 rows
    torch.testing.assert_close(snd_score(z), whole, **TOL)
    monkeypatch.setattr(scores_module, "_SND_BLOCK_ENTRIES", 1)  # one row at a time
    torch.testing.assert_close(snd_score(z), whole, **TOL)


def test_snd_max_samples_is_a_seeded_subsample() -> None:
    z = _logits(11, b=20, k=4)
    got = snd_score(z, max_samples=8, seed=3)
    index = torch.randperm(20, generator=torch.Generator().manual_seed(3))[:8]
    torch.testing.assert_close(got, _expected(snd_reference(z[index], 0.05)), **TOL)
    assert torch.equal(got, snd_score(z, max_samples=8, seed=3))  # deterministic
    assert not torch.equal(got, snd_score(z, max_samples=8, seed=4))
    torch.testing.assert_close(snd_score(z, max_samples=20), snd_score(z))  # no subsample needed


def test_tiny_temperature_stays_finite() -> None:
    z = _logits(12, b=6, k=3)
    for dtype in (torch.float32, torch.float64):
        assert torch.isfinite(snd_score(z.to(dtype), temperature=1e-320))


def test_ties_take_the_first_class() -> None:
    tied = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0]])
    assert float(source_accuracy(tied, torch.tensor([0, 1]))) == 1.0
    assert float(agreement_score(tied, torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.0, 5.0]]))) == 0.5


def test_score_all_matches_the_functions() -> None:
    z, zg, zl = _logits(13), _logits(14), _logits(15)
    out = score_all(z, zg, zl, temperature=0.1, max_samples=5, seed=2)
    assert tuple(out) == TARGET_VALIDATORS
    assert torch.equal(out["agreement"], agreement_score(zg, zl))
    assert torch.equal(out["bnm"], bnm_score(z))
    assert torch.equal(out["entropy"], entropy_score(z))
    assert torch.equal(out["im"], im_score(z))
    assert torch.equal(out["snd"], snd_score(z, temperature=0.1, max_samples=5, seed=2))
    assert tuple(score_all(z)) == ("bnm", "entropy", "im", "snd")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_computes_in_float32(dtype: torch.dtype) -> None:
    z = _logits(16, b=6, k=3).to(dtype)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    results = [fn(z) for fn in (entropy_score, im_score, snd_score, bnm_score)]
    results += [agreement_score(z, z), source_accuracy(z, labels)]
    for value in results:
        assert value.dtype == torch.float32 and torch.isfinite(value)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert entropy_score(z.float()).dtype == torch.float32
        assert snd_score(z.float()).dtype == torch.float32


def test_no_gradient_needed_but_inputs_may_require_it() -> None:
    z = _logits(17, b=5, k=3).requires_grad_()
    for fn in (entropy_score, im_score, snd_score, bnm_score):
        assert torch.isfinite(fn(z))


# -- properties ----------------------------------------------------------------------------------

ANY_FINITE32 = st.floats(allow_nan=False, allow_infinity=False, width=32)
ANY_FINITE64 = st.floats(allow_nan=False, allow_infinity=False, width=64)


@st.composite
def logit_matrices(draw: st.DrawFn, min_rows: int = 1) -> torch.Tensor:
    b = draw(st.integers(min_rows, 6))
    k = draw(st.integers(1, 4))
    wide = draw(st.booleans())
    dtype, elements = (np.float64, ANY_FINITE64) if wide else (np.float32, ANY_FINITE32)
    return torch.from_numpy(draw(arrays(dtype, (b, k), elements=elements)))


@given(logit_matrices(min_rows=2), logit_matrices(min_rows=2))
def test_finite_for_any_finite_logits(z: torch.Tensor, other: torch.Tensor) -> None:
    b = min(z.shape[0], other.shape[0])
    k = min(z.shape[1], other.shape[1])
    top = torch.finfo(z.dtype).max  # a float64 beyond float32's range would become inf
    z, other = z[:b, :k], other[:b, :k].double().clamp(-top, top).to(z.dtype)
    labels = torch.zeros(b, dtype=torch.long)
    k_ = z.shape[1]
    values = [
        entropy_score(z),
        im_score(z),
        snd_score(z),
        snd_score(z, temperature=1e-6),
        bnm_score(z),
        agreement_score(z, other),
        source_accuracy(z, labels),
    ]
    for value in values:
        assert torch.isfinite(value), (z, value)
    assert -math.log(k_) - 1e-5 <= float(values[0]) <= 1e-6
    assert -1e-5 <= float(values[1]) <= math.log(k_) + 1e-5


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("row", ["one", "all"])
def test_non_finite_logits_score_nan_never_best(bad: float, row: str) -> None:
    # a diverged model's predictions must not win a selection: NaN rows used to count as
    # perfectly confident (entropy 0), agreeing and correct, and BNM's SVD raised
    z = _logits(11, b=8, k=4)
    broken = z.clone()
    if row == "all":
        broken.fill_(bad)
    else:
        broken[3, 1] = bad
    labels = torch.zeros(8, dtype=torch.long)
    values = {
        "entropy": entropy_score(broken),
        "im": im_score(broken),
        "snd": snd_score(broken),
        "snd_subsample": snd_score(broken, max_samples=2, seed=0),  # the bad row may be left out
        "bnm": bnm_score(broken),
        "agreement": agreement_score(broken, z),
        "agreement_l": agreement_score(z, broken),
        "accuracy": source_accuracy(broken, labels),
        **{f"all_{k}": v for k, v in score_all(broken, broken, z).items()},
    }
    for name, value in values.items():
        assert torch.isnan(value), (name, value)
    assert all(torch.isfinite(v) for v in score_all(z, z, z).values())  # the finite ones unchanged


def test_im_score_is_never_below_zero() -> None:
    collapsed = torch.tensor([[10.0, 0.0, 0.0]]).repeat(6, 1)  # a few ulps below 0 before
    assert float(im_score(collapsed)) == 0.0
    assert float(im_score(collapsed.double())) >= 0.0


# -- errors ---------------------------------------------------------------------------------------

BAD = [
    # (call, exception, message regex)
    (lambda: entropy_score(torch.zeros(4)), ValueError, r"`logits`.*2 dimensions.*\(4\)"),
    (lambda: im_score(torch.zeros(4, 3, 1)), ValueError, r"`logits`.*\(4, 3, 1\)"),
    (lambda: bnm_score(torch.zeros(0, 3)), ValueError, r"`logits`.*at least one.*\(0, 3\)"),
    (lambda: entropy_score(torch.zeros(3, 0)), ValueError, r"`logits`.*class.*\(3, 0\)"),
    (lambda: entropy_score(torch.zeros(3, 2, dtype=torch.long)), TypeError, r"`logits`.*floating"),
    (lambda: im_score([[0.0, 1.0]]), TypeError, r"`logits`.*torch.Tensor.*list"),
    (lambda: snd_score(torch.zeros(1, 3)), ValueError, r"`logits`.*at least 2.*itself.*\(1, 3\)"),
    (lambda: snd_score(torch.zeros(4, 3), temperature=0.0), ValueError, r"`temperature`.*> 0"),
    (lambda: snd_score(torch.zeros(4, 3), temperature="1"), TypeError, r"`temperature`.*real"),
    (lambda: snd_score(torch.zeros(4, 3), max_samples=1), ValueError, r"`max_samples`.*>= 2"),
    (lambda: snd_score(torch.zeros(4, 3), max_samples=2.5), TypeError, r"`max_samples`.*int"),
    (lambda: snd_score(torch.zeros(4, 3), seed=None), TypeError, r"`seed`.*int"),
    (
        lambda: agreement_score(torch.zeros(4, 3), torch.zeros(5, 3)),
        ValueError,
        r"`logits_g`.*\(4, 3\).*`logits_l`.*\(5, 3\)",
    ),
    (
        lambda: agreement_score(torch.zeros(4, 3), torch.zeros(4, 2)),
        ValueError,
        r"classes.*`logits_l`.*\(4, 2\)",
    ),
    (lambda: source_accuracy(torch.zeros(4, 3), torch.zeros(4)), TypeError, r"`labels`.*integer"),
    (
        lambda: source_accuracy(torch.zeros(4, 3), torch.zeros(5, dtype=torch.long)),
        ValueError,
        r"`logits`.*\(4, 3\).*`labels`.*\(5\)",
    ),
    (
        lambda: source_accuracy(torch.zeros(2, 3), torch.tensor([0, 3])),
        ValueError,
        r"`labels`.*\[0, 3\).*\[0, 3\]",
    ),
    (
        lambda: score_all(torch.zeros(4, 3), torch.zeros(4, 3)),
        ValueError,
        r"`logits_g` and `logits_l` must be given together",
    ),
    (
        lambda: score_all(torch.zeros(4, 3), torch.zeros(5, 3), torch.zeros(5, 3)),
        ValueError,
        r"`logits`.*\(4, 3\).*`logits_g`.*\(5, 3\)",
    ),
    (  # as ValidatorSuite.update: the views' K must be the prediction's
        lambda: score_all(torch.zeros(4, 7), torch.zeros(4, 5), torch.zeros(4, 5)),
        ValueError,
        r"classes.*`logits`.*\(4, 7\).*`logits_g`.*\(4, 5\)",
    ),
]


@pytest.mark.parametrize("case", range(len(BAD)))
def test_bad_inputs_raise(case: int) -> None:
    call, exc, match = BAD[case]
    with pytest.raises(exc, match=match):
        call()


def test_label_range_check_is_opt_out() -> None:
    logits = torch.zeros(2, 3)
    assert float(source_accuracy(logits, torch.tensor([0, 3]), validate_args=False)) == 0.5
