r"""Domain-adversarial training (DANN): the gradient reversal layer and the domain-classification loss.

A domain discriminator learns to tell the domains apart from the features, while the feature extractor
receives the *reversed* gradient of the discriminator's loss, so it learns features the discriminator
cannot separate. The reversal is an identity in the forward pass and multiplies the gradient by
:math:`-\lambda` in the backward pass.

Reference: Ganin, Ustinova, Ajakan, Germain, Larochelle, Laviolette, Marchand and Lempitsky,
"Domain-Adversarial Training of Neural Networks", JMLR 17(59), 2016.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import torch
from torch import Tensor

from .._checks import (
    _shape,
    check_domains,
    check_float,
    check_index_range,
    check_nonempty,
    check_real,
    check_same_device,
    check_size,
    require_domains,
    resolve_validate_args,
)
from .._distributed import all_reduce_sum
from .._precision import compute_dtype, no_autocast

__all__ = ["domain_adversarial_loss", "gradient_reversal"]


class _GradientReversalFunction(torch.autograd.Function):
    """Identity forward, ``-coeff * grad`` backward; ``coeff`` a float or a detached 0-dim tensor.

    A float stays a Python number (no tensor is made from it: on an accelerator that would be a
    host-to-device copy at every call).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, coeff: Union[float, Tensor]) -> Tensor:
        if isinstance(coeff, Tensor):
            ctx.save_for_backward(coeff)
            ctx.constant = None
        else:
            ctx.constant = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        if ctx.constant is None:
            (coeff,) = ctx.saved_tensors
            return grad * (-coeff).to(grad.dtype), None
        return grad * (-ctx.constant), None


def check_coeff(coeff: Any) -> Union[float, Tensor]:
    r"""The reversal coefficient :math:`\lambda \ge 0`: a finite real number, or a 0-dim
    floating-point tensor; checked by :func:`gradient_reversal` at every call and by
    :class:`~lacmfer.losses.GradientReversal` at construction.

    A tensor (e.g. a scheduled weight) is only checked statically: its value is not read, so the
    check costs no host sync and traces under ``torch.compile``. A number is checked in eager mode
    only: a compiled caller that passes a new value each call gets a symbolic float, which cannot be
    compared in Python.
    """
    if torch.compiler.is_compiling() and not isinstance(coeff, Tensor):
        return coeff
    if isinstance(coeff, Tensor):
        if not coeff.is_floating_point():
            raise TypeError(
                f"`coeff` must be a real number or a floating-point tensor, got dtype {coeff.dtype}"
            )
        if coeff.ndim != 0:
            raise ValueError(
                f"`coeff` must be a 0-dim tensor when given as a tensor, got shape {_shape(coeff)}"
            )
        return coeff
    return check_real(coeff, "coeff", minimum=0.0)


def gradient_reversal(x: Tensor, *, coeff: Union[float, Tensor] = 1.0) -> Tensor:
    r"""Gradient reversal: the identity in the forward pass, :math:`-\lambda \cdot` gradient backward.

    .. math::

        R_\lambda(x) = x, \qquad \frac{\partial R_\lambda}{\partial x} = -\lambda I

    Placed between a feature extractor and a domain discriminator, it lets one optimiser step
    *minimise* the discriminator's loss over the discriminator's parameters and *maximise* it over the
    features (Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR 2016, §4.2).

    Args:
        x: any floating-point tensor (features).
        coeff: the coefficient :math:`\lambda \ge 0`, a float, or a 0-dim floating-point tensor
            (e.g. a scheduled value, see :class:`~lacmfer.losses.GradientReversal`); a tensor is used
            detached and its value is not checked (that would read it back to the host). Under
            :func:`torch.compile`, a coefficient that changes every step is best passed as a tensor:
            each new float value is a recompilation (or, after a few, a symbolic float whose range is
            no longer checked).

    Shape:
        - x: any shape.
        - Output: the shape, dtype and values of ``x``.

    Returns:
        ``x`` (a view of it), whose gradient is multiplied by :math:`-\lambda` on the way back.

    Raises:
        TypeError: if ``x`` is not a floating-point tensor, or ``coeff`` is neither a real number nor
            a floating-point tensor.
        ValueError: if ``coeff`` is negative or not finite, or a tensor ``coeff`` is not 0-dim.

    Example:
        >>> x = torch.tensor([1.0, 2.0], requires_grad=True)
        >>> y = gradient_reversal(x, coeff=0.5)
        >>> y
        tensor([1., 2.], grad_fn=<...GradientReversalFunctionBackward>)
        >>> y.sum().backward()
        >>> x.grad
        tensor([-0.5000, -0.5000])
    """
    check_float(x, "x")
    coeff = check_coeff(coeff)
    if isinstance(coeff, Tensor):
        coeff = coeff.detach()
    return _GradientReversalFunction.apply(x, coeff)


