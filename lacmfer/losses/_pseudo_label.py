"""The pseudo-label refinement (multi-view voting) loss module."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from .._checks import check_probability
from .._distributed import SyncDistModule
from ..functional import RefinedPseudoLabels, pseudo_label_refinement

__all__ = ["PseudoLabelRefiner"]


class PseudoLabelRefiner(SyncDistModule):
    r"""Pseudo-label refinement by multi-view voting, with its loss :math:`L_{mvv}`.

    The module form of :func:`lacmfer.functional.pseudo_label_refinement`; see it for the vote and
    the loss. The module holds the threshold, and its ``forward`` is one call of the function.

    The fraction kept by the last call is also kept in :attr:`kept_fraction`, for logging: a
    detached 0-dim tensor on the device and in the dtype of the last call's computation (assigned,
    not copied into a fixed buffer, so a step on the GPU moves no data to or from the host). It is a
    non-persistent buffer: not saved in ``state_dict``.

    Args:
        threshold: confidence threshold :math:`\tau \in (0, 1]` (strict ``>``: 1 keeps no sample).
        sync_dist: average the loss over the kept samples of all ranks; a no-op outside
            :mod:`torch.distributed`.
        process_group: the process group for ``sync_dist`` (default: the world).

    Shape:
        - logits_g, logits_l: :math:`(B_t, K)`, the two heads' logits on the target batch.
        - Output: :class:`~lacmfer.functional.RefinedPseudoLabels` ``(labels (B_t,), mask (B_t,),
          loss (), kept_fraction ())``.

    Example:
        >>> import torch
        >>> refiner = PseudoLabelRefiner(threshold=0.9)
        >>> logits_g = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
        >>> logits_l = torch.tensor([[4.0, 0.0], [5.0, 0.0]])
        >>> out = refiner(logits_g, logits_l)
        >>> out.labels, out.mask, refiner.kept_fraction
        (tensor([0, 1]), tensor([ True, False]), tensor(0.5000))
    """

    kept_fraction: Tensor

    def __init__(
        self,
        *,
        threshold: float = 0.9,
        sync_dist: bool = False,
        process_group: Optional[Any] = None,
    ) -> None:
        super().__init__(sync_dist=sync_dist, process_group=process_group)
        self.threshold = check_probability(threshold, "threshold")
        self.register_buffer("kept_fraction", torch.zeros(()), persistent=False)

    def forward(self, logits_g: Tensor, logits_l: Tensor) -> RefinedPseudoLabels:
        """Vote, and compute the loss; see :func:`lacmfer.functional.pseudo_label_refinement`."""
        out = pseudo_label_refinement(
            logits_g, logits_l, threshold=self.threshold, sync_dist=self.sync_dist,
            process_group=self.process_group,
        )  # fmt: skip
        # Assigned, not copied: the buffer follows the device (and dtype) of the logits.
        self.kept_fraction = out.kept_fraction
        return out

    def extra_repr(self) -> str:
        return self._settings_repr(f"threshold={self.threshold}")
