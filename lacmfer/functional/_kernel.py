r"""Multi-kernel Gaussian kernels and (weighted) maximum mean discrepancy.

The kernel of LA-CMFER (``docs/method.rst``, "Multi-kernel Gaussian"; Yang et al., ACM MM 2024,
§3.2) sums ``Q`` Gaussians whose bandwidths are geometric multiples of a
data-driven base bandwidth :math:`\beta`, the mean squared distance between distinct points:

.. math::

    \beta = \frac{\sum_{u \ne v} \lVert u - v \rVert^2}{n^2 - n}, \qquad
    \kappa(a, b) = \sum_{q=0}^{Q-1}
        \exp\!\left(-\frac{\lVert a - b \rVert^2}{\beta\, m^{\,q - \lfloor Q/2 \rfloor}}\right).

:math:`\beta` carries no gradient. It is clamped below at :math:`\varepsilon \cdot s^2`, where
:math:`s` is the largest absolute feature entry of the set (and :math:`\varepsilon = 10^{-12}`), so
identical features (all distances 0) give :math:`\beta > 0` and :math:`\kappa = Q`, never NaN; as the
floor scales with the features, the kernel stays invariant to rescaling them (for :math:`s` above
about :math:`10^{-29}` in float32 and :math:`10^{-231}` in float64, where the scale is clamped so that
gradients, which grow as :math:`1/s`, stay finite). The floor also means that features whose
spread is below :math:`10^{-6} s` (nearly identical points far from the origin) get the floor
rather than their own mean distance: at that relative spread the points differ by little more
than the rounding of float32 features.

Implementation: features are divided by the detached :math:`s` (no overflow for any finite input),
centred (no cancellation for features with a large common offset) and their squared distances come from
one matrix product, ``|a|² + |b|² - 2 a·b``; no ``(n, n, D)`` tensor is built. The kernel maths runs in
float32 or better, with autocast disabled.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Union

import torch
from torch import Tensor

from .._checks import check_float, check_kernel_settings, check_nonempty, check_real, check_size
from .._precision import compute_dtype, no_autocast, tiny_scale

__all__ = ["gaussian_kernel", "mmd2"]

#: Relative floor of the bandwidth: ``beta >= BANDWIDTH_FLOOR * max|f|**2``.
BANDWIDTH_FLOOR = 1e-12
# Kernel multipliers m**(q - Q//2) are kept inside [1/_COEF_MAX, _COEF_MAX] so that extreme
# kernel_num / kernel_mul settings cannot produce inf * 0 = NaN.
_COEF_MAX = 1e30


def _check_feature_pair(x: Any, x_name: str, y: Any, y_name: str) -> None:
    """Two non-empty feature sets ``(N, D)`` and ``(M, D)`` with the same ``D``."""
    check_float(x, x_name, ndim=2, axes="(N, D)")
    check_float(y, y_name, ndim=2, axes="(M, D)")
    check_size(x, x_name, 1, y, y_name, 1, "Feature sizes (dim 1)")
    check_nonempty(x, x_name)
    check_nonempty(y, y_name)


def kernel_coefficients(
    kernel_num: int, kernel_mul: float, *, dtype: torch.dtype, device: torch.device
) -> Tensor:
    r"""The inverse bandwidth multipliers :math:`m^{-(q - \lfloor Q/2 \rfloor)}`, shape ``(Q,)``."""
    q = torch.arange(kernel_num, dtype=torch.float64, device=device) - (kernel_num // 2)
    coef = torch.pow(torch.tensor(float(kernel_mul), dtype=torch.float64, device=device), -q)
    return coef.clamp(1.0 / _COEF_MAX, _COEF_MAX).to(dtype)


def kernel_sum(scaled_dist: Tensor, coef: Tensor) -> Tensor:
    r""":math:`\sum_q \exp(-u \cdot c_q)` for ``u = ||a-b||² / β`` of any shape."""
    return torch.exp(-scaled_dist.unsqueeze(-1) * coef).sum(-1)


class PairwiseDistances(NamedTuple):
    """Squared distances within and between two sets, in units of the common feature scale."""

    ss: Tensor  # (n, n), zero diagonal
    tt: Tensor  # (m, m), zero diagonal
    st: Tensor  # (n, m)
    floor: float  # bandwidth floor in the same units


def pairwise_sq_distances(x: Tensor, y: Tensor) -> PairwiseDistances:
    """Squared Euclidean distances of ``x`` (n, D) and ``y`` (m, D), scaled by ``1 / max|f|**2``.

    The scale is detached, so every ratio ``distance / bandwidth`` and every gradient equals that of
    the unscaled features. Both inputs must already have the compute dtype.
    """
    z = torch.cat([x, y], dim=0)
    scale = z.detach().abs().amax().clamp_min(tiny_scale(z.dtype))
    z = z / scale
    z = z - z.detach().mean(dim=0, keepdim=True)
    sq = (z * z).sum(dim=1)
    d = (sq[:, None] + sq[None, :] - 2.0 * (z @ z.T)).clamp_min(0.0)
    n = x.shape[0]
    eye = torch.eye(d.shape[0], dtype=torch.bool, device=d.device)
    d = torch.where(eye, torch.zeros((), dtype=d.dtype, device=d.device), d)
    return PairwiseDistances(d[:n, :n], d[n:, n:], d[:n, n:], BANDWIDTH_FLOOR)


def bandwidth_from_sums(total: Tensor, count: Tensor, floor: float) -> Tensor:
    r""":math:`\max(\text{total} / (n^2 - n), \text{floor})`, detached; safe for ``n <= 1``."""
    pairs = (count * count - count).clamp_min(1.0)
    return (total.detach() / pairs).clamp_min(floor)


def gaussian_kernel(
    x: Tensor,
    y: Optional[Tensor] = None,
    *,
    kernel_num: int = 5,
    kernel_mul: float = 2.0,
    bandwidth: Optional[Union[Tensor, float]] = None,
) -> Tensor:
    r"""Multi-kernel Gaussian kernel matrix between two sets of features.

    .. math::

        K_{ab} = \sum_{q=0}^{Q-1}
            \exp\!\left(-\frac{\lVert x_a - y_b \rVert^2}{\beta\, m^{\,q - \lfloor Q/2 \rfloor}}\right)

    with :math:`Q` = ``kernel_num``, :math:`m` = ``kernel_mul`` and, unless ``bandwidth`` is given,
    :math:`\beta` the mean squared distance between distinct points of :math:`x \cup y` (detached,
    clamped below at :math:`10^{-12} \max|f|^2`), as in LA-CMFER (Yang et al., ACM MM 2024, §3.2).

    Args:
        x: features of the first set.
        y: features of the second set; ``None`` means ``x`` (the Gram matrix of ``x``).
        kernel_num: number of Gaussians :math:`Q` (int >= 1).
        kernel_mul: ratio :math:`m` between consecutive bandwidths (> 0).
        bandwidth: a fixed base bandwidth :math:`\beta > 0` instead of the data-driven one: a
            float, or a 0-dim tensor (detached; its value is not read on the host, so one at or
            below the floor :math:`10^{-12} \max|f|^2` is raised to the floor).

    Shape:
        - x: :math:`(N, D)`; y: :math:`(M, D)`.
        - Output: :math:`(N, M)` (:math:`(N, N)` when ``y`` is ``None``), dtype float32 for
          half-precision inputs, else the input dtype.

    Returns:
        The kernel matrix. Its diagonal entries equal :math:`Q` when ``y`` is ``None``.

    Raises:
        TypeError: if an input is not a floating-point tensor, or a setting has the wrong type.
        ValueError: on wrong dimensions, mismatched feature sizes, empty sets or bad settings.

    Example:
        >>> x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        >>> gaussian_kernel(x, kernel_num=1)
        tensor([[1.0000, 0.4724, 0.4724],
                [0.4724, 1.0000, 0.2231],
                [0.4724, 0.2231, 1.0000]])
    """
    kernel_num, kernel_mul = check_kernel_settings(kernel_num, kernel_mul)
    same = y is None
    y_ = x if y is None else y
    _check_feature_pair(x, "x", y_, "y")
    bandwidth = _check_bandwidth(bandwidth)
    dtype = compute_dtype(x, y_)
    with no_autocast(x.device):
        xs, ys = x.to(dtype), y_.to(dtype)
        if same:
            dist = pairwise_sq_distances(xs, xs[:0]).ss
            points = xs
            n = float(xs.shape[0])
            total = dist.sum()
            cross = dist
        else:
            pd = pairwise_sq_distances(xs, ys)
            points = torch.cat([xs, ys])
            n = float(xs.shape[0] + ys.shape[0])
            total = pd.ss.sum() + pd.tt.sum() + 2.0 * pd.st.sum()
            cross = pd.st
        coef = kernel_coefficients(kernel_num, kernel_mul, dtype=dtype, device=x.device)
        if bandwidth is None:
            beta = bandwidth_from_sums(total, torch.tensor(n, dtype=dtype), BANDWIDTH_FLOOR)
        else:
            beta = _fixed_bandwidth(bandwidth, points)
        return kernel_sum(cross / beta, coef)


def _check_bandwidth(bandwidth: Optional[Union[Tensor, float]]) -> Optional[Union[Tensor, float]]:
    """A float must be > 0; a tensor must be a real scalar (its value is not read: no host sync)."""
    if bandwidth is None:
        return None
    if not isinstance(bandwidth, Tensor):
        return check_real(bandwidth, "bandwidth", minimum=0.0, exclusive_minimum=True)
    if bandwidth.is_complex() or bandwidth.dtype == torch.bool:
        raise TypeError(f"`bandwidth` must be a real tensor, got dtype {bandwidth.dtype}")
    if bandwidth.ndim != 0:
        raise ValueError(f"`bandwidth` must be a 0-dim tensor, got shape {tuple(bandwidth.shape)}")
    return bandwidth


def _fixed_bandwidth(bandwidth: Union[Tensor, float], points: Tensor) -> Tensor:
    """A user-given bandwidth in the units of :func:`pairwise_sq_distances` (divided by s²),
    raised to the floor of the data-driven one (a tensor's value is not checked on the host)."""
    s = points.detach().abs().amax().clamp_min(tiny_scale(points.dtype))
    beta = torch.as_tensor(bandwidth, dtype=points.dtype, device=points.device).detach()
    return (beta / (s * s)).clamp_min(BANDWIDTH_FLOOR)


def mmd2(
    x: Tensor,
    y: Tensor,
    *,
    weights_x: Optional[Tensor] = None,
    weights_y: Optional[Tensor] = None,
    kernel_num: int = 5,
    kernel_mul: float = 2.0,
    bandwidth: Optional[Union[Tensor, float]] = None,
) -> Tensor:
    r"""Biased (V-statistic) squared maximum mean discrepancy, optionally weighted.

    .. math::

        \mathrm{MMD}^2 = w_x^\top K_{xx} w_x + w_y^\top K_{yy} w_y - 2\, w_x^\top K_{xy} w_y

    with the multi-kernel Gaussian :math:`K` of :func:`gaussian_kernel` and one bandwidth for
    :math:`x \cup y`. Without weights, :math:`w = 1/n` (plain MMD). LA-CMFER's sample-level alignment
    is this quantity with hardness weights (:func:`sample_level_alignment`).

    Args:
        x: first sample.
        y: second sample.
        weights_x: weights of ``x`` (e.g. summing to 1); default uniform ``1/N``. Used as given
            (not renormalised) and treated as constants only if the caller detaches them.
        weights_y: weights of ``y``; default uniform ``1/M``.
        kernel_num: number of Gaussians :math:`Q` (int >= 1).
        kernel_mul: ratio :math:`m` between consecutive bandwidths (> 0).
        bandwidth: a fixed base bandwidth :math:`\beta > 0` instead of the data-driven one: a
            float, or a 0-dim tensor (detached; its value is not read on the host, so one at or
            below the floor :math:`10^{-12} \max|f|^2` is raised to the floor).

    Shape:
        - x: :math:`(N, D)`; y: :math:`(M, D)`; weights_x: :math:`(N,)`; weights_y: :math:`(M,)`.
        - Output: scalar.

    Returns:
        The squared MMD (>= 0 up to rounding for non-negative weights of equal sums).

    Raises:
        TypeError: if an input is not a floating-point tensor.
        ValueError: on wrong dimensions or mismatched sizes.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(64, 3, generator=g)
        >>> round(float(mmd2(x, x)), 6)
        0.0
        >>> float(mmd2(x, x + 3.0)) > 0.5
        True
    """
    kernel_num, kernel_mul = check_kernel_settings(kernel_num, kernel_mul)
    _check_feature_pair(x, "x", y, "y")
    if weights_x is not None:
        check_float(weights_x, "weights_x", ndim=1, axes="(N,)")
        check_size(weights_x, "weights_x", 0, x, "x", 0, "Batch sizes (dim 0)")
    if weights_y is not None:
        check_float(weights_y, "weights_y", ndim=1, axes="(M,)")
        check_size(weights_y, "weights_y", 0, y, "y", 0, "Batch sizes (dim 0)")
    bandwidth = _check_bandwidth(bandwidth)
    dtype = compute_dtype(x, y)
    with no_autocast(x.device):
        xs, ys = x.to(dtype), y.to(dtype)
        wx = (
            torch.full((xs.shape[0],), 1.0 / xs.shape[0], dtype=dtype, device=x.device)
            if weights_x is None
            else weights_x.to(dtype)
        )
        wy = (
            torch.full((ys.shape[0],), 1.0 / ys.shape[0], dtype=dtype, device=x.device)
            if weights_y is None
            else weights_y.to(dtype)
        )
        pd = pairwise_sq_distances(xs, ys)
        if bandwidth is None:
            n = torch.tensor(float(xs.shape[0] + ys.shape[0]), dtype=dtype, device=x.device)
            total = pd.ss.sum() + pd.tt.sum() + 2.0 * pd.st.sum()
            beta = bandwidth_from_sums(total, n, pd.floor)
        else:
            beta = _fixed_bandwidth(bandwidth, torch.cat([xs, ys]))
        coef = kernel_coefficients(kernel_num, kernel_mul, dtype=dtype, device=x.device)
        k_ss = kernel_sum(pd.ss / beta, coef)
        k_tt = kernel_sum(pd.tt / beta, coef)
        k_st = kernel_sum(pd.st / beta, coef)
        return wx @ k_ss @ wx + wy @ k_tt @ wy - 2.0 * (wx @ k_st @ wy)
