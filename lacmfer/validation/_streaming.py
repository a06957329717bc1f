r"""Streaming validators: accumulate a whole loader batch by batch, score once.

Each class follows the torchmetrics pattern, ``update(...)`` per batch, ``compute()`` at the end,
``reset()`` before the next evaluation, and ``compute()`` equals the function of the same name on the
concatenation of every batch it saw. Entropy, IM, agreement and accuracy keep running sums (memory
independent of the loader's length); SND and BNM need the whole prediction matrix and keep the
(detached) logits, :math:`N \times K` numbers.

With ``sync_dist=True`` under an initialised :mod:`torch.distributed` process group, ``compute()``
combines every rank's data (sums are all-reduced, logits all-gathered in rank order) and returns the
same global score on every rank; ranks may have seen different numbers of samples, including none.
``compute()`` then reads one small tensor on the host (the ranks' class counts), once per call; it is
a collective, so every rank must call it. Without a multi-rank process group ``sync_dist`` is a no-op.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from .._checks import (
    check_bool,
    check_label_range,
    check_labels,
    check_logits,
    check_optional_bool,
    check_same_device,
    check_size,
    check_snd_settings,
    check_views,
    resolve_validate_args,
)
from .._distributed import (
    SyncDistModule,
    all_reduce_max,
    all_reduce_sum,
    gather_batch,
    is_distributed,
)
from .._precision import compute_dtype, no_autocast
from ._scores import bnm_score, finite_or_nan, row_entropy, score_all, snd_score

__all__ = [
    "TARGET_VALIDATORS",
    "AgreementScore",
    "BNMScore",
    "EntropyScore",
    "IMScore",
    "SNDScore",
    "SourceAccuracy",
    "ValidatorSuite",
]

#: Names of the target-side validators that :class:`ValidatorSuite` and :func:`score_all` return,
#: in their order: agreement of the two views, batch nuclear norm, negative entropy, information
#: maximisation, soft neighbourhood density.
TARGET_VALIDATORS = ("agreement", "bnm", "entropy", "im", "snd")

_NO_CLASSES = -(1 << 62)


class _StreamingValidator(SyncDistModule):
    """update / compute / reset, the class count and dtype seen so far, and ``sync_dist``."""

    _anchor: Tensor

    def __init__(self, *, sync_dist: bool = False, process_group: Optional[Any] = None) -> None:
        super().__init__(sync_dist=sync_dist, process_group=process_group)
        # Follows .to(device): where a rank that saw no data creates its (zero) state.
        self.register_buffer("_anchor", torch.zeros(0), persistent=False)
        self._num_classes: Optional[int] = None
        self._dtype: torch.dtype = torch.float32
        self._num_seen = 0
        self._device: Optional[torch.device] = None

    # -- bookkeeping ----------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every batch seen so far (settings are kept)."""
        self._num_classes = None
        self._dtype = torch.float32
        self._num_seen = 0
        self._device = None
        self._reset_state()

    def _reset_state(self) -> None:
        raise NotImplementedError

    def _observe(self, logits: Tensor, name: str, *others: Tensor) -> torch.dtype:
        """Record a batch's class count, dtype and size; returns its compute dtype."""
        k = logits.shape[1]
        if self._num_classes is not None and k != self._num_classes:
            raise ValueError(
                f"`{name}` has K = {k} classes (shape {tuple(logits.shape)}) but the earlier "
                f"updates had K = {self._num_classes}; call reset() between evaluations"
            )
        if self._device is not None and logits.device != self._device:
            raise ValueError(
                f"`{name}` is on {logits.device} but the earlier updates were on {self._device}"
            )
        dtype = compute_dtype(logits, *others)
        self._num_classes = k
        self._device = logits.device
        self._dtype = torch.promote_types(self._dtype, dtype)
        self._num_seen += logits.shape[0]
        return self._dtype

    def _state_device(self) -> torch.device:
        return self._device if self._device is not None else self._anchor.device

    def _synced(self) -> bool:
        return self.sync_dist and is_distributed(self.process_group)

    def _global_meta(self) -> tuple[int, torch.dtype]:
        """The class count and state dtype of all ranks (one small all-reduce and host read)."""
        if not self._synced():
            if self._num_seen == 0 or self._num_classes is None:
                raise RuntimeError(
                    f"{type(self).__name__}.compute() was called before any update() with data"
                )
            return self._num_classes, self._dtype
        k = self._num_classes
        meta = torch.tensor(
            [
                k if k is not None else 0,
                -k if k is not None else _NO_CLASSES,
                int(self._num_seen > 0),
                int(self._dtype == torch.float64),
            ],
            dtype=torch.int64,
            device=self._state_device(),
        )
        k_max, neg_k_min, any_data, any64 = all_reduce_max(meta, self.process_group).tolist()
        if not any_data:
            raise RuntimeError(
                f"{type(self).__name__}.compute() was called before any update() with data on any "
                "rank"
            )
        if k_max != -neg_k_min:
            raise ValueError(
                f"the ranks' updates disagree on the number of classes: K from {-neg_k_min} to "
                f"{k_max}"
            )
        return k_max, torch.float64 if any64 else torch.float32

    def extra_repr(self) -> str:
        return self._settings_repr()


