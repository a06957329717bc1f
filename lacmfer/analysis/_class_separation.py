r"""How far apart the classes are, relative to how spread out each class is, overall and per domain."""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .._precision import compute_dtype, no_autocast
from ._common import check_features, check_index, membership, scaled_centred

__all__ = ["ClassSeparation", "class_separation"]


class ClassSeparation(NamedTuple):
    r"""Result of :func:`class_separation`.

    Attributes:
        ratio: scalar, ``within / between`` on all labelled samples (class centroids pooled over
            the domains). Lower is better separated.
        within: scalar, mean squared distance of a labelled sample to its class centroid.
        between: scalar, mean squared distance between the centroids of two different classes.
        domain_ratio: :math:`(M,)` the ratio of each domain on its own (its own class centroids),
            or ``None`` without ``domains``.
        domain_within: :math:`(M,)` ``within`` of each domain, or ``None``.
        domain_between: :math:`(M,)` ``between`` of each domain, or ``None``.
    """

    ratio: Tensor
    within: Tensor
    between: Tensor
    domain_ratio: Optional[Tensor]
    domain_within: Optional[Tensor]
    domain_between: Optional[Tensor]


def _separation(
    z: Tensor, labels: Tensor, groups: Tensor, num_groups: int, num_classes: int
) -> tuple[Tensor, Tensor, Tensor]:
    """``(within, between, ratio)`` of each group, each ``(num_groups,)``, for centred features."""
    dtype = z.dtype
    labels, groups = labels.long(), groups.long()  # any integer dtype (uint8 would index as a mask)
    labelled = labels >= 0
    cell = torch.where(labelled, labels * num_groups + groups, torch.full_like(labels, -1))
    w_cell, cell_counts = membership(cell, num_classes * num_groups, dtype)
    centroids = w_cell.T @ z  # (K * G, D), row k * G + g
    own = centroids[cell.clamp_min(0)]
    sq = torch.where(labelled, ((z - own) ** 2).sum(dim=1), z.new_zeros(()))
    w_group, group_counts = membership(torch.where(labelled, groups, -1), num_groups, dtype)
    nan = torch.full((), float("nan"), dtype=dtype, device=z.device)
    within = torch.where(group_counts > 0, w_group.T @ sq, nan)

    c = centroids.reshape(num_classes, num_groups, -1).transpose(0, 1)  # (G, K, D)
    sq_c = (c * c).sum(dim=-1)
    dist = (sq_c[:, :, None] + sq_c[:, None, :] - 2.0 * (c @ c.transpose(1, 2))).clamp_min(0.0)
    present = (cell_counts.reshape(num_classes, num_groups) > 0).T  # (G, K)
    upper = torch.ones(num_classes, num_classes, dtype=torch.bool, device=z.device).triu(1)
    pairs = present[:, :, None] & present[:, None, :] & upper
    n_pairs = pairs.sum(dim=(1, 2))
    total = torch.where(pairs, dist, torch.zeros_like(dist)).sum(dim=(1, 2))
    between = torch.where(n_pairs > 0, total / n_pairs.clamp_min(1).to(dtype), nan)

    inf = torch.full((), float("inf"), dtype=dtype, device=z.device)
    safe = torch.where(between > 0, between, torch.ones_like(between))
    coincide = (between == 0) & (within > 0)  # centroids coincide, samples do not
    ratio = torch.where(between > 0, within / safe, torch.where(coincide, inf, nan))
    return within, between, ratio


