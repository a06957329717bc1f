"""gaussian_kernel and mmd2: loop references, identities, errors, gradients, properties."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lacmfer.functional import gaussian_kernel, mmd2
from tests.reference import gaussian_kernel_reference, mmd2_reference

from .cases import FINITE64, matrix

TOL = {"rtol": 1e-10, "atol": 1e-10}


def _xy(seed: int, n: int = 7, m: int = 5, d: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(m, d, generator=g, dtype=torch.float64) * 1.5 + 0.5
    return x, y


@pytest.mark.parametrize("kernel_num, kernel_mul", [(5, 2.0), (1, 2.0), (4, 1.7), (3, 1.0)])
def test_gaussian_kernel_matches_reference(kernel_num: int, kernel_mul: float) -> None:
    x, y = _xy(0)
    got = gaussian_kernel(x, y, kernel_num=kernel_num, kernel_mul=kernel_mul)
    want = gaussian_kernel_reference(x, y, kernel_num, kernel_mul)
    torch.testing.assert_close(got, want, **TOL)


def test_gaussian_kernel_gram_is_symmetric_with_q_diagonal() -> None:
    x, _ = _xy(1)
    k = gaussian_kernel(x, kernel_num=3)
    torch.testing.assert_close(k, k.T, rtol=0, atol=1e-14)
    torch.testing.assert_close(torch.diagonal(k), torch.full((7,), 3.0, dtype=torch.float64))
    torch.testing.assert_close(k, gaussian_kernel_reference(x, None, 3, 2.0), **TOL)
    # Positive semi-definite (a sum of Gaussian kernels).
    assert float(torch.linalg.eigvalsh(k).min()) > -1e-10


def test_gaussian_kernel_fixed_bandwidth() -> None:
    x, y = _xy(2)
    d = torch.cdist(x, y) ** 2
    want = sum(torch.exp(-d / (0.8 * 2.0 ** (q - 2))) for q in range(5))
    torch.testing.assert_close(gaussian_kernel(x, y, bandwidth=0.8), want, **TOL)
    assert torch.autograd.gradcheck(
        lambda a, b: gaussian_kernel(a, b, bandwidth=0.8),
        (x.clone().requires_grad_(), y.clone().requires_grad_()),
    )


def test_a_tensor_bandwidth_equals_the_float_and_is_floored_not_read() -> None:
    x, y = _xy(3)
    for fn in (gaussian_kernel, mmd2):
        want = fn(x, y, bandwidth=0.8)
        torch.testing.assert_close(
            fn(x, y, bandwidth=torch.tensor(0.8, dtype=torch.float64)), want, **TOL
        )
    # a tensor's value is not read on the host: zero or negative acts as the smallest bandwidth
    # the data-driven one may take, never as a division by zero or a growing exponential
    tiny = 1e-12 * float(torch.cat([x, y]).abs().max()) ** 2
    for bad in (0.0, -1.0):
        k = gaussian_kernel(x, y, bandwidth=torch.tensor(bad, dtype=torch.float64))
        torch.testing.assert_close(k, gaussian_kernel(x, y, bandwidth=tiny), **TOL)
        assert bool(((k >= 0) & (k <= 5)).all())
        assert torch.isfinite(mmd2(x, y, bandwidth=torch.tensor(bad)))


def test_identical_points_give_q() -> None:
    x = torch.full((4, 3), 0.37, dtype=torch.float64)
    torch.testing.assert_close(gaussian_kernel(x), torch.full((4, 4), 5.0, dtype=torch.float64))
    torch.testing.assert_close(gaussian_kernel(torch.zeros(2, 3)), torch.full((2, 2), 5.0))


@pytest.mark.parametrize("weighted", [False, True])
def test_mmd2_matches_reference(weighted: bool) -> None:
    x, y = _xy(3)
    if weighted:
        g = torch.Generator().manual_seed(3)
        wx = torch.rand(7, generator=g, dtype=torch.float64)
        wy = torch.rand(5, generator=g, dtype=torch.float64)
        got = mmd2(x, y, weights_x=wx, weights_y=wy)
        want = mmd2_reference(x, y, wx.tolist(), wy.tolist())
    else:
        got, want = mmd2(x, y), mmd2_reference(x, y)
    torch.testing.assert_close(got, want, **TOL)


def test_mmd2_equals_kernel_mean_embedding_distance() -> None:
    """Identity: MMD² = mean K_xx + mean K_yy - 2 mean K_xy with one bandwidth for x ∪ y."""
    x, y = _xy(4)
    z = torch.cat([x, y])
    k = gaussian_kernel(z)
    n = x.shape[0]
    want = k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()
    torch.testing.assert_close(mmd2(x, y), want, **TOL)
    torch.testing.assert_close(gaussian_kernel(x, y), k[:n, n:], **TOL)


def test_mmd2_of_a_sample_with_itself_is_zero() -> None:
    x, _ = _xy(5)
    assert abs(float(mmd2(x, x))) < 1e-12
    assert abs(float(mmd2(x, x.flip(0)))) < 1e-12


# ------------------------------------------------------------------ gradients


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


# ------------------------------------------------------------------ errors


def test_kernel_errors() -> None:
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"Feature sizes.*`x`.*\(4, 3\).*`y`.*\(2, 2\)"):
        gaussian_kernel(x, torch.randn(2, 2))
    with pytest.raises(ValueError, match=r"`x`.*2 dimensions"):
        mmd2(torch.randn(4), x)
    with pytest.raises(ValueError, match=r"`weights_x`.*\(3\).*`x`.*\(4, 3\)"):
        mmd2(x, x, weights_x=torch.ones(3))
    with pytest.raises(ValueError, match=r"`bandwidth`.*> 0"):
        gaussian_kernel(x, bandwidth=0.0)
    with pytest.raises(ValueError, match=r"`bandwidth` must be a 0-dim tensor, got shape \(2,\)"):
        gaussian_kernel(x, bandwidth=torch.tensor([1.0, 2.0]))
    with pytest.raises(TypeError, match=r"`bandwidth` must be a real tensor"):
        mmd2(x, x, bandwidth=torch.tensor(True))
    with pytest.raises(ValueError, match="`kernel_num`"):
        mmd2(x, x, kernel_num=0)


# ------------------------------------------------------------------ properties


@given(matrix(st.integers(1, 6), 3, FINITE64))
def test_mmd_of_a_sample_with_itself_is_zero(x: torch.Tensor) -> None:
    assert abs(float(mmd2(x, x))) <= 1e-9 * 4 * 5


@given(matrix(st.integers(1, 5), 2, FINITE64), matrix(st.integers(1, 5), 2, FINITE64))
def test_mmd_symmetry_and_kernel_transpose(x: torch.Tensor, y: torch.Tensor) -> None:
    torch.testing.assert_close(mmd2(x, y), mmd2(y, x), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(gaussian_kernel(x, y), gaussian_kernel(y, x).T, rtol=1e-9, atol=1e-9)
    k = gaussian_kernel(x, y)
    assert bool(((k >= 0) & (k <= 5 + 1e-9)).all())
