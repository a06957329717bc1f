"""DANN as modules: the gradient reversal layer and the domain-adversarial loss with its discriminator."""

from __future__ import annotations

from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from .._checks import (
    check_choice,
    check_float,
    check_nonempty,
    check_optional_bool,
    check_optional_positive_int,
    check_positive_int,
    check_same_device,
    check_size,
)
from .._distributed import SyncDistModule
from ..functional import domain_adversarial_loss, gradient_reversal
from ..functional._dann import check_coeff
from ._base import CLUSTER_RAMPS, StepCounter, schedule_dtype

__all__ = ["DomainAdversarialLoss", "GradientReversal"]


class GradientReversal(StepCounter):
    r"""Gradient reversal layer, optionally with DANN's schedule of the coefficient.

    The module form of :func:`lacmfer.functional.gradient_reversal`: the identity in the forward pass,
    :math:`-\lambda \cdot` gradient in the backward pass. With ``coeff_ramp="dann_sigmoid"`` the
    coefficient follows DANN's schedule

    .. math::

        \lambda_p = \lambda \Big(\frac{2}{1 + e^{-10 p}} - 1\Big), \qquad
        p = \min(\text{num\_steps} / \text{max\_steps}, 1),

    from 0 at the start of training to :math:`\approx \lambda` (Ganin et al., "Domain-Adversarial
    Training of Neural Networks", JMLR 2016, §5.2.2); call :meth:`step` once per training iteration.
    The progress is a buffer, saved in ``state_dict``.

    Args:
        coeff: the coefficient :math:`\lambda \ge 0` (its final value under the ramp).
        coeff_ramp: ``"none"`` (constant, the default) or ``"dann_sigmoid"``.
        max_steps: number of :meth:`step` calls over which the ramp reaches its end (int >= 1).

    Shape:
        - x: any shape.
        - Output: the shape, dtype and values of ``x``.

    Raises:
        TypeError: for a setting of the wrong type (here) or a non-float input (in ``forward``).
        ValueError: for a setting out of range; each message names the setting.

    Example:
        >>> grl = GradientReversal(coeff_ramp="dann_sigmoid", max_steps=100)
        >>> grl.current_coeff()
        tensor(0.)
        >>> grl.step(50)
        >>> x = torch.ones(2, requires_grad=True)
        >>> grl(x).sum().backward()
        >>> x.grad
        tensor([-0.9866, -0.9866])
    """

    num_steps: Tensor

    def __init__(
        self, *, coeff: float = 1.0, coeff_ramp: str = "none", max_steps: int = 20000
    ) -> None:
        super().__init__()
        self.coeff = check_coeff(coeff)
        self.coeff_ramp = check_choice(coeff_ramp, "coeff_ramp", CLUSTER_RAMPS)
        self.max_steps = check_positive_int(max_steps, "max_steps")

    @property
    def progress(self) -> Tensor:
        """Training progress ``p = min(num_steps / max_steps, 1)``, a 0-dim float tensor."""
        return self._progress(self.max_steps)

    def current_coeff(self, *, dtype: torch.dtype = torch.float32) -> Union[float, Tensor]:
        r"""The coefficient in force: constant (a float), or :math:`\lambda_p` of the progress (a
        0-dim tensor of ``dtype``; ``forward`` uses float64 for a float64 input)."""
        return self._ramped(self.coeff, self.coeff_ramp, self.max_steps, dtype)

    def forward(self, x: Tensor) -> Tensor:
        """Reverse the gradient; see :func:`lacmfer.functional.gradient_reversal`."""
        return gradient_reversal(x, coeff=self.current_coeff(dtype=schedule_dtype(x)))

    def extra_repr(self) -> str:
        text = f"coeff={self.coeff}, coeff_ramp={self.coeff_ramp!r}"
        return text + (f", max_steps={self.max_steps}" if self.coeff_ramp != "none" else "")


