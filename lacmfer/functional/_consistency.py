r"""Multi-view clustering consistency of LA-CMFER (intra-domain alignment, §3.3 of the paper)."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from .._checks import check_float, check_nonempty, check_size
from ._distributed import all_reduce_max, all_reduce_sum
from ._kernel import compute_dtype, no_autocast

__all__ = ["multi_view_clustering_consistency", "prediction_similarity_matrix"]

# With ``from_logits=True`` a row/column whose sum is this small relative to the matrix is empty.
_LOGIT_SUM_EPS = 1e-12


def _check_views(logits_g: Any, logits_l: Any) -> None:
    check_float(logits_g, "logits_g", ndim=2, axes="(B_t, K)")
    check_float(logits_l, "logits_l", ndim=2, axes="(B_t, K)")
    check_size(logits_g, "logits_g", 0, logits_l, "logits_l", 0, "Batch sizes (dim 0)")
    check_size(logits_g, "logits_g", 1, logits_l, "logits_l", 1, "Numbers of classes K (dim 1)")
    check_nonempty(logits_g, "logits_g")
    check_nonempty(logits_g, "logits_g", dim=1, what="class")
    if logits_g.device != logits_l.device:
        raise ValueError(
            f"`logits_g` and `logits_l` must be on one device, got {logits_g.device} and "
            f"{logits_l.device}"
        )
    if not isinstance(logits_g, Tensor):  # pragma: no cover - narrowed above
        raise TypeError


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
    _check_views(logits_g, logits_l)
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
        The loss, in :math:`[0, 1]` for probabilities.

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
    """
    _check_views(logits_g, logits_l)
    num_classes = logits_g.shape[1]
    with no_autocast(logits_g.device):
        m = _similarity(logits_g, logits_l, from_logits, sync_dist, process_group, True)
        row = m.sum(dim=1, keepdim=True)
        col = m.sum(dim=0, keepdim=True)
        if from_logits:
            tiny = _LOGIT_SUM_EPS * m.detach().abs().sum()
            row_ok = row.detach().abs() > tiny
            col_ok = col.detach().abs() > tiny
        else:
            row_ok = row.detach() > 0
            col_ok = col.detach() > 0
        r = torch.where(row_ok, m / torch.where(row_ok, row, torch.ones_like(row)), 0.0)
        c = torch.where(col_ok, m / torch.where(col_ok, col, torch.ones_like(col)), 0.0)
        off_r = r.sum() - torch.diagonal(r).sum()
        off_c = c.sum() - torch.diagonal(c).sum()
        return (off_r + off_c) / (2.0 * num_classes)
