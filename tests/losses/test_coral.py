"""CORAL, function and module.

Loop reference of ``tests/reference.py`` (pooled and per-source, edge cases), identities (shift
invariance, a known closed form), gradients (gradcheck, finite and zero for identical features at any
scale), input errors, the module, compile and autocast.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lacmfer.functional import coral
from lacmfer.losses import CORALLoss
from tests.reference import coral_reference

from .cases import (
    check_keyword_only,
    check_pickle_and_state_dict_round_trip,
    check_signatures_agree,
)

TOL = {"rtol": 1e-10, "atol": 1e-10}


def _feat(seed: int, b: int, dim: int = 4, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(b, dim, generator=g, dtype=torch.float64) + shift


def _cases() -> dict[str, tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], Optional[int]]]:
    identical = _feat(9, 1).expand(6, 4).clone()
    return {
        "pooled_random": (_feat(0, 9), _feat(1, 7, scale=2.0), None, None),
        "per_source_random": (_feat(2, 12), _feat(3, 6), torch.arange(12) % 3, 3),
        "per_source_missing_domain": (
            _feat(4, 7),
            _feat(5, 5),
            torch.tensor([0, 0, 3, 3, 3, 0, 1]),  # domain 2 absent, domain 1 has one sample
            4,
        ),
        "per_source_all_singletons": (_feat(6, 3), _feat(7, 4), torch.tensor([0, 1, 2]), 3),
        "one_source": (_feat(8, 5), _feat(10, 4), torch.zeros(5, dtype=torch.long), 1),
        "batch_of_two": (_feat(11, 2), _feat(12, 2), None, None),
        "identical_features": (identical, identical[:4].clone(), None, None),
        "zero_features": (torch.zeros(5, 4).double(), torch.zeros(3, 4).double(), None, None),
        "large_offset": (_feat(13, 8, shift=1e3), _feat(14, 6, shift=-1e3), None, None),
        "one_feature": (_feat(15, 6, dim=1), _feat(16, 5, dim=1), None, None),
    }


CASES = _cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_coral_matches_reference(name: str) -> None:
    fs, ft, domains, num = CASES[name]
    got = coral(fs, ft, domains_s=domains, num_domains=num)
    torch.testing.assert_close(got, coral_reference(fs, ft, domains), **TOL)


def test_coral_gradients_match_reference() -> None:
    fs, ft, domains, num = CASES["per_source_missing_domain"]
    a, b = fs.clone().requires_grad_(), ft.clone().requires_grad_()
    coral(a, b, domains_s=domains, num_domains=num).backward()
    ra, rb = fs.clone().requires_grad_(), ft.clone().requires_grad_()
    coral_reference(ra, rb, domains).backward()
    assert a.grad is not None and ra.grad is not None and b.grad is not None and rb.grad is not None
    torch.testing.assert_close(a.grad, ra.grad, **TOL)
    torch.testing.assert_close(b.grad, rb.grad, **TOL)
    # the singleton domain 1 contributes nothing
    assert float(a.grad[6].abs().sum()) == 0.0


def test_coral_identities() -> None:
    fs = _feat(20, 10)
    # Shift invariance, and zero against itself.
    torch.testing.assert_close(coral(fs, fs + 7.0), torch.zeros((), dtype=torch.float64), **TOL)
    # A known closed form: C_t = 4 C_s for a target scaled by 2, so ||3 C_s||^2 / (4 D^2).
    cov = torch.cov(fs.T)
    want = ((3 * cov) ** 2).sum() / (4 * 4**2)
    torch.testing.assert_close(coral(fs, 2 * fs), want, **TOL)
    # torch.cov agrees (unbiased); per-source with one domain equals pooled.
    torch.testing.assert_close(
        coral(fs, fs[:6] * 1.5),
        coral(fs, fs[:6] * 1.5, domains_s=torch.zeros(10, dtype=torch.long), num_domains=1),
        **TOL,
    )
    # Per source: the mean of the pooled losses of each domain alone.
    fs, ft, domains, num = CASES["per_source_random"]
    parts = [coral(fs[domains == g], ft) for g in range(3)]
    torch.testing.assert_close(
        coral(fs, ft, domains_s=domains, num_domains=num), sum(parts) / 3, **TOL
    )


def test_coral_no_valid_domain_is_zero_and_connected() -> None:
    fs, ft, domains, num = CASES["per_source_all_singletons"]
    a = fs.clone().requires_grad_()
    loss = coral(a, ft, domains_s=domains, num_domains=num)
    assert float(loss.detach()) == 0.0 and loss.requires_grad
    loss.backward()
    assert a.grad is not None and float(a.grad.abs().sum()) == 0.0


@pytest.mark.parametrize("name", ["pooled_random", "per_source_missing_domain"])
def test_coral_gradcheck(name: str) -> None:
    fs, ft, domains, num = CASES[name]
    assert torch.autograd.gradcheck(
        lambda a, b: coral(a, b, domains_s=domains, num_domains=num),
        (fs.clone().requires_grad_(), ft.clone().requires_grad_()),
    )


@pytest.mark.parametrize("value", [0.0, 1.0, -3.5e-20, 0.3, 1e30, -3.3e38])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_identical_features_exact_zero_at_any_scale(value: float, dtype: torch.dtype) -> None:
    fs = torch.full((5, 3), value, dtype=dtype, requires_grad=True)
    ft = torch.full((4, 3), value, dtype=dtype, requires_grad=True)
    loss = coral(fs, ft, domains_s=torch.tensor([0, 0, 1, 1, 1]), num_domains=2)
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert fs.grad is not None and float(fs.grad.abs().sum()) == 0.0


BOUNDED32 = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)


@given(
    st.integers(2, 6).flatmap(lambda n: arrays(np.float32, (n, 3), elements=BOUNDED32)),
    st.integers(2, 6).flatmap(lambda n: arrays(np.float32, (n, 3), elements=BOUNDED32)),
    st.randoms(use_true_random=False),
)
def test_finite_and_permutation_invariant(fs_np: np.ndarray, ft_np: np.ndarray, rnd) -> None:  # type: ignore[no-untyped-def]
    fs = torch.from_numpy(fs_np).requires_grad_()
    ft = torch.from_numpy(ft_np).requires_grad_()
    domains = torch.arange(fs.shape[0]) % 2
    loss = coral(fs, ft, domains_s=domains, num_domains=2) + coral(fs, ft)
    loss.backward()
    assert torch.isfinite(loss) and float(loss.detach()) >= 0.0
    assert fs.grad is not None and torch.isfinite(fs.grad).all()
    assert ft.grad is not None and torch.isfinite(ft.grad).all()
    perm = torch.tensor(rnd.sample(range(fs.shape[0]), fs.shape[0]))
    with torch.no_grad():
        a = coral(fs.double(), ft.double())
        b = coral(fs.double()[perm], ft.double())
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9 * max(1.0, float(a)))


# ------------------------------------------------------------------ errors


def test_input_errors() -> None:
    fs, ft = torch.randn(5, 3), torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"`feat_t` must hold at least 2 samples.*n - 1.*\(1, 3\)"):
        coral(fs, ft[:1])
    with pytest.raises(ValueError, match=r"`feat_s` must hold at least 2 samples.*\(1, 3\)"):
        coral(fs[:1], ft)
    # Per source, one source sample is legal (no domain qualifies: the loss is 0).
    assert float(coral(fs[:1], ft, domains_s=torch.tensor([0]), num_domains=1)) == 0.0
    with pytest.raises(ValueError, match=r"Feature sizes.*`feat_s`.*\(5, 3\).*`feat_t`.*\(4, 2\)"):
        coral(fs, torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"`feat_s`.*2 dimensions.*\(5\)"):
        coral(torch.randn(5), ft)
    with pytest.raises(TypeError, match=r"`feat_t`.*floating"):
        coral(fs, ft.long())
    with pytest.raises(ValueError, match=r"`num_domains` must be given with `domains_s`"):
        coral(fs, ft, domains_s=torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"`domains_s` must hold values in \[0, 2\).*\[0, 4\]"):
        coral(fs, ft, domains_s=torch.arange(5), num_domains=2)
    with pytest.raises(ValueError, match=r"Batch sizes.*`feat_s`.*`domains_s`"):
        coral(fs, ft, domains_s=torch.zeros(3, dtype=torch.long), num_domains=2)
    with pytest.raises(ValueError, match=r"`num_domains` must be an int >= 1"):
        coral(fs, ft, domains_s=torch.zeros(5, dtype=torch.long), num_domains=0)


# ------------------------------------------------------------------ the module


def test_module_signature_and_equality() -> None:
    check_signatures_agree(CORALLoss, coral)
    for name in ("pooled_random", "per_source_random"):
        fs, ft, domains, num = CASES[name]
        got = CORALLoss(num_domains=num)(fs, ft, domains)
        torch.testing.assert_close(
            got, coral(fs, ft, domains_s=domains, num_domains=num), rtol=0, atol=0
        )


def test_module_settings_state_and_repr() -> None:
    with pytest.raises(ValueError, match="`num_domains`"):
        CORALLoss(num_domains=0)
    with pytest.raises(TypeError, match="`num_domains`"):
        CORALLoss(num_domains=2.0)  # type: ignore[arg-type]
    check_keyword_only(CORALLoss)
    with pytest.raises(ValueError, match=r"`domains_s` is required.*num_domains=3"):
        CORALLoss(num_domains=3)(torch.randn(4, 2), torch.randn(4, 2))
    assert "num_domains=3" in repr(CORALLoss(num_domains=3))
    assert "sync_dist=True" in repr(CORALLoss(sync_dist=True))
    check_pickle_and_state_dict_round_trip(CORALLoss())
    import pickle

    assert pickle.loads(pickle.dumps(CORALLoss(process_group=object()))).process_group is None


# ------------------------------------------------------------------ compile and autocast


def test_compiled_function_and_module_equal_eager() -> None:
    torch._dynamo.reset()
    fs, ft = _feat(30, 10, dim=6).float(), _feat(31, 7, dim=6, scale=1.5).float()
    domains = torch.arange(10) % 3
    a, b = fs.clone().requires_grad_(), ft.clone().requires_grad_()
    got = torch.compile(coral, fullgraph=True)(a, b, domains_s=domains, num_domains=3)
    got.backward()
    c, d = fs.clone().requires_grad_(), ft.clone().requires_grad_()
    want = coral(c, d, domains_s=domains, num_domains=3)
    want.backward()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    assert a.grad is not None and c.grad is not None
    torch.testing.assert_close(a.grad, c.grad, rtol=1e-4, atol=1e-7)
    # The module's graph is the function's (inputs that require grad: the same compiled graph).
    module = CORALLoss(num_domains=3)
    e = fs.clone().requires_grad_()
    torch.testing.assert_close(
        torch.compile(module, fullgraph=True)(e, ft.requires_grad_(), domains), want
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_cpu_matches_fp32(dtype: torch.dtype) -> None:
    fs, ft = _feat(32, 16, dim=32).float(), _feat(33, 16, dim=32, scale=2.0).float()
    head = torch.nn.Linear(32, 32)
    torch.nn.init.eye_(head.weight)
    torch.nn.init.zeros_(head.bias)
    want = coral(head(fs), head(ft))
    with torch.autocast("cpu", dtype=dtype):
        got = coral(head(fs), head(ft))
    assert got.dtype == torch.float32 and torch.isfinite(got)
    torch.testing.assert_close(got, want, rtol=5e-2, atol=5e-2 * float(want.detach()))