class DomainAdversarialLoss(SyncDistModule):
    r"""DANN: a domain discriminator behind a gradient reversal layer, and its loss.

    Holds the discriminator (``Linear–BatchNorm–ReLU`` twice, then a linear head: the domain
    classifier of Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR 2016, in the
    common ``in_features → hidden → hidden → N + 1`` form) and a :class:`GradientReversal` layer with
    DANN's schedule. ``forward`` reverses the gradient of the features, runs the discriminator and
    returns :func:`lacmfer.functional.domain_adversarial_loss` of its logits:

    .. math::

        L_{dann} = \frac12\Big[\operatorname*{mean}_{i \in S} \mathrm{CE}(D(R_\lambda(f_i)), y^d_i)
            + \operatorname*{mean}_{j \in T} \mathrm{CE}(D(R_\lambda(f_j)), N)\Big].

    Minimising it trains the discriminator to tell the domains apart, and (through the reversal)
    the feature extractor to make them indistinguishable. Pooled (``num_domains=None``): a two-way
    source-vs-target head (a two-way softmax, the same model as the paper's single sigmoid output);
    per source: an :math:`(N + 1)`-way head, sources :math:`0 \ldots N-1`, target :math:`N`.

    The reversal coefficient follows :math:`\lambda (2 / (1 + e^{-10 p}) - 1)` of the progress
    :math:`p = \min(\text{num\_steps} / \text{max\_steps}, 1)` by default; call :meth:`step` once
    per training iteration (the progress is saved in ``state_dict``). ``coeff_ramp="none"`` keeps
    :math:`\lambda` constant.

    **The discriminator is trained too**: give this module's parameters to the optimiser (and,
    under DistributedDataParallel, wrap it with the model).

    Args:
        in_features: feature size :math:`D`.
        num_domains: ``None`` for the pooled source-vs-target discriminator, or the number of source
            domains :math:`N` for the per-source one (``forward`` then needs ``domains_s``).
        hidden: width of the discriminator's two hidden layers (1024 in the paper).
        coeff: reversal coefficient :math:`\lambda \ge 0` (its final value under the ramp).
        coeff_ramp: ``"dann_sigmoid"`` (DANN's schedule, the default) or ``"none"`` (constant).
        max_steps: number of :meth:`step` calls over which the ramp reaches its end (int >= 1).
        sync_dist: average the loss over the samples of all ranks (see
            :func:`~lacmfer.functional.domain_adversarial_loss`). The discriminator's BatchNorm
            statistics stay per rank unless it is converted with
            :meth:`torch.nn.SyncBatchNorm.convert_sync_batchnorm`.
        process_group: the process group for ``sync_dist`` (default: the world).
        validate_args: check the range of ``domains_s`` (reads values). ``None``: on CPU only.

    Shape:
        - feat_s: :math:`(B_s, D)`; feat_t: :math:`(B_t, D)`; domains_s: :math:`(B_s,)`.
        - Output: scalar (float32 for half-precision inputs, else the input dtype).

    Raises:
        TypeError: for a setting of the wrong type (here) or a bad input dtype (in ``forward``).
        ValueError: for a setting out of range (here), bad input shapes or a missing ``domains_s``
            in per-source mode (in ``forward``); each message names the argument.

    Note:
        Source and target features go through the discriminator in **one batched call**
        (concatenated, source first). In training mode its BatchNorm layers therefore normalise
        with the statistics of the mixed batch, as in the common DANN implementations; the ratio
        :math:`B_s : B_t` shifts those statistics, and a per-domain call would instead normalise
        each domain by its own statistics and hide from the discriminator the very first- and
        second-order differences it should detect. In eval mode the running statistics are used.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> loss_fn = DomainAdversarialLoss(8, hidden=16, max_steps=100)
        >>> feat_s, feat_t = torch.randn(6, 8), torch.randn(4, 8) + 1.0
        >>> loss = loss_fn(feat_s, feat_t)
        >>> round(float(loss.detach()), 4)
        0.6159
        >>> loss_fn.current_coeff()  # progress 0: no reversed gradient yet
        tensor(0.)
        >>> loss_fn.step(100)
        >>> loss_fn.current_coeff()
        tensor(0.9999)
    """

    def __init__(
        self,
        in_features: int,
        *,
        num_domains: Optional[int] = None,
        hidden: int = 1024,
        coeff: float = 1.0,
        coeff_ramp: str = "dann_sigmoid",
        max_steps: int = 20000,
        sync_dist: bool = False,
        process_group: Optional[Any] = None,
        validate_args: Optional[bool] = None,
    ) -> None:
        super().__init__(sync_dist=sync_dist, process_group=process_group)
        self.in_features = check_positive_int(in_features, "in_features")
        self.num_domains = check_optional_positive_int(num_domains, "num_domains")
        self.hidden = check_positive_int(hidden, "hidden")
        self.validate_args = check_optional_bool(validate_args, "validate_args")
        self.grl = GradientReversal(coeff=coeff, coeff_ramp=coeff_ramp, max_steps=max_steps)
        outputs = (1 if self.num_domains is None else self.num_domains) + 1
        self.discriminator = nn.Sequential(
            nn.Linear(self.in_features, self.hidden),
            nn.BatchNorm1d(self.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(self.hidden, self.hidden),
            nn.BatchNorm1d(self.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(self.hidden, outputs),
        )

    @property
    def num_steps(self) -> Tensor:
        """Training iterations counted by :meth:`step` (the reversal layer's buffer)."""
        return self.grl.num_steps

    @property
    def progress(self) -> Tensor:
        """Training progress ``p = min(num_steps / max_steps, 1)``, a 0-dim float tensor."""
        return self.grl.progress

    def step(self, n: int = 1) -> None:
        """Advance the coefficient's schedule by ``n`` iterations (once per optimiser step)."""
        self.grl.step(n)

    def current_coeff(self, *, dtype: torch.dtype = torch.float32) -> Union[float, Tensor]:
        """The reversal coefficient in force (see :class:`GradientReversal`)."""
        return self.grl.current_coeff(dtype=dtype)

    def _check_features(self, feat_s: Any, feat_t: Any, domains_s: Any) -> None:
        check_float(feat_s, "feat_s", ndim=2, axes="(B_s, D)")
        check_float(feat_t, "feat_t", ndim=2, axes="(B_t, D)")
        check_size(feat_s, "feat_s", 1, feat_t, "feat_t", 1, "Feature sizes D (dim 1)")
        if feat_s.shape[1] != self.in_features:
            raise ValueError(
                f"`feat_s` and `feat_t` must have in_features = {self.in_features} columns, got "
                f"shapes {tuple(feat_s.shape)} and {tuple(feat_t.shape)}"
            )
        check_nonempty(feat_s, "feat_s")
        check_nonempty(feat_t, "feat_t")
        check_same_device([("feat_s", feat_s), ("feat_t", feat_t)])
        if self.num_domains is None and domains_s is not None:
            raise ValueError(
                "`domains_s` was given to a pooled discriminator (num_domains=None); build the "
                "loss with `num_domains` for the per-source mode"
            )

    def forward(self, feat_s: Tensor, feat_t: Tensor, domains_s: Optional[Tensor] = None) -> Tensor:
        """Discriminate the reversed features and return the loss; see the class docstring."""
        self._check_features(feat_s, feat_t, domains_s)
        logits = self.discriminator(self.grl(torch.cat([feat_s, feat_t], dim=0)))
        return domain_adversarial_loss(
            logits[: feat_s.shape[0]], logits[feat_s.shape[0] :], domains_s=domains_s,
            num_domains=self.num_domains, sync_dist=self.sync_dist,
            process_group=self.process_group, validate_args=self.validate_args,
        )  # fmt: skip

    def extra_repr(self) -> str:
        parts = [f"in_features={self.in_features}"]
        if self.num_domains is not None:
            parts.append(f"num_domains={self.num_domains}")
        return self._settings_repr(*parts, f"hidden={self.hidden}")
