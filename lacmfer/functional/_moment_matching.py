r"""Moment matching of M3SDA: raw feature moments aligned across all source domains and the target.

Reference: Peng, Bai, Xia, Huang, Saenko and Wang, "Moment Matching for Multi-Source Domain
Adaptation", ICCV 2019, eq. (1).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from .._checks import (
    check_domains,
    check_float,
    check_index_range,
    check_labels,
    check_nonempty,
    check_positive_int,
    check_same_device,
    check_size,
    resolve_validate_args,
)
from .._distributed import all_reduce_sum
from .._precision import compute_dtype, no_autocast

__all__ = ["moment_matching"]


def safe_norm(v: Tensor) -> Tensor:
    r"""Euclidean norm over the last dimension, with finite gradients everywhere.

    :math:`\lVert v \rVert_2 = m \sqrt{\sum (v/m)^2}` with the detached largest magnitude :math:`m`
    (the norm is homogeneous, so the value and the gradient are those of :math:`\lVert v \rVert_2`):
    squares cannot overflow, and :math:`v = 0` gives exactly 0 with a zero (sub)gradient instead of
    the NaN of :math:`\sqrt{\cdot}` at 0.
    """
    m = v.detach().abs().amax(dim=-1, keepdim=True)
    nonzero = m > 0
    m = torch.where(nonzero, m, torch.ones_like(m))
    u = v / m
    sq = torch.where(nonzero, (u * u).sum(dim=-1, keepdim=True), torch.ones_like(m))  # >= 1
    return torch.where(nonzero, m * sq.sqrt(), torch.zeros_like(m)).squeeze(-1)


def moment_matching(
    feat_s: Tensor,
    domains_s: Tensor,
    feat_t: Tensor,
    *,
    num_domains: int,
    moments: int = 2,
    sync_dist: bool = False,
    process_group: Optional[Any] = None,
    validate_args: Optional[bool] = None,
) -> Tensor:
    r"""M3SDA moment distance between every source domain, each other source and the target.

    .. math::

        L_{md} = \sum_{k=1}^{\text{moments}} \Big[
            \operatorname*{mean}_{i} \big\lVert \mathbb{E}(X_i^k) - \mathbb{E}(X_T^k) \big\rVert_2
            + \operatorname*{mean}_{i < j} \big\lVert \mathbb{E}(X_i^k) - \mathbb{E}(X_j^k) \big\rVert_2
        \Big]

    (Peng et al., "Moment Matching for Multi-Source Domain Adaptation", ICCV 2019, eq. (1)) with raw
    element-wise moments :math:`\mathbb{E}(X^k)` (the batch mean of each feature to the power
    :math:`k`, a :math:`D`-vector) and Euclidean, not squared, norms. The means run over the source
    domains present in the batch and the pairs of present domains; the second term is absent (0) with
    fewer than two present sources.

    This follows the paper's equation. The authors' released code differs: it centres the features
    before taking the higher moments and sums the distances over domains and pairs instead of
    averaging them.

    Args:
        feat_s: source features.
        domains_s: source-domain ids in ``[0, num_domains)``.
        feat_t: target features.
        num_domains: number of source domains :math:`N` (int >= 1).
        moments: highest moment order (int >= 1); 2 in the paper.
        sync_dist: moments over the global batch of all ranks (all-reduce of the per-domain counts
            and moment means; ranks may hold different batch sizes); a no-op without an initialised
            multi-rank process group.
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
        ValueError: on wrong dimensions, mismatched batch or feature sizes, empty batches, domain
            ids out of range or settings out of range.

    Note:
        Moments are computed in float32 (or float64) with autocast disabled, without a Python loop
        over domains or pairs (memory :math:`O(\text{moments} \cdot N^2 D)`). The norm is exact,
        has a finite (zero) gradient at 0, where the square root of a sum of squares has a NaN one
        (identical moments, e.g. identical or all-zero features), and rescales by the largest entry
        so that no square overflows. Raw moments grow with the :math:`k`-th power of the features,
        so float32 overflows for features beyond about :math:`10^{19/k}`.

    Example:
        >>> feat_s = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 1.0], [1.0, 3.0]])
        >>> domains_s = torch.tensor([0, 0, 1, 1])
        >>> feat_t = torch.tensor([[1.0, 0.0], [1.0, 2.0]])
        >>> moment_matching(feat_s, domains_s, feat_t, num_domains=2, moments=1)
        tensor(3.)
        >>> moment_matching(feat_s, domains_s, feat_t, num_domains=3)  # domain 2 is absent
        tensor(10.7171)
    """
    check_float(feat_s, "feat_s", ndim=2, axes="(B_s, D)")
    check_labels(domains_s, "domains_s", axes="(B_s,)", what="source-domain ids",
                 hint="; the arguments are (feat_s, domains_s, feat_t)")  # fmt: skip
    check_float(feat_t, "feat_t", ndim=2, axes="(B_t, D)")
    check_size(feat_s, "feat_s", 1, feat_t, "feat_t", 1, "Feature sizes D (dim 1)")
    check_nonempty(feat_s, "feat_s")
    check_nonempty(feat_t, "feat_t")
    check_nonempty(feat_s, "feat_s", dim=1, what="feature")
    groups = check_domains(domains_s, num_domains, feat_s, "feat_s")
    moments = check_positive_int(moments, "moments")
    check_same_device([("feat_s", feat_s), ("domains_s", domains_s), ("feat_t", feat_t)])
    if resolve_validate_args(validate_args, domains_s):
        check_index_range(domains_s, "domains_s", groups, "num_domains")
    with no_autocast(feat_s.device):
        dtype = compute_dtype(feat_s, feat_t)
        xs = feat_s.to(dtype)
        xt = feat_t.to(dtype)
        member = (domains_s[:, None] == torch.arange(groups, device=xs.device)).to(dtype)
        target_count = torch.full((1,), float(xt.shape[0]), dtype=dtype, device=xs.device)
        counts = torch.cat([member.sum(dim=0), target_count])  # (N + 1,)
        if sync_dist:
            counts = all_reduce_sum(counts, process_group)
        # Dividing before summing keeps every partial sum below the mean: no spurious overflow.
        weights = torch.cat([member, torch.zeros_like(member[:, :1])], dim=1)
        weights = weights / counts.clamp_min(1.0)  # (B_s, N + 1)
        orders = range(1, moments + 1)
        mean_s = torch.stack([weights.T @ xs**k for k in orders])[:, :groups]  # (M, N, D)
        mean_t = torch.stack([(xt**k / counts[groups]).sum(dim=0) for k in orders])  # (M, D)
        if sync_dist:
            mean_s = all_reduce_sum(mean_s, process_group)
            mean_t = all_reduce_sum(mean_t, process_group)
        present = counts[:groups] > 0  # (N,)
        to_target = safe_norm(mean_s - mean_t[:, None, :])  # (M, N)
        zero = torch.zeros((), dtype=dtype, device=xs.device)
        n_present = present.sum().to(dtype)
        term_t = torch.where(present, to_target, zero).sum(dim=1) / n_present.clamp_min(1.0)
        between = safe_norm(mean_s[:, :, None, :] - mean_s[:, None, :, :])  # (M, N, N)
        upper = torch.ones(groups, groups, dtype=torch.bool, device=xs.device).triu(diagonal=1)
        pairs = upper & present[:, None] & present[None, :]
        n_pairs = pairs.sum().to(dtype)
        term_s = torch.where(pairs, between, zero).sum(dim=(1, 2)) / n_pairs.clamp_min(1.0)
        return (term_t + term_s).sum()