def _check_domain_logits(
    domain_logits_s: Any,
    domain_logits_t: Any,
    domains_s: Any,
    num_domains: Any,
    validate_args: Optional[bool],
) -> int:
    """Static checks; returns the number of discriminator outputs ``N + 1``."""
    check_float(domain_logits_s, "domain_logits_s", ndim=2, axes="(B_s, N + 1)")
    check_float(domain_logits_t, "domain_logits_t", ndim=2, axes="(B_t, N + 1)")
    check_nonempty(domain_logits_s, "domain_logits_s")
    check_nonempty(domain_logits_t, "domain_logits_t")
    check_same_device([("domain_logits_s", domain_logits_s), ("domain_logits_t", domain_logits_t)])
    groups = check_domains(domains_s, num_domains, domain_logits_s, "domain_logits_s")
    require_domains(domains_s, num_domains)
    outputs = groups + 1
    if domain_logits_s.shape[1] != outputs:
        mode = (
            "pooled: source vs target" if domains_s is None else f"num_domains = {groups}, + target"
        )
        raise ValueError(
            f"`domain_logits_s` must have {outputs} columns ({mode}), got shape "
            f"{tuple(domain_logits_s.shape)}"
        )
    check_size(
        domain_logits_s, "domain_logits_s", 1, domain_logits_t, "domain_logits_t", 1,
        "Numbers of discriminator outputs (dim 1)",
    )  # fmt: skip
    if domains_s is not None:
        check_same_device([("domain_logits_s", domain_logits_s), ("domains_s", domains_s)])
        if resolve_validate_args(validate_args, domains_s):
            check_index_range(domains_s, "domains_s", groups, "num_domains")
    return outputs


def _cross_entropy(logits: Tensor, onehot: Tensor) -> Tensor:
    """Per-row cross-entropy ``logsumexp(z) - z_y``; a zero one-hot row gives ``logsumexp(z)``.

    ``where`` picks the logit (no product with the one-hot, which would turn an infinite log-softmax
    into NaN).
    """
    picked = torch.where(onehot, logits, torch.zeros((), dtype=logits.dtype, device=logits.device))
    return torch.logsumexp(logits, dim=1) - picked.sum(dim=1)


