r"""Collect features, labels, domains and predictions of a model, batch by batch, within a memory bound."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Callable, NamedTuple, Optional, Union

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .._checks import (
    check_bool,
    check_choice,
    check_float,
    check_labels,
    check_optional_positive_int,
    check_seed,
    check_size,
)
from .._distributed import all_reduce_max, gather_batch, is_distributed
from ._common import shape_str

__all__ = ["SUBSAMPLE_MODES", "CollectedFeatures", "FeatureCollector"]

#: How :class:`FeatureCollector` keeps at most ``max_samples`` rows per domain: ``"random"`` (a
#: seeded uniform sample without replacement) or ``"first"`` (the first rows in the order seen).
SUBSAMPLE_MODES = ("random", "first")

#: What :class:`FeatureCollector` reads from a model's output: an attribute (or key) name, several
#: names whose tensors are concatenated along the feature axis, or a function of the output.
Selector = Union[str, Sequence[str], Callable[[Any], Tensor]]

# Sentinel of the metadata exchange for a rank without data (never wins a max-reduction).
_NONE = -(1 << 62)


class CollectedFeatures(NamedTuple):
    r"""Result of :meth:`FeatureCollector.compute`: every kept row, in the order seen.

    Attributes:
        features: :math:`(N, D)` float32 features, on the CPU.
        labels: :math:`(N,)` int64 labels; ``-1`` where a batch gave none (unlabelled target).
        domains: :math:`(N,)` int64 domain indices.
        logits: :math:`(N, K)` float32 logits, or ``None`` when the collector reads none.
            ``logits.argmax(1)`` gives the predictions (the pseudo-labels of the target).
    """

    features: Tensor
    labels: Tensor
    domains: Tensor
    logits: Optional[Tensor]


def _check_selector(value: Any, name: str, *, optional: bool) -> Any:
    if value is None and optional:
        return None
    if isinstance(value, str) or callable(value):
        return value
    if isinstance(value, Sequence) and len(value) > 0 and all(isinstance(v, str) for v in value):
        return tuple(value)
    allowed = "an attribute name, a non-empty sequence of names or a callable"
    raise TypeError(f"`{name}` must be {allowed}{' or None' if optional else ''}, got {value!r}")


def _select(out: Any, selector: Selector, name: str) -> Tensor:
    """The tensor that ``selector`` (the setting ``name``) picks from a model output ``out``."""
    if callable(selector) and not isinstance(selector, str):
        value = selector(out)
    elif isinstance(selector, str):
        if isinstance(out, Mapping) and selector in out:
            value = out[selector]
        elif not isinstance(out, (Tensor, Mapping)) and hasattr(out, selector):
            value = getattr(out, selector)
        else:
            raise ValueError(
                f"the model's output ({type(out).__name__}) has no attribute or key {selector!r} "
                f"for `{name}`; pass `{name}=` another name or a function of the output, e.g. "
                f"`{name}=lambda out: out` for a model that returns the tensor itself"
            )
    else:
        value = torch.cat([_select(out, s, name) for s in selector], dim=1)
    if not isinstance(value, Tensor):
        raise TypeError(f"`{name}` must select a tensor, got {type(value).__name__}")
    return value


def keep_per_domain(keys: Tensor, domains: Tensor, limit: int) -> Tensor:
    """Indices (ascending) of the ``limit`` rows with the smallest keys in each domain."""
    order = torch.argsort(keys, stable=True)
    order = order[torch.argsort(domains[order], stable=True)]
    grouped = domains[order]
    counts = torch.bincount(grouped)
    starts = torch.cumsum(counts, dim=0) - counts
    rank = torch.arange(grouped.shape[0]) - starts[grouped]
    return order[rank < limit].sort().values


class FeatureCollector:
    r"""Gather a model's features, labels, domains and logits over loaders, for the diagnostics.

    Two ways in, mixed freely:

    * :meth:`collect` runs a model over an iterable of batches (a
      :class:`~torch.utils.data.DataLoader`) with the model in eval mode and under
      :func:`torch.no_grad` (each submodule's own train/eval flag is restored afterwards), and
      reads the features (and logits) from each output with the ``features`` (and ``logits``)
      setting;
    * :meth:`update` takes tensors the caller computed itself.

    :meth:`compute` returns everything kept, as :class:`CollectedFeatures` on the CPU in float32
    (features, logits) and int64 (labels, domains), ready for
    :func:`~lacmfer.analysis.domain_distance_matrix`, :func:`~lacmfer.analysis.class_separation`,
    :func:`~lacmfer.analysis.proxy_a_distance` and :func:`~lacmfer.analysis.embed_2d`.

    For :class:`~lacmfer.modules.LACMFER`, whose output holds ``feat_g``, ``feat_l``,
    ``logits_g``, ``logits_l`` and ``logits``, the default reads the global-branch feature
    :math:`f_G` and the fused logits; ``features=("feat_g", "feat_l")`` concatenates both
    branches, ``features="feat_l"`` analyses the local branch alone (LA-CMFER aligns the two
    branches separately, ``docs/method.rst``).

    **Memory bound.** With ``max_samples``, at most that many rows are kept per domain. Rows are
    buffered and pruned whenever the buffer exceeds twice the bound (times the number of domains
    seen), so memory stays below about :math:`2 \cdot \text{max\_samples}` rows per domain plus one
    batch, and the work per row is constant. ``subsample="random"`` keeps a uniform random sample
    without replacement of each domain (each row gets a key from a CPU generator seeded by
    ``seed``, drawn in the order rows arrive, and the rows with the smallest keys are kept: bottom-k
    sampling, a vectorised reservoir); ``"first"`` keeps the first rows seen, which is only
    representative if the loader shuffles (image lists are often sorted by class). The kept rows
    are returned in the order they arrived.

    **Distributed.** With ``sync_dist=True`` under an initialised :mod:`torch.distributed` process
    group, :meth:`compute` is a collective (every rank must call it): the ranks exchange their row
    counts, gather every rank's rows (padded to the largest count, then trimmed; ranks may hold
    different numbers of rows, or none) and return the same result on every rank, the rows in rank
    order. Without ``max_samples``, or with ``subsample="first"``, it equals one process running
    over the concatenation of the ranks' data in rank order. With ``subsample="random"`` each
    rank draws its keys from ``seed`` and its rank, so the kept rows are a uniform sample of the
    union, but not the rows one process would keep. Under the NCCL backend the gather runs on the
    current CUDA device; the result comes back to the CPU. Without a multi-rank group
    ``sync_dist`` is a no-op.

    Args:
        features: what :meth:`collect` reads as the features from a model output: an attribute
            (or mapping key) name, a sequence of names (their tensors are concatenated along the
            feature axis) or a callable ``output -> (B, D) tensor``.
        logits: the same for the logits, or ``None`` to keep none.
        max_samples: the most rows kept per domain (int >= 1), or ``None`` for all.
        subsample: ``"random"`` or ``"first"`` (:data:`SUBSAMPLE_MODES`).
        seed: seed of ``subsample="random"``.
        sync_dist: gather every rank's rows in :meth:`compute`.
        process_group: the process group for ``sync_dist`` (default: the world).

    Shape:
        - update: features :math:`(B, D)`, labels and domains :math:`(B,)` (or one int domain for
          the batch), logits :math:`(B, K)`; the same :math:`D` and :math:`K` for every batch.
        - compute(): features :math:`(N, D)`, labels and domains :math:`(N,)`, logits
          :math:`(N, K)`.

    Raises:
        TypeError: on settings of the wrong type.
        ValueError: on settings out of range.

    Example:
        >>> from lacmfer.modules import LACMFEROutput
        >>> class Toy(torch.nn.Module):  # any model whose output has feat_g and logits
        ...     def forward(self, x):
        ...         return LACMFEROutput(x, x, x[:, :2], x[:, :2], x[:, :2])
        >>> source = [(torch.ones(3, 4), torch.tensor([0, 1, 1]))]  # (images, labels) batches
        >>> target = [(torch.zeros(2, 4), torch.tensor([5, 5]))]
        >>> collector = FeatureCollector()
        >>> out = collector.collect(Toy(), source, domain=0).collect(
        ...     Toy(), target, domain=1, use_labels=False).compute()
        >>> out.features.shape, out.labels, out.domains, out.logits.shape
        (torch.Size([5, 4]), tensor([ 0,  1,  1, -1, -1]), tensor([0, 0, 0, 1, 1]), torch.Size([5, 2]))
    """

    def __init__(
        self,
        *,
        features: Selector = "feat_g",
        logits: Optional[Selector] = "logits",
        max_samples: Optional[int] = None,
        subsample: str = "random",
        seed: int = 0,
        sync_dist: bool = False,
        process_group: Optional[Any] = None,
    ) -> None:
        self.features = _check_selector(features, "features", optional=False)
        self.logits = _check_selector(logits, "logits", optional=True)
        self.max_samples = check_optional_positive_int(max_samples, "max_samples")
        self.subsample = check_choice(subsample, "subsample", SUBSAMPLE_MODES)
        self.seed = check_seed(seed)
        self.sync_dist = check_bool(sync_dist, "sync_dist")
        self.process_group = process_group
        self.reset()

    # -- state ------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every row seen so far (the settings are kept)."""
        self._chunks: list[tuple[Tensor, Tensor, Tensor, Optional[Tensor], Tensor, Tensor]] = []
        self._num_buffered = 0
        self._num_seen = 0
        self._dim: Optional[int] = None
        self._num_classes: Optional[int] = None
        self._has_logits: Optional[bool] = None
        self._domains_seen: set[int] = set()
        self._generator: Optional[torch.Generator] = None

    @property
    def num_seen(self) -> int:
        """Rows passed to this collector (on this rank) since the last :meth:`reset`."""
        return self._num_seen

    @property
    def num_buffered(self) -> int:
        """Rows held now (on this rank): at most about twice ``max_samples`` per domain + a batch."""
        return self._num_buffered

    def _synced(self) -> bool:
        return self.sync_dist and is_distributed(self.process_group)

    def _keys(self, n: int) -> Tensor:
        if self.subsample == "first":
            return torch.arange(self._num_seen, self._num_seen + n, dtype=torch.float64)
        if self._generator is None:
            rank = dist.get_rank(self.process_group) if self._synced() else 0
            self._generator = torch.Generator().manual_seed(
                (self.seed + 1_000_003 * rank) % (1 << 63)
            )
        return torch.rand(n, generator=self._generator, dtype=torch.float64)

    def _merged(self) -> tuple[Tensor, Tensor, Tensor, Optional[Tensor], Tensor, Tensor]:
        """The buffer as one chunk, pruned to ``max_samples`` per domain, in arrival order."""
        if len(self._chunks) != 1:
            feats, labels, domains, logits, keys, order = zip(*self._chunks)
            merged_logits = None if logits[0] is None else torch.cat(logits)
            self._chunks = [
                (
                    torch.cat(feats), torch.cat(labels), torch.cat(domains), merged_logits,
                    torch.cat(keys), torch.cat(order),
                )
            ]  # fmt: skip
        chunk = self._chunks[0]
        if self.max_samples is not None:
            keep = keep_per_domain(chunk[4], chunk[2], self.max_samples)
            if keep.shape[0] < chunk[0].shape[0]:
                chunk = (
                    chunk[0][keep], chunk[1][keep], chunk[2][keep],
                    None if chunk[3] is None else chunk[3][keep], chunk[4][keep], chunk[5][keep],
                )  # fmt: skip
                self._chunks = [chunk]
        self._num_buffered = chunk[0].shape[0]
        return chunk

    # -- input ------------------------------------------------------------------------------------

    def update(
        self,
        features: Tensor,
        labels: Optional[Tensor] = None,
        domains: Optional[Union[Tensor, int]] = None,
        logits: Optional[Tensor] = None,
    ) -> None:
        """Add a batch of rows.

        Args:
            features: the batch's features :math:`(B, D)` (any floating dtype and device; kept
                detached, in float32, on the CPU).
            labels: :math:`(B,)` integer labels; ``None`` (or ``-1`` entries) for unlabelled rows.
            domains: :math:`(B,)` non-negative domain indices, one ``int`` for the whole batch, or
                ``None`` for domain 0.
            logits: :math:`(B, K)` logits, given for every batch or for none.

        Raises:
            TypeError: on tensors of the wrong dtype.
            ValueError: on wrong dimensions, mismatched batch sizes, negative domains, or a
                feature size, class count or logits presence that differs from earlier batches.
        """
        check_float(features, "features", ndim=2, axes="(B, D)")
        b = features.shape[0]
        if self._dim is not None and features.shape[1] != self._dim:
            raise ValueError(
                f"`features` has D = {features.shape[1]} (shape {shape_str(features)}) but earlier "
                f"batches had D = {self._dim}; call reset() between collections"
            )
        if features.shape[1] == 0:
            raise ValueError(f"`features` must have D >= 1, got shape {shape_str(features)}")
        if labels is None:
            labels_ = torch.full((b,), -1, dtype=torch.int64)
        else:
            check_labels(labels, "labels", axes="(B,)")
            check_size(labels, "labels", 0, features, "features", 0, "Batch sizes (dim 0)")
            labels_ = labels.detach().to("cpu", torch.int64).clamp_min(-1)
        if domains is None or isinstance(domains, int):
            if isinstance(domains, bool):
                raise TypeError("`domains` must be an int, a tensor or None, got bool")
            domains_ = torch.full((b,), 0 if domains is None else domains, dtype=torch.int64)
        else:
            check_labels(domains, "domains", axes="(B,)", what="domain ids")
            check_size(domains, "domains", 0, features, "features", 0, "Batch sizes (dim 0)")
            domains_ = domains.detach().to("cpu", torch.int64)
        if b and int(domains_.min()) < 0:
            raise ValueError(f"`domains` must be >= 0, got {int(domains_.min())}")
        has_logits = logits is not None
        if self._has_logits is not None and has_logits != self._has_logits:
            raise ValueError(
                "`logits` must be given for every batch or for none; "
                + ("earlier batches had logits" if self._has_logits else "earlier batches had none")
            )
        logits_ = None
        if logits is not None:
            check_float(logits, "logits", ndim=2, axes="(B, K)")
            check_size(logits, "logits", 0, features, "features", 0, "Batch sizes (dim 0)")
            if self._num_classes is not None and logits.shape[1] != self._num_classes:
                raise ValueError(
                    f"`logits` has K = {logits.shape[1]} (shape {shape_str(logits)}) but earlier "
                    f"batches had K = {self._num_classes}; call reset() between collections"
                )
            self._num_classes = logits.shape[1]
            logits_ = logits.detach().to("cpu", torch.float32)
        self._dim = features.shape[1]
        self._has_logits = has_logits
        if b == 0:
            return
        feats = features.detach().to("cpu", torch.float32)
        keys = self._keys(b)
        order = torch.arange(self._num_seen, self._num_seen + b)
        self._chunks.append((feats, labels_, domains_, logits_, keys, order))
        self._num_seen += b
        self._num_buffered += b
        self._domains_seen.update(torch.unique(domains_).tolist())
        bound = None if self.max_samples is None else 2 * self.max_samples * len(self._domains_seen)
        if bound is not None and self._num_buffered > bound:
            self._merged()

    def collect(
        self,
        model: nn.Module,
        batches: Iterable[Any],
        *,
        domain: Optional[int] = None,
        use_labels: bool = True,
        device: Optional[Union[torch.device, str]] = None,
    ) -> FeatureCollector:
        """Run ``model`` over ``batches`` and :meth:`update` with what it returns.

        The model runs in eval mode under :func:`torch.no_grad`; afterwards every submodule gets
        its own train/eval flag back (also when an exception interrupts the pass).

        Args:
            model: the model; its output is read with the ``features`` and ``logits`` settings.
            batches: an iterable of batches: an image tensor, or a tuple/list
                ``(images, labels)`` or ``(images, labels, domains)`` (what a
                :class:`~torch.utils.data.DataLoader` over :mod:`lacmfer.data` datasets yields).
            domain: the domain index of every row (overrides a batch's own domains); ``None``:
                the batch's domains if it has them, else 0.
            use_labels: read the batch's labels; ``False`` stores ``-1`` (e.g. for the target,
                whose labels an honest analysis does not read).
            device: where the images go; ``None``: the device of the model's first parameter (or
                buffer), the CPU if it has neither.

        Returns:
            The collector itself, so that calls chain.

        Raises:
            TypeError: on a batch that is neither a tensor nor a tuple/list.
            ValueError: if the output has no attribute or key the settings name, and as
                :meth:`update`.
        """
        if domain is not None and (isinstance(domain, bool) or not isinstance(domain, int)):
            raise TypeError(f"`domain` must be an int or None, got {type(domain).__name__}")
        check_bool(use_labels, "use_labels")
        if device is None:
            tensors = [*model.parameters(), *model.buffers()]
            device = tensors[0].device if tensors else torch.device("cpu")
        modes = [(module, module.training) for module in model.modules()]
        model.eval()
        try:
            with torch.no_grad():
                for batch in batches:
                    labels: Optional[Tensor] = None
                    domains: Optional[Union[Tensor, int]] = domain
                    if isinstance(batch, Tensor):
                        images = batch
                    elif isinstance(batch, (tuple, list)) and len(batch) > 0:
                        images = batch[0]
                        if use_labels and len(batch) > 1:
                            labels = batch[1]
                        if domain is None and len(batch) > 2:
                            domains = batch[2]
                    else:
                        raise TypeError(
                            "each item of `batches` must be an image tensor or a tuple/list "
                            f"(images, labels[, domains]), got {type(batch).__name__}"
                        )
                    out = model(images.to(device))
                    feats = _select(out, self.features, "features")
                    logits = None if self.logits is None else _select(out, self.logits, "logits")
                    self.update(feats, labels, domains, logits)
        finally:
            for module, mode in modes:
                module.training = mode
        return self

    # -- output -----------------------------------------------------------------------------------

    def compute(self) -> CollectedFeatures:
        """Every kept row (of every rank with ``sync_dist``), in the order seen.

        Returns:
            :class:`CollectedFeatures` on the CPU.

        Raises:
            RuntimeError: if no row was seen (on any rank).
            ValueError: if the ranks disagree on the feature size, the class count or whether
                logits are kept.
        """
        chunk = self._merged() if self._chunks else None
        if not self._synced():
            if chunk is None or self._dim is None:
                raise RuntimeError("FeatureCollector.compute() was called before any row was seen")
            return CollectedFeatures(chunk[0], chunk[1], chunk[2], chunk[3])
        return self._compute_synced(chunk)

    def _compute_synced(
        self, chunk: Optional[tuple[Tensor, Tensor, Tensor, Optional[Tensor], Tensor, Tensor]]
    ) -> CollectedFeatures:
        group = self.process_group
        backend = dist.get_backend(group)
        device = (
            torch.device("cuda", torch.cuda.current_device())
            if backend == "nccl"
            else torch.device("cpu")
        )
        has_data = chunk is not None
        d = self._dim if has_data and self._dim is not None else 0
        k = self._num_classes if has_data and self._num_classes is not None else 0
        with_logits = int(bool(self._has_logits)) if has_data else 0
        meta = torch.tensor(
            [
                int(has_data),
                d,
                -d if has_data else _NONE,
                k,
                -k if has_data else _NONE,
                with_logits,
                -with_logits if has_data else _NONE,
            ],
            dtype=torch.int64,
            device=device,
        )
        any_data, d_max, neg_d_min, k_max, neg_k_min, logits_max, neg_logits_min = all_reduce_max(
            meta, group
        ).tolist()
        if not any_data:
            raise RuntimeError(
                "FeatureCollector.compute() was called before any row was seen on any rank"
            )
        if d_max != -neg_d_min:
            raise ValueError(f"the ranks' features disagree on D: from {-neg_d_min} to {d_max}")
        if logits_max != -neg_logits_min:
            raise ValueError("some ranks kept logits and others did not")
        if logits_max and k_max != -neg_k_min:
            raise ValueError(f"the ranks' logits disagree on K: from {-neg_k_min} to {k_max}")
        if chunk is None:
            chunk = (
                torch.zeros(0, d_max), torch.zeros(0, dtype=torch.int64),
                torch.zeros(0, dtype=torch.int64), torch.zeros(0, k_max) if logits_max else None,
                torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.int64),
            )  # fmt: skip
        feats, labels, domains, logits, keys = (
            None if t is None else t.to(device) for t in chunk[:5]
        )
        feats, labels, domains, logits, keys = gather_batch(
            feats, labels, domains, logits, keys, process_group=group
        )
        feats, labels, domains, keys = (t.cpu() for t in (feats, labels, domains, keys))
        logits = None if logits is None else logits.cpu()
        if self.max_samples is not None:
            if self.subsample == "first":
                keys = torch.arange(feats.shape[0], dtype=torch.float64)
            keep = keep_per_domain(keys, domains, self.max_samples)
            feats, labels, domains = feats[keep], labels[keep], domains[keep]
            logits = None if logits is None else logits[keep]
        return CollectedFeatures(feats, labels, domains, logits)

    def __repr__(self) -> str:
        parts = [f"features={self.features!r}", f"logits={self.logits!r}"]
        if self.max_samples is not None:
            parts += [
                f"max_samples={self.max_samples}", f"subsample={self.subsample!r}",
                f"seed={self.seed}",
            ]  # fmt: skip
        if self.sync_dist:
            parts.append("sync_dist=True")
        return f"{type(self).__name__}({', '.join(parts)})"
