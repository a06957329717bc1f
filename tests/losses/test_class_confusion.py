"""Minimum Class Confusion (Jin et al., ECCV 2020), function and module.

Loop reference of ``tests/reference.py`` (edge cases: batch of one, K = 1, uniform, saturated and huge
logits, several temperatures), identities (uniform predictions, the multi-view clustering consistency
special case), detached weights, gradients (gradcheck, finite for any finite logits), input errors,
the module, compile and autocast.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lacmfer.functional import minimum_class_confusion, multi_view_clustering_consistency
from lacmfer.losses import MinimumClassConfusionLoss
from tests.reference import minimum_class_confusion_reference

from .cases import (
    ANY_FINITE32,
    check_keyword_only,
    check_pickle_and_state_dict_round_trip,
    check_signatures_agree,
)

TOL = {"rtol": 1e-10, "atol": 1e-10}


def _logits(seed: int, b: int = 9, k: int = 5, scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(b, k, generator=g, dtype=torch.float64)


def _cases() -> dict[str, torch.Tensor]:
    one_hot = 40.0 * torch.eye(4, dtype=torch.float64)[torch.tensor([0, 2, 2, 1, 3, 0])]
    return {
        "random": _logits(0),
        "random_seven_classes": _logits(1, b=16, k=7),
        "batch_of_one": _logits(2, b=1),
        "batch_of_two": _logits(3, b=2),
        "k1": _logits(4, k=1),
        "all_zero_logits": torch.zeros(6, 7, dtype=torch.float64),
        "saturated_one_hot": one_hot,
        "huge_logits": _logits(5, scale=1e4),
        "one_cluster": torch.tensor([[0.0, 50.0, 0.0]] * 5, dtype=torch.float64),
    }


CASES = _cases()


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("temperature", [2.5, 1.0, 0.3])
def test_matches_reference(name: str, temperature: float) -> None:
    z = CASES[name]
    got = minimum_class_confusion(z, temperature=temperature)
    torch.testing.assert_close(got, minimum_class_confusion_reference(z, temperature), **TOL)


def test_gradients_match_reference_with_detached_weights() -> None:
    z = CASES["random"]
    a = z.clone().requires_grad_()
    minimum_class_confusion(a).backward()
    r = z.clone().requires_grad_()
    minimum_class_confusion_reference(r).backward()  # weights are plain floats there
    assert a.grad is not None and r.grad is not None
    torch.testing.assert_close(a.grad, r.grad, **TOL)


def test_identities() -> None:
    # Uniform predictions: maximal confusion (K - 1) / K; one-hot predictions: none.
    for k in (1, 2, 7):
        torch.testing.assert_close(
            minimum_class_confusion(torch.zeros(5, k, dtype=torch.float64)),
            torch.tensor((k - 1) / k, dtype=torch.float64),
            **TOL,
        )
    assert float(minimum_class_confusion(CASES["saturated_one_hot"], temperature=1.0)) < 1e-15
    # Equal entropies (rows are permutations of one vector): equal weights, and with T = 1 the loss is
    # LA-CMFER's multi-view clustering consistency of two identical views.
    base = _logits(6, b=1, k=5)[0]
    g = torch.Generator().manual_seed(0)
    z = torch.stack([base[torch.randperm(5, generator=g)] for _ in range(8)])
    torch.testing.assert_close(
        minimum_class_confusion(z, temperature=1.0), multi_view_clustering_consistency(z, z), **TOL
    )
    # ... and the temperature is a rescaling of the logits.
    torch.testing.assert_close(
        minimum_class_confusion(z, temperature=2.5),
        minimum_class_confusion(z / 2.5, temperature=1.0),
        **TOL,
    )
    # Bounded: 0 <= L <= (K - 1) / K.
    for seed in range(20):
        loss = float(minimum_class_confusion(_logits(100 + seed, b=4, k=3, scale=5.0)))
        assert -1e-12 <= loss <= 2 / 3 + 1e-12


def _entropy_weights(z: torch.Tensor, temperature: float) -> list[float]:
    p = torch.softmax(z / temperature, dim=1)
    raw = 1 + torch.exp((p * p.log()).sum(dim=1))
    return (z.shape[0] * raw / raw.sum()).tolist()


def test_gradcheck() -> None:
    """The weights are detached, so the gradient is that of the loss with the weights frozen.

    ``g`` has the value of the frozen-weight reference at every point (what the numerical Jacobian
    sees) and the analytic gradient of :func:`minimum_class_confusion` (the detached correction adds
    none): gradcheck compares the two.
    """
    z0 = _logits(7, b=6, k=4, scale=1.0)
    frozen = _entropy_weights(z0, 1.5)

    def g(a: torch.Tensor) -> torch.Tensor:
        loss = minimum_class_confusion(a, temperature=1.5)
        return loss + (minimum_class_confusion_reference(a, 1.5, frozen) - loss).detach()

    assert torch.autograd.gradcheck(g, (z0.clone().requires_grad_(),))
    # without the detach the numerical and analytic gradients would differ
    assert not torch.autograd.gradcheck(
        lambda a: minimum_class_confusion(a, temperature=1.5),
        (z0.clone().requires_grad_(),),
        raise_exception=False,
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("temperature", [2.5, 0.01])
def test_extreme_logits_finite(dtype: torch.dtype, temperature: float) -> None:
    big = torch.finfo(dtype).max
    z = torch.tensor([[big, -big, 0.0], [-big, big, big], [0.0, 0.0, -big]], dtype=dtype)
    z.requires_grad_()
    loss = minimum_class_confusion(z, temperature=temperature)
    loss.backward()
    assert torch.isfinite(loss) and loss.dtype == (
        torch.float64 if dtype == torch.float64 else torch.float32
    )
    assert z.grad is not None and torch.isfinite(z.grad).all()


@given(st.integers(1, 6).flatmap(lambda n: arrays(np.float32, (n, 3), elements=ANY_FINITE32)))
def test_finite_bounded_and_permutation_invariant(z_np: np.ndarray) -> None:
    z = torch.from_numpy(z_np).requires_grad_()
    loss = minimum_class_confusion(z)
    loss.backward()
    assert torch.isfinite(loss) and -1e-6 <= float(loss.detach()) <= 2 / 3 + 1e-6
    assert z.grad is not None and torch.isfinite(z.grad).all()
    perm = torch.arange(z.shape[0]).flip(0)
    with torch.no_grad():
        torch.testing.assert_close(
            minimum_class_confusion(z[perm]), loss.detach(), rtol=1e-5, atol=1e-6
        )


# ------------------------------------------------------------------ errors


def test_input_errors() -> None:
    with pytest.raises(ValueError, match=r"`logits_t`.*2 dimensions.*\(5\)"):
        minimum_class_confusion(torch.randn(5))
    with pytest.raises(TypeError, match=r"`logits_t`.*floating"):
        minimum_class_confusion(torch.zeros(5, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"`logits_t`.*at least one batch entry.*\(0, 3\)"):
        minimum_class_confusion(torch.randn(0, 3))
    with pytest.raises(ValueError, match=r"`logits_t`.*at least one class entry.*\(4, 0\)"):
        minimum_class_confusion(torch.randn(4, 0))
    with pytest.raises(ValueError, match=r"`temperature` must be > 0.0, got 0.0"):
        minimum_class_confusion(torch.randn(4, 3), temperature=0.0)
    with pytest.raises(ValueError, match=r"`temperature` must be finite"):
        minimum_class_confusion(torch.randn(4, 3), temperature=float("inf"))
    with pytest.raises(TypeError, match=r"`temperature` must be a real number"):
        minimum_class_confusion(torch.randn(4, 3), temperature="2.5")  # type: ignore[arg-type]


# ------------------------------------------------------------------ the module


def test_module_signature_and_equality() -> None:
    check_signatures_agree(MinimumClassConfusionLoss, minimum_class_confusion)
    z = CASES["random_seven_classes"]
    for temperature in (2.5, 1.0):
        torch.testing.assert_close(
            MinimumClassConfusionLoss(temperature=temperature)(z),
            minimum_class_confusion(z, temperature=temperature),
            rtol=0,
            atol=0,
        )


def test_module_settings_state_and_repr() -> None:
    with pytest.raises(ValueError, match="`temperature`"):
        MinimumClassConfusionLoss(temperature=-1.0)
    with pytest.raises(TypeError, match="`temperature`"):
        MinimumClassConfusionLoss(temperature=None)  # type: ignore[arg-type]
    check_keyword_only(MinimumClassConfusionLoss)
    assert "temperature=1.5" in repr(MinimumClassConfusionLoss(temperature=1.5))
    assert "sync_dist=True" in repr(MinimumClassConfusionLoss(sync_dist=True))
    check_pickle_and_state_dict_round_trip(MinimumClassConfusionLoss())
    import pickle

    module = MinimumClassConfusionLoss(process_group=object())
    assert pickle.loads(pickle.dumps(module)).process_group is None


# ------------------------------------------------------------------ compile and autocast


def test_compiled_function_and_module_equal_eager() -> None:
    torch._dynamo.reset()
    z = CASES["random_seven_classes"].float()
    a = z.clone().requires_grad_()
    got = torch.compile(minimum_class_confusion, fullgraph=True)(a)
    got.backward()
    b = z.clone().requires_grad_()
    want = minimum_class_confusion(b)
    want.backward()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    assert a.grad is not None and b.grad is not None
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-7)
    # The module's graph is the function's (inputs that require grad: the same compiled graph).
    module = MinimumClassConfusionLoss()
    torch.testing.assert_close(
        torch.compile(module, fullgraph=True)(z.clone().requires_grad_()), want
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_cpu_matches_fp32(dtype: torch.dtype) -> None:
    z = CASES["random_seven_classes"].float()
    head = torch.nn.Linear(7, 7)
    torch.nn.init.eye_(head.weight)
    torch.nn.init.zeros_(head.bias)
    want = minimum_class_confusion(head(z))
    with torch.autocast("cpu", dtype=dtype):
        got = minimum_class_confusion(head(z))
    assert got.dtype == torch.float32 and torch.isfinite(got)
    torch.testing.assert_close(got, want, rtol=5e-2, atol=5e-2)