def domain_adversarial_loss(
    domain_logits_s: Tensor,
    domain_logits_t: Tensor,
    *,
    domains_s: Optional[Tensor] = None,
    num_domains: Optional[int] = None,
    sync_dist: bool = False,
    process_group: Optional[Any] = None,
    validate_args: Optional[bool] = None,
) -> Tensor:
    r"""Domain-classification loss of DANN's discriminator: source and target halves weigh alike.

    .. math::

        L_{dann} = \frac12\Big[\frac{1}{B_s}\sum_{i=1}^{B_s} \mathrm{CE}(d_s[i], y^d_i)
            + \frac{1}{B_t}\sum_{j=1}^{B_t} \mathrm{CE}(d_t[j], N)\Big]

    with the discriminator's logits :math:`d` and domain labels :math:`y^d`. **Pooled**
    (``num_domains=None``, Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR 2016):
    a source-vs-target discriminator with two outputs, label 0 for every source sample and
    :math:`N = 1` for the target. **Per source**: an :math:`(N + 1)`-way discriminator, source domain
    ids ``domains_s`` in :math:`0 \ldots N-1` and the target :math:`N` (the multi-source form of the
    discriminator).

    The pooled head is a **two-way softmax** rather than the paper's single sigmoid output: the two
    are the same model (:math:`\mathrm{softmax}(d)_1 = \sigma(d_1 - d_0)`, so the cross-entropy equals
    the binary cross-entropy of the logit :math:`d_1 - d_0`), and the pooled mode is then exactly the
    per-source mode with one source.

    Use it on the output of a discriminator placed after :func:`gradient_reversal`;
    :class:`~lacmfer.losses.DomainAdversarialLoss` bundles the reversal, the discriminator and this
    loss.

    Args:
        domain_logits_s: discriminator logits of the source samples.
        domain_logits_t: discriminator logits of the target samples.
        domains_s: source-domain ids in ``[0, num_domains)`` (per-source mode); ``None`` pools the
            sources (every source sample has domain label 0).
        num_domains: number of source domains :math:`N`; required with ``domains_s``, and only
            with it.
        sync_dist: average over the samples of all ranks (all-reduce of the two sums and the two
            counts; ranks may hold different batch sizes); a no-op without an initialised multi-rank
            process group.
        process_group: the process group for ``sync_dist`` (default: the world).
        validate_args: check the range of ``domains_s`` (reads values). ``None``: on CPU only.

    Shape:
        - domain_logits_s: :math:`(B_s, N + 1)`; domain_logits_t: :math:`(B_t, N + 1)`, with
          :math:`N = 1` when pooled; domains_s: :math:`(B_s,)`.
        - Output: scalar (float32 for half-precision inputs, else the input dtype).

    Returns:
        The loss. Chance level is :math:`\log(N + 1)` (:math:`\log 2` pooled).

    Raises:
        TypeError: if the logits are not floating point, ``domains_s`` is not an integer tensor, or a
            setting has the wrong type.
        ValueError: on wrong dimensions, a number of columns other than :math:`N + 1`, empty
            batches, ``domains_s`` without ``num_domains`` (or the reverse), domain ids out of range,
            or settings out of range.

    Note:
        The cross-entropy is computed in float32 (or float64) with autocast disabled, as
        :math:`\operatorname{logsumexp}(d) - d_y`: finite, with finite gradients, for any logits
        whose loss is representable (for float32, :math:`|d| \le 8.5 \cdot 10^{37}`). Each mean
        divides before it sums, so no batch size can overflow it.

    Example:
        >>> d_s = torch.tensor([[2.0, -2.0], [1.0, 0.0]])  # pooled: column 0 = source
        >>> d_t = torch.tensor([[0.0, 3.0]])
        >>> domain_adversarial_loss(d_s, d_t)
        tensor(0.1071)
        >>> d_s = torch.zeros(4, 3)  # two sources + target, a discriminator at chance
        >>> domain_adversarial_loss(d_s, torch.zeros(2, 3), domains_s=torch.tensor([0, 1, 1, 0]),
        ...                         num_domains=2)
        tensor(1.0986)
    """
    outputs = _check_domain_logits(
        domain_logits_s, domain_logits_t, domains_s, num_domains, validate_args
    )
    with no_autocast(domain_logits_s.device):
        dtype = compute_dtype(domain_logits_s, domain_logits_t)
        zs = domain_logits_s.to(dtype)
        zt = domain_logits_t.to(dtype)
        columns = torch.arange(outputs, device=zs.device)
        label_s = torch.zeros_like(columns[:1]) if domains_s is None else domains_s[:, None]
        ce_s = _cross_entropy(zs, label_s == columns)
        ce_t = _cross_entropy(zt, (columns == outputs - 1).expand(zt.shape[0], outputs))
        counts = torch.tensor(
            [float(zs.shape[0]), float(zt.shape[0])], dtype=dtype, device=zs.device
        )
        if sync_dist:
            counts = all_reduce_sum(counts, process_group)
        means = torch.stack([(ce_s / counts[0]).sum(), (ce_t / counts[1]).sum()])
        if sync_dist:
            means = all_reduce_sum(means, process_group)
        return 0.5 * means[0] + 0.5 * means[1]