def _nan_flag(dtype: torch.dtype, *logits: Tensor) -> Tensor:
    """``[0.]``, or ``[nan]`` when a batch holds a non-finite logit: added to a count-based score,
    it makes the score of an evaluation that saw one NaN (no host sync)."""
    zero = torch.zeros(1, dtype=dtype, device=logits[0].device)
    return finite_or_nan(zero, *logits)


class _SumValidator(_StreamingValidator):
    """A validator whose state is a float vector and an int64 vector of running sums."""

    def __init__(self, *, sync_dist: bool = False, process_group: Optional[Any] = None) -> None:
        super().__init__(sync_dist=sync_dist, process_group=process_group)
        self._fsum: Optional[Tensor] = None
        self._isum: Optional[Tensor] = None

    def _reset_state(self) -> None:
        self._fsum = None
        self._isum = None

    def _sizes(self, num_classes: int) -> tuple[int, int]:
        raise NotImplementedError

    def _finish(self, fsum: Tensor, isum: Tensor, dtype: torch.dtype) -> Tensor:
        raise NotImplementedError

    def _accumulate(self, fsum: Tensor, isum: Tensor) -> None:
        fsum, isum = fsum.detach(), isum.detach()
        if self._fsum is None or self._isum is None:
            self._fsum, self._isum = fsum.to(self._dtype), isum
        else:
            self._fsum = self._fsum.to(self._dtype) + fsum.to(self._dtype)
            self._isum = self._isum + isum

    def compute(self) -> Tensor:
        """The score of every batch since the last :meth:`reset` (of all ranks with ``sync_dist``).

        Returns:
            A scalar tensor on the device of the updates.

        Raises:
            RuntimeError: if no batch was seen (on any rank).
        """
        num_classes, dtype = self._global_meta()
        n_float, n_int = self._sizes(num_classes)
        device = self._state_device()
        fsum = self._fsum if self._fsum is not None else torch.zeros(n_float, device=device)
        isum = self._isum if self._isum is not None else torch.zeros(n_int, device=device)
        fsum, isum = fsum.to(dtype), isum.to(torch.int64)
        if self._synced():
            if n_float:
                fsum = all_reduce_sum(fsum, self.process_group)
            isum = all_reduce_sum(isum, self.process_group)
        with no_autocast(device):
            return self._finish(fsum, isum, dtype)


