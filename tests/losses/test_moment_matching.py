"""M3SDA moment matching, function and module.

Loop reference of ``tests/reference.py`` (edge cases: one source, a missing domain, batch of two,
identical features), the safe norm (exact value, finite gradient at 0), gradients (gradcheck),
input errors, the module, compile and autocast.
"""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lacmfer.functional import moment_matching
from lacmfer.functional._moment_matching import safe_norm
from lacmfer.losses import MomentMatchingLoss
from tests.reference import moment_matching_reference

from .cases import check_keyword_only, check_signatures_agree

TOL = {"rtol": 1e-10, "atol": 1e-10}


def _feat(seed: int, b: int, dim: int = 4, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(b, dim, generator=g, dtype=torch.float64) + shift


def _cases() -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]]:
    same = _feat(9, 1).expand(5, 4).clone()
    return {
        "random_three_sources": (_feat(0, 12), torch.arange(12) % 3, _feat(1, 7, shift=0.5), 3),
        "missing_domain": (_feat(2, 7), torch.tensor([0, 0, 3, 3, 3, 0, 1]), _feat(3, 5), 4),
        "one_source": (_feat(4, 6), torch.zeros(6, dtype=torch.long), _feat(5, 4, scale=2.0), 1),
        "one_present_of_three": (_feat(6, 4), torch.full((4,), 2), _feat(7, 3), 3),
        "batch_of_two": (_feat(8, 1), torch.tensor([1]), _feat(10, 1), 2),
        "identical_features": (same, torch.tensor([0, 1, 0, 1, 1]), same[:3].clone(), 2),
        "zero_features": (
            torch.zeros(4, 3).double(),
            torch.tensor([0, 1, 1, 0]),
            torch.zeros(2, 3).double(),
            2,
        ),
        "large_offset": (_feat(11, 8, shift=1e3), torch.arange(8) % 2, _feat(12, 6, shift=-1e3), 2),
    }


CASES = _cases()


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("moments", [1, 2, 3])
def test_matches_reference(name: str, moments: int) -> None:
    fs, domains, ft, num = CASES[name]
    got = moment_matching(fs, domains, ft, num_domains=num, moments=moments)
    want = moment_matching_reference(fs, domains, ft, moments)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10 * max(1.0, float(want)))


def test_gradients_match_reference() -> None:
    fs, domains, ft, num = CASES["missing_domain"]
    a, b = fs.clone().requires_grad_(), ft.clone().requires_grad_()
    moment_matching(a, domains, b, num_domains=num).backward()
    ra, rb = fs.clone().requires_grad_(), ft.clone().requires_grad_()
    moment_matching_reference(ra, domains, rb).backward()
    assert a.grad is not None and ra.grad is not None and b.grad is not None and rb.grad is not None
    torch.testing.assert_close(a.grad, ra.grad, **TOL)
    torch.testing.assert_close(b.grad, rb.grad, **TOL)


def test_identities() -> None:
    fs, domains, ft, _ = CASES["random_three_sources"]
    # Absent domains are skipped: more (empty) domains change nothing.
    torch.testing.assert_close(
        moment_matching(fs, domains, ft, num_domains=3),
        moment_matching(fs, domains, ft, num_domains=7),
        **TOL,
    )
    # Sum over the moments of the single-moment terms (with k-th powers as features, k = 1).
    total = moment_matching(fs, domains, ft, num_domains=3, moments=2)
    parts = moment_matching(fs, domains, ft, num_domains=3, moments=1) + moment_matching(
        fs**2, domains, ft**2, num_domains=3, moments=1
    )
    torch.testing.assert_close(total, parts, **TOL)
    # One source: only the source-target term, the Euclidean distance of the means.
    fs, domains, ft, _ = CASES["one_source"]
    want = torch.linalg.vector_norm(fs.mean(0) - ft.mean(0))
    torch.testing.assert_close(
        moment_matching(fs, domains, ft, num_domains=1, moments=1), want, **TOL
    )


