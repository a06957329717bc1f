"""The dual-level inter-domain alignment loss module."""

from __future__ import annotations

from typing import Any, Optional, Union

import torch
from torch import Tensor

from .._checks import (
    check_choice,
    check_optional_bool,
    check_optional_positive_int,
    check_positive_int,
    require_domains,
)
from .._distributed import SyncDistModule
from ..functional import dual_level_alignment
from ..functional._alignment import check_settings
from ._base import CLUSTER_RAMPS, StepCounter, schedule_dtype

__all__ = ["DualLevelInterDomainAlignment"]


class DualLevelInterDomainAlignment(SyncDistModule, StepCounter):
    r"""Dual-level inter-domain alignment of one branch, :math:`L_{sid} + \lambda_{cid} L_{cid}`.

    The module form of :func:`lacmfer.functional.dual_level_alignment`; see it (and
    :func:`~lacmfer.functional.sample_level_alignment`,
    :func:`~lacmfer.functional.cluster_level_alignment`) for the maths. The module holds the
    settings, the optional ramp of the cluster-level weight and its progress (a buffer, saved in
    ``state_dict``); its ``forward`` is one call of the function. LA-CMFER uses one instance per
    branch (global and local).

    The "gradual" cluster-level alignment of the paper is available as ``cluster_ramp="dann_sigmoid"``:
    the weight becomes ``cluster_weight * (2 / (1 + exp(-10 p)) - 1)`` with progress
    ``p = min(num_steps / ramp_steps, 1)``; call :meth:`step` once per training iteration. The
    default ``"none"`` keeps the weight constant, as the authors' code does.

    Args:
        threshold: confidence threshold :math:`\delta \in (0, 1]` of the masks.
        kernel_num: number of Gaussians :math:`Q` (int >= 1).
        kernel_mul: ratio :math:`m` between consecutive bandwidths (> 0).
        cluster_weight: :math:`\lambda_{cid} \ge 0`.
        cluster_ramp: ``"none"`` or ``"dann_sigmoid"``.
        ramp_steps: number of :meth:`step` calls over which the ramp reaches its end (int >= 1).
        num_domains: ``None`` pools all sources (the paper); an int switches to per-source mode,
            where ``forward`` needs ``domains_s`` and the terms are averaged over the source domains.
        sync_dist: compute over the global batch of all ranks (see :mod:`lacmfer.functional`).
        process_group: the process group for ``sync_dist`` (default: the world).
        validate_args: check label/domain ranges (reads values). ``None``: on CPU only.

    Shape:
        - feat_s: :math:`(B_s, D)`; logits_s: :math:`(B_s, K)`; labels_s, domains_s: :math:`(B_s,)`.
        - feat_t: :math:`(B_t, D)`; logits_t: :math:`(B_t, K)`.
        - Output: scalar, or :class:`~lacmfer.functional.AlignmentTerms` with ``return_terms=True``.

    Raises:
        TypeError: for a setting of the wrong type (here) or a bad input dtype (in ``forward``).
        ValueError: for a setting out of range (here) or bad input shapes (in ``forward``); each
            message names the argument.

    Example:
        >>> import torch
        >>> loss_fn = DualLevelInterDomainAlignment(cluster_ramp="dann_sigmoid", ramp_steps=100)
        >>> g = torch.Generator().manual_seed(0)
        >>> feat_s, feat_t = torch.randn(8, 4, generator=g), torch.randn(6, 4, generator=g)
        >>> logits_s, logits_t = torch.randn(8, 3, generator=g), torch.randn(6, 3, generator=g)
        >>> labels_s = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
        >>> loss = loss_fn(feat_s, logits_s, labels_s, feat_t, logits_t)
        >>> loss_fn.current_cluster_weight()  # progress 0: no cluster-level term yet
        tensor(0.)
        >>> loss_fn.step(50)
        >>> loss_fn.current_cluster_weight()
        tensor(0.0197)
    """

    num_steps: Tensor

    def __init__(
        self,
        *,
        threshold: float = 0.4,
        kernel_num: int = 5,
        kernel_mul: float = 2.0,
        cluster_weight: float = 0.02,
        cluster_ramp: str = "none",
        ramp_steps: int = 20000,
        num_domains: Optional[int] = None,
        sync_dist: bool = False,
        process_group: Optional[Any] = None,
        validate_args: Optional[bool] = None,
    ) -> None:
        super().__init__(sync_dist=sync_dist, process_group=process_group)
        self.threshold, self.kernel_num, self.kernel_mul, self.cluster_weight = check_settings(
            threshold, kernel_num, kernel_mul, cluster_weight
        )
        self.cluster_ramp = check_choice(cluster_ramp, "cluster_ramp", CLUSTER_RAMPS)
        self.ramp_steps = check_positive_int(ramp_steps, "ramp_steps")
        self.num_domains = check_optional_positive_int(num_domains, "num_domains")
        self.validate_args = check_optional_bool(validate_args, "validate_args")

    @property
    def progress(self) -> Tensor:
        """Training progress ``p = min(num_steps / ramp_steps, 1)``, a 0-dim float tensor."""
        return self._progress(self.ramp_steps)

    def current_cluster_weight(self, *, dtype: torch.dtype = torch.float32) -> Union[float, Tensor]:
        r"""The cluster-level weight in force: constant (a float), or ramped by the progress (a
        0-dim tensor of ``dtype``; ``forward`` uses float64 for float64 features)."""
        return self._ramped(self.cluster_weight, self.cluster_ramp, self.ramp_steps, dtype)

    def forward(
        self,
        feat_s: Tensor,
        logits_s: Tensor,
        labels_s: Tensor,
        feat_t: Tensor,
        logits_t: Tensor,
        domains_s: Optional[Tensor] = None,
        *,
        return_terms: bool = False,
    ) -> Any:
        """Compute the loss; see :func:`lacmfer.functional.dual_level_alignment`."""
        require_domains(domains_s, self.num_domains)
        return dual_level_alignment(
            feat_s, logits_s, labels_s, feat_t, logits_t,
            threshold=self.threshold, kernel_num=self.kernel_num, kernel_mul=self.kernel_mul,
            cluster_weight=self.current_cluster_weight(dtype=schedule_dtype(feat_s)),
            domains_s=domains_s,
            num_domains=self.num_domains, sync_dist=self.sync_dist,
            process_group=self.process_group, validate_args=self.validate_args,
            return_terms=return_terms,
        )  # fmt: skip

    def extra_repr(self) -> str:
        parts = [
            f"threshold={self.threshold}",
            f"kernel_num={self.kernel_num}",
            f"kernel_mul={self.kernel_mul}",
            f"cluster_weight={self.cluster_weight}",
            f"cluster_ramp={self.cluster_ramp!r}",
        ]
        if self.cluster_ramp != "none":
            parts.append(f"ramp_steps={self.ramp_steps}")
        if self.num_domains is not None:
            parts.append(f"num_domains={self.num_domains}")
        return self._settings_repr(*parts)