class EntropyScore(_SumValidator):
    r"""Streaming :func:`~lacmfer.validation.entropy_score`: negative mean prediction entropy.

    Keeps two running sums (entropies, count). Higher is better.

    Args:
        sync_dist: combine all ranks' batches in :meth:`compute` (see :mod:`lacmfer.validation`).
        process_group: the process group for ``sync_dist`` (default: the world).

    Shape:
        - update(logits): :math:`(B, K)` per batch, any :math:`B \ge 1`, the same :math:`K`.
        - compute(): scalar.

    Example:
        >>> metric = EntropyScore()
        >>> for batch in torch.zeros(6, 2).split(4):
        ...     metric.update(batch)
        >>> metric.compute()
        tensor(-0.6931)
    """

    def update(self, logits: Tensor) -> None:
        """Add a batch of logits."""
        check_logits(logits)
        dtype = self._observe(logits, "logits")
        with torch.no_grad(), no_autocast(logits.device):
            logp = torch.log_softmax(logits.to(dtype), dim=1)
            count = torch.tensor([logits.shape[0]], device=logits.device)
            self._accumulate(finite_or_nan(row_entropy(logp).sum().reshape(1), logits), count)

    def _sizes(self, num_classes: int) -> tuple[int, int]:
        return 1, 1

    def _finish(self, fsum: Tensor, isum: Tensor, dtype: torch.dtype) -> Tensor:
        return -(fsum[0] / isum[0].to(dtype))


class IMScore(_SumValidator):
    r"""Streaming :func:`~lacmfer.validation.im_score`: information maximisation.

    Keeps running sums of the probabilities (:math:`K` numbers), of the entropies and the count.
    Higher is better.

    Args:
        sync_dist: combine all ranks' batches in :meth:`compute` (see :mod:`lacmfer.validation`).
        process_group: the process group for ``sync_dist`` (default: the world).

    Shape:
        - update(logits): :math:`(B, K)` per batch, the same :math:`K`.
        - compute(): scalar.

    Example:
        >>> metric = IMScore()
        >>> metric.update(torch.tensor([[50.0, -50.0]]))
        >>> metric.update(torch.tensor([[-50.0, 50.0]]))
        >>> metric.compute()  # confident and balanced: log 2
        tensor(0.6931)
    """

    def update(self, logits: Tensor) -> None:
        """Add a batch of logits."""
        check_logits(logits)
        dtype = self._observe(logits, "logits")
        with torch.no_grad(), no_autocast(logits.device):
            logp = torch.log_softmax(logits.to(dtype), dim=1)
            fsum = torch.cat([row_entropy(logp).sum().reshape(1), torch.exp(logp).sum(dim=0)])
            count = torch.tensor([logits.shape[0]], device=logits.device)
            self._accumulate(finite_or_nan(fsum, logits), count)

    def _sizes(self, num_classes: int) -> tuple[int, int]:
        return 1 + num_classes, 1

    def _finish(self, fsum: Tensor, isum: Tensor, dtype: torch.dtype) -> Tensor:
        n = isum[0].to(dtype)
        mean_prob = fsum[1:] / n
        safe = torch.where(mean_prob > 0, mean_prob, torch.ones_like(mean_prob))
        plogp = torch.where(mean_prob > 0, mean_prob * torch.log(safe), torch.zeros_like(safe))
        return (-plogp.sum() - fsum[0] / n).clamp_min(0.0)


class AgreementScore(_SumValidator):
    r"""Streaming :func:`~lacmfer.validation.agreement_score`: how often two views agree.

    Keeps two integer counts (agreements, samples). Higher is better.

    Args:
        sync_dist: combine all ranks' batches in :meth:`compute` (see :mod:`lacmfer.validation`).
        process_group: the process group for ``sync_dist`` (default: the world).

    Shape:
        - update(logits_g, logits_l): :math:`(B, K)` each per batch, the same :math:`K`.
        - compute(): scalar in :math:`[0, 1]`.

    Example:
        >>> metric = AgreementScore()
        >>> metric.update(torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
        >>> metric.update(torch.tensor([[2.0, 0.0]]), torch.tensor([[3.0, 1.0]]))
        >>> metric.compute()
        tensor(0.6667)
    """

    def update(self, logits_g: Tensor, logits_l: Tensor) -> None:
        """Add a batch of the two views' logits."""
        check_views(logits_g, logits_l)
        dtype = self._observe(logits_g, "logits_g", logits_l)
        with torch.no_grad():
            same = (logits_g.argmax(dim=1) == logits_l.argmax(dim=1)).sum()
            count = torch.tensor(logits_g.shape[0], device=logits_g.device)
            self._accumulate(_nan_flag(dtype, logits_g, logits_l), torch.stack([same, count]))

    def _sizes(self, num_classes: int) -> tuple[int, int]:
        return 1, 2

    def _finish(self, fsum: Tensor, isum: Tensor, dtype: torch.dtype) -> Tensor:
        return isum[0].to(dtype) / isum[1].to(dtype) + fsum[0]


