r"""Dual-level inter-domain alignment of LA-CMFER: sample level (SID) and cluster level (CID).

Everything is vectorised over samples, classes, class pairs and source domains: class and domain sets
enter as 0/1 membership matrices, so shapes never depend on the data and nothing reads values back to
the host. The pooled mode (the paper's: all sources in one batch) is the one-domain case of the
per-source mode.

Reference: Yang et al., "Learning with Alignments: Tackling the Inter- and Intra-domain Shifts for
Cross-multidomain Facial Expression Recognition", ACM MM 2024 (arXiv:2407.05688), §3.2.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Union

import torch
from torch import Tensor

from .._checks import (
    check_domains,
    check_float,
    check_index_range,
    check_kernel_settings,
    check_label_range,
    check_labels,
    check_nonempty,
    check_probability,
    check_same_device,
    check_size,
    check_weight,
    resolve_validate_args,
)
from .._distributed import gather_batch
from .._precision import compute_dtype, no_autocast
from ._kernel import bandwidth_from_sums, kernel_coefficients, kernel_sum, pairwise_sq_distances

__all__ = [
    "AlignmentTerms",
    "cluster_level_alignment",
    "dual_level_alignment",
    "hardness_weights",
    "sample_level_alignment",
]


class AlignmentTerms(NamedTuple):
    """The parts of :func:`dual_level_alignment` (returned with ``return_terms=True``).

    Attributes:
        loss: ``sid + cluster_weight * cid``, the value the loss returns.
        sid: the sample-level term :math:`L_{sid}`.
        cid: the cluster-level term :math:`L_{cid}`.
    """

    loss: Tensor
    sid: Tensor
    cid: Tensor


# --------------------------------------------------------------------------------------------------
# the shared computation


class _Prepared(NamedTuple):
    """Detached per-sample quantities shared by SID and CID (compute dtype)."""

    feat_s: Tensor
    feat_t: Tensor
    onehot_s: Tensor  # (B_s, K) true labels (zero row for an out-of-range label)
    onehot_t: Tensor  # (B_t, K) pseudo-labels
    groups_s: Tensor  # (B_s, G) domain membership
    mask_s: Tensor  # (B_s,) confidence mask, 0/1
    mask_t: Tensor  # (B_t,)
    logits_s: Tensor  # detached, compute dtype
    logits_t: Tensor


def _one_hot(index: Tensor, num: int, dtype: torch.dtype) -> Tensor:
    """One-hot rows by comparison (no range check, no host sync; out-of-range gives a zero row)."""
    return (index.unsqueeze(-1) == torch.arange(num, device=index.device)).to(dtype)


def _prepare(
    feat_s: Tensor,
    logits_s: Tensor,
    labels_s: Tensor,
    feat_t: Tensor,
    logits_t: Tensor,
    domains_s: Optional[Tensor],
    groups: int,
    threshold: float,
) -> _Prepared:
    dtype = compute_dtype(feat_s, feat_t, logits_s, logits_t)
    num_classes = logits_s.shape[1]
    zs = logits_s.detach().to(dtype)
    zt = logits_t.detach().to(dtype)
    mask_s = (torch.softmax(zs, dim=1).amax(dim=1) >= threshold).to(dtype)
    prob_t = torch.softmax(zt, dim=1)
    mask_t = (prob_t.amax(dim=1) >= threshold).to(dtype)
    pseudo_t = prob_t.argmax(dim=1)
    if domains_s is None:
        groups_s = torch.ones(labels_s.shape[0], 1, dtype=dtype, device=labels_s.device)
    else:
        groups_s = _one_hot(domains_s, groups, dtype)
    return _Prepared(
        feat_s=feat_s.to(dtype),
        feat_t=feat_t.to(dtype),
        onehot_s=_one_hot(labels_s, num_classes, dtype),
        onehot_t=_one_hot(pseudo_t, num_classes, dtype),
        groups_s=groups_s,
        mask_s=mask_s,
        mask_t=mask_t,
        logits_s=zs,
        logits_t=zt,
    )


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` where ``den != 0``, else 0 (no NaN in values or gradients)."""
    nonzero = den != 0
    return torch.where(nonzero, num / torch.where(nonzero, den, torch.ones_like(den)), 0.0)


