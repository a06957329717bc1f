"""The M3SDA moment-matching loss module."""

from __future__ import annotations

from typing import Any, Optional

from torch import Tensor

from .._checks import check_optional_bool, check_positive_int
from .._distributed import SyncDistModule
from ..functional import moment_matching

__all__ = ["MomentMatchingLoss"]


class MomentMatchingLoss(SyncDistModule):
    r"""M3SDA moment matching between every source domain, each other source and the target.

    The module form of :func:`lacmfer.functional.moment_matching`:

    .. math::

        L_{md} = \sum_{k=1}^{\text{moments}} \Big[
            \operatorname*{mean}_{i} \big\lVert \mathbb{E}(X_i^k) - \mathbb{E}(X_T^k) \big\rVert_2
            + \operatorname*{mean}_{i < j} \big\lVert \mathbb{E}(X_i^k) - \mathbb{E}(X_j^k) \big\rVert_2
        \Big]

    with raw element-wise moments and Euclidean norms, over the source domains present in the batch
    (Peng et al., "Moment Matching for Multi-Source Domain Adaptation", ICCV 2019, eq. (1)).

    Args:
        num_domains: number of source domains :math:`N` (int >= 1, required).
        moments: highest moment order (int >= 1); 2 in the paper.
        sync_dist: moments over the global batch of all ranks; a no-op outside
            :mod:`torch.distributed`.
        process_group: the process group for ``sync_dist`` (default: the world).
        validate_args: check the range of ``domains_s`` (reads values). ``None``: on CPU only.

    Shape:
        - feat_s: :math:`(B_s, D)`; domains_s: :math:`(B_s,)`; feat_t: :math:`(B_t, D)`.
        - Output: scalar.

    Raises:
        TypeError: for a setting of the wrong type (here) or a bad input dtype (in ``forward``).
        ValueError: for a setting out of range (here) or bad input shapes (in ``forward``); each
            message names the argument.

    Example:
        >>> import torch
        >>> loss_fn = MomentMatchingLoss(num_domains=2)
        >>> feat_s = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 1.0], [1.0, 3.0]])
        >>> loss_fn(feat_s, torch.tensor([0, 0, 1, 1]), torch.tensor([[1.0, 0.0], [1.0, 2.0]]))
        tensor(10.7171)
    """

    def __init__(
        self,
        *,
        num_domains: int,
        moments: int = 2,
        sync_dist: bool = False,
        process_group: Optional[Any] = None,
        validate_args: Optional[bool] = None,
    ) -> None:
        super().__init__(sync_dist=sync_dist, process_group=process_group)
        self.num_domains = check_positive_int(num_domains, "num_domains")
        self.moments = check_positive_int(moments, "moments")
        self.validate_args = check_optional_bool(validate_args, "validate_args")

    def forward(self, feat_s: Tensor, domains_s: Tensor, feat_t: Tensor) -> Tensor:
        """Compute the loss; see :func:`lacmfer.functional.moment_matching`."""
        return moment_matching(
            feat_s, domains_s, feat_t, num_domains=self.num_domains, moments=self.moments,
            sync_dist=self.sync_dist, process_group=self.process_group,
            validate_args=self.validate_args,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return self._settings_repr(f"num_domains={self.num_domains}", f"moments={self.moments}")