class SourceAccuracy(_SumValidator):
    r"""Streaming :func:`~lacmfer.validation.source_accuracy`: accuracy on held-out source data.

    Keeps two integer counts (correct, samples). Higher is better.

    Args:
        validate_args: check that labels lie in :math:`[0, K)` at every update (reads values).
            ``None``: on CPU only.
        sync_dist: combine all ranks' batches in :meth:`compute` (see :mod:`lacmfer.validation`).
        process_group: the process group for ``sync_dist`` (default: the world).

    Shape:
        - update(logits, labels): :math:`(B, K)` and :math:`(B,)` per batch, the same :math:`K`.
        - compute(): scalar in :math:`[0, 1]`.

    Example:
        >>> metric = SourceAccuracy()
        >>> metric.update(torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 1]))
        >>> metric.update(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([1, 1]))
        >>> metric.compute()
        tensor(0.7500)
    """

    def __init__(
        self,
        *,
        validate_args: Optional[bool] = None,
        sync_dist: bool = False,
        process_group: Optional[Any] = None,
    ) -> None:
        super().__init__(sync_dist=sync_dist, process_group=process_group)
        self.validate_args = check_optional_bool(validate_args, "validate_args")

    def update(self, logits: Tensor, labels: Tensor) -> None:
        """Add a batch of logits and their true labels."""
        check_logits(logits)
        check_labels(labels, "labels", axes="(B,)")
        check_size(logits, "logits", 0, labels, "labels", 0, "Batch sizes (dim 0)")
        check_same_device([("logits", logits), ("labels", labels)])
        if resolve_validate_args(self.validate_args, labels):
            check_label_range(labels, "labels", logits.shape[1])
        dtype = self._observe(logits, "logits")
        with torch.no_grad():
            correct = (logits.argmax(dim=1) == labels).sum()
            count = torch.tensor(logits.shape[0], device=logits.device)
            self._accumulate(_nan_flag(dtype, logits), torch.stack([correct, count]))

    def _sizes(self, num_classes: int) -> tuple[int, int]:
        return 1, 2

    def _finish(self, fsum: Tensor, isum: Tensor, dtype: torch.dtype) -> Tensor:
        return isum[0].to(dtype) / isum[1].to(dtype) + fsum[0]

    def extra_repr(self) -> str:
        parts = [] if self.validate_args is None else [f"validate_args={self.validate_args}"]
        return self._settings_repr(*parts)


class _LogitValidator(_StreamingValidator):
    """A validator that keeps every batch's (detached) logits."""

    def __init__(self, *, sync_dist: bool = False, process_group: Optional[Any] = None) -> None:
        super().__init__(sync_dist=sync_dist, process_group=process_group)
        self._chunks: list[Tensor] = []

    def _reset_state(self) -> None:
        self._chunks = []

    def _store(self, logits: Tensor) -> None:
        check_logits(logits)
        dtype = self._observe(logits, "logits")
        self._chunks.append(logits.detach().to(dtype))

    def _all_logits(self) -> Tensor:
        """Every stored batch, of every rank with ``sync_dist`` (in rank order): ``(N, K)``."""
        num_classes, dtype = self._global_meta()
        if self._chunks:
            local = torch.cat([c.to(dtype) for c in self._chunks])
        else:
            local = torch.zeros(0, num_classes, dtype=dtype, device=self._state_device())
        if self._synced():
            (local,) = gather_batch(local, process_group=self.process_group)
        return local


