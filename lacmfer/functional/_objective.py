r"""The whole LA-CMFER training objective in one call (``docs/method.rst``, "Objective")."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Protocol, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import (
    check_bool,
    check_choice,
    check_float,
    check_kernel_settings,
    check_label_range,
    check_labels,
    check_optional_positive_int,
    check_probability,
    check_real,
    check_size,
    check_weight,
    require_domains,
    resolve_validate_args,
)
from .._distributed import all_reduce_sum
from .._precision import compute_dtype, no_autocast
from ._alignment import dual_level_alignment, hardness_weights
from ._consistency import multi_view_clustering_consistency
from ._pseudo_label import pseudo_label_refinement, refine_pseudo_labels

__all__ = ["CONSISTENCY_KINDS", "LACMFERTerms", "TwoViewOutput", "lacmfer_loss"]

#: Choices of the multi-view consistency term: the paper's multi-view clustering consistency
#: (``"mcc"``), the per-sample discrepancies of the paper's ablation (``"l1"``, ``"mse"``, symmetric
#: ``"kl"``), or ``"none"`` (the term is dropped).
CONSISTENCY_KINDS = ("mcc", "l1", "mse", "kl", "none")


class TwoViewOutput(Protocol):
    """What the objective reads from a network's output on one batch.

    Anything with these four attributes works: :class:`~lacmfer.modules.LACMFEROutput`, or a
    :func:`~collections.namedtuple` of your own two-branch network's outputs.
    """

    @property
    def feat_g(self) -> Tensor: ...  # (B, D_G), global-branch features
    @property
    def logits_g(self) -> Tensor: ...  # (B, K), global-head logits
    @property
    def feat_l(self) -> Tensor: ...  # (B, D_L), local-branch features
    @property
    def logits_l(self) -> Tensor: ...  # (B, K), local-head logits


class LACMFERTerms(NamedTuple):
    r"""What :func:`lacmfer_loss` and :class:`~lacmfer.losses.LACMFERLoss` return.

    The terms keep their graphs (so a caller can, e.g., take the gradient of one term alone) and
    are the *unweighted* values; ``loss`` is the weighted total. Log them with ``.detach()``.

    Attributes:
        loss: the objective, the value to call ``backward()`` on.
        ce: :math:`\mathrm{CE}_{ls}(z_G^s, y) + \mathrm{CE}_{ls}(z_L^s, y)`.
        align: :math:`\sum_b (L_{sid}^b + \lambda_{cid} L_{cid}^b)` (0 when both are off).
        sid: :math:`\sum_b L_{sid}^b` (0 when off).
        cid: :math:`\sum_b L_{cid}^b` (0 when off).
        consistency: the multi-view consistency term (0 when off).
        voting: :math:`L_{mvv}` (0 when off).
        adaptation_weight: the factor on all adaptation terms (1 without a warm-up), detached.
        kept_fraction: fraction of the target batch kept by multi-view voting (global batch with
            ``sync_dist``), detached; computed even when the voting loss is off.
        masked_s: ``(2,)`` int64, source samples whose confidence reaches the alignment threshold,
            in the global and the local branch (this rank's batch), detached.
        masked_t: ``(2,)`` int64, the same for the target batch.
        effective_s: ``(2,)``, effective number of source samples the sample-level alignment's
            normalised hardness weights :math:`w_s` rest on, :math:`(\sum_i w_i)^2 / \sum_i w_i^2`
            (0 when every weight is 0), in the global and the local branch (this rank's batch;
            summed over the sources with ``num_domains``), detached.
        effective_t: ``(2,)``, the same for the target weights :math:`w_t` (averaged over the
            sources' rows with ``num_domains``).
    """

    loss: Tensor
    ce: Tensor
    align: Tensor
    sid: Tensor
    cid: Tensor
    consistency: Tensor
    voting: Tensor
    adaptation_weight: Tensor
    kept_fraction: Tensor
    masked_s: Tensor
    masked_t: Tensor
    effective_s: Tensor
    effective_t: Tensor


def _views(out: Any, name: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    missing = [a for a in ("feat_g", "logits_g", "feat_l", "logits_l") if not hasattr(out, a)]
    if missing:
        raise TypeError(
            f"`{name}` must have the attributes feat_g, logits_g, feat_l and logits_l (e.g. a "
            f"LACMFEROutput); {type(out).__name__} lacks {', '.join(missing)}"
        )
    views = (out.feat_g, out.logits_g, out.feat_l, out.logits_l)
    for attr, value in zip(("feat_g", "logits_g", "feat_l", "logits_l"), views):
        check_float(value, f"{name}.{attr}", ndim=2, axes="(B, D)" if "feat" in attr else "(B, K)")
    for attr, value in zip(("feat_g", "feat_l", "logits_l"), views[0::2] + views[3:]):
        check_size(value, f"{name}.{attr}", 0, out.logits_g, f"{name}.logits_g", 0, "Batch sizes")
    check_size(out.logits_l, f"{name}.logits_l", 1, out.logits_g, f"{name}.logits_g", 1,
               "Class counts (dim 1)")  # fmt: skip
    return views


def _check_domains_match(out_s: Any, out_t: Any) -> None:
    """Source and target views share the feature and class sizes of each branch."""
    for attr in ("feat_g", "logits_g", "feat_l", "logits_l"):
        a, b = getattr(out_s, attr), getattr(out_t, attr)
        what = "Feature sizes (dim 1)" if "feat" in attr else "Class counts (dim 1)"
        check_size(a, f"out_s.{attr}", 1, b, f"out_t.{attr}", 1, what)


def _view_discrepancy(logits_g: Tensor, logits_l: Tensor, kind: str, from_logits: bool) -> Tensor:
    """Per-sample L1 / squared-L2 / symmetric-KL discrepancy of the two views, batch mean."""
    dtype = compute_dtype(logits_g, logits_l)
    zg, zl = logits_g.to(dtype), logits_l.to(dtype)
    if kind == "kl":
        log_g, log_l = zg.log_softmax(1), zl.log_softmax(1)
        kl_gl = (log_g.exp() * (log_g - log_l)).sum(1)
        kl_lg = (log_l.exp() * (log_l - log_g)).sum(1)
        return ((kl_gl + kl_lg) / 2).mean()
    a, b = (zg, zl) if from_logits else (zg.softmax(1), zl.softmax(1))
    if kind == "l1":
        return (a - b).abs().sum(1).mean()
    return (a - b).square().sum(1).mean()


def _effective(weights: Tensor) -> Tensor:
    """``(Σw)² / Σw²`` over the last axis (0 for an all-zero row): Kish's effective sample size."""
    squares = weights.square().sum(-1)
    total = weights.sum(-1)
    return torch.where(squares > 0, total.square() / squares.clamp_min(1e-30), squares)


def _confident(logits: Tensor, threshold: float) -> Tensor:
    with torch.no_grad():
        prob = torch.softmax(logits.detach().to(compute_dtype(logits)), dim=1)
        return (prob.amax(dim=1) >= threshold).sum()


def check_settings(
    *,
    label_smoothing: Any,
    align_weight: Any,
    cid_weight: Any,
    consistency_weight: Any,
    voting_weight: Any,
    align_threshold: Any,
    pseudo_threshold: Any,
    kernel_num: Any,
    kernel_mul: Any,
    sid: Any,
    cid: Any,
    consistency: Any,
    consistency_from_logits: Any,
    voting: Any,
    num_domains: Any,
    adaptation_weight: Any = 1.0,
) -> dict[str, Any]:
    """The objective's settings, checked by :func:`lacmfer_loss` at every call and by
    :class:`~lacmfer.losses.LACMFERLoss` at construction; returns them checked (numbers as floats).

    ``cid_weight`` and ``adaptation_weight`` may be 0-dim tensors (schedules), which are not read.
    """
    label_smoothing = check_real(label_smoothing, "label_smoothing", minimum=0.0)
    if label_smoothing > 1.0:
        raise ValueError(f"`label_smoothing` must lie in [0, 1], got {label_smoothing}")
    weights = {
        name: check_weight(value, name)
        for name, value in (
            ("align_weight", align_weight),
            ("cid_weight", cid_weight),
            ("consistency_weight", consistency_weight),
            ("voting_weight", voting_weight),
            ("adaptation_weight", adaptation_weight),
        )
    }
    kernel_num, kernel_mul = check_kernel_settings(kernel_num, kernel_mul)
    flags = {
        name: check_bool(value, name)
        for name, value in (
            ("sid", sid),
            ("cid", cid),
            ("consistency_from_logits", consistency_from_logits),
            ("voting", voting),
        )
    }
    check_choice(consistency, "consistency", CONSISTENCY_KINDS)
    if consistency == "kl" and consistency_from_logits:
        raise ValueError(
            "`consistency_from_logits` applies to 'mcc', 'l1' and 'mse'; 'kl' compares probability "
            "distributions"
        )
    return {
        "label_smoothing": label_smoothing,
        **weights,
        "align_threshold": check_probability(align_threshold, "align_threshold"),
        "pseudo_threshold": check_probability(pseudo_threshold, "pseudo_threshold"),
        "kernel_num": kernel_num,
        "kernel_mul": kernel_mul,
        **flags,
        "consistency": consistency,
        "num_domains": check_optional_positive_int(num_domains, "num_domains"),
    }


def lacmfer_loss(
    out_s: TwoViewOutput,
    labels_s: Tensor,
    out_t: TwoViewOutput,
    domains_s: Optional[Tensor] = None,
    *,
    label_smoothing: float = 0.1,
    align_weight: float = 0.4,
    cid_weight: Union[float, Tensor] = 0.02,
    consistency_weight: float = 0.5,
    voting_weight: float = 0.1,
    align_threshold: float = 0.4,
    pseudo_threshold: float = 0.9,
    kernel_num: int = 5,
    kernel_mul: float = 2.0,
    sid: bool = True,
    cid: bool = True,
    consistency: str = "mcc",
    consistency_from_logits: bool = False,
    voting: bool = True,
    num_domains: Optional[int] = None,
    adaptation_weight: Union[float, Tensor] = 1.0,
    sync_dist: bool = False,
    process_group: Optional[Any] = None,
    validate_args: Optional[bool] = None,
) -> LACMFERTerms:
    r"""The LA-CMFER objective on one source and one target batch.

    .. math::

        L = \mathrm{CE}_{ls}(z_G^s, y) + \mathrm{CE}_{ls}(z_L^s, y)
            + w\,\Big[\alpha \sum_{b \in \{G, L\}} \big(L_{sid}^b + \lambda_{cid} L_{cid}^b\big)
            + \beta\, L_{mcc} + \gamma\, L_{mvv}\Big]

    with the paper's defaults :math:`\alpha = 0.4` (``align_weight``), :math:`\lambda_{cid} = 0.02`
    (``cid_weight``), :math:`\beta = 0.5` (``consistency_weight``), :math:`\gamma = 0.1`
    (``voting_weight``), label smoothing 0.1, and :math:`w = 1` (``adaptation_weight``, a warm-up
    factor). The terms are :func:`dual_level_alignment` per branch,
    :func:`multi_view_clustering_consistency` and :func:`pseudo_label_refinement`; see
    ``docs/method.rst`` for the equations. Yang et al., "Learning with Alignments: Tackling the
    Inter- and Intra-domain Shifts for Cross-multidomain Facial Expression Recognition", ACM MM
    2024, §3.4. Every term can be switched off (the paper's ablations), and the consistency term
    can be replaced by a per-sample L1, squared-L2 or symmetric-KL discrepancy of the two views.

    Source and target batches must come from **separate** forward calls of the network, so that
    BatchNorm normalises each domain with its own statistics. No target label is taken: the target
    side is unlabelled by construction.

    Args:
        out_s: the network's output on the source batch: anything with ``feat_g``, ``logits_g``,
            ``feat_l``, ``logits_l`` (:class:`~lacmfer.modules.LACMFEROutput`, a namedtuple).
        labels_s: source labels.
        out_t: the network's output on the target batch.
        domains_s: source-domain ids, for the per-source alignment (``num_domains`` set); ignored
            when the sources are pooled.
        label_smoothing: label smoothing of the source cross-entropy, in ``[0, 1]``.
        align_weight: :math:`\alpha \ge 0`, weight of the inter-domain alignment.
        cid_weight: :math:`\lambda_{cid} \ge 0`, cluster-level weight inside the alignment (a float,
            or a 0-dim tensor for a ramped weight).
        consistency_weight: :math:`\beta \ge 0`.
        voting_weight: :math:`\gamma \ge 0`.
        align_threshold: confidence threshold :math:`\delta \in (0, 1]` of the alignment masks.
        pseudo_threshold: confidence threshold :math:`\tau \in (0, 1]` of the voting (strict
            ``>``: 1 keeps no sample).
        kernel_num: number of Gaussian kernels of the MMD.
        kernel_mul: bandwidth ratio of the kernels.
        sid: keep the sample-level alignment :math:`L_{sid}`.
        cid: keep the cluster-level alignment :math:`L_{cid}`.
        consistency: one of :data:`CONSISTENCY_KINDS`: ``"mcc"`` (the paper), ``"l1"``, ``"mse"``,
            ``"kl"`` (per-sample discrepancies between the views, batch mean) or ``"none"``.
        consistency_from_logits: feed raw logits instead of probabilities to the consistency term
            (what the authors' code does for MCC); not with ``"kl"``.
        voting: keep the multi-view voting loss :math:`L_{mvv}`.
        num_domains: ``None`` pools the sources (the paper); an int aligns source by source
            against the target and averages (needs ``domains_s``).
        adaptation_weight: :math:`w`, the factor on every adaptation term (a float, or a 0-dim
            tensor from a schedule such as :func:`linear_warmup`).
        sync_dist: compute the batch statistics of the alignment, consistency and voting terms over
            the global batch of all ranks (see :mod:`lacmfer.functional`); the cross-entropy stays
            per rank (DistributedDataParallel averages its gradients).
        process_group: the process group for ``sync_dist`` (default: the world).
        validate_args: check label and domain ranges (reads values). ``None``: on CPU only.

    Shape:
        - out_s: ``feat_g`` :math:`(B_s, D_G)`, ``logits_g`` :math:`(B_s, K)`, ``feat_l``
          :math:`(B_s, D_L)`, ``logits_l`` :math:`(B_s, K)`; labels_s, domains_s: :math:`(B_s,)`.
        - out_t: the same with :math:`B_t`.
        - Output: :class:`LACMFERTerms` of scalars (``masked_s``/``masked_t``: :math:`(2,)`).

    Returns:
        :class:`LACMFERTerms`: ``loss`` and every term (with graphs), and detached diagnostics.

    Raises:
        TypeError: if an output lacks an attribute, or for wrong dtypes or setting types.
        ValueError: for mismatched shapes, out-of-range labels or settings.

    Example:
        >>> from collections import namedtuple
        >>> Out = namedtuple("Out", "feat_g logits_g feat_l logits_l")
        >>> g = torch.Generator().manual_seed(0)
        >>> def batch(n):
        ...     return Out(*(torch.randn(n, d, generator=g) for d in (8, 3, 8, 3)))
        >>> terms = lacmfer_loss(batch(6), torch.tensor([0, 1, 2, 0, 1, 2]), batch(5))
        >>> round(float(terms.loss), 4), round(float(terms.ce), 4)
        (4.8563, 2.8374)
        >>> source_only = lacmfer_loss(batch(6), torch.tensor([0, 1, 2, 0, 1, 2]), batch(5),
        ...                            sid=False, cid=False, consistency="none", voting=False)
        >>> bool(source_only.loss == source_only.ce)
        True
    """
    feat_gs, logits_gs, feat_ls, logits_ls = _views(out_s, "out_s")
    feat_gt, logits_gt, feat_lt, logits_lt = _views(out_t, "out_t")
    _check_domains_match(out_s, out_t)
    check_labels(labels_s, "labels_s", axes="(B_s,)")
    check_size(labels_s, "labels_s", 0, logits_gs, "out_s.logits_g", 0, "Batch sizes (dim 0)")
    settings = check_settings(
        label_smoothing=label_smoothing, align_weight=align_weight, cid_weight=cid_weight,
        consistency_weight=consistency_weight, voting_weight=voting_weight,
        align_threshold=align_threshold, pseudo_threshold=pseudo_threshold, kernel_num=kernel_num,
        kernel_mul=kernel_mul, sid=sid, cid=cid, consistency=consistency,
        consistency_from_logits=consistency_from_logits, voting=voting, num_domains=num_domains,
        adaptation_weight=adaptation_weight,
    )  # fmt: skip
    label_smoothing = settings["label_smoothing"]
    align_threshold = settings["align_threshold"]
    pseudo_threshold = settings["pseudo_threshold"]
    require_domains(domains_s, num_domains)
    if resolve_validate_args(validate_args, labels_s):
        check_label_range(labels_s, "labels_s", logits_gs.shape[1])

    dtype, targets = compute_dtype(logits_gs, logits_ls), labels_s.long()  # float32 for half inputs
    ce = F.cross_entropy(
        logits_gs.to(dtype), targets, label_smoothing=label_smoothing
    ) + F.cross_entropy(logits_ls.to(dtype), targets, label_smoothing=label_smoothing)
    zero = ce.new_zeros(())
    sid_sum, cid_sum, align = zero, zero, zero
    if sid or cid:
        for f_s, z_s, f_t, z_t in ((feat_gs, logits_gs, feat_gt, logits_gt),
                                   (feat_ls, logits_ls, feat_lt, logits_lt)):  # fmt: skip
            terms = dual_level_alignment(
                f_s, z_s, labels_s, f_t, z_t, threshold=align_threshold, kernel_num=kernel_num,
                kernel_mul=kernel_mul, cluster_weight=cid_weight,
                domains_s=None if num_domains is None else domains_s,
                num_domains=num_domains, sync_dist=sync_dist, process_group=process_group,
                validate_args=validate_args, return_terms=True,
            )  # fmt: skip
            if sid:
                sid_sum = sid_sum + terms.sid
            if cid:
                cid_sum = cid_sum + terms.cid
        align = sid_sum + cid_weight * cid_sum

    consistency_term = zero
    if consistency == "mcc":
        consistency_term = multi_view_clustering_consistency(
            logits_gt, logits_lt, from_logits=consistency_from_logits, sync_dist=sync_dist,
            process_group=process_group,
        )  # fmt: skip
    elif consistency != "none":
        with no_autocast(logits_gt.device):
            consistency_term = _view_discrepancy(
                logits_gt, logits_lt, consistency, consistency_from_logits
            )

    if voting:
        refined = pseudo_label_refinement(
            logits_gt, logits_lt, threshold=pseudo_threshold, sync_dist=sync_dist,
            process_group=process_group,
        )  # fmt: skip
        voting_term, kept_fraction = refined.loss, refined.kept_fraction
    else:
        voting_term = zero
        with torch.no_grad():
            _, mask = refine_pseudo_labels(logits_gt, logits_lt, threshold=pseudo_threshold)
            counts = torch.stack([mask.sum().to(zero.dtype), zero.new_tensor(mask.shape[0])])
            if sync_dist:  # the fraction of the global batch, as with the voting loss on
                counts = all_reduce_sum(counts, process_group)
            kept_fraction = counts[0] / counts[1]

    adaptation = (
        align_weight * align + consistency_weight * consistency_term + voting_weight * voting_term
    )
    if isinstance(adaptation_weight, Tensor):
        factor = adaptation_weight.to(ce.device, ce.dtype)
        loss = ce + factor * adaptation
    else:
        factor = ce.new_tensor(float(adaptation_weight))
        loss = ce + adaptation if adaptation_weight == 1.0 else ce + adaptation_weight * adaptation
    masked_s = torch.stack(
        [_confident(logits_gs, align_threshold), _confident(logits_ls, align_threshold)]
    )
    masked_t = torch.stack(
        [_confident(logits_gt, align_threshold), _confident(logits_lt, align_threshold)]
    )
    with torch.no_grad():
        effective = []
        for z_s, z_t in ((logits_gs, logits_gt), (logits_ls, logits_lt)):
            w_s, w_t = hardness_weights(
                z_s.detach(), labels_s, z_t.detach(), threshold=align_threshold,
                domains_s=None if num_domains is None else domains_s, num_domains=num_domains,
                validate_args=False,
            )  # fmt: skip
            if num_domains is not None:  # per-source: w_s sums to 1 within each source
                one_hot = F.one_hot(domains_s.long(), num_domains).to(w_s.dtype)  # type: ignore[union-attr]
                eff_s = _effective((w_s[:, None] * one_hot).T).sum()
            else:
                eff_s = _effective(w_s)
            effective.append(torch.stack([eff_s, _effective(w_t).mean()]))
        effective_st = torch.stack(effective).T.to(ce.dtype)
    return LACMFERTerms(
        loss=loss,
        ce=ce,
        align=align,
        sid=sid_sum,
        cid=cid_sum,
        consistency=consistency_term,
        voting=voting_term,
        adaptation_weight=factor.detach(),
        kept_fraction=kept_fraction.detach(),
        masked_s=masked_s,
        masked_t=masked_t,
        effective_s=effective_st[0],
        effective_t=effective_st[1],
    )
