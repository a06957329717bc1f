"""The multi-view clustering consistency loss module."""

from __future__ import annotations

from typing import Any, Optional

from torch import Tensor

from .._checks import check_bool
from .._distributed import SyncDistModule
from ..functional import multi_view_clustering_consistency

__all__ = ["MultiViewClusteringConsistency"]


class MultiViewClusteringConsistency(SyncDistModule):
    r"""Multi-view clustering consistency :math:`L_{mcc}` between the global and local views.

    The module form of :func:`lacmfer.functional.multi_view_clustering_consistency`; see it for the
    maths. The module holds the settings, and its ``forward`` is one call of the function.

    Args:
        from_logits: build :math:`M` from raw logits, as the authors' code does; default False
            (softmax probabilities, as in the paper).
        sync_dist: use :math:`M` summed over all ranks; a no-op outside :mod:`torch.distributed`.
        process_group: the process group for ``sync_dist`` (default: the world).

    Shape:
        - logits_g, logits_l: :math:`(B_t, K)`, the two heads' logits on the target batch.
        - Output: scalar, in :math:`[0, 1]` with ``from_logits=False`` (unbounded with
          ``from_logits=True``).

    Example:
        >>> import torch
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
        super().__init__(sync_dist=sync_dist, process_group=process_group)
        self.from_logits = check_bool(from_logits, "from_logits")

    def forward(self, logits_g: Tensor, logits_l: Tensor) -> Tensor:
        """Compute the loss; see :func:`lacmfer.functional.multi_view_clustering_consistency`."""
        return multi_view_clustering_consistency(
            logits_g, logits_l, from_logits=self.from_logits, sync_dist=self.sync_dist,
            process_group=self.process_group,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return self._settings_repr(f"from_logits={self.from_logits}")