class SNDScore(_LogitValidator):
    r"""Streaming :func:`~lacmfer.validation.snd_score`: soft neighbourhood density.

    Keeps every batch's logits (:math:`N \times K` numbers); :meth:`compute` costs
    :math:`O(N^2 K)` time and, in row blocks, :math:`O(N)` memory per block. ``max_samples`` bounds
    the time by scoring a deterministic subsample of the (global) set. Higher is better.

    Args:
        temperature: the temperature :math:`T > 0`.
        max_samples: score at most this many samples (int >= 2, deterministic subsample), or
            ``None`` for all.
        seed: seed of the subsample's permutation.
        sync_dist: combine all ranks' batches in :meth:`compute` (see :mod:`lacmfer.validation`).
        process_group: the process group for ``sync_dist`` (default: the world).

    Shape:
        - update(logits): :math:`(B, K)` per batch, the same :math:`K`; :math:`N \ge 2` in all.
        - compute(): scalar.

    Example:
        >>> metric = SNDScore(temperature=0.05)
        >>> for batch in torch.zeros(5, 3).split(2):
        ...     metric.update(batch)
        >>> metric.compute()  # all alike: uniform over the 4 others, log 4
        tensor(1.3863)
    """

    def __init__(
        self,
        *,
        temperature: float = 0.05,
        max_samples: Optional[int] = None,
        seed: int = 0,
        sync_dist: bool = False,
        process_group: Optional[Any] = None,
    ) -> None:
        super().__init__(sync_dist=sync_dist, process_group=process_group)
        self.temperature = check_snd_settings(temperature, max_samples, seed)
        self.max_samples = max_samples
        self.seed = seed

    def update(self, logits: Tensor) -> None:
        """Add a batch of logits."""
        self._store(logits)

    def compute(self) -> Tensor:
        """The score of every batch since the last :meth:`reset` (of all ranks with ``sync_dist``).

        Raises:
            RuntimeError: if no batch was seen (on any rank).
            ValueError: if fewer than 2 samples were seen in all.
        """
        return snd_score(
            self._all_logits(), temperature=self.temperature, max_samples=self.max_samples,
            seed=self.seed,
        )  # fmt: skip

    def extra_repr(self) -> str:
        parts = [f"temperature={self.temperature}", f"max_samples={self.max_samples}"]
        if self.seed != 0:
            parts.append(f"seed={self.seed}")
        return self._settings_repr(*parts)


class BNMScore(_LogitValidator):
    r"""Streaming :func:`~lacmfer.validation.bnm_score`: batch nuclear norm of the predictions.

    Keeps every batch's logits (:math:`N \times K` numbers); :meth:`compute` is one SVD of the
    :math:`N \times K` probability matrix. Higher is better.

    Args:
        sync_dist: combine all ranks' batches in :meth:`compute` (see :mod:`lacmfer.validation`).
        process_group: the process group for ``sync_dist`` (default: the world).

    Shape:
        - update(logits): :math:`(B, K)` per batch, the same :math:`K`.
        - compute(): scalar.

    Example:
        >>> metric = BNMScore()
        >>> metric.update(torch.tensor([[50.0, -50.0]]))
        >>> metric.update(torch.tensor([[-50.0, 50.0]]))
        >>> metric.compute()
        tensor(1.)
    """

    def update(self, logits: Tensor) -> None:
        """Add a batch of logits."""
        self._store(logits)

    def compute(self) -> Tensor:
        """The score of every batch since the last :meth:`reset` (of all ranks with ``sync_dist``).

        Raises:
            RuntimeError: if no batch was seen (on any rank).
        """
        return bnm_score(self._all_logits())