def class_separation(
    features: Tensor,
    labels: Tensor,
    domains: Optional[Tensor] = None,
    *,
    num_classes: Optional[int] = None,
    num_domains: Optional[int] = None,
) -> ClassSeparation:
    r"""Within-class spread over between-class distance: are the classes still apart?

    With :math:`\mu_k` the centroid of the labelled samples of class :math:`k`, :math:`n` the
    number of labelled samples and :math:`\mathcal{P}` the unordered pairs of classes present,

    .. math::

        \text{within} = \frac1n \sum_i \lVert x_i - \mu_{y_i} \rVert^2, \qquad
        \text{between} = \frac{1}{|\mathcal{P}|} \sum_{\{k, k'\} \in \mathcal{P}}
            \lVert \mu_k - \mu_{k'} \rVert^2, \qquad
        \text{ratio} = \frac{\text{within}}{\text{between}}.

    ``within`` is the trace of the within-class scatter per sample; ``between`` averages the
    classes with equal weight (a large class does not dominate), so the ratio is a trace form of
    Fisher's criterion, inverted: **lower is better separated**, and it is invariant to scaling the
    features. A ratio of 1 means a sample lies, on average, as far from its class centre as two
    class centres lie from each other. With ``domains`` the same numbers are also computed for each
    domain on its own samples and its own class centroids (``domain_*``), so the target (with
    pseudo-labels) can be compared with the sources.

    **Aligned but collapsed.** An alignment loss can make the domains indistinguishable by
    squeezing the features together instead of matching them class by class. In these numbers:
    the domain distances (:func:`~lacmfer.analysis.domain_distance_matrix`,
    :func:`~lacmfer.analysis.proxy_a_distance`) fall while ``ratio`` *rises* towards or above 1
    (classes overlap), typically first in the target's ``domain_ratio``; ``within`` and
    ``between`` both shrinking by the same factor is only a change of scale and leaves ``ratio``
    unchanged. A healthy adaptation lowers the domain distances and keeps (or lowers) the ratio of
    every domain.

    Samples with a negative label (unlabelled) are left out. A quantity without data is NaN:
    ``between`` (and ``ratio``) of a domain with fewer than two classes present, every quantity of
    a domain without labelled samples. ``ratio`` is ``inf`` when all class centroids coincide but
    the samples do not. No division by zero occurs, so gradients stay finite.

    Args:
        features: features of the samples.
        labels: class index of each sample; negative entries are left out.
        domains: domain index of each sample, in :math:`[0, M)`, or ``None`` for the pooled numbers
            only.
        num_classes: :math:`K`; ``None`` infers the largest label + 1.
        num_domains: :math:`M`; ``None`` infers ``domains.max() + 1``.

    Shape:
        - features: :math:`(N, D)`; labels, domains: :math:`(N,)` integer.
        - Output: ratio, within, between scalars; ``domain_*`` :math:`(M,)`. Float32 for
          half-precision features, else their dtype.

    Returns:
        :class:`ClassSeparation`.

    Raises:
        TypeError: if ``features`` is not floating-point or ``labels``/``domains`` not integer.
        ValueError: on wrong dimensions, mismatched sample counts, indices out of range or no
            label :math:`\ge 0` when ``num_classes`` is not given.

    Example:
        >>> features = torch.tensor([[0.0, 0.0], [0.0, 2.0], [4.0, 0.0], [4.0, 2.0]])
        >>> labels = torch.tensor([0, 0, 1, 1])
        >>> out = class_separation(features, labels)
        >>> out.within, out.between, out.ratio  # spread 1 around centroids 4 apart
        (tensor(1.), tensor(16.), tensor(0.0625))
        >>> class_separation(features, labels, torch.tensor([0, 1, 0, 1])).domain_ratio
        tensor([0., 0.])
    """
    check_features(features, "features")
    k = check_index(
        labels, "labels", features, "features", num_classes, "num_classes", allow_negative=True
    )
    m: Optional[int] = None
    if domains is not None:
        m = check_index(
            domains, "domains", features, "features", num_domains, "num_domains",
            allow_negative=False,
        )  # fmt: skip
    dtype = compute_dtype(features)
    with no_autocast(features.device):
        z, scale = scaled_centred(features.to(dtype))
        unit = scale * scale
        pooled = torch.zeros_like(labels)
        within, between, ratio = _separation(z, labels, pooled, 1, k)
        if domains is None or m is None:
            return ClassSeparation(ratio[0], within[0] * unit, between[0] * unit, None, None, None)
        d_within, d_between, d_ratio = _separation(z, labels, domains, m, k)
        return ClassSeparation(
            ratio[0], within[0] * unit, between[0] * unit, d_ratio, d_within * unit,
            d_between * unit,
        )  # fmt: skip
