r"""Deep Embedded Validation (DEV): importance-weighted source validation risk.

You et al., "Towards Accurate Model Selection in Deep Unsupervised Domain Adaptation", ICML 2019.
The target risk :math:`\mathbb{E}_{x \sim p_t}[\ell(x)]` equals the source expectation of the loss
weighted by the density ratio :math:`w(x) = p_t(x) / p_s(x)`; DEV estimates it on a held-out source
split, with the ratio from a domain classifier on the model's features and a control variate that
uses :math:`\mathbb{E}_{p_s}[w] = 1` to cut the variance.

Two functions: :func:`density_ratio_weights` fits the domain classifier (an L2-regularised logistic
regression) and returns the weights of the held-out source samples; :func:`dev_score` turns
per-sample validation losses and those weights into the (negated) DEV risk.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import (
    _shape,
    check_finite,
    check_float,
    check_min_size,
    check_nonempty,
    check_positive_int,
    check_real,
    check_same_device,
    check_size,
    resolve_validate_args,
)
from .._precision import compute_dtype, no_autocast

__all__ = ["density_ratio_weights", "dev_score"]

#: The weights' spread is treated as rounding noise (no control variate) when their standard
#: deviation is at most this many machine epsilons of their largest magnitude.
DEGENERATE_SPREAD_EPS = 32.0
#: A feature whose standard deviation on the fit set is at most this fraction of the largest
#: absolute feature entry is treated as constant (left unscaled), as scikit-learn's StandardScaler.
STD_FLOOR = 1e-6


def _check_dev_inputs(val_losses: Any, weights: Any) -> None:
    """Per-sample validation losses and importance weights: float ``(N,)`` each, ``N >= 2``."""
    check_float(val_losses, "val_losses", ndim=1, axes="(N,)")
    check_float(weights, "weights", ndim=1, axes="(N,)")
    check_size(val_losses, "val_losses", 0, weights, "weights", 0, "Sizes (dim 0)")
    check_min_size(val_losses, "val_losses", 2, reason="DEV estimates a variance")
    check_same_device([("val_losses", val_losses), ("weights", weights)])


def _check_dev_values(val_losses: Tensor, weights: Tensor) -> None:
    """Finite losses and finite non-negative weights. Reads the data (one host sync): opt-in
    through ``validate_args`` (:func:`resolve_validate_args`)."""
    if torch.compiler.is_compiling():
        return
    if not bool(torch.isfinite(val_losses).all()):
        raise ValueError(
            f"`val_losses` must be finite, got a NaN or infinite entry (shape {_shape(val_losses)})"
        )
    if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
        lo, hi = float(weights.min()), float(weights.max())
        raise ValueError(
            "`weights` must be finite and non-negative (density ratios), got values in "
            f"[{lo}, {hi}] with shape {_shape(weights)}"
        )


def _check_density_ratio_inputs(feat_s_train: Any, feat_t: Any, feat_s_val: Any) -> None:
    """Three non-empty float feature sets ``(N_s, D)``, ``(N_t, D)``, ``(N_v, D)`` on one device."""
    check_float(feat_s_train, "feat_s_train", ndim=2, axes="(N_s, D)")
    check_float(feat_t, "feat_t", ndim=2, axes="(N_t, D)")
    check_float(feat_s_val, "feat_s_val", ndim=2, axes="(N_v, D)")
    check_size(feat_s_train, "feat_s_train", 1, feat_t, "feat_t", 1, "Feature sizes D (dim 1)")
    check_size(
        feat_s_train, "feat_s_train", 1, feat_s_val, "feat_s_val", 1, "Feature sizes D (dim 1)"
    )
    for x, name in ((feat_s_train, "feat_s_train"), (feat_t, "feat_t"), (feat_s_val, "feat_s_val")):
        check_nonempty(x, name)
    check_nonempty(feat_s_train, "feat_s_train", dim=1, what="feature")
    check_same_device(
        [("feat_s_train", feat_s_train), ("feat_t", feat_t), ("feat_s_val", feat_s_val)]
    )


def dev_score(
    val_losses: Tensor, weights: Tensor, *, validate_args: Optional[bool] = None
) -> Tensor:
    r"""Negated DEV risk of a model, from its held-out source losses and density-ratio weights.

    With per-sample losses :math:`\ell_i` of :math:`N` held-out source samples, their density-ratio
    weights :math:`w_i \approx p_t(x_i)/p_s(x_i)` (:func:`density_ratio_weights`) and
    :math:`L_i = w_i \ell_i`,

    .. math::

        \eta = -\frac{\widehat{\operatorname{Cov}}(L, w)}{\widehat{\operatorname{Var}}(w)}, \qquad
        R_{DEV} = \overline{L} + \eta\, \overline{w} - \eta, \qquad S_{DEV} = -R_{DEV},

    with unbiased (:math:`N - 1`) sample covariance and variance, as the authors' code
    (You et al., ICML 2019, Algorithm 1). :math:`R_{DEV}` estimates the target risk; the score is
    its negation so that, as for every validator here, higher is better.

    Robustness:

    * **Degenerate variance.** When the weights are all equal up to rounding (their standard
      deviation at most :math:`32\,\epsilon` times their largest magnitude) the control variate
      carries no information and :math:`\eta = 0`: the score is :math:`-\overline{L}`. (The
      authors divide by :math:`\widehat{\operatorname{Var}}(w)`, giving NaN; a common port adds
      :math:`10^{-6}` to it, which makes :math:`\eta` depend on the weights' scale.)
    * **Large weights.** Weights and losses are divided by their (detached) largest magnitudes
      before the moments are taken (:math:`\eta` is invariant to both scales), so any finite
      inputs give finite moments; a risk beyond the dtype's range saturates at its largest value.
      The moments are taken in float64 (on CPU and CUDA; other devices use the input dtype), as
      in float32 :math:`\overline{L} + \eta\,(\overline{w} - 1)` cancels away every digit once the
      weights span a few orders of magnitude; the score is returned in the input dtype.
    * **Heavy-tailed weights** are a statistical, not a numerical, problem, and no formula fixes
      it: when the domain classifier separates source and target well (lab-controlled vs
      in-the-wild FER), a few weights dominate, the effective sample size
      :math:`(\sum w)^2 / \sum w^2` collapses and the estimate, control variate or not, is noise.
      Check the effective sample size; stronger regularisation of the domain classifier or
      truncated weights (``l2`` and ``max_weight`` of :func:`density_ratio_weights`) trade this
      variance for bias.

    Args:
        val_losses: per-sample losses of the held-out source samples (e.g. cross-entropy with
            ``reduction="none"``, or 0/1 errors).
        weights: their density-ratio weights (non-negative).
        validate_args: check that the losses are finite and the weights finite and non-negative
            (reads values). ``None``: on CPU only.

    Shape:
        - val_losses, weights: :math:`(N,)`, :math:`N \ge 2`.
        - Output: scalar, float32 for half-precision inputs, else the promoted input dtype.

    Returns:
        The score :math:`-R_{DEV}`.

    Raises:
        TypeError: if an input is not a floating-point tensor.
        ValueError: on wrong dimensions, mismatched sizes, fewer than 2 samples or (when checked)
            bad values.

    Example:
        >>> losses = torch.tensor([0.2, 0.4, 1.0, 0.1])
        >>> dev_score(losses, torch.ones(4))  # equal weights: minus the mean loss
        tensor(-0.4250)
        >>> dev_score(losses, torch.tensor([0.5, 0.5, 2.0, 1.0]))  # the target looks like sample 3
        tensor(-0.6000)
    """
    _check_dev_inputs(val_losses, weights)
    if resolve_validate_args(validate_args, weights):
        _check_dev_values(val_losses, weights)
    n = val_losses.shape[0]
    dtype = compute_dtype(val_losses, weights)
    # The moments in float64 where the device has it: in float32, L-bar + eta (w-bar - 1) cancels
    # away every digit once the weights span a few orders of magnitude (the sign can flip).
    work = torch.float64 if weights.device.type in ("cpu", "cuda") else dtype
    info = torch.finfo(work)
    with no_autocast(weights.device):
        loss = val_losses.to(work)
        w = weights.to(work)
        w_scale = w.detach().abs().amax().clamp_min(info.tiny)
        l_scale = loss.detach().abs().amax().clamp_min(info.tiny)
        w1 = w / w_scale
        wl1 = w1 * (loss / l_scale)
        mean_w1 = w1.mean()
        mean_wl1 = wl1.mean()
        dev_w = w1 - mean_w1
        var = (dev_w * dev_w).sum() / (n - 1)
        cov = ((wl1 - mean_wl1) * dev_w).sum() / (n - 1)
        spread = torch.sqrt(var)
        degenerate = spread <= DEGENERATE_SPREAD_EPS * info.eps * w1.abs().amax()
        one = torch.ones((), dtype=dtype, device=w.device)
        eta1 = torch.where(degenerate, 0.0 * one, -cov / torch.where(degenerate, one, var))
        # R = l_scale * [w_scale * mean(w1 l1) + eta1 * (w_scale * mean(w1) - 1)], eta = l_scale eta1
        risk = l_scale * (w_scale * mean_wl1 + eta1 * (w_scale * mean_w1 - 1.0))
        top = torch.finfo(dtype).max
        return -risk.clamp(-top, top).to(dtype)


def _logistic_objective(z: Tensor, y: Tensor, c: Tensor, reg: Tensor, theta: Tensor) -> Tensor:
    u = z @ theta
    return (c * (F.softplus(u) - y * u)).sum() + 0.5 * (reg * theta * theta).sum()


def density_ratio_weights(
    feat_s_train: Tensor,
    feat_t: Tensor,
    feat_s_val: Tensor,
    *,
    l2: float = 1e-2,
    max_iter: int = 30,
    max_weight: Optional[float] = None,
    validate_args: Optional[bool] = None,
) -> Tensor:
    r"""Density-ratio weights :math:`p_t(x)/p_s(x)` of held-out source samples, for :func:`dev_score`.

    Fits a domain classifier, an L2-regularised logistic regression that tells target features
    (label 1) from source-training features (label 0), and returns the odds it assigns to each
    held-out source feature:

    .. math::

        \min_{a, b}\ \frac{1}{2 N_s} \sum_{x \in S} \operatorname{bce}(a^\top \tilde x + b, 0)
            + \frac{1}{2 N_t} \sum_{x \in T} \operatorname{bce}(a^\top \tilde x + b, 1)
            + \frac{\lambda}{2} \lVert a \rVert^2, \qquad
        w(x) = \exp(a^\top \tilde x + b),

    where :math:`\tilde x` are the features standardised with the mean and standard deviation of
    :math:`S \cup T` and :math:`\lambda` = ``l2`` (the bias is not penalised). The two domains get
    equal total weight, so the odds estimate :math:`p_t(x)/p_s(x)` directly; You et al. (ICML 2019)
    fit an unbalanced classifier and multiply its odds by :math:`N_s/N_t`, which is the same in
    expectation. They choose the regularisation by cross-validation; here it is the setting
    ``l2`` (larger: smoother weights closer to 1, less variance, more bias).

    The fit is deterministic and has no host synchronisation: ``max_iter`` iterations, each taking
    Newton's step if it does not increase the objective (beyond rounding), else a majorise-minimise
    step with the fixed curvature bound :math:`\frac14 \tilde X^\top C \tilde X` plus the penalty,
    which never increases it, and no step if both would give a non-finite objective. The objective
    is strictly convex, so this converges to its unique minimum (quadratically near it). Cost:
    :math:`O(\text{max\_iter} \cdot (N D^2 + D^3))` for :math:`N = N_s + N_t` (subsample large sets).

    Weights are capped at :math:`\sqrt{\text{dtype max}}` (so that their squares stay finite) and,
    when given, at ``max_weight`` (truncated importance weights: bounded variance at the price of
    bias). See :func:`dev_score` for why heavy-tailed weights make DEV unreliable.

    Args:
        feat_s_train: features of (a sample of) the source samples the model trained on.
        feat_t: features of (a sample of) the unlabelled target set.
        feat_s_val: features of the held-out source samples to weight.
        l2: the L2 penalty :math:`\lambda > 0` of the domain classifier on standardised features.
        max_iter: number of optimisation iterations (int >= 1).
        max_weight: cap of the weights (> 0), or ``None`` for none.
        validate_args: check that the features are finite (reads values; non-finite features
            give NaN weights unchecked). ``None``: on CPU only.

    Shape:
        - feat_s_train: :math:`(N_s, D)`; feat_t: :math:`(N_t, D)`; feat_s_val: :math:`(N_v, D)`.
        - Output: :math:`(N_v,)`, float32 for half-precision inputs, else the promoted input dtype.

    Returns:
        The non-negative weights of ``feat_s_val``, finite for finite features.

    Raises:
        TypeError: if an input is not a floating-point tensor or a setting has the wrong type.
        ValueError: on wrong dimensions, mismatched feature sizes, empty sets, different devices,
            settings out of range or (when checked) features that are not finite.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> feat_s = torch.randn(200, 2, generator=g)
        >>> feat_t = torch.randn(200, 2, generator=g) + torch.tensor([1.0, 0.0])
        >>> w = density_ratio_weights(feat_s, feat_t, torch.tensor([[-1.0, 0.0], [2.0, 0.0]]))
        >>> bool(w[0] < 1.0 < w[1])  # a source sample that looks like the target weighs more
        True
    """
    _check_density_ratio_inputs(feat_s_train, feat_t, feat_s_val)
    l2 = check_real(l2, "l2", minimum=0.0, exclusive_minimum=True)
    check_positive_int(max_iter, "max_iter")
    if max_weight is not None:
        max_weight = check_real(max_weight, "max_weight", minimum=0.0, exclusive_minimum=True)
    if resolve_validate_args(validate_args, feat_s_train) and not torch.compiler.is_compiling():
        for x, name in (
            (feat_s_train, "feat_s_train"),
            (feat_t, "feat_t"),
            (feat_s_val, "feat_s_val"),
        ):
            check_finite(x, name)
    dtype = compute_dtype(feat_s_train, feat_t, feat_s_val)
    info = torch.finfo(dtype)
    device = feat_s_train.device
    n_s, n_t, dim = feat_s_train.shape[0], feat_t.shape[0], feat_s_train.shape[1]
    with no_autocast(device):
        xs, xt, xv = (x.detach().to(dtype) for x in (feat_s_train, feat_t, feat_s_val))
        # one scale for all three sets: no finite features overflow the moments below
        scale = torch.stack([xs.abs().amax(), xt.abs().amax(), xv.abs().amax()]).amax()
        scale = scale.clamp_min(info.tiny)
        fit = torch.cat([xs, xt]) / scale
        val = xv / scale
        mean = fit.mean(dim=0)
        std = fit.std(dim=0, correction=0)
        std = torch.where(std > STD_FLOOR, std, torch.ones((), dtype=dtype, device=device))
        z = torch.cat([(fit - mean) / std, fit.new_ones(n_s + n_t, 1)], dim=1)
        z_val = torch.cat([(val - mean) / std, val.new_ones(val.shape[0], 1)], dim=1)
        y = torch.cat([z.new_zeros(n_s), z.new_ones(n_t)])
        c = torch.cat([z.new_full((n_s,), 0.5 / n_s), z.new_full((n_t,), 0.5 / n_t)])
        reg = torch.cat([z.new_full((dim,), l2), z.new_zeros(1)])
        eye = torch.eye(dim + 1, dtype=dtype, device=device)
        bound = z.T @ (z * (0.25 * c)[:, None]) + torch.diag(reg)
        jitter = 10.0 * info.eps * torch.diagonal(bound).mean()
        bound_chol = torch.linalg.cholesky_ex(bound + jitter * eye).L
        theta = z.new_zeros(dim + 1)
        f_cur = _logistic_objective(z, y, c, reg, theta)
        for _ in range(max_iter):
            p = torch.sigmoid(z @ theta)
            grad = z.T @ (c * (p - y)) + reg * theta
            hess = z.T @ (z * (c * p * (1.0 - p))[:, None]) + torch.diag(reg)
            hess_chol = torch.linalg.cholesky_ex(hess + jitter * eye).L
            newton = theta - torch.cholesky_solve(grad[:, None], hess_chol)[:, 0]
            mm = theta - torch.cholesky_solve(grad[:, None], bound_chol)[:, 0]
            f_newton = _logistic_objective(z, y, c, reg, newton)
            f_mm = _logistic_objective(z, y, c, reg, mm)
            # Near the minimum the objective changes by less than its rounding error: compare with
            # a slack of a few ulps, and prefer Newton's step, which converges quadratically.
            slack = 16.0 * info.eps * (f_cur.abs() + 1.0)
            ok_newton = torch.isfinite(f_newton) & torch.isfinite(newton).all()
            ok_mm = torch.isfinite(f_mm) & torch.isfinite(mm).all()
            use_newton = (
                ok_newton & (f_newton <= f_cur + slack) & (~ok_mm | (f_newton <= f_mm + slack))
            )
            use_mm = ~use_newton & ok_mm & (f_mm <= f_cur + slack)
            theta = torch.where(use_newton, newton, torch.where(use_mm, mm, theta))
            f_cur = torch.where(use_newton, f_newton, torch.where(use_mm, f_mm, f_cur))
        log_cap = 0.5 * math.log(info.max)
        if max_weight is not None:
            log_cap = min(log_cap, math.log(max_weight))
        return torch.exp((z_val @ theta).clamp(max=log_cap))