class ValidatorSuite(_LogitValidator):
    r"""Every target-side validator from one pass over the target set.

    The streaming form of :func:`~lacmfer.validation.score_all`: feed each target batch's prediction
    logits (and, with ``agreement=True``, both views' logits) to :meth:`update`; :meth:`compute`
    returns every score by name (:data:`TARGET_VALIDATORS`). It keeps the logits once for SND, BNM,
    entropy and IM, and two counts for the agreement. Higher is better for each score; none of them
    uses a label. Typical use, at every evaluation of a training run::

        suite.reset()
        with torch.no_grad():
            for images, _ in target_loader:  # the labels stay unused
                out = model(images)
                suite.update(out.logits, out.logits_g, out.logits_l)
        scores = {name: float(value) for name, value in suite.compute().items()}

    Args:
        agreement: also score the agreement of the global and local views (``update`` then needs
            ``logits_g`` and ``logits_l``); ``False`` for single-head models.
        temperature: SND's temperature.
        max_samples: SND's subsample bound (see :func:`~lacmfer.validation.snd_score`): large target
            sets cost :math:`O(N^2 K)` time without one.
        seed: SND's subsample seed.
        sync_dist: combine all ranks' batches in :meth:`compute` (see :mod:`lacmfer.validation`).
        process_group: the process group for ``sync_dist`` (default: the world).

    Shape:
        - update(logits, logits_g, logits_l): :math:`(B, K)` each per batch, the same :math:`K`;
          :math:`N \ge 2` in all.
        - compute(): a dict of scalars.

    Example:
        >>> suite = ValidatorSuite()
        >>> logits_g, logits_l = torch.randn(8, 7), torch.randn(8, 7)
        >>> suite.update((logits_g + logits_l) / 2, logits_g, logits_l)
        >>> list(suite.compute())
        ['agreement', 'bnm', 'entropy', 'im', 'snd']
    """

    def __init__(
        self,
        *,
        agreement: bool = True,
        temperature: float = 0.05,
        max_samples: Optional[int] = None,
        seed: int = 0,
        sync_dist: bool = False,
        process_group: Optional[Any] = None,
    ) -> None:
        super().__init__(sync_dist=sync_dist, process_group=process_group)
        check_bool(agreement, "agreement")
        self.temperature = check_snd_settings(temperature, max_samples, seed)
        self.max_samples = max_samples
        self.seed = seed
        self.agreement: Optional[AgreementScore] = (
            AgreementScore(sync_dist=sync_dist, process_group=process_group) if agreement else None
        )

    @property
    def names(self) -> tuple[str, ...]:
        """The names :meth:`compute` returns, in order."""
        return tuple(n for n in TARGET_VALIDATORS if n != "agreement" or self.agreement is not None)

    def reset(self) -> None:
        """Forget every batch seen so far (settings are kept)."""
        super().reset()
        if self.agreement is not None:
            self.agreement.reset()

    def update(
        self, logits: Tensor, logits_g: Optional[Tensor] = None, logits_l: Optional[Tensor] = None
    ) -> None:
        """Add a batch: prediction logits and, with ``agreement=True``, the two views' logits."""
        check_logits(logits)
        if self.agreement is not None:
            if logits_g is None or logits_l is None:
                raise ValueError(
                    "`logits_g` and `logits_l` are required: this ValidatorSuite scores the "
                    "agreement of the two views (construct it with agreement=False otherwise)"
                )
            check_views(logits_g, logits_l)
            check_size(logits, "logits", 0, logits_g, "logits_g", 0, "Batch sizes (dim 0)")
            check_size(logits, "logits", 1, logits_g, "logits_g", 1, "Numbers of classes K (dim 1)")
        elif logits_g is not None or logits_l is not None:
            raise ValueError(
                "`logits_g`/`logits_l` were given but this ValidatorSuite was constructed with "
                "agreement=False"
            )
        self._store(logits)
        if self.agreement is not None and logits_g is not None and logits_l is not None:
            self.agreement.update(logits_g, logits_l)

    def compute(self) -> dict[str, Tensor]:
        """Every score of the batches since the last :meth:`reset` (of all ranks with ``sync_dist``).

        Returns:
            ``{name: scalar tensor}`` in the order of :attr:`names`.

        Raises:
            RuntimeError: if no batch was seen (on any rank).
            ValueError: if fewer than 2 samples were seen in all (SND needs 2).
        """
        scores = score_all(
            self._all_logits(), temperature=self.temperature, max_samples=self.max_samples,
            seed=self.seed,
        )  # fmt: skip
        if self.agreement is not None:
            scores["agreement"] = self.agreement.compute()
        return {name: scores[name] for name in self.names}

    def extra_repr(self) -> str:
        parts = [
            f"agreement={self.agreement is not None}",
            f"temperature={self.temperature}",
            f"max_samples={self.max_samples}",
        ]
        if self.seed != 0:
            parts.append(f"seed={self.seed}")
        return self._settings_repr(*parts)