def _margin_mse(logits: Tensor, onehot: Tensor) -> Tensor:
    r""":math:`\frac1K \sum_k (z_k - 1[k = y] \max_{k'} z_{k'})^2` per row, up to a common scale.

    Only the normalised weights use it, and normalisation cancels any positive common factor, so the
    logits are divided by their largest magnitude first: no finite logits can overflow the squares.
    """
    logits = logits / logits.abs().amax().clamp_min(torch.finfo(logits.dtype).tiny)
    target = onehot * logits.amax(dim=1, keepdim=True)
    return ((logits - target) ** 2).mean(dim=1)


def _hardness(p: _Prepared) -> tuple[Tensor, Tensor]:
    """Normalised hardness weights: ``w_s`` (B_s,) per own group, ``w_t`` (G, B_t) per group."""
    present_t = (p.onehot_t.sum(dim=0) > 0).to(p.onehot_t.dtype)  # (K,)
    exists_s = ((p.onehot_s * present_t).sum(dim=1) > 0).to(p.mask_s.dtype)
    h_s = p.mask_s * exists_s * _margin_mse(p.logits_s, p.onehot_s)
    group_sum_s = p.groups_s.T @ h_s  # (G,)
    w_s = _safe_div(h_s, p.groups_s @ group_sum_s)

    present_s = ((p.groups_s.T @ p.onehot_s) > 0).to(p.onehot_s.dtype)  # (G, K)
    exists_t = ((present_s @ p.onehot_t.T) > 0).to(p.mask_t.dtype)  # (G, B_t)
    h_t = exists_t * (p.mask_t * _margin_mse(p.logits_t, p.onehot_t))
    w_t = _safe_div(h_t, h_t.sum(dim=1, keepdim=True))
    return w_s, w_t


def _group_mean(values: Tensor, groups_s: Tensor) -> Tensor:
    """Mean of per-group values over the groups that have a sample in the source batch."""
    present = (groups_s.sum(dim=0) > 0).to(values.dtype)
    return (values * present).sum() / present.sum().clamp_min(1.0)


def _sid(p: _Prepared, dist: Any, coef: Tensor, w_s: Tensor, w_t: Tensor, n_t: int) -> Tensor:
    """Per-group weighted MMD², one bandwidth per group over its sources and all targets."""
    gs = p.groups_s
    count = gs.sum(dim=0) + n_t  # (G,)
    total = ((dist.ss @ gs) * gs).sum(dim=0) + dist.tt.sum() + 2.0 * (gs.T @ dist.st.sum(dim=1))
    beta = bandwidth_from_sums(total, count, dist.floor)  # (G,)
    beta_s = (gs @ beta).clamp_min(dist.floor)  # (B_s,) bandwidth of each source's group
    same = gs @ gs.T  # (B_s, B_s)
    k_ss = kernel_sum(dist.ss / beta_s[:, None], coef)
    term_ss = gs.T @ (w_s * ((same * k_ss) @ w_s))  # (G,)
    k_tt = kernel_sum(dist.tt.unsqueeze(0) / beta[:, None, None], coef)  # (G, B_t, B_t)
    term_tt = torch.einsum("gi,gij,gj->g", w_t, k_tt, w_t)
    k_st = kernel_sum(dist.st / beta_s[:, None], coef)  # (B_s, B_t)
    term_st = gs.T @ (w_s * (k_st * (gs @ w_t)).sum(dim=1))
    return _group_mean(term_ss + term_tt - 2.0 * term_st, gs)


