"""The Minimum Class Confusion loss module."""

from __future__ import annotations

from typing import Any, Optional

from torch import Tensor

from .._distributed import SyncDistModule
from ..functional import minimum_class_confusion
from ..functional._class_confusion import check_temperature

__all__ = ["MinimumClassConfusionLoss"]


class MinimumClassConfusionLoss(SyncDistModule):
    r"""Minimum Class Confusion on the target predictions (Jin et al., ECCV 2020).

    The module form of :func:`lacmfer.functional.minimum_class_confusion`: with
    :math:`\hat Y = \mathrm{softmax}(z / T)`, detached entropy-based weights :math:`w` and the
    row-normalised class confusion matrix :math:`\tilde C` of :math:`C = (\hat Y \odot w)^\top \hat Y`,

    .. math::

        L_{mcc} = \frac{1}{K} \sum_{k \ne k'} \tilde C_{kk'}.

    Not LA-CMFER's multi-view clustering consistency
    (:class:`~lacmfer.losses.MultiViewClusteringConsistency`), which compares *two* heads' cluster
    assignments; this loss compares one head's predictions with themselves (Jin et al., "Minimum
    Class Confusion for Versatile Domain Adaptation", ECCV 2020).

    Args:
        temperature: probability-rescaling temperature :math:`T > 0` (2.5 in the paper).
        sync_dist: use :math:`C` summed over all ranks; a no-op outside :mod:`torch.distributed`.
        process_group: the process group for ``sync_dist`` (default: the world).

    Shape:
        - logits_t: :math:`(B_t, K)`, the classifier's logits on the target batch.
        - Output: scalar.

    Raises:
        TypeError: for a setting of the wrong type (here) or a bad input dtype (in ``forward``).
        ValueError: for a setting out of range (here) or bad input shapes (in ``forward``); each
            message names the argument.

    Example:
        >>> import torch
        >>> loss_fn = MinimumClassConfusionLoss()
        >>> loss_fn(torch.zeros(4, 3))  # uniform predictions: maximal confusion
        tensor(0.6667)
    """

    def __init__(
        self,
        *,
        temperature: float = 2.5,
        sync_dist: bool = False,
        process_group: Optional[Any] = None,
    ) -> None:
        super().__init__(sync_dist=sync_dist, process_group=process_group)
        self.temperature = check_temperature(temperature)

    def forward(self, logits_t: Tensor) -> Tensor:
        """Compute the loss; see :func:`lacmfer.functional.minimum_class_confusion`."""
        return minimum_class_confusion(
            logits_t, temperature=self.temperature, sync_dist=self.sync_dist,
            process_group=self.process_group,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return self._settings_repr(f"temperature={self.temperature}")
