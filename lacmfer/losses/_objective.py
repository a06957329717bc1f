"""The whole LA-CMFER objective as a module, with its schedules' state."""

from __future__ import annotations

from typing import Any, Optional, Union

import torch
from torch import Tensor

from .._checks import check_choice, check_optional_bool, check_positive_int
from .._distributed import SyncDistModule
from ..functional import LACMFERTerms, TwoViewOutput, lacmfer_loss, linear_warmup
from ..functional._objective import check_settings
from ._base import CLUSTER_RAMPS, StepCounter, schedule_dtype

__all__ = ["LACMFERLoss"]


class LACMFERLoss(SyncDistModule, StepCounter):
    r"""The LA-CMFER objective: source cross-entropy on both heads plus every adaptation term.

    The module form of :func:`lacmfer.functional.lacmfer_loss` (see it for the equation, the
    terms and the ablation switches). Besides the settings it holds the training progress, a step
    counter saved in ``state_dict``, for two schedules; call :meth:`step` once per optimiser step:

    * the ramp of the cluster-level weight (``cluster_ramp="dann_sigmoid"``, the paper's "gradual"
      alignment, :func:`~lacmfer.functional.sigmoid_ramp` of ``step / ramp_steps``);
    * a source-only phase and warm-up of every adaptation term (``adapt_after``, ``adapt_warmup``,
      :func:`~lacmfer.functional.linear_warmup`), for training from scratch. The defaults (0, 0)
      are the paper's: adaptation from the first step.

    Save ``loss_fn.state_dict()`` with the model's when you checkpoint (the counter is not part of
    ``model.state_dict()``).

    The sources are pooled (the paper) unless ``num_domains`` is set: ``domains_s`` passed to a
    pooled objective is ignored, so a training loop can always pass it, and per-source alignment
    needs ``num_domains=`` at construction.

    The settings ``label_smoothing``, ``align_weight``, ``cid_weight``, ``consistency_weight``,
    ``voting_weight``, ``align_threshold``, ``pseudo_threshold``, ``kernel_num``, ``kernel_mul``,
    ``sid``, ``cid``, ``consistency``, ``consistency_from_logits``, ``voting``, ``num_domains``,
    ``sync_dist``, ``process_group`` and ``validate_args`` are those of
    :func:`~lacmfer.functional.lacmfer_loss`, with the paper's values as defaults.

    Args:
        cluster_ramp: ``"none"`` (constant ``cid_weight``, the authors' code) or
            ``"dann_sigmoid"``.
        ramp_steps: steps over which the cluster ramp reaches its end (int >= 1).
        adapt_after: source-only steps before the adaptation terms come in (int >= 0).
        adapt_warmup: steps of their linear rise after that (int >= 0).

    Shape:
        - out_s, out_t: anything with ``feat_g`` :math:`(B, D_G)`, ``logits_g`` :math:`(B, K)`,
          ``feat_l`` :math:`(B, D_L)`, ``logits_l`` :math:`(B, K)` for :math:`B = B_s, B_t`.
        - labels_s, domains_s: :math:`(B_s,)`.
        - Output: :class:`~lacmfer.functional.LACMFERTerms`.

    Example:
        >>> import torch
        >>> from lacmfer.modules import LACMFER
        >>> _ = torch.manual_seed(0)
        >>> model = LACMFER.tiny(num_classes=7)
        >>> loss_fn = LACMFERLoss(adapt_after=100)
        >>> x_s, y_s, x_t = torch.rand(4, 3, 32, 32), torch.tensor([0, 3, 6, 3]), torch.rand(4, 3, 32, 32)
        >>> terms = loss_fn(model(x_s), y_s, model(x_t))  # two calls: per-domain BatchNorm
        >>> terms.loss.backward()
        >>> float(terms.adaptation_weight), bool(terms.loss == terms.ce)  # still source-only
        (0.0, True)
        >>> loss_fn.step(100)
        >>> float(loss_fn.adaptation_weight())
        1.0
    """

    num_steps: Tensor

    def __init__(
        self,
        *,
        label_smoothing: float = 0.1,
        align_weight: float = 0.4,
        cid_weight: float = 0.02,
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
        cluster_ramp: str = "none",
        ramp_steps: int = 20000,
        adapt_after: int = 0,
        adapt_warmup: int = 0,
        sync_dist: bool = False,
        process_group: Optional[Any] = None,
        validate_args: Optional[bool] = None,
    ) -> None:
        super().__init__(sync_dist=sync_dist, process_group=process_group)
        checked = check_settings(
            label_smoothing=label_smoothing, align_weight=align_weight, cid_weight=cid_weight,
            consistency_weight=consistency_weight, voting_weight=voting_weight,
            align_threshold=align_threshold, pseudo_threshold=pseudo_threshold,
            kernel_num=kernel_num, kernel_mul=kernel_mul, sid=sid, cid=cid,
            consistency=consistency, consistency_from_logits=consistency_from_logits,
            voting=voting, num_domains=num_domains,
        )  # fmt: skip
        self.label_smoothing: float = checked["label_smoothing"]
        self.align_weight: float = checked["align_weight"]
        self.cid_weight: float = checked["cid_weight"]
        self.consistency_weight: float = checked["consistency_weight"]
        self.voting_weight: float = checked["voting_weight"]
        self.align_threshold: float = checked["align_threshold"]
        self.pseudo_threshold: float = checked["pseudo_threshold"]
        self.kernel_num: int = checked["kernel_num"]
        self.kernel_mul: float = checked["kernel_mul"]
        self.sid: bool = checked["sid"]
        self.cid: bool = checked["cid"]
        self.consistency: str = checked["consistency"]
        self.consistency_from_logits: bool = checked["consistency_from_logits"]
        self.voting: bool = checked["voting"]
        self.num_domains: Optional[int] = checked["num_domains"]
        self.cluster_ramp = check_choice(cluster_ramp, "cluster_ramp", CLUSTER_RAMPS)
        self.ramp_steps = check_positive_int(ramp_steps, "ramp_steps")
        self.adapt_after = check_positive_int(adapt_after, "adapt_after", minimum=0)
        self.adapt_warmup = check_positive_int(adapt_warmup, "adapt_warmup", minimum=0)
        self.validate_args = check_optional_bool(validate_args, "validate_args")

    def current_cid_weight(self, *, dtype: torch.dtype = torch.float32) -> Union[float, Tensor]:
        """The cluster-level weight in force: constant (a float), or ramped by the progress (a
        0-dim tensor of ``dtype``; ``forward`` uses float64 for float64 logits)."""
        return self._ramped(self.cid_weight, self.cluster_ramp, self.ramp_steps, dtype)

    def adaptation_weight(self, *, dtype: torch.dtype = torch.float32) -> Union[float, Tensor]:
        """The factor on every adaptation term: 1.0 (a float) without a source-only phase or
        warm-up, else :func:`~lacmfer.functional.linear_warmup` of the step count (a 0-dim tensor
        of ``dtype``; ``forward`` uses float64 for float64 logits)."""
        if self.adapt_after == 0 and self.adapt_warmup == 0:
            return 1.0
        steps = self.num_steps.to(dtype)
        return linear_warmup(steps, delay=self.adapt_after, duration=self.adapt_warmup)

    def forward(
        self,
        out_s: TwoViewOutput,
        labels_s: Tensor,
        out_t: TwoViewOutput,
        domains_s: Optional[Tensor] = None,
    ) -> LACMFERTerms:
        """Compute the objective; see :func:`lacmfer.functional.lacmfer_loss`."""
        dtype = schedule_dtype(getattr(out_s, "logits_g", None))
        return lacmfer_loss(
            out_s, labels_s, out_t, domains_s, label_smoothing=self.label_smoothing,
            align_weight=self.align_weight, cid_weight=self.current_cid_weight(dtype=dtype),
            consistency_weight=self.consistency_weight, voting_weight=self.voting_weight,
            align_threshold=self.align_threshold, pseudo_threshold=self.pseudo_threshold,
            kernel_num=self.kernel_num, kernel_mul=self.kernel_mul, sid=self.sid, cid=self.cid,
            consistency=self.consistency, consistency_from_logits=self.consistency_from_logits,
            voting=self.voting, num_domains=self.num_domains,
            adaptation_weight=self.adaptation_weight(dtype=dtype), sync_dist=self.sync_dist,
            process_group=self.process_group, validate_args=self.validate_args,
        )  # fmt: skip

    def extra_repr(self) -> str:
        defaults = LACMFERLoss.__init__.__kwdefaults__ or {}
        shown = []
        for name, default in defaults.items():
            if name == "process_group":
                continue
            value = getattr(self, name)
            if value != default:
                shown.append(f"{name}={value!r}")
        return ", ".join(shown) if shown else "paper defaults"
