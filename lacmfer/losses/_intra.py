"""The intra-domain (multi-view) loss modules."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor, nn

from .._checks import check_probability
from ..functional._consistency import multi_view_clustering_consistency
from ..functional._pseudo_label import RefinedPseudoLabels, pseudo_label_refinement

__all__ = ["MultiViewClusteringConsistency", "PseudoLabelRefiner"]


class MultiViewClusteringConsistency(nn.Module):
    r"""Multi-view clustering consistency :math:`L_{mcc}` between the global and local views.

    The module form of :func:`lacmfer.functional.multi_view_clustering_consistency`: from the
    target-batch prediction similarity matrix :math:`M = P_G^\top P_L`, its row- and
    column-normalised versions :math:`R` and :math:`C`,

    .. math::

        L_{mcc} = \frac{1}{2K}\Big[\big(\textstyle\sum R - \operatorname{tr} R\big)
                 + \big(\textstyle\sum C - \operatorname{tr} C\big)\Big],

    which is 0 when both views cluster every target sample identically. Yang et al., ACM MM 2024,
    §3.3.

    Args:
        from_logits: build :math:`M` from raw logits, as the authors' code does; default False
            (softmax probabilities, as in the paper).
        sync_dist: use :math:`M` summed over all ranks; a no-op outside :mod:`torch.distributed`.
        process_group: the process group for ``sync_dist`` (default: the world).

    Shape:
        - logits_g, logits_l: :math:`(B_t, K)`, the two heads' logits on the target batch.
        - Output: scalar.

    Example:
        >>> loss_fn = MultiViewClusteringConsistency()
        >>> logits = torch.tensor([[9.0, -9.0], [-9.0, 9.0]])
        >>> loss_fn(logits, logits), loss_fn(logits, logits.flip(0))
        (tensor(0.), tensor(1.0000))
    """

    def __init__(
        self,
        *,
        from_logits: bool = False,
        sync_dist: bool = False,
        process_group: Optional[Any] = None,
    ) -> None:
        super().__init__()
        if not isinstance(from_logits, bool):
            raise TypeError(f"`from_logits` must be a bool, got {type(from_logits).__name__}")
        self.from_logits = from_logits
        self.sync_dist = bool(sync_dist)
        self.process_group = process_group

    def forward(self, logits_g: Tensor, logits_l: Tensor) -> Tensor:
        """Compute the loss; see :func:`lacmfer.functional.multi_view_clustering_consistency`."""
        return multi_view_clustering_consistency(
            logits_g, logits_l, from_logits=self.from_logits, sync_dist=self.sync_dist,
            process_group=self.process_group,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return f"from_logits={self.from_logits}" + (", sync_dist=True" if self.sync_dist else "")

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["process_group"] = None
        return state


class PseudoLabelRefiner(nn.Module):
    r"""Pseudo-label refinement by multi-view voting, with its loss :math:`L_{mvv}`.

    The module form of :func:`lacmfer.functional.pseudo_label_refinement`. A target sample is kept
    iff the global and local views agree on its class and at least one of them is confident
    (:math:`\max p > \tau`); the agreed class is its refined label, and

    .. math::

        L_{mvv} = \mathrm{CE}(z_G[\text{keep}], \tilde y) + \mathrm{CE}(z_L[\text{keep}], \tilde y),

    each a mean over the kept samples and exactly 0 when none is kept. Labels are recomputed from the
    current logits at every call and detached. The fraction kept by the last call is also in the
    buffer :attr:`kept_fraction` (not saved in ``state_dict``) for logging. Yang et al., ACM MM 2024,
    §3.3.

    Args:
        threshold: confidence threshold :math:`\tau \in (0, 1]` (strict ``>``).
        sync_dist: average the loss over the kept samples of all ranks; a no-op outside
            :mod:`torch.distributed`.
        process_group: the process group for ``sync_dist`` (default: the world).

    Shape:
        - logits_g, logits_l: :math:`(B_t, K)`, the two heads' logits on the target batch.
        - Output: :class:`~lacmfer.functional.RefinedPseudoLabels` ``(labels (B_t,), mask (B_t,),
          loss (), kept_fraction ())``.

    Example:
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
        super().__init__()
        self.threshold = check_probability(threshold, "threshold")
        self.sync_dist = bool(sync_dist)
        self.process_group = process_group
        self.register_buffer("kept_fraction", torch.zeros(()), persistent=False)

    def forward(self, logits_g: Tensor, logits_l: Tensor) -> RefinedPseudoLabels:
        """Vote, and compute the loss; see :func:`lacmfer.functional.pseudo_label_refinement`."""
        out = pseudo_label_refinement(
            logits_g, logits_l, threshold=self.threshold, sync_dist=self.sync_dist,
            process_group=self.process_group,
        )  # fmt: skip
        with torch.no_grad():
            self.kept_fraction.copy_(out.kept_fraction)
        return out

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}" + (", sync_dist=True" if self.sync_dist else "")

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["process_group"] = None
        return state
