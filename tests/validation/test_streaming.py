"""Streaming validators: compute() over chunks equals the function on the concatenation."""

from __future__ import annotations

import inspect
import math
import pickle
from typing import Any, Callable

import pytest
import torch

from lacmfer.validation import (
    TARGET_VALIDATORS,
    AgreementScore,
    BNMScore,
    EntropyScore,
    IMScore,
    SNDScore,
    SourceAccuracy,
    ValidatorSuite,
    agreement_score,
    bnm_score,
    entropy_score,
    im_score,
    score_all,
    snd_score,
    source_accuracy,
)

TOL = {"rtol": 1e-12, "atol": 1e-12}
SPLIT = [4, 1, 7, 3]  # uneven chunks


def _data(seed: int = 0, n: int = 15, k: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "logits": 3 * torch.randn(n, k, generator=g, dtype=torch.float64),
        "logits_g": 3 * torch.randn(n, k, generator=g, dtype=torch.float64),
        "logits_l": 3 * torch.randn(n, k, generator=g, dtype=torch.float64),
        "labels": torch.randint(0, k, (n,), generator=g),
    }


# (class, function, names of the update arguments, class settings)
ONE_SHOT: list[tuple[type, Callable[..., Any], tuple[str, ...], dict[str, Any]]] = [
    (EntropyScore, entropy_score, ("logits",), {}),
    (IMScore, im_score, ("logits",), {}),
    (SNDScore, snd_score, ("logits",), {"temperature": 0.2}),
    (SNDScore, snd_score, ("logits",), {"max_samples": 6, "seed": 5}),
    (BNMScore, bnm_score, ("logits",), {}),
    (AgreementScore, agreement_score, ("logits_g", "logits_l"), {}),
    (SourceAccuracy, source_accuracy, ("logits", "labels"), {}),
]
IDS = ["entropy", "im", "snd", "snd_subsample", "bnm", "agreement", "accuracy"]


def _chunks(n: int) -> list[tuple[int, int]]:
    """Uneven (start, stop) chunks that cover ``range(n)``: sizes cycle through SPLIT."""
    out, start, i = [], 0, 0
    while start < n:
        stop = min(n, start + SPLIT[i % len(SPLIT)])
        out.append((start, stop))
        start, i = stop, i + 1
    return out


def _feed(metric: Any, data: dict[str, torch.Tensor], args: tuple[str, ...]) -> None:
    for start, stop in _chunks(data["logits"].shape[0]):
        metric.update(*(data[a][start:stop] for a in args))


@pytest.mark.parametrize(("cls", "fn", "args", "settings"), ONE_SHOT, ids=IDS)
def test_chunks_equal_one_shot(
    cls: type, fn: Callable[..., Any], args: tuple[str, ...], settings: dict[str, Any]
) -> None:
    data = _data()
    metric = cls(**settings)
    _feed(metric, data, args)
    want = fn(*(data[a] for a in args), **settings)
    torch.testing.assert_close(metric.compute(), want, **TOL)
    # compute() does not consume the state: calling it again gives the same value.
    torch.testing.assert_close(metric.compute(), want, **TOL)
    # reset() forgets everything; the next pass scores only the new data.
    metric.reset()
    with pytest.raises(RuntimeError, match=r"compute\(\) was called before any update"):
        metric.compute()
    other = _data(seed=1, n=9, k=3)
    _feed(metric, other, args)
    torch.testing.assert_close(metric.compute(), fn(*(other[a] for a in args), **settings), **TOL)


@pytest.mark.parametrize(("cls", "fn", "args", "settings"), ONE_SHOT, ids=IDS)
def test_settings_and_signatures_agree(
    cls: type, fn: Callable[..., Any], args: tuple[str, ...], settings: dict[str, Any]
) -> None:
    fn_params = inspect.signature(fn).parameters
    update_params = list(inspect.signature(cls.update).parameters)[1:]
    assert update_params == [
        p for p in fn_params if fn_params[p].kind is not inspect.Parameter.KEYWORD_ONLY
    ]
    cls_params = inspect.signature(cls.__init__).parameters
    for name, p in fn_params.items():
        if p.kind is inspect.Parameter.KEYWORD_ONLY:
            assert cls_params[name].default == p.default, name
    assert cls_params["sync_dist"].default is False


