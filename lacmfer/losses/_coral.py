"""The CORAL loss module."""

from __future__ import annotations

from typing import Any, Optional

from torch import Tensor

from .._checks import check_optional_bool, check_optional_positive_int, require_domains
from .._distributed import SyncDistModule
from ..functional import coral

__all__ = ["CORALLoss"]


class CORALLoss(SyncDistModule):
    r"""CORAL: squared Frobenius distance between source and target feature covariances.

    The module form of :func:`lacmfer.functional.coral`:

    .. math::

        L_{coral} = \frac{1}{4 D^2} \lVert C_S - C_T \rVert_F^2

    with unbiased covariances (Sun and Saenko, "Deep CORAL: Correlation Alignment for Deep Domain
    Adaptation", ECCV 2016 Workshops). Per source (``num_domains`` set), the mean over the source
    domains with at least 2 samples in the batch.

    Args:
        num_domains: ``None`` pools all sources (the default); an int switches to per-source mode,
            where ``forward`` needs ``domains_s``.
        sync_dist: covariances over the global batch of all ranks; a no-op outside
            :mod:`torch.distributed`.
        process_group: the process group for ``sync_dist`` (default: the world).
        validate_args: check the range of ``domains_s`` (reads values). ``None``: on CPU only.

    Shape:
        - feat_s: :math:`(B_s, D)`; feat_t: :math:`(B_t, D)`; domains_s: :math:`(B_s,)`.
        - Output: scalar.

    Raises:
        TypeError: for a setting of the wrong type (here) or a bad input dtype (in ``forward``).
        ValueError: for a setting out of range (here), bad input shapes or a missing ``domains_s``
            in per-source mode (in ``forward``); each message names the argument.

    Example:
        >>> import torch
        >>> loss_fn = CORALLoss(num_domains=2)
        >>> g = torch.Generator().manual_seed(0)
        >>> feat_s, feat_t = torch.randn(8, 3, generator=g), torch.randn(5, 3, generator=g)
        >>> domains_s = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1])
        >>> loss_fn(feat_s, feat_t, domains_s)
        tensor(0.1308)
    """

    def __init__(
        self,
        *,
        num_domains: Optional[int] = None,
        sync_dist: bool = False,
        process_group: Optional[Any] = None,
        validate_args: Optional[bool] = None,
    ) -> None:
        super().__init__(sync_dist=sync_dist, process_group=process_group)
        self.num_domains = check_optional_positive_int(num_domains, "num_domains")
        self.validate_args = check_optional_bool(validate_args, "validate_args")

    def forward(self, feat_s: Tensor, feat_t: Tensor, domains_s: Optional[Tensor] = None) -> Tensor:
        """Compute the loss; see :func:`lacmfer.functional.coral`."""
        require_domains(domains_s, self.num_domains)
        return coral(
            feat_s, feat_t, domains_s=domains_s, num_domains=self.num_domains,
            sync_dist=self.sync_dist, process_group=self.process_group,
            validate_args=self.validate_args,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return self._settings_repr(
            *([] if self.num_domains is None else [f"num_domains={self.num_domains}"])
        )