def _cid(p: _Prepared, dist: Any, coef: Tensor) -> Tensor:
    """Per-group cluster-level term: mean same-class MMD² minus mean cross-class MMD²."""
    n_s_batch, k = p.onehot_s.shape
    g = p.groups_s.shape[1]
    member = (p.groups_s[:, :, None] * p.onehot_s[:, None, :]).reshape(n_s_batch, g * k)
    s = member * p.mask_s[:, None]  # (B_s, G*K) masked source sets S_{g,k}
    t = p.onehot_t * p.mask_t[:, None]  # (B_t, K) masked target sets T_k'
    n_s = s.sum(dim=0)  # (G*K,)
    n_t = t.sum(dim=0)  # (K,)

    # Bandwidth of each (g, k, k') pair over S_{g,k} ∪ T_k'.
    ss_sum = ((dist.ss @ s) * s).sum(dim=0)  # (G*K,)
    tt_sum = ((dist.tt @ t) * t).sum(dim=0)  # (K,)
    st_sum = s.T @ dist.st @ t  # (G*K, K)
    total = ss_sum[:, None] + tt_sum[None, :] + 2.0 * st_sum
    count = n_s[:, None] + n_t[None, :]
    beta = bandwidth_from_sums(total, count, dist.floor)  # (G*K, K)

    # Kernel sums. A pair of samples only matters for the (g, k, k') sets that hold both, so each
    # pair is evaluated at the bandwidths of the sets it can belong to, never at all G*K*K.
    beta_s = (member @ beta).clamp_min(dist.floor)  # (B_s, K): beta[g_i, y_i, :]
    k_ss = kernel_sum(dist.ss[:, :, None] / beta_s[:, None, :], coef)  # (B_s, B_s, K)
    a_ss = s.T @ ((s @ s.T)[:, :, None] * k_ss).sum(dim=1)  # (G*K, K)

    beta_t = (beta @ p.onehot_t.T).T.clamp_min(dist.floor)  # (B_t, G*K): beta[:, :, ŷ_j]
    k_tt = kernel_sum(dist.tt[:, :, None] / beta_t[:, None, :], coef)  # (B_t, B_t, G*K)
    a_tt = (t.T @ ((t @ t.T)[:, :, None] * k_tt).sum(dim=1)).T  # (G*K, K)

    beta_st = (beta_s @ p.onehot_t.T).clamp_min(dist.floor)  # (B_s, B_t): beta[g_i, y_i, ŷ_j]
    k_st = kernel_sum(dist.st / beta_st, coef)
    a_st = s.T @ k_st @ t  # (G*K, K)

    ns = n_s[:, None]
    nt = n_t[None, :]
    mmd = _safe_div(a_ss, ns * ns) + _safe_div(a_tt, nt * nt) - 2.0 * _safe_div(a_st, ns * nt)
    valid = ((ns > 0) & (nt > 0)).to(mmd.dtype).reshape(g, k, k)
    mmd = mmd.reshape(g, k, k)
    eye = torch.eye(k, dtype=mmd.dtype, device=mmd.device)
    pull_n = (valid * eye).sum(dim=(1, 2))
    push_n = (valid * (1.0 - eye)).sum(dim=(1, 2))
    pull = (mmd * valid * eye).sum(dim=(1, 2)) / pull_n.clamp_min(1.0)
    push = (mmd * valid * (1.0 - eye)).sum(dim=(1, 2)) / push_n.clamp_min(1.0)
    both = (pull_n > 0) & (push_n > 0)
    per_group = torch.where(both, pull - push, torch.zeros_like(pull))
    return _group_mean(per_group, p.groups_s)


def _check_logits(logits_s: Any, labels_s: Any, logits_t: Any) -> None:
    """Source logits ``(B_s, K)`` with labels ``(B_s,)`` and target logits ``(B_t, K)``."""
    check_float(logits_s, "logits_s", ndim=2, axes="(B_s, K)")
    check_labels(labels_s, "labels_s", axes="(B_s,)")
    check_float(logits_t, "logits_t", ndim=2, axes="(B_t, K)")
    check_size(logits_s, "logits_s", 0, labels_s, "labels_s", 0, "Batch sizes (dim 0)")
    check_size(logits_s, "logits_s", 1, logits_t, "logits_t", 1, "Numbers of classes K (dim 1)")
    check_nonempty(logits_s, "logits_s")
    check_nonempty(logits_t, "logits_t")
    check_nonempty(logits_s, "logits_s", dim=1, what="class")


