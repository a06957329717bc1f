r"""Multi-view clustering consistency of LA-CMFER (intra-domain alignment, §3.3 of the paper)."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from .._checks import check_bool, check_views
from .._distributed import all_reduce_max, all_reduce_sum
from .._precision import compute_dtype, no_autocast

__all__ = ["multi_view_clustering_consistency", "prediction_similarity_matrix"]

# With ``from_logits=True`` a row/column whose sum is this small relative to the matrix is empty.
_LOGIT_SUM_EPS = 1e-12


def _similarity(
    logits_g: Tensor,
    logits_l: Tensor,
    from_logits: bool,
    sync_dist: bool,
    process_group: Optional[Any],
    rescale: bool,
) -> Tensor:
    dtype = compute_dtype(logits_g, logits_l)
    zg = logits_g.to(dtype)
    zl = logits_l.to(dtype)
    if from_logits:
        view_g, view_l = zg, zl
        if rescale:
            # R and C are invariant to a positive scale of M: divide each view by its (detached,
            # rank-global) largest entry so that no finite logits can overflow M.
            scale = torch.stack([zg.detach().abs().amax(), zl.detach().abs().amax()])
            scale = all_reduce_max(scale, process_group) if sync_dist else scale
            scale = scale.clamp_min(1e-30)
            view_g, view_l = zg / scale[0], zl / scale[1]
    else:
        view_g, view_l = torch.softmax(zg, dim=1), torch.softmax(zl, dim=1)
    m = view_g.T @ view_l
    return all_reduce_sum(m, process_group) if sync_dist else m


def prediction_similarity_matrix(
    logits_g: Tensor,
    logits_l: Tensor,
    *,
    from_logits: bool = False,
    sync_dist: bool = False,
    process_group: Optional[Any] = None,
) -> Tensor:
    r"""Prediction similarity matrix of two views, :math:`M = P_G^\top P_L`.

    :math:`M_{kk'} = \sum_b P_G[b, k]\, P_L[b, k']` counts (softly) how often the global view puts a
    sample in cluster :math:`k` while the local view puts it in :math:`k'`. Yang et al., ACM MM 2024,
    §3.3.

    Args:
        logits_g: target-batch logits of the global head.
        logits_l: target-batch logits of the local head.
        from_logits: build :math:`M` from the raw logits instead of the softmax probabilities (what
            the authors' code does; the paper's equations use probabilities, the default).
        sync_dist: sum :math:`M` over all ranks (the global batch); a no-op without an initialised
            multi-rank process group.
        process_group: the process group for ``sync_dist`` (default: the world).

    Shape:
        - logits_g, logits_l: :math:`(B_t, K)`.
        - Output: :math:`(K, K)`, float32 for half-precision inputs, else the input dtype.

    Returns:
        The matrix :math:`M`. With probabilities its entries sum to :math:`B_t`.

    Raises:
        TypeError: if a view is not a floating-point tensor.
        ValueError: on wrong dimensions or mismatched batch or class sizes.

    Example:
        >>> logits_g = torch.tensor([[9.0, -9.0], [-9.0, 9.0], [9.0, -9.0]])
        >>> prediction_similarity_matrix(logits_g, logits_g).round()
        tensor([[2., 0.],
                [0., 1.]])
    """
    check_views(logits_g, logits_l)
    check_bool(from_logits, "from_logits")
    with no_autocast(logits_g.device):
        return _similarity(logits_g, logits_l, from_logits, sync_dist, process_group, False)


def multi_view_clustering_consistency(
    logits_g: Tensor,
    logits_l: Tensor,
    *,
    from_logits: bool = False,
    sync_dist: bool = False,
    process_group: Optional[Any] = None,
) -> Tensor:
    r"""Multi-view clustering consistency loss :math:`L_{mcc}` on the target batch.

    With :math:`M = P_G^\top P_L` (:func:`prediction_similarity_matrix`), its row-normalised
    :math:`R = M / \text{rowsum}` and column-normalised :math:`C = M / \text{colsum}`,

    .. math::

        L_{mcc} = \frac{1}{2K}\Big[\big(\textstyle\sum R - \operatorname{tr} R\big)
                 + \big(\textstyle\sum C - \operatorname{tr} C\big)\Big]
                = 1 - \frac{\operatorname{tr} R + \operatorname{tr} C}{2K}
                \ \text{(no empty rows/columns)}.

    It is 0 when both views put every sample in the same cluster, and pushes the two views of each
    target sample into one cluster. An empty row or column of :math:`M` (no sample in that cluster)
    contributes 0, never NaN. Yang et al., ACM MM 2024, §3.3.

    Args:
        logits_g: target-batch logits of the global head.
        logits_l: target-batch logits of the local head.
        from_logits: build :math:`M` from raw logits, as the authors' code does (its values can be
            negative, so :math:`L_{mcc}` is no longer bounded); rows or columns summing to about 0
            are then treated as empty. Default: probabilities, as in the paper.
        sync_dist: use :math:`M` summed over all ranks (all-reduce of a :math:`K \times K` matrix);
            a no-op without an initialised multi-rank process group.
        process_group: the process group for ``sync_dist`` (default: the world).

    Shape:
        - logits_g, logits_l: :math:`(B_t, K)`.
        - Output: scalar (float32 for half-precision inputs, else the input dtype).

    Returns:
        The loss: in :math:`[0, 1]` with probabilities (the default); with ``from_logits=True``
        not bounded (it can be negative or exceed 1, as :math:`M` can have negative entries).

    Raises:
        TypeError: if a view is not a floating-point tensor.
        ValueError: on wrong dimensions or mismatched batch or class sizes.

    Example:
        >>> logits = torch.tensor([[9.0, -9.0], [-9.0, 9.0]])
        >>> multi_view_clustering_consistency(logits, logits)  # the views agree
        tensor(0.)
        >>> multi_view_clustering_consistency(logits, logits.flip(0))  # they swap the clusters
        tensor(1.0000)

    Note:
        With probabilities no cluster is exactly empty: a class that no sample really belongs to
        still has a (tiny) row of :math:`M`, which row normalisation scales up to a full row. So
        the loss is 0 only when each view's probabilities are (numerically) one-hot *and* agree,
        e.g. exactly one-hot inputs with ``from_logits=True``.

        :math:`R` and :math:`C` are computed from the batch-rescaled views (each class column of
        :math:`P_G` or :math:`P_L` divided by its largest entry, in log space), which leaves them
        unchanged but keeps every row and column sum away from 0: the gradients stay finite when the
        softmax saturates (extreme logits, small batches), in every dtype.
    """
    check_views(logits_g, logits_l)
    check_bool(from_logits, "from_logits")
    num_classes = logits_g.shape[1]
    with no_autocast(logits_g.device):
        if from_logits:
            r, c = _normalise_logit_similarity(
                _similarity(logits_g, logits_l, True, sync_dist, process_group, True)
            )
        else:
            r, c = _normalise_probability_similarity(logits_g, logits_l, sync_dist, process_group)
        off_r = r.sum() - torch.diagonal(r).sum()
        off_c = c.sum() - torch.diagonal(c).sum()
        return (off_r + off_c) / (2.0 * num_classes)


def _normalise_logit_similarity(m: Tensor) -> tuple[Tensor, Tensor]:
    """``R`` and ``C`` of a logit-built ``M``: rows/columns summing to about 0 count as empty."""
    row = m.sum(dim=1, keepdim=True)
    col = m.sum(dim=0, keepdim=True)
    tiny = _LOGIT_SUM_EPS * m.detach().abs().sum()
    return _masked_ratio(m, row, row.detach().abs() > tiny), _masked_ratio(
        m, col, col.detach().abs() > tiny
    )


def _masked_ratio(num: Tensor, den: Tensor, ok: Tensor) -> Tensor:
    """``num / den`` where ``ok``, else 0, with no NaN in values or gradients."""
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), 0.0)


def _normalise_probability_similarity(
    logits_g: Tensor, logits_l: Tensor, sync_dist: bool, process_group: Optional[Any]
) -> tuple[Tensor, Tensor]:
    r"""``R = M / rowsum`` and ``C = M / colsum`` of :math:`M = P_G^\top P_L`, computed stably.

    Row :math:`k` of :math:`M` is :math:`\sum_b P_G[b, k] P_L[b, \cdot]`, so :math:`R` is
    unchanged when column :math:`k` of :math:`P_G` is divided by its largest entry over the
    (global) batch: :math:`R = \tilde M / \text{rowsum}(\tilde M)` with
    :math:`\tilde M = E_G^\top P_L`, :math:`E_G[b, k] = \exp(\log P_G[b, k] - \max_{b'}
    \log P_G[b', k])`, and likewise :math:`C` from :math:`P_G^\top E_L`. Each row sum of
    :math:`\tilde M` is then at least about 1, where the row sums of :math:`M` itself can be
    subnormal once the softmax saturates (logits of magnitude ~100 and a small batch): dividing by
    them gave finite values but NaN gradients (the square of a subnormal sum is 0).

    Which rows and columns are empty is still decided on :math:`M` itself (an exactly zero row
    sum), so the values are those of the plain formula up to rounding; only where probabilities are
    subnormal (and carry few significant bits) does the rescaled form differ, being the more
    accurate of the two.
    """
    dtype = compute_dtype(logits_g, logits_l)
    zg, zl = logits_g.to(dtype), logits_l.to(dtype)
    prob_g, prob_l = torch.softmax(zg, dim=1), torch.softmax(zl, dim=1)
    log_g, log_l = torch.log_softmax(zg, dim=1), torch.log_softmax(zl, dim=1)
    top = torch.stack([log_g.detach().amax(dim=0), log_l.detach().amax(dim=0)])  # (2, K)
    top = all_reduce_max(top, process_group) if sync_dist else top
    # A column that is -inf everywhere (only for logits near the float range) has E = 0.
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    # Same zeros as the probabilities (an underflowed probability stays 0, as in M itself).
    zero = prob_g.new_zeros(())
    scaled_g = torch.where(prob_g > 0, torch.exp(log_g - top[0]), zero)  # column maxima 1
    scaled_l = torch.where(prob_l > 0, torch.exp(log_l - top[1]), zero)
    parts = torch.stack([(prob_g.T @ prob_l).detach(), scaled_g.T @ prob_l, prob_g.T @ scaled_l])
    parts = all_reduce_sum(parts, process_group) if sync_dist else parts
    m, m_row, m_col = parts[0], parts[1], parts[2]
    row_ok = (m.sum(dim=1, keepdim=True) > 0) & (m_row.detach().sum(dim=1, keepdim=True) > 0)
    col_ok = (m.sum(dim=0, keepdim=True) > 0) & (m_col.detach().sum(dim=0, keepdim=True) > 0)
    r = _masked_ratio(m_row, m_row.sum(dim=1, keepdim=True), row_ok)
    c = _masked_ratio(m_col, m_col.sum(dim=0, keepdim=True), col_ok)
    return r, c