def test_safe_norm_value_and_gradient() -> None:
    v = torch.tensor(
        [[3.0, -4.0], [0.0, 0.0], [1e-200, 0.0], [1e200, 1e200]],
        dtype=torch.float64,
        requires_grad=True,
    )
    n = safe_norm(v)
    torch.testing.assert_close(
        n.detach(), torch.tensor([5.0, 0.0, 1e-200, 2**0.5 * 1e200], dtype=torch.float64), **TOL
    )
    n.sum().backward()
    assert v.grad is not None and torch.isfinite(v.grad).all()
    torch.testing.assert_close(v.grad[0], torch.tensor([0.6, -0.8], dtype=torch.float64), **TOL)
    assert float(v.grad[1].abs().sum()) == 0.0
    # what it avoids: the square root of a sum of squares has a NaN gradient at 0
    x = torch.zeros(3, requires_grad=True)
    (x * x).sum().sqrt().backward()
    assert x.grad is not None and torch.isnan(x.grad).all()


@pytest.mark.parametrize("name", ["identical_features", "zero_features"])
def test_identical_moments_give_zero_with_finite_gradients(name: str) -> None:
    fs, domains, ft, num = CASES[name]
    a, b = fs.clone().requires_grad_(), ft.clone().requires_grad_()
    loss = moment_matching(a, domains, b, num_domains=num)
    loss.backward()
    # the domain means of identical rows agree to rounding (zero features: exactly)
    assert 0.0 <= float(loss.detach()) < 1e-14
    assert a.grad is not None and torch.isfinite(a.grad).all()
    assert b.grad is not None and torch.isfinite(b.grad).all()
    if name == "zero_features":
        assert float(loss.detach()) == 0.0 and float(a.grad.abs().sum()) == 0.0


@pytest.mark.parametrize("name", ["random_three_sources", "missing_domain"])
def test_gradcheck(name: str) -> None:
    fs, domains, ft, num = CASES[name]
    assert torch.autograd.gradcheck(
        lambda a, b: moment_matching(a, domains, b, num_domains=num, moments=3),
        (fs.clone().requires_grad_(), ft.clone().requires_grad_()),
    )


BOUNDED32 = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)


@given(
    st.integers(1, 6).flatmap(lambda n: arrays(np.float32, (n, 2), elements=BOUNDED32)),
    st.integers(1, 4).flatmap(lambda n: arrays(np.float32, (n, 2), elements=BOUNDED32)),
    st.integers(1, 3),
)
def test_finite_for_bounded_inputs(fs_np: np.ndarray, ft_np: np.ndarray, num: int) -> None:
    fs = torch.from_numpy(fs_np).requires_grad_()
    ft = torch.from_numpy(ft_np).requires_grad_()
    domains = torch.arange(fs.shape[0]) % num
    loss = moment_matching(fs, domains, ft, num_domains=num)
    loss.backward()
    assert torch.isfinite(loss) and float(loss.detach()) >= 0.0
    assert fs.grad is not None and torch.isfinite(fs.grad).all()
    assert ft.grad is not None and torch.isfinite(ft.grad).all()


# ------------------------------------------------------------------ errors