def _check_inputs(
    feat_s: Any,
    logits_s: Any,
    labels_s: Any,
    feat_t: Any,
    logits_t: Any,
    domains_s: Any,
    num_domains: Any,
    validate_args: Optional[bool],
) -> int:
    """The inputs of the inter-domain alignment; returns the number of source groups ``G``.

    Static checks always; label and domain ranges as :func:`resolve_validate_args` decides.
    """
    check_float(feat_s, "feat_s", ndim=2, axes="(B_s, D)")
    check_float(logits_s, "logits_s", ndim=2, axes="(B_s, K)")
    check_labels(labels_s, "labels_s", axes="(B_s,)")
    check_float(feat_t, "feat_t", ndim=2, axes="(B_t, D)")
    check_float(logits_t, "logits_t", ndim=2, axes="(B_t, K)")
    check_size(feat_s, "feat_s", 0, logits_s, "logits_s", 0, "Batch sizes (dim 0)")
    check_size(feat_s, "feat_s", 0, labels_s, "labels_s", 0, "Batch sizes (dim 0)")
    check_size(feat_t, "feat_t", 0, logits_t, "logits_t", 0, "Batch sizes (dim 0)")
    check_size(feat_s, "feat_s", 1, feat_t, "feat_t", 1, "Feature sizes D (dim 1)")
    check_size(logits_s, "logits_s", 1, logits_t, "logits_t", 1, "Numbers of classes K (dim 1)")
    check_nonempty(feat_s, "feat_s")
    check_nonempty(feat_t, "feat_t")
    check_nonempty(feat_s, "feat_s", dim=1, what="feature")
    check_nonempty(logits_s, "logits_s", dim=1, what="class")
    check_same_device(
        [
            ("feat_s", feat_s),
            ("logits_s", logits_s),
            ("labels_s", labels_s),
            ("feat_t", feat_t),
            ("logits_t", logits_t),
        ]
    )
    groups = check_domains(domains_s, num_domains, feat_s, "feat_s")
    if resolve_validate_args(validate_args, labels_s):
        check_label_range(labels_s, "labels_s", logits_s.shape[1])
        if domains_s is not None:
            check_index_range(domains_s, "domains_s", groups, "num_domains")
    return groups


def check_settings(
    threshold: Any, kernel_num: Any, kernel_mul: Any, cluster_weight: Any = 0.0
) -> tuple[float, int, float, Union[float, Tensor]]:
    """The alignment's settings, checked by its functions at every call and by
    :class:`~lacmfer.losses.DualLevelInterDomainAlignment` at construction.

    ``cluster_weight`` may be a 0-dim tensor (a ramped weight), which is not read.
    """
    threshold = check_probability(threshold, "threshold")
    kernel_num, kernel_mul = check_kernel_settings(kernel_num, kernel_mul)
    cluster_weight = check_weight(cluster_weight, "cluster_weight")
    return threshold, kernel_num, kernel_mul, cluster_weight


def _run(
    feat_s: Tensor,
    logits_s: Tensor,
    labels_s: Tensor,
    feat_t: Tensor,
    logits_t: Tensor,
    *,
    threshold: float,
    kernel_num: int,
    kernel_mul: float,
    domains_s: Optional[Tensor],
    num_domains: Optional[int],
    sync_dist: bool,
    process_group: Optional[Any],
    validate_args: Optional[bool],
    want_sid: bool,
    want_cid: bool,
    cluster_weight: Union[float, Tensor] = 0.0,
) -> tuple[Tensor, Tensor]:
    check_settings(threshold, kernel_num, kernel_mul, cluster_weight)
    groups = _check_inputs(
        feat_s, logits_s, labels_s, feat_t, logits_t, domains_s, num_domains, validate_args
    )
    if sync_dist:
        feat_s, logits_s, labels_s, domains_s = gather_batch(
            feat_s, logits_s, labels_s, domains_s, process_group=process_group
        )
        feat_t, logits_t = gather_batch(feat_t, logits_t, process_group=process_group)
    with no_autocast(feat_s.device):
        p = _prepare(feat_s, logits_s, labels_s, feat_t, logits_t, domains_s, groups, threshold)
        dist = pairwise_sq_distances(p.feat_s, p.feat_t)
        coef = kernel_coefficients(
            kernel_num, kernel_mul, dtype=p.feat_s.dtype, device=p.feat_s.device
        )
        zero = p.feat_s.new_zeros(())
        sid = zero
        cid = zero
        if want_sid:
            w_s, w_t = _hardness(p)
            sid = _sid(p, dist, coef, w_s, w_t, p.feat_t.shape[0])
        if want_cid:
            cid = _cid(p, dist, coef)
        return sid, cid