@pytest.mark.parametrize(("cls", "fn", "args", "settings"), ONE_SHOT, ids=IDS)
def test_low_precision_and_grad_inputs(
    cls: type, fn: Callable[..., Any], args: tuple[str, ...], settings: dict[str, Any]
) -> None:
    data = _data()
    half = {
        k: (v.to(torch.bfloat16).requires_grad_() if v.is_floating_point() else v)
        for k, v in data.items()
    }
    metric = cls(**settings)
    _feed(metric, half, args)
    value = metric.compute()
    assert value.dtype == torch.float32 and not value.requires_grad and torch.isfinite(value)
    torch.testing.assert_close(
        value, fn(*(half[a] for a in args), **settings).detach(), rtol=1e-5, atol=1e-6
    )
    # float32 then float64 batches: the state is promoted to float64.
    metric.reset()
    metric.update(*(data[a][:5].float() if data[a].is_floating_point() else data[a][:5] for a in args))  # fmt: skip
    metric.update(*(data[a][5:] for a in args))
    assert metric.compute().dtype == torch.float64


@pytest.mark.parametrize(("cls", "fn", "args", "settings"), ONE_SHOT, ids=IDS)
def test_pickle_and_repr(
    cls: type, fn: Callable[..., Any], args: tuple[str, ...], settings: dict[str, Any]
) -> None:
    data = _data()
    metric = cls(**settings, sync_dist=True)
    _feed(metric, data, args)
    clone = pickle.loads(pickle.dumps(metric))
    torch.testing.assert_close(clone.compute(), metric.compute(), **TOL)
    assert "sync_dist=True" in repr(metric)
    for key, value in settings.items():
        assert f"{key}={value}" in repr(metric)


@pytest.mark.parametrize(("cls", "fn", "args", "settings"), ONE_SHOT, ids=IDS)
def test_one_non_finite_batch_makes_the_score_nan(
    cls: type, fn: Callable[..., Any], args: tuple[str, ...], settings: dict[str, Any]
) -> None:
    data = _data(21, n=12, k=4)
    broken = {**data, args[0]: data[args[0]].clone()}
    broken[args[0]][7, 2] = math.nan  # in the second batch of three
    metric = cls(**settings)
    _feed(metric, broken, args)
    value = metric.compute()
    assert torch.isnan(value) and torch.isnan(fn(*(broken[a] for a in args), **settings))
    metric.reset()
    _feed(metric, data, args)
    assert torch.isfinite(metric.compute())  # reset forgets it


def test_suite_survives_non_finite_logits() -> None:
    z = torch.randn(10, 7)
    bad = z.clone()
    bad[3] = math.inf
    suite = ValidatorSuite()
    suite.update(bad, z, z)  # BNM's SVD raised here
    suite.update(z, z, z)
    scores = suite.compute()
    assert all(torch.isnan(v) for k, v in scores.items() if k != "agreement")
    assert float(scores["agreement"]) == 1.0  # the views were finite


def test_class_count_must_not_change() -> None:
    metric = EntropyScore()
    metric.update(torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"`logits` has K = 5.*\(2, 5\).*K = 4.*reset"):
        metric.update(torch.zeros(2, 5))
    agreement = AgreementScore()
    agreement.update(torch.zeros(3, 4), torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"`logits_g` has K = 2"):
        agreement.update(torch.zeros(3, 2), torch.zeros(3, 2))


