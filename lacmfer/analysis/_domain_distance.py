r"""Distances between every pair of domains, and between the same class in different domains.

One kernel matrix :math:`A` of the pooled features gives every pairwise (squared) maximum mean
discrepancy at once: with :math:`W` the :math:`N \times C` membership matrix whose column :math:`c`
holds :math:`1/n_c` on the samples of cell :math:`c` (a domain, or a class within a domain),

.. math::

    G = W^\top A W, \qquad \mathrm{MMD}^2(c, c') = G_{cc} + G_{c'c'} - 2 G_{cc'},

so the :math:`M \times M` domain matrix and the :math:`K \times M \times M` per-class matrices come
from one pass over :math:`A` in row blocks, with no loop over domains, classes or pairs.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .._checks import check_choice, check_real
from .._precision import compute_dtype, no_autocast
from ._common import check_features, check_index, gram_distances, membership, scaled_centred
from ._common import sq_distances as _sq_distances

__all__ = ["DISTANCE_KINDS", "DomainDistances", "domain_distance_matrix"]

#: The distances :func:`domain_distance_matrix` offers: ``"mmd"`` (squared MMD with a Gaussian
#: kernel) and ``"linear"`` (squared distance between the mean embeddings).
DISTANCE_KINDS = ("mmd", "linear")

#: At most this many points (an evenly strided subsample of the pooled features) enter the median
#: heuristic of the bandwidth.
MEDIAN_POINTS = 1024

# Rows of the kernel matrix held in memory at once: (_BLOCK, N) numbers.
_BLOCK = 2048


class DomainDistances(NamedTuple):
    r"""Result of :func:`domain_distance_matrix`.

    NaN marks a pair with an empty side (a domain, or a class within a domain, without samples);
    every other entry is finite and non-negative.

    Attributes:
        matrix: :math:`(M, M)` distances between domains: symmetric, zero on the diagonal of
            non-empty domains.
        counts: :math:`(M,)` int64 samples per domain.
        bandwidth: the kernel bandwidth :math:`h` used (scalar tensor) for ``kind="mmd"``, ``None``
            for ``kind="linear"``.
        per_class: :math:`(K, M, M)` distance between the samples of class :math:`k` in domain
            :math:`i` and those of class :math:`k` in domain :math:`j` ("the same class across
            domains"); ``None`` without ``labels``.
        class_counts: :math:`(K, M)` int64 labelled samples per class and domain; ``None`` without
            ``labels``.
        class_matrix: :math:`(K, K)` mean over ordered pairs of *different* domains
            :math:`i \ne j` of the distance between class :math:`k` in domain :math:`i` and class
            :math:`k'` in domain :math:`j`. Its diagonal summarises "the same class across domains",
            its off-diagonal "different classes across domains"; ``None`` without ``labels``.
    """

    matrix: Tensor
    counts: Tensor
    bandwidth: Optional[Tensor]
    per_class: Optional[Tensor]
    class_counts: Optional[Tensor]
    class_matrix: Optional[Tensor]


def median_bandwidth(z: Tensor) -> Tensor:
    """The median squared distance between distinct points of (a strided subsample of) ``z``.

    Falls back to the mean squared distance when the median is 0 (many duplicates) and to 1 when
    every point is the same (then every distance is 0 and any bandwidth gives the same kernel).
    """
    z = z.detach()
    n = z.shape[0]
    if n > MEDIAN_POINTS:
        z = z[torch.arange(MEDIAN_POINTS, device=z.device) * n // MEDIAN_POINTS]
        n = MEDIAN_POINTS
    if n < 2:
        return z.new_ones(())
    rows, cols = torch.triu_indices(n, n, offset=1, device=z.device)
    dist = _sq_distances(z, z)[rows, cols]
    median = dist.median()
    mean = dist.mean()
    one = torch.ones((), dtype=z.dtype, device=z.device)
    return torch.where(median > 0, median, torch.where(mean > 0, mean, one))


def _kernel_gram(z: Tensor, weights: Tensor, bandwidth: Tensor) -> Tensor:
    """:math:`W^\\top K W` for the Gaussian kernel of ``z``, in row blocks of the kernel matrix."""
    kw = []
    for start in range(0, z.shape[0], _BLOCK):
        block = z[start : start + _BLOCK]
        kernel = torch.exp(-_sq_distances(block, z) / bandwidth)
        kw.append(kernel @ weights)
    return weights.T @ torch.cat(kw)


def domain_distance_matrix(
    features: Tensor,
    domains: Tensor,
    *,
    labels: Optional[Tensor] = None,
    num_domains: Optional[int] = None,
    num_classes: Optional[int] = None,
    kind: str = "mmd",
    bandwidth: Optional[float] = None,
) -> DomainDistances:
    r"""Distances between every pair of domains, overall and class by class.

    With ``kind="mmd"`` (default) the distance between two samples :math:`X = \{x_a\}` and
    :math:`Y = \{y_b\}` is the biased (V-statistic) squared maximum mean discrepancy with a Gaussian
    kernel of fixed bandwidth :math:`h` (Gretton et al., "A Kernel Two-Sample Test", JMLR 2012):

    .. math::

        \mathrm{MMD}^2(X, Y) = \frac{1}{n^2}\sum_{a, a'} k(x_a, x_{a'})
            + \frac{1}{m^2}\sum_{b, b'} k(y_b, y_{b'}) - \frac{2}{n m}\sum_{a, b} k(x_a, y_b),
        \qquad k(u, v) = \exp\!\left(-\frac{\lVert u - v \rVert^2}{h}\right).

    Unless ``bandwidth`` is given, :math:`h` is the **median heuristic**: the median (the lower
    middle value for an even count) squared distance between distinct points of the pooled features
    of all domains (of an evenly strided subsample of at most 1024 of them), detached; the mean
    squared distance if that median is 0, and 1 if every point is the same. One :math:`h` serves
    every pair and every class, so the entries are comparable with each other; the kernel is
    bounded, so :math:`0 \le \mathrm{MMD}^2 \le 2`. Being a V-statistic, the MMD of two finite
    samples of one distribution is small but positive, of order :math:`1/n`: compare entries with a
    sample size in mind. (LA-CMFER's loss uses a sum of five kernels with a mean-distance bandwidth,
    :func:`~lacmfer.functional.mmd2`; one kernel at the median bandwidth is the usual diagnostic
    choice and is scale-free: multiplying the features by a constant leaves the matrix unchanged.)

    With ``kind="linear"`` the distance is that of the mean embeddings,
    :math:`\lVert \bar x - \bar y \rVert^2` (the MMD of the linear kernel :math:`u^\top v`), in the
    features' units.

    Every pair comes from one kernel matrix :math:`A` of the pooled features,
    :math:`A_{ab} = k(x_a, x_b)`: with :math:`W` the :math:`N \times C` membership matrix whose
    column :math:`c` holds :math:`1/n_c` on the samples of cell :math:`c` (a domain, or a class
    within a domain), :math:`G = W^\top A W` and
    :math:`\mathrm{MMD}^2(c, c') = G_{cc} + G_{c'c'} - 2 G_{cc'}`. Time :math:`O(N^2 D)`, memory
    :math:`O(N \cdot \min(N, 2048))` (the kernel matrix is built in row blocks), no Python loop
    over domains, classes or pairs. Subsample large sets first
    (:class:`~lacmfer.analysis.FeatureCollector`'s ``max_samples``).

    **Class by class.** With ``labels`` (true labels for the sources, pseudo-labels, e.g. the
    argmax of the target predictions, for the target), the same distance is computed between the
    samples of class :math:`k` in domain :math:`i` and those of class :math:`k'` in domain
    :math:`j`. ``per_class[k]`` is the :math:`M \times M` matrix of class :math:`k` across domains;
    ``class_matrix[k, k']`` averages class :math:`k` vs class :math:`k'` over ordered pairs of
    different domains. A class-aware alignment (what LA-CMFER's cluster-level term aims at) makes
    the diagonal of ``class_matrix`` small and its off-diagonal large; an alignment that matches
    the domains but mixes the classes makes both small. To restrict to source-vs-target pairs, read
    ``per_class[:, sources, target]``. Samples with a negative label (unlabelled) count for the
    domain matrix but not for the class matrices.

    **Empty cells.** A domain (or a class within a domain) without samples gives NaN in every entry
    that involves it, its diagonal included; every other entry is finite. The computation never
    divides by zero, so the gradient with respect to ``features`` is finite (e.g. of
    ``matrix.nansum()``); the bandwidth carries no gradient.

    Args:
        features: features of all samples of all domains.
        domains: the domain index of each sample, in :math:`[0, M)`.
        labels: class index of each sample (negative: unlabelled, left out of the class matrices),
            or ``None`` for the domain matrix only.
        num_domains: :math:`M`; ``None`` infers ``domains.max() + 1``.
        num_classes: :math:`K`; ``None`` infers the largest label + 1.
        kind: ``"mmd"`` or ``"linear"`` (:data:`DISTANCE_KINDS`).
        bandwidth: a fixed kernel bandwidth :math:`h > 0` for ``kind="mmd"`` instead of the median
            heuristic (e.g. to compare checkpoints on one scale).

    Shape:
        - features: :math:`(N, D)`; domains, labels: :math:`(N,)` integer.
        - Output: matrix :math:`(M, M)`, per_class :math:`(K, M, M)`, class_matrix
          :math:`(K, K)`, float32 for half-precision features, else their dtype; counts
          :math:`(M,)` and class_counts :math:`(K, M)` int64.

    Returns:
        :class:`DomainDistances`.

    Raises:
        TypeError: if ``features`` is not floating-point, ``domains`` or ``labels`` not integer,
            or a setting has the wrong type.
        ValueError: on wrong dimensions, mismatched sample counts, indices out of range, an
            unknown ``kind``, or a ``bandwidth`` that is not positive or given with
            ``kind="linear"``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> features = torch.cat([torch.randn(50, 4, generator=g),
        ...                       torch.randn(50, 4, generator=g),
        ...                       torch.randn(50, 4, generator=g) + 3.0])
        >>> domains = torch.arange(3).repeat_interleave(50)
        >>> out = domain_distance_matrix(features, domains)
        >>> out.matrix.round(decimals=2)  # domains 0 and 1 are draws of one distribution
        tensor([[0.0000, 0.0100, 1.0700],
                [0.0100, 0.0000, 1.0200],
                [1.0700, 1.0200, 0.0000]])
        >>> out.counts
        tensor([50, 50, 50])
    """
    check_features(features, "features")
    num_domains = check_index(
        domains, "domains", features, "features", num_domains, "num_domains", allow_negative=False
    )
    check_choice(kind, "kind", DISTANCE_KINDS)
    k: Optional[int] = None
    if labels is not None:
        k = check_index(
            labels, "labels", features, "features", num_classes, "num_classes", allow_negative=True
        )
    if bandwidth is not None:
        if kind != "mmd":
            raise ValueError(f"`bandwidth` is a setting of kind='mmd', got kind={kind!r}")
        bandwidth = check_real(bandwidth, "bandwidth", minimum=0.0, exclusive_minimum=True)
    dtype = compute_dtype(features)
    m = num_domains
    with no_autocast(features.device):
        z, scale = scaled_centred(features.to(dtype))
        w_domain, counts = membership(domains, m, dtype)
        columns = [w_domain]
        class_counts: Optional[Tensor] = None
        if labels is not None and k is not None:
            cell = torch.where(labels >= 0, labels * m + domains, torch.full_like(labels, -1))
            w_cell, cell_counts = membership(cell, k * m, dtype)
            columns.append(w_cell)
            class_counts = cell_counts.reshape(k, m)
        weights = torch.cat(columns, dim=1)
        h: Optional[Tensor] = None
        if kind == "linear":
            means = weights.T @ z
            dist = gram_distances(means @ means.T) * (scale * scale)
        else:
            if bandwidth is None:
                h_unit = median_bandwidth(z)
            else:
                h_unit = torch.tensor(bandwidth, dtype=dtype, device=z.device) / (scale * scale)
            h = h_unit * scale * scale
            dist = gram_distances(_kernel_gram(z, weights, h_unit))
        nan = torch.full((), float("nan"), dtype=dtype, device=z.device)
        present = counts > 0
        matrix = torch.where(present[:, None] & present[None, :], dist[:m, :m], nan)
        if k is None or class_counts is None:
            return DomainDistances(matrix, counts, h, None, None, None)
        cells = dist[m:, m:].reshape(k, m, k, m)
        filled = class_counts > 0
        both = filled[:, :, None, None] & filled[None, None, :, :]  # (K, M, K, M)
        per_class = torch.where(both, cells, nan).diagonal(dim1=0, dim2=2).permute(2, 0, 1)
        other = ~torch.eye(m, dtype=torch.bool, device=z.device)
        pairs = both & other[None, :, None, :]
        total = torch.where(pairs, cells, torch.zeros_like(cells)).sum(dim=(1, 3))
        n_pairs = pairs.sum(dim=(1, 3))
        class_matrix = torch.where(n_pairs > 0, total / n_pairs.clamp_min(1).to(dtype), nan)
        class_matrix = 0.5 * (class_matrix + class_matrix.T)  # symmetric up to summation order
        return DomainDistances(matrix, counts, h, per_class, class_counts, class_matrix)