def hardness_weights(
    logits_s: Tensor,
    labels_s: Tensor,
    logits_t: Tensor,
    *,
    threshold: float = 0.4,
    domains_s: Optional[Tensor] = None,
    num_domains: Optional[int] = None,
    validate_args: Optional[bool] = None,
) -> tuple[Tensor, Tensor]:
    r"""Normalised hardness weights of the sample-level alignment ("hard-to-align samples first").

    .. math::

        h_s[i] = m_s[i]\; 1[\exists j: \hat y_t[j] = y_s[i]]\;
            \frac1K \sum_k \big(z_s[i,k] - 1[k = y_s[i]] \max_{k'} z_s[i,k']\big)^2,
        \qquad w_s = h_s / \textstyle\sum_i h_s[i]

    and symmetrically for the target with its pseudo-labels :math:`\hat y_t = \arg\max p_t` (ties to
    the lowest index) and "some source label equals :math:`\hat y_t[j]`". The masks are
    :math:`m[i] = 1[\max_k p[i,k] \ge \delta]`. A domain whose hardness sums to 0 gets all-zero
    weights. Yang et al., ACM MM 2024, §3.2.

    Note:
        The weights are detached (computed from ``logits.detach()``): they steer the alignment but
        receive no gradient.

    Args:
        logits_s: source logits.
        labels_s: source class indices in ``[0, K)``.
        logits_t: target logits.
        threshold: confidence threshold :math:`\delta \in (0, 1]`.
        domains_s: optional source-domain ids; with them, source weights are normalised within each
            domain and target weights are computed against each domain's labels.
        num_domains: number of source domains; required with ``domains_s``.
        validate_args: check label ranges (reads values). ``None``: on CPU only.

    Shape:
        - logits_s: :math:`(B_s, K)`; labels_s, domains_s: :math:`(B_s,)`; logits_t: :math:`(B_t, K)`.
        - Output: ``w_s`` :math:`(B_s,)` and ``w_t`` :math:`(B_t,)`; with ``domains_s``, ``w_t``
          is :math:`(G, B_t)`, one row per source domain.

    Returns:
        ``(w_s, w_t)``, float32 for half-precision logits, else the logits' dtype.

    Raises:
        TypeError: on non-float logits or non-integer labels.
        ValueError: on wrong dimensions, mismatched sizes or settings out of range.

    Example:
        >>> logits_s = torch.tensor([[4.0, 0.0], [0.0, 4.0], [3.0, 0.0]])
        >>> labels_s = torch.tensor([0, 1, 1])
        >>> logits_t = torch.tensor([[5.0, 1.0], [0.5, 2.0]])
        >>> w_s, w_t = hardness_weights(logits_s, labels_s, logits_t)
        >>> w_s  # the mislabelled-looking third sample is the hardest
        tensor([0., 0., 1.])
        >>> w_t
        tensor([0.8000, 0.2000])
    """
    check_probability(threshold, "threshold")
    _check_logits(logits_s, labels_s, logits_t)
    groups = check_domains(domains_s, num_domains, logits_s, "logits_s")
    if resolve_validate_args(validate_args, labels_s):
        check_label_range(labels_s, "labels_s", logits_s.shape[1])
        if domains_s is not None:
            check_index_range(domains_s, "domains_s", groups, "num_domains")
    feat_s = logits_s.new_zeros(logits_s.shape[0], 1)
    feat_t = logits_t.new_zeros(logits_t.shape[0], 1)
    with no_autocast(logits_s.device):
        p = _prepare(feat_s, logits_s, labels_s, feat_t, logits_t, domains_s, groups, threshold)
        w_s, w_t = _hardness(p)
    return (w_s, w_t if domains_s is not None else w_t[0])


