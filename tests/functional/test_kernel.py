"""gaussian_kernel and mmd2 against the loop references, plus their identities."""

from __future__ import annotations

import pytest
import torch

from lacmfer.functional import gaussian_kernel, mmd2
from tests.reference import gaussian_kernel_reference, mmd2_reference

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
