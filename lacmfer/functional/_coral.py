r"""CORAL: alignment of second-order statistics (feature covariances) between domains.

Reference: Sun and Saenko, "Deep CORAL: Correlation Alignment for Deep Domain Adaptation", ECCV 2016
Workshops (TASK-CV).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from .._checks import (
    check_domains,
    check_float,
    check_index_range,
    check_min_size,
    check_nonempty,
    check_same_device,
    check_size,
    resolve_validate_args,
)
from .._distributed import gather_batch
from .._precision import compute_dtype, no_autocast

__all__ = ["coral"]

_WHY_TWO = "an unbiased covariance divides by n - 1"


def _one_hot(index: Tensor, num: int, dtype: torch.dtype) -> Tensor:
    """One-hot rows by comparison (no host sync; an out-of-range id gives a zero row)."""
    return (index.unsqueeze(-1) == torch.arange(num, device=index.device)).to(dtype)


def group_covariances(x: Tensor, member: Tensor) -> tuple[Tensor, Tensor]:
    r"""Unbiased covariance of each group of rows, vectorised over the groups.

    Args:
        x: the samples, compute dtype.
        member: 0/1 membership of each sample in each group.

    Shape:
        - x: :math:`(B, D)`; member: :math:`(B, G)`.
        - Output: covariances :math:`(G, D, D)` and validity :math:`(G,)` (:math:`n_g \ge 2`; the
          covariance of an invalid group is 0).

    Rows are shifted by the (detached) first row before centring, which leaves every covariance and
    its gradient unchanged (a covariance is shift-invariant) but makes identical rows give exactly
    0, and each centred row is divided by :math:`\sqrt{n_g - 1}` before the product, so no
    intermediate exceeds the covariances themselves.
    """
    y = x - x[:1].detach()
    counts = member.sum(dim=0)  # (G,)
    mean = (member / counts.clamp_min(1.0)).T @ y  # (G, D)
    centred = y - member @ mean  # (B, D): each row minus its own group's mean
    valid = counts >= 2
    inv_sqrt = torch.where(valid, (counts - 1.0).clamp_min(1.0).rsqrt(), 0.0)  # (G,)
    z = (member * inv_sqrt).T[:, :, None] * centred[None]  # (G, B, D)
    return z.transpose(1, 2) @ z, valid


def coral(
    feat_s: Tensor,
    feat_t: Tensor,
    *,
    domains_s: Optional[Tensor] = None,
    num_domains: Optional[int] = None,
    sync_dist: bool = False,
    process_group: Optional[Any] = None,
    validate_args: Optional[bool] = None,
) -> Tensor:
    r"""CORAL loss: squared Frobenius distance between source and target feature covariances.

    .. math::

        L_{coral} = \frac{1}{4 D^2} \lVert C_S - C_T \rVert_F^2, \qquad
        C = \frac{1}{n - 1} \sum_{i=1}^{n} (f_i - \bar f)(f_i - \bar f)^\top

    with unbiased covariances (Sun and Saenko, "Deep CORAL: Correlation Alignment for Deep Domain
    Adaptation", ECCV 2016 Workshops, eq. (1)–(3)). **Per source** (``domains_s`` given), each source
    domain's covariance is compared with the target's and the terms are averaged over the source
    domains that hold at least 2 samples in the batch (0 when none does), vectorised with a one-hot
    membership matrix.

    Args:
        feat_s: source features.
        feat_t: target features.
        domains_s: source-domain ids in ``[0, num_domains)`` for the per-source mode; ``None``
            pools all sources into one covariance (the paper's two-domain setting).
        num_domains: number of source domains; required with ``domains_s``.
        sync_dist: covariances over the global batch of all ranks (a differentiable all-gather of
            the features, as in :func:`~lacmfer.functional.dual_level_alignment`); a no-op without
            an initialised multi-rank process group.
        process_group: the process group for ``sync_dist`` (default: the world).
        validate_args: check the range of ``domains_s`` (reads values). ``None``: on CPU only.

    Shape:
        - feat_s: :math:`(B_s, D)`; domains_s: :math:`(B_s,)`; feat_t: :math:`(B_t, D)`.
        - Output: scalar (float32 for half-precision inputs, else the input dtype).

    Returns:
        The loss, :math:`\ge 0`.

    Raises:
        TypeError: if the features are not floating point, ``domains_s`` is not an integer tensor or
            a setting has the wrong type.
        ValueError: on wrong dimensions, mismatched batch or feature sizes, fewer than 2 target
            samples (or, pooled, fewer than 2 source samples; with ``sync_dist``, in the global
            batch), ``domains_s`` without ``num_domains``, or domain ids out of range.

    Note:
        The covariances are computed in float32 (or float64) with autocast disabled, as
        :math:`(D, D)` matrices (:math:`(G, D, D)` per source). The loss grows with the fourth power
        of the feature scale, so it overflows float32 for features beyond about :math:`10^9`;
        identical or all-zero features give exactly 0 with zero gradients at any scale.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> feat_s = torch.randn(64, 3, generator=g)
        >>> round(float(coral(feat_s, feat_s + 5.0)), 6)  # a shift leaves the covariances alike
        0.0
        >>> scale = torch.tensor([1.0, 1.0, 3.0])  # the target is stretched along one axis
        >>> float(coral(feat_s, feat_s * scale)) > 0.1
        True
    """
    check_float(feat_s, "feat_s", ndim=2, axes="(B_s, D)")
    check_float(feat_t, "feat_t", ndim=2, axes="(B_t, D)")
    check_size(feat_s, "feat_s", 1, feat_t, "feat_t", 1, "Feature sizes D (dim 1)")
    check_nonempty(feat_s, "feat_s")
    check_nonempty(feat_s, "feat_s", dim=1, what="feature")
    check_same_device([("feat_s", feat_s), ("feat_t", feat_t)])
    groups = check_domains(domains_s, num_domains, feat_s, "feat_s")
    if domains_s is not None:
        check_same_device([("feat_s", feat_s), ("domains_s", domains_s)])
        if resolve_validate_args(validate_args, domains_s):
            check_index_range(domains_s, "domains_s", groups, "num_domains")
    if sync_dist:
        feat_s, domains_s = gather_batch(feat_s, domains_s, process_group=process_group)
        (feat_t,) = gather_batch(feat_t, process_group=process_group)
    check_min_size(feat_t, "feat_t", 2, reason=_WHY_TWO)
    if domains_s is None:
        check_min_size(feat_s, "feat_s", 2, reason=_WHY_TWO)
    dim = feat_s.shape[1]
    with no_autocast(feat_s.device):
        dtype = compute_dtype(feat_s, feat_t)
        xs = feat_s.to(dtype)
        xt = feat_t.to(dtype)
        if domains_s is None:
            member_s = torch.ones(xs.shape[0], 1, dtype=dtype, device=xs.device)
        else:
            member_s = _one_hot(domains_s, groups, dtype)
        cov_s, valid = group_covariances(xs, member_s)  # (G, D, D), (G,)
        cov_t, _ = group_covariances(xt, torch.ones(xt.shape[0], 1, dtype=dtype, device=xt.device))
        # Divide before squaring: no overflow unless the loss itself overflows.
        per_group = (((cov_s - cov_t) / (2.0 * dim)) ** 2).sum(dim=(1, 2))  # (G,)
        per_group = torch.where(valid, per_group, 0.0)
        return per_group.sum() / valid.sum().clamp_min(1).to(dtype)