def sample_level_alignment(
    feat_s: Tensor,
    logits_s: Tensor,
    labels_s: Tensor,
    feat_t: Tensor,
    logits_t: Tensor,
    *,
    threshold: float = 0.4,
    kernel_num: int = 5,
    kernel_mul: float = 2.0,
    domains_s: Optional[Tensor] = None,
    num_domains: Optional[int] = None,
    sync_dist: bool = False,
    process_group: Optional[Any] = None,
    validate_args: Optional[bool] = None,
) -> Tensor:
    r"""Sample-level inter-domain alignment (SID): hardness-weighted MMD² between the domains.

    .. math::

        L_{sid} = w_s^\top K_{ss} w_s + w_t^\top K_{tt} w_t - 2\, w_s^\top K_{st} w_t

    with the detached hardness weights of :func:`hardness_weights` (hard-to-align samples first) and
    the multi-kernel Gaussian of :func:`gaussian_kernel`, one bandwidth :math:`\beta` over all
    :math:`B_s + B_t` features. Gradients flow through both domains' features. Yang et al.,
    ACM MM 2024, §3.2.

    Args:
        feat_s: source features (one branch's, before its classifier).
        logits_s: source logits of the same branch.
        labels_s: source class indices in ``[0, K)`` (RAF-DB order for FER).
        feat_t: target features.
        logits_t: target logits.
        threshold: confidence threshold :math:`\delta \in (0, 1]` of the masks
            (``max softmax >= threshold``).
        kernel_num: number of Gaussians :math:`Q` (int >= 1).
        kernel_mul: ratio :math:`m` between consecutive bandwidths (> 0).
        domains_s: optional source-domain ids in ``[0, num_domains)``; when given, the terms are
            computed source-by-source against the target and averaged over the domains present in
            the batch (per-source mode). ``None`` pools all sources (the paper's setting).
        num_domains: number of source domains; required with ``domains_s``.
        sync_dist: compute over the global batch of all ranks (see :mod:`lacmfer.functional`);
            a no-op without an initialised multi-rank process group.
        process_group: the process group for ``sync_dist`` (default: the world).
        validate_args: check label and domain ranges (reads values). ``None``: on CPU only.

    Shape:
        - feat_s: :math:`(B_s, D)`; logits_s: :math:`(B_s, K)`; labels_s, domains_s: :math:`(B_s,)`.
        - feat_t: :math:`(B_t, D)`; logits_t: :math:`(B_t, K)`.
        - Output: scalar (float32 for half-precision inputs, else the input dtype).

    Returns:
        The loss, a scalar tensor.

    Raises:
        TypeError: if features or logits are not floating point, or labels/domain ids are not
            integer tensors, or a setting has the wrong type.
        ValueError: on wrong dimensions, mismatched batch, feature or class sizes, empty batches,
            labels outside ``[0, K)``, ``domains_s`` without ``num_domains``, or settings out of range.

    Note:
        The hardness weights, the masks, the pseudo-labels and the bandwidth are detached.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> feat_s, feat_t = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
        >>> logits = 3 * torch.eye(3).repeat(2, 1) + 1  # confident, classes 0, 1, 2, 0, 1, 2
        >>> labels_s = torch.tensor([0, 1, 2, 0, 1, 2])
        >>> same = sample_level_alignment(feat_s, logits, labels_s, feat_s, logits)
        >>> shifted = sample_level_alignment(feat_s, logits, labels_s, feat_s + 2, logits)
        >>> float(same) < 1e-6 < float(shifted)
        True
    """
    sid, _ = _run(
        feat_s, logits_s, labels_s, feat_t, logits_t,
        threshold=threshold, kernel_num=kernel_num, kernel_mul=kernel_mul, domains_s=domains_s,
        num_domains=num_domains, sync_dist=sync_dist, process_group=process_group,
        validate_args=validate_args, want_sid=True, want_cid=False,
    )  # fmt: skip
    return sid


