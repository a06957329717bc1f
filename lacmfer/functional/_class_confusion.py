r"""Minimum Class Confusion (MCC): penalise the confusion between classes in the target predictions.

Not to be confused with LA-CMFER's *multi-view clustering consistency*
(:func:`~lacmfer.functional.multi_view_clustering_consistency`), which the paper also abbreviates
MCC: that one compares two heads' cluster assignments; this one compares one head's predictions with
themselves (see the note of :func:`minimum_class_confusion`).

Reference: Jin, Wang, Long and Wang, "Minimum Class Confusion for Versatile Domain Adaptation",
ECCV 2020.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from .._checks import check_float, check_nonempty, check_real
from .._distributed import all_reduce_sum
from .._precision import compute_dtype, no_autocast

__all__ = ["minimum_class_confusion"]


def check_temperature(temperature: Any) -> float:
    """The temperature ``T > 0`` that rescales the logits, checked by :func:`minimum_class_confusion`
    at every call and by :class:`~lacmfer.losses.MinimumClassConfusionLoss` at construction."""
    return check_real(temperature, "temperature", minimum=0.0, exclusive_minimum=True)


def minimum_class_confusion(
    logits_t: Tensor,
    *,
    temperature: float = 2.5,
    sync_dist: bool = False,
    process_group: Optional[Any] = None,
) -> Tensor:
    r"""Minimum Class Confusion loss on the target batch (Jin et al., ECCV 2020).

    With temperature-rescaled probabilities :math:`\hat Y = \mathrm{softmax}(z / T)`, the entropy
    :math:`H_b = -\sum_k \hat Y_{bk} \log \hat Y_{bk}` of each sample and the (detached) uncertainty
    weights :math:`w_b = B_t (1 + e^{-H_b}) / \sum_{b'} (1 + e^{-H_{b'}})`,

    .. math::

        C = (\hat Y \odot w)^\top \hat Y, \qquad
        \tilde C_{kk'} = \frac{C_{kk'}}{\sum_{k''} C_{kk''}}, \qquad
        L_{mcc} = \frac{1}{K} \sum_{k \ne k'} \tilde C_{kk'}
                = \frac{1}{K}\big(\textstyle\sum \tilde C - \operatorname{tr} \tilde C\big).

    :math:`C_{kk'}` measures how much the batch's predictions put on classes :math:`k` and
    :math:`k'` *at the same time*; the loss is 0 when every prediction is one-hot. The entropy is
    exact (no epsilon; :math:`0 \log 0 = 0`). (Jin et al., "Minimum Class Confusion for Versatile
    Domain Adaptation", ECCV 2020; :math:`T = 2.5` and weight 1.0 in their experiments.)

    Args:
        logits_t: logits of the classifier on the target batch.
        temperature: probability-rescaling temperature :math:`T > 0`.
        sync_dist: use :math:`C` summed over all ranks (the global batch), with the weights
            normalised by the global :math:`\sum (1 + e^{-H})` and batch size; a no-op without an
            initialised multi-rank process group.
        process_group: the process group for ``sync_dist`` (default: the world).

    Shape:
        - logits_t: :math:`(B_t, K)`.
        - Output: scalar (float32 for half-precision inputs, else the input dtype).

    Returns:
        The loss, in :math:`[0, (K - 1)/K]`.

    Raises:
        TypeError: if ``logits_t`` is not a floating-point tensor or ``temperature`` not a number.
        ValueError: on wrong dimensions, an empty batch or class dimension, or
            ``temperature <= 0``.

    Note:
        **Not LA-CMFER's multi-view clustering consistency.** :func:`multi_view_clustering_consistency`
        builds :math:`M = P_G^\top P_L` from *two* heads, without temperature or weights, and
        normalises rows *and* columns: it penalises the global and local views for clustering the
        target differently. Minimum class confusion uses *one* head against itself, so it penalises
        ambiguous predictions (the probability mass a sample spreads over several classes), weighted
        towards confident samples. With identical views, :math:`T = 1` and equal weights the two
        coincide.

    Note:
        The uncertainty weights :math:`w` are detached, as in the authors' code. The softmax is
        shifted by each row's (detached) maximum before the temperature divides it, so no finite
        logits overflow; a row of :math:`C` that is exactly 0 (a class no sample gives any
        probability) contributes 0.

    Example:
        >>> confident = torch.tensor([[9.0, -9.0], [-9.0, 9.0]])
        >>> minimum_class_confusion(confident, temperature=1.0)
        tensor(3.0460e-08)
        >>> minimum_class_confusion(torch.zeros(4, 3))  # uniform predictions: maximal confusion
        tensor(0.6667)
    """
    check_float(logits_t, "logits_t", ndim=2, axes="(B_t, K)")
    check_nonempty(logits_t, "logits_t")
    check_nonempty(logits_t, "logits_t", dim=1, what="class")
    temperature = check_temperature(temperature)
    num_classes = logits_t.shape[1]
    with no_autocast(logits_t.device):
        dtype = compute_dtype(logits_t)
        z = logits_t.to(dtype)
        # softmax is shift-invariant: subtracting the detached row maximum first changes neither the
        # probabilities nor their gradients, and (z - max) / T cannot overflow for T < 1.
        scaled = (z - z.detach().amax(dim=1, keepdim=True)) / temperature
        probs = torch.softmax(scaled, dim=1)
        p = probs.detach()
        log_p = torch.log_softmax(scaled.detach(), dim=1)
        zero = torch.zeros((), dtype=dtype, device=z.device)
        entropy = -torch.where(p > 0, p * log_p, zero).sum(dim=1)
        raw = 1.0 + torch.exp(-entropy)  # (B_t,), detached
        totals = torch.stack([raw.sum(), torch.full_like(raw[0], float(raw.shape[0]))])
        if sync_dist:
            totals = all_reduce_sum(totals, process_group)
        weights = totals[1] * raw / totals[0]
        confusion = (probs * weights[:, None]).T @ probs  # (K, K)
        if sync_dist:
            confusion = all_reduce_sum(confusion, process_group)
        rows = confusion.sum(dim=1, keepdim=True)
        nonzero = rows.detach() > 0
        normalised = torch.where(
            nonzero, confusion / torch.where(nonzero, rows, torch.ones_like(rows)), zero
        )
        off_diagonal = ~torch.eye(num_classes, dtype=torch.bool, device=z.device)
        return torch.where(off_diagonal, normalised, zero).sum() / num_classes
