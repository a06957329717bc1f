r"""Pseudo-label refinement by multi-view voting (intra-domain alignment, §3.3 of the paper)."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_probability, check_views
from .._distributed import all_reduce_sum
from .._precision import compute_dtype, no_autocast

__all__ = [
    "RefinedPseudoLabels",
    "multi_view_pseudo_label_loss",
    "pseudo_label_refinement",
    "refine_pseudo_labels",
]


class RefinedPseudoLabels(NamedTuple):
    """What :class:`~lacmfer.losses.PseudoLabelRefiner` and :func:`pseudo_label_refinement` return.

    Attributes:
        labels: :math:`(B_t,)` int64, the class both views agree on (the global view's argmax for
            samples that are not kept; use ``mask``).
        mask: :math:`(B_t,)` bool, the samples kept by the vote.
        loss: scalar, :math:`L_{mvv}` (exactly 0, finite and graph-connected when nothing is kept).
        kept_fraction: scalar, detached, the fraction of the (global, with ``sync_dist``) batch kept.
    """

    labels: Tensor
    mask: Tensor
    loss: Tensor
    kept_fraction: Tensor


def _vote(logits_g: Tensor, logits_l: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    dtype = compute_dtype(logits_g, logits_l)
    prob_g = torch.softmax(logits_g.detach().to(dtype), dim=1)
    prob_l = torch.softmax(logits_l.detach().to(dtype), dim=1)
    conf_g, label_g = prob_g.max(dim=1)
    conf_l, label_l = prob_l.max(dim=1)
    mask = (label_g == label_l) & ((conf_g > threshold) | (conf_l > threshold))
    return label_g, mask


def refine_pseudo_labels(
    logits_g: Tensor, logits_l: Tensor, *, threshold: float = 0.9
) -> tuple[Tensor, Tensor]:
    r"""Refine target pseudo-labels by a vote of the two views.

    A target sample is kept iff both views predict the same class **and** at least one of them is
    confident:

    .. math::

        \text{keep}_b = 1\big[\arg\max p_G[b] = \arg\max p_L[b]\big]\;
            1\big[\max p_G[b] > \tau \ \lor\ \max p_L[b] > \tau\big],

    (strict :math:`>`; argmax ties go to the lowest index) and its refined label is the agreed class.
    Yang et al., ACM MM 2024, §3.3.

    Note:
        Labels and mask are computed from detached logits: they are targets, not part of the graph.

    Args:
        logits_g: target-batch logits of the global head.
        logits_l: target-batch logits of the local head.
        threshold: confidence threshold :math:`\tau \in (0, 1]` (strict ``>``: 1 keeps no sample).

    Shape:
        - logits_g, logits_l: :math:`(B_t, K)`.
        - Output: ``labels`` :math:`(B_t,)` int64 and ``mask`` :math:`(B_t,)` bool.

    Returns:
        ``(labels, mask)``; ``labels`` holds the global view's argmax everywhere, meaningful where
        ``mask`` is True.

    Raises:
        TypeError: if a view is not a floating-point tensor.
        ValueError: on wrong dimensions, mismatched sizes or ``threshold`` outside ``(0, 1]``.

    Example:
        >>> logits_g = torch.tensor([[5.0, 0.0], [0.0, 5.0], [1.0, 0.0]])
        >>> logits_l = torch.tensor([[1.0, 0.0], [5.0, 0.0], [1.0, 0.0]])
        >>> refine_pseudo_labels(logits_g, logits_l)
        (tensor([0, 1, 0]), tensor([ True, False, False]))
    """
    threshold = check_probability(threshold, "threshold")
    check_views(logits_g, logits_l)
    with no_autocast(logits_g.device):
        return _vote(logits_g, logits_l, threshold)


def pseudo_label_refinement(
    logits_g: Tensor,
    logits_l: Tensor,
    *,
    threshold: float = 0.9,
    sync_dist: bool = False,
    process_group: Optional[Any] = None,
) -> RefinedPseudoLabels:
    r"""Refined labels, mask, voting loss and kept fraction in one call.

    The functional form of :class:`~lacmfer.losses.PseudoLabelRefiner`:
    :func:`refine_pseudo_labels` followed by :func:`multi_view_pseudo_label_loss` on the kept samples,

    .. math::

        L_{mvv} = \mathrm{CE}(z_G[\text{keep}], \tilde y) + \mathrm{CE}(z_L[\text{keep}], \tilde y),

    each a mean over the kept samples, exactly 0 (finite, differentiable, connected to both views'
    graphs) when nothing is kept.

    Args:
        logits_g: target-batch logits of the global head.
        logits_l: target-batch logits of the local head.
        threshold: confidence threshold :math:`\tau \in (0, 1]` (strict ``>``: 1 keeps no sample).
        sync_dist: take the means over the kept samples of all ranks (the global batch); labels and
            mask stay per rank. A no-op without an initialised multi-rank process group.
        process_group: the process group for ``sync_dist`` (default: the world).

    Shape:
        - logits_g, logits_l: :math:`(B_t, K)`.
        - Output: see :class:`RefinedPseudoLabels`.

    Returns:
        :class:`RefinedPseudoLabels` ``(labels, mask, loss, kept_fraction)``.

    Raises:
        TypeError: if a view is not a floating-point tensor.
        ValueError: on wrong dimensions, mismatched sizes or ``threshold`` outside ``(0, 1]``.

    Example:
        >>> logits_g = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
        >>> logits_l = torch.tensor([[4.0, 0.0], [5.0, 0.0]])
        >>> out = pseudo_label_refinement(logits_g, logits_l)
        >>> out.mask, out.kept_fraction
        (tensor([ True, False]), tensor(0.5000))
    """
    threshold = check_probability(threshold, "threshold")
    check_views(logits_g, logits_l)
    with no_autocast(logits_g.device):
        labels, mask = _vote(logits_g, logits_l, threshold)
        dtype = compute_dtype(logits_g, logits_l)
        keep = mask.to(dtype)
        ce_g = F.cross_entropy(logits_g.to(dtype), labels, reduction="none")
        ce_l = F.cross_entropy(logits_l.to(dtype), labels, reduction="none")
        # `where`, not a product: a sample that is not kept may have an infinite cross-entropy
        # (extreme logits disagreeing with the label), and inf * 0 would be NaN.
        zero = ce_g.new_zeros(())
        sums = torch.stack(
            [torch.where(mask, ce_g, zero).sum(), torch.where(mask, ce_l, zero).sum()]
        )
        counts = torch.stack([keep.sum(), keep.new_tensor(float(keep.shape[0]))])
        if sync_dist:
            sums = all_reduce_sum(sums, process_group)
            counts = all_reduce_sum(counts, process_group)
        kept = counts[0].clamp_min(1.0)
        loss = sums[0] / kept + sums[1] / kept
        return RefinedPseudoLabels(labels, mask, loss, (counts[0] / counts[1]).detach())


def multi_view_pseudo_label_loss(
    logits_g: Tensor,
    logits_l: Tensor,
    *,
    threshold: float = 0.9,
    sync_dist: bool = False,
    process_group: Optional[Any] = None,
) -> Tensor:
    r"""Multi-view voting loss :math:`L_{mvv}` on the target batch.

    .. math::

        L_{mvv} = \mathrm{CE}(z_G[\text{keep}], \tilde y) + \mathrm{CE}(z_L[\text{keep}], \tilde y)

    with the kept samples and refined labels :math:`\tilde y` of :func:`refine_pseudo_labels`
    (recomputed from the current logits at every call, detached), each cross-entropy a mean over the
    kept samples. Exactly 0 — finite, differentiable and connected to both views' graphs — when no
    sample is kept. Yang et al., ACM MM 2024, §3.3.

    Args:
        logits_g: target-batch logits of the global head.
        logits_l: target-batch logits of the local head.
        threshold: confidence threshold :math:`\tau \in (0, 1]` (strict ``>``: 1 keeps no sample).
        sync_dist: average over the kept samples of all ranks (all-reduce of two sums and a count);
            a no-op without an initialised multi-rank process group.
        process_group: the process group for ``sync_dist`` (default: the world).

    Shape:
        - logits_g, logits_l: :math:`(B_t, K)`.
        - Output: scalar (float32 for half-precision inputs, else the input dtype).

    Returns:
        The loss.

    Raises:
        TypeError: if a view is not a floating-point tensor.
        ValueError: on wrong dimensions, mismatched sizes or ``threshold`` outside ``(0, 1]``.

    Example:
        >>> logits = torch.tensor([[0.0, 0.0], [0.1, 0.0]])
        >>> multi_view_pseudo_label_loss(logits, logits)  # nobody is confident enough
        tensor(0.)
    """
    return pseudo_label_refinement(
        logits_g, logits_l, threshold=threshold, sync_dist=sync_dist, process_group=process_group
    ).loss