def cluster_level_alignment(
    feat_s: Tensor,
    logits_s: Tensor,
    labels_s: Tensor,
    feat_t: Tensor,
    logits_t: Tensor,
    *,
    threshold: float = 0.4,
    kernel_num: int = 5,
    kernel_mul: float = 2.0,
    domains_s: Optional[Tensor] = None,
    num_domains: Optional[int] = None,
    sync_dist: bool = False,
    process_group: Optional[Any] = None,
    validate_args: Optional[bool] = None,
) -> Tensor:
    r"""Cluster-level inter-domain alignment (CID): pull same-class clusters, push other classes.

    With :math:`S_k` the confident source features of class :math:`k` and :math:`T_{k'}` the
    confident target features with pseudo-label :math:`k'`, over the ordered pairs whose two sets are
    non-empty,

    .. math::

        L_{cid} = \operatorname*{mean}_{k} \mathrm{MMD}^2(S_k, T_k)
            - \operatorname*{mean}_{k \ne k'} \mathrm{MMD}^2(S_k, T_{k'}),

    each biased MMD² with its own bandwidth over :math:`S_k \cup T_{k'}`; :math:`L_{cid} = 0` when
    either set of pairs is empty. Gradients flow through both domains' features. Yang et al.,
    ACM MM 2024, §3.2.

    Args:
        feat_s: source features (one branch's, before its classifier).
        logits_s: source logits of the same branch.
        labels_s: source class indices in ``[0, K)`` (RAF-DB order for FER).
        feat_t: target features.
        logits_t: target logits.
        threshold: confidence threshold :math:`\delta \in (0, 1]` of the masks
            (``max softmax >= threshold``).
        kernel_num: number of Gaussians :math:`Q` (int >= 1).
        kernel_mul: ratio :math:`m` between consecutive bandwidths (> 0).
        domains_s: optional source-domain ids in ``[0, num_domains)``; when given, the terms are
            computed source-by-source against the target and averaged over the domains present in
            the batch (per-source mode). ``None`` pools all sources (the paper's setting).
        num_domains: number of source domains; required with ``domains_s``.
        sync_dist: compute over the global batch of all ranks (see :mod:`lacmfer.functional`);
            a no-op without an initialised multi-rank process group.
        process_group: the process group for ``sync_dist`` (default: the world).
        validate_args: check label and domain ranges (reads values). ``None``: on CPU only.

    Shape:
        - feat_s: :math:`(B_s, D)`; logits_s: :math:`(B_s, K)`; labels_s, domains_s: :math:`(B_s,)`.
        - feat_t: :math:`(B_t, D)`; logits_t: :math:`(B_t, K)`.
        - Output: scalar (float32 for half-precision inputs, else the input dtype).

    Returns:
        The loss, a scalar tensor.

    Raises:
        TypeError: if features or logits are not floating point, or labels/domain ids are not
            integer tensors, or a setting has the wrong type.
        ValueError: on wrong dimensions, mismatched batch, feature or class sizes, empty batches,
            labels outside ``[0, K)``, ``domains_s`` without ``num_domains``, or settings out of range.

    Note:
        The masks, the pseudo-labels and the bandwidths are detached.

    Example:
        >>> feat = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
        >>> logits = torch.tensor([[4.0, 0.0], [4.0, 0.0], [0.0, 4.0], [0.0, 4.0]])
        >>> labels_s = torch.tensor([0, 0, 1, 1])
        >>> # Same-class clusters coincide, different classes are far apart: strongly negative.
        >>> float(cluster_level_alignment(feat, logits, labels_s, feat, logits)) < -1.0
        True
    """
    _, cid = _run(
        feat_s, logits_s, labels_s, feat_t, logits_t,
        threshold=threshold, kernel_num=kernel_num, kernel_mul=kernel_mul, domains_s=domains_s,
        num_domains=num_domains, sync_dist=sync_dist, process_group=process_group,
        validate_args=validate_args, want_sid=False, want_cid=True,
    )  # fmt: skip
    return cid