def test_input_errors() -> None:
    fs, ft, domains = torch.randn(5, 3), torch.randn(4, 3), torch.tensor([0, 1, 0, 1, 1])
    with pytest.raises(TypeError, match=r"`domains_s` must be a torch.Tensor, got NoneType"):
        moment_matching(fs, None, ft, num_domains=2)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"`domains_s`.*integer"):
        moment_matching(fs, domains.float(), ft, num_domains=2)
    # the order of coral and DANN, (feat_s, feat_t, domains_s), is named as the mistake it is
    order = r"`domains_s` .* source-domain ids, .* shape \(4, 3\); the arguments are \(feat_s, dom"
    with pytest.raises(TypeError, match=order):
        moment_matching(fs, ft, domains, num_domains=2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Batch sizes.*`feat_s`.*\(5, 3\).*`domains_s`.*\(3\)"):
        moment_matching(fs, domains[:3], ft, num_domains=2)
    with pytest.raises(ValueError, match=r"Feature sizes.*`feat_s`.*`feat_t`.*\(4, 2\)"):
        moment_matching(fs, domains, torch.randn(4, 2), num_domains=2)
    with pytest.raises(ValueError, match=r"`feat_t`.*at least one"):
        moment_matching(fs, domains, torch.randn(0, 3), num_domains=2)
    with pytest.raises(TypeError, match=r"`feat_s`.*floating"):
        moment_matching(fs.long(), domains, ft, num_domains=2)
    with pytest.raises(ValueError, match=r"`domains_s` must hold values in \[0, 1\).*\[0, 1\]"):
        moment_matching(fs, domains, ft, num_domains=1)
    with pytest.raises(ValueError, match=r"`moments` must be an int >= 1, got 0"):
        moment_matching(fs, domains, ft, num_domains=2, moments=0)
    with pytest.raises(ValueError, match=r"`num_domains` must be given with `domains_s`"):
        moment_matching(fs, domains, ft, num_domains=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        moment_matching(fs, domains, ft)  # type: ignore[call-arg]


# ------------------------------------------------------------------ the module


def test_module_signature_and_equality() -> None:
    check_signatures_agree(MomentMatchingLoss, moment_matching)
    fs, domains, ft, num = CASES["missing_domain"]
    for moments in (1, 2, 4):
        got = MomentMatchingLoss(num_domains=num, moments=moments)(fs, domains, ft)
        want = moment_matching(fs, domains, ft, num_domains=num, moments=moments)
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_module_settings_state_and_repr() -> None:
    with pytest.raises(ValueError, match="`num_domains`"):
        MomentMatchingLoss(num_domains=0)
    with pytest.raises(ValueError, match="`moments`"):
        MomentMatchingLoss(num_domains=2, moments=0)
    with pytest.raises(TypeError, match="`moments`"):
        MomentMatchingLoss(num_domains=2, moments=2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        MomentMatchingLoss()  # type: ignore[call-arg]
    check_keyword_only(MomentMatchingLoss)
    module = MomentMatchingLoss(num_domains=5, moments=3, sync_dist=True, process_group=object())
    assert "num_domains=5, moments=3, sync_dist=True" in repr(module)
    clone = pickle.loads(pickle.dumps(module))
    assert repr(clone) == repr(module) and clone.process_group is None
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    fresh = MomentMatchingLoss(num_domains=5, moments=3)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert fresh.state_dict().keys() == module.state_dict().keys()


# ------------------------------------------------------------------ compile and autocast


def test_compiled_function_and_module_equal_eager() -> None:
    torch._dynamo.reset()
    fs, ft = _feat(30, 10, dim=6).float(), _feat(31, 7, dim=6, scale=1.5).float()
    domains = torch.tensor([0, 0, 1, 1, 1, 3, 3, 0, 1, 0])
    a, b = fs.clone().requires_grad_(), ft.clone().requires_grad_()
    got = torch.compile(moment_matching, fullgraph=True)(a, domains, b, num_domains=4)
    got.backward()
    c, d = fs.clone().requires_grad_(), ft.clone().requires_grad_()
    want = moment_matching(c, domains, d, num_domains=4)
    want.backward()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert a.grad is not None and c.grad is not None
    torch.testing.assert_close(a.grad, c.grad, rtol=1e-4, atol=1e-6)
    # The module's graph is the function's (inputs that require grad: the same compiled graph).
    module = MomentMatchingLoss(num_domains=4)
    e = fs.clone().requires_grad_()
    torch.testing.assert_close(
        torch.compile(module, fullgraph=True)(e, domains, ft.requires_grad_()), want
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_cpu_matches_fp32(dtype: torch.dtype) -> None:
    fs, ft = _feat(32, 16, dim=32).float(), _feat(33, 16, dim=32, scale=2.0).float()
    domains = torch.arange(16) % 3
    head = torch.nn.Linear(32, 32)
    torch.nn.init.eye_(head.weight)
    torch.nn.init.zeros_(head.bias)
    want = moment_matching(head(fs), domains, head(ft), num_domains=3)
    with torch.autocast("cpu", dtype=dtype):
        got = moment_matching(head(fs), domains, head(ft), num_domains=3)
    assert got.dtype == torch.float32 and torch.isfinite(got)
    torch.testing.assert_close(got, want, rtol=5e-2, atol=5e-2)