BAD = [
    (lambda: EntropyScore().update(torch.zeros(4)), ValueError, r"`logits`.*\(4\)"),
    (
        lambda: IMScore().update(torch.zeros(4, 3, dtype=torch.long)),
        TypeError,
        r"`logits`.*floating",
    ),
    (
        lambda: AgreementScore().update(torch.zeros(4, 3), torch.zeros(3, 3)),
        ValueError,
        r"`logits_g`.*\(4, 3\).*`logits_l`.*\(3, 3\)",
    ),
    (
        lambda: SourceAccuracy().update(torch.zeros(4, 3), torch.zeros(4)),
        TypeError,
        r"`labels`.*integer",
    ),
    (
        lambda: SourceAccuracy().update(torch.zeros(2, 3), torch.tensor([0, 5])),
        ValueError,
        r"`labels`.*\[0, 3\)",
    ),
    (lambda: SourceAccuracy(validate_args="yes"), TypeError, r"`validate_args`.*bool"),
    (lambda: SNDScore(temperature=-1.0), ValueError, r"`temperature`.*> 0"),
    (lambda: SNDScore(max_samples=1), ValueError, r"`max_samples`.*>= 2"),
    (lambda: SNDScore(seed="0"), TypeError, r"`seed`.*int"),
    (lambda: BNMScore(sync_dist=1), TypeError, r"`sync_dist`.*bool"),
    (lambda: ValidatorSuite(agreement=None), TypeError, r"`agreement`.*bool"),
    (
        lambda: ValidatorSuite().update(torch.zeros(4, 3)),
        ValueError,
        r"`logits_g` and `logits_l` are required",
    ),
    (
        lambda: ValidatorSuite(agreement=False).update(
            torch.zeros(4, 3), torch.zeros(4, 3), torch.zeros(4, 3)
        ),
        ValueError,
        r"agreement=False",
    ),
    (
        lambda: ValidatorSuite().update(torch.zeros(4, 3), torch.zeros(5, 3), torch.zeros(5, 3)),
        ValueError,
        r"`logits`.*\(4, 3\).*`logits_g`.*\(5, 3\)",
    ),
    (
        lambda: ValidatorSuite().update(torch.zeros(4, 3), torch.zeros(4, 2), torch.zeros(4, 2)),
        ValueError,
        r"classes.*`logits`.*\(4, 3\).*`logits_g`.*\(4, 2\)",
    ),
]


@pytest.mark.parametrize("case", range(len(BAD)))
def test_bad_inputs_raise(case: int) -> None:
    call, exc, match = BAD[case]
    with pytest.raises(exc, match=match):
        call()


def test_snd_needs_two_samples_in_all() -> None:
    metric = SNDScore()
    metric.update(torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"`logits`.*at least 2"):
        metric.compute()
    metric.update(torch.zeros(1, 3))
    assert float(metric.compute()) == 0.0


@pytest.mark.parametrize("agreement", [True, False])
def test_suite_equals_score_all(agreement: bool) -> None:
    data = _data(2, n=17, k=7)
    suite = ValidatorSuite(agreement=agreement, temperature=0.1, max_samples=12, seed=1)
    args = ("logits", "logits_g", "logits_l") if agreement else ("logits",)
    _feed(suite, data, args)
    got = suite.compute()
    want = score_all(*(data[a] for a in args), temperature=0.1, max_samples=12, seed=1)
    assert tuple(got) == suite.names == tuple(want)
    assert suite.names == (TARGET_VALIDATORS if agreement else TARGET_VALIDATORS[1:])
    for name in want:
        torch.testing.assert_close(got[name], want[name], **TOL)
    suite.reset()
    with pytest.raises(RuntimeError, match="before any update"):
        suite.compute()
    if agreement:
        assert suite.agreement is not None and suite.agreement._num_seen == 0
    clone = pickle.loads(pickle.dumps(suite))
    assert repr(clone) == repr(suite)


def test_suite_matches_the_streaming_classes() -> None:
    data = _data(3)
    suite = ValidatorSuite()
    singles = {"entropy": EntropyScore(), "im": IMScore(), "snd": SNDScore(), "bnm": BNMScore()}
    agreement = AgreementScore()
    for start, stop in _chunks(data["logits"].shape[0]):
        part = {k: v[start:stop] for k, v in data.items()}
        suite.update(part["logits"], part["logits_g"], part["logits_l"])
        for metric in singles.values():
            metric.update(part["logits"])
        agreement.update(part["logits_g"], part["logits_l"])
    got = suite.compute()
    for name, metric in singles.items():
        torch.testing.assert_close(got[name], metric.compute(), **TOL)
    torch.testing.assert_close(got["agreement"], agreement.compute(), **TOL)


def test_sync_dist_without_process_group_is_local() -> None:
    data = _data(4)
    for cls, fn, args, settings in ONE_SHOT:
        metric = cls(**settings, sync_dist=True)
        _feed(metric, data, args)
        torch.testing.assert_close(
            metric.compute(), fn(*(data[a] for a in args), **settings), **TOL
        )


def test_running_sums_do_not_keep_the_logits() -> None:
    metric = IMScore()
    for _ in range(5):
        metric.update(torch.randn(100, 7))
    assert metric._fsum is not None and metric._fsum.shape == (8,)
    assert metric._isum is not None and int(metric._isum[0]) == 500