def dual_level_alignment(
    feat_s: Tensor,
    logits_s: Tensor,
    labels_s: Tensor,
    feat_t: Tensor,
    logits_t: Tensor,
    *,
    threshold: float = 0.4,
    kernel_num: int = 5,
    kernel_mul: float = 2.0,
    cluster_weight: Union[float, Tensor] = 0.02,
    domains_s: Optional[Tensor] = None,
    num_domains: Optional[int] = None,
    sync_dist: bool = False,
    process_group: Optional[Any] = None,
    validate_args: Optional[bool] = None,
    return_terms: bool = False,
) -> Any:
    r"""Dual-level inter-domain alignment of one branch: :math:`L_{sid} + \lambda_{cid} L_{cid}`.

    The sum of :func:`sample_level_alignment` and ``cluster_weight`` times
    :func:`cluster_level_alignment`, sharing one distance computation. LA-CMFER runs it once per
    branch (global and local) on that branch's features and logits. Yang et al., ACM MM 2024, §3.2.

    Args:
        feat_s: source features (one branch's, before its classifier).
        logits_s: source logits of the same branch.
        labels_s: source class indices in ``[0, K)`` (RAF-DB order for FER).
        feat_t: target features.
        logits_t: target logits.
        threshold: confidence threshold :math:`\delta \in (0, 1]` of the masks
            (``max softmax >= threshold``).
        kernel_num: number of Gaussians :math:`Q` (int >= 1).
        kernel_mul: ratio :math:`m` between consecutive bandwidths (> 0).
        domains_s: optional source-domain ids in ``[0, num_domains)``; when given, the terms are
            computed source-by-source against the target and averaged over the domains present in
            the batch (per-source mode). ``None`` pools all sources (the paper's setting).
        num_domains: number of source domains; required with ``domains_s``.
        sync_dist: compute over the global batch of all ranks (see :mod:`lacmfer.functional`);
            a no-op without an initialised multi-rank process group.
        process_group: the process group for ``sync_dist`` (default: the world).
        validate_args: check label and domain ranges (reads values). ``None``: on CPU only.
        cluster_weight: :math:`\lambda_{cid} \ge 0` (a float, or a 0-dim tensor, e.g.
            a ramped weight).
        return_terms: return :class:`AlignmentTerms` ``(loss, sid, cid)`` instead of
            the scalar.

    Shape:
        - feat_s: :math:`(B_s, D)`; logits_s: :math:`(B_s, K)`; labels_s, domains_s: :math:`(B_s,)`.
        - feat_t: :math:`(B_t, D)`; logits_t: :math:`(B_t, K)`.
        - Output: scalar (float32 for half-precision inputs, else the input dtype), or
          :class:`AlignmentTerms` of three scalars with ``return_terms=True``.

    Returns:
        The loss, a scalar tensor; with ``return_terms=True``, :class:`AlignmentTerms`
        ``(loss, sid, cid)``, three scalar tensors.

    Raises:
        TypeError: if features or logits are not floating point, or labels/domain ids are not
            integer tensors, or a setting has the wrong type.
        ValueError: on wrong dimensions, mismatched batch, feature or class sizes, empty batches,
            labels outside ``[0, K)``, ``domains_s`` without ``num_domains``, or settings out of range.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> feat_s, feat_t = torch.randn(8, 4, generator=g), torch.randn(6, 4, generator=g) + 1
        >>> logits_s, logits_t = 3 * torch.randn(8, 3, generator=g), 3 * torch.randn(6, 3, generator=g)
        >>> labels_s = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
        >>> terms = dual_level_alignment(feat_s, logits_s, labels_s, feat_t, logits_t,
        ...                              return_terms=True)
        >>> bool(torch.isclose(terms.loss, terms.sid + 0.02 * terms.cid))
        True
    """
    sid, cid = _run(
        feat_s, logits_s, labels_s, feat_t, logits_t,
        threshold=threshold, kernel_num=kernel_num, kernel_mul=kernel_mul, domains_s=domains_s,
        num_domains=num_domains, sync_dist=sync_dist, process_group=process_group,
        validate_args=validate_args, want_sid=True, want_cid=True, cluster_weight=cluster_weight,
    )  # fmt: skip
    loss = sid + cluster_weight * cid
    if return_terms:
        return AlignmentTerms(loss, sid, cid)
    return loss
