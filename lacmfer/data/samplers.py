r"""Infinite, resumable, rank-sharded index samplers for multi-source and target streams.

Training in CMFER draws a labelled source batch and an unlabelled target batch every step, for a
fixed number of steps rather than epochs. The samplers here are infinite streams of index batches:

* :class:`MultiSourceSampler` draws from the concatenation of several source datasets, either
  **pooled** (one shuffled stream over all sources, so each source appears in proportion to its
  size -- what the paper does) or **balanced** (every batch holds the same quota of each source,
  optionally with the classes of a source drawn in turn);
* :class:`InfiniteSampler` draws from one dataset (the target).

Every stream is a sequence of epochs, each a fresh permutation seeded from ``(seed, stream,
epoch)``; position ``p`` of a stream over ``n`` items is ``perm_{p // n}[p % n]``. So:

* **Resuming is exact**: :meth:`~MultiSourceSampler.state_dict` stores the stream positions;
  a new sampler given the same arguments and :meth:`~MultiSourceSampler.load_state_dict` continues
  with the very same batches.
* **DDP sharding**: with ``world_size`` ranks each step consumes ``world_size`` batches' worth of
  every stream and rank ``r`` takes the ``r``-th part, so the ranks get disjoint parts of one global
  stream. ``batch_size`` is per rank; the global batch is ``world_size * batch_size``.
* **Resume with the same world size**: the state holds the positions in the global streams (the same
  on every rank, so rank 0's state serves all) and the per-rank ``batch_size``, which
  :meth:`~MultiSourceSampler.load_state_dict` requires to match. Loading it on another number of
  ranks with the same per-rank batch size continues the streams from the saved positions, but with
  another global batch: not the saved run. To continue a run exactly, keep ``world_size`` and
  ``batch_size``.
* **Vectorised**: a batch is a few ``torch.randperm`` slices and index operations, no per-sample
  Python work.

Used as a :class:`~torch.utils.data.DataLoader` ``batch_sampler`` the samplers yield lists of
indices; note that a loader prefetches, so the sampler state is ahead of the batches consumed by
``prefetch_factor * num_workers`` batches -- save the state of batches actually drawn by calling
:meth:`~MultiSourceSampler.sample` in the training loop instead when exact resumption matters.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple, Optional, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .._checks import check_choice
from .lists import _integer

__all__ = ["InfiniteSampler", "MultiSourceSampler", "SourceBatch", "sampler_loader"]

_MASK64 = (1 << 64) - 1


def _check_int(value: Any, name: str, *, minimum: Optional[int] = None) -> int:
    """An integer setting as a Python int: an ``int``, a numpy integer or a 0-dim integer tensor
    (anything ``operator.index`` takes but ``bool``), at least ``minimum``."""
    out = _integer(value)
    if out is None:
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__}")
    if minimum is not None and out < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {out}")
    return out


def _check_rank(rank: Any, world_size: Any) -> tuple[int, int]:
    """A process ``rank`` in ``[0, world_size)`` with ``world_size >= 1``, as Python ints."""
    world_size = _check_int(world_size, "world_size", minimum=1)
    rank = _check_int(rank, "rank")
    if not 0 <= rank < world_size:
        raise ValueError(f"`rank` must lie in [0, world_size = {world_size}), got {rank}")
    return rank, world_size


def _check_sizes(domain_sizes: Any) -> tuple[int, ...]:
    """``domain_sizes`` (a sequence of integers or a 1-D integer tensor/array) as Python ints."""
    if isinstance(domain_sizes, (Tensor, np.ndarray)):
        if isinstance(domain_sizes, np.ndarray):
            integer = bool(np.issubdtype(domain_sizes.dtype, np.integer))
        else:
            integer = not (
                domain_sizes.is_floating_point()
                or domain_sizes.is_complex()
                or domain_sizes.dtype == torch.bool
            )
        if not integer or domain_sizes.ndim == 0:
            raise TypeError(
                "`domain_sizes` must be a sequence of ints or a 1-D integer tensor, got "
                f"{type(domain_sizes).__name__} of dtype {domain_sizes.dtype} and shape "
                f"{tuple(domain_sizes.shape)}"
            )
        if domain_sizes.ndim != 1:
            raise ValueError(f"`domain_sizes` must be 1-D, got shape {tuple(domain_sizes.shape)}")
        items: Sequence[Any] = domain_sizes.tolist()
    elif isinstance(domain_sizes, (str, bytes)) or not isinstance(domain_sizes, Sequence):
        raise TypeError(
            "`domain_sizes` must be a sequence of ints or a 1-D integer tensor, got "
            f"{type(domain_sizes).__name__}"
        )
    else:
        items = domain_sizes
    if len(items) == 0:
        raise ValueError("`domain_sizes` must name at least one domain, got []")
    return tuple(_check_int(n, f"domain_sizes[{d}]", minimum=1) for d, n in enumerate(items))


def _mix(*parts: int) -> int:
    """SplitMix64-style hash of integers to a 63-bit seed (stable across runs and platforms)."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (p & _MASK64)) & _MASK64
        h = (h + 0x9E3779B97F4A7C15) & _MASK64
        z = h
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        h = z ^ (z >> 31)
    return h & ((1 << 63) - 1)


class _Stream:
    """Position-addressable infinite stream over ``range(n)``: epochs of seeded permutations."""

    def __init__(self, n: int, key: tuple[int, ...], shuffle: bool = True) -> None:
        self.n = n
        self.key = key
        self.shuffle = shuffle
        self._cache: dict[int, Tensor] = {}

    def _epoch(self, epoch: int) -> Tensor:
        perm = self._cache.get(epoch)
        if perm is None:
            if self.shuffle:
                gen = torch.Generator().manual_seed(_mix(*self.key, epoch))
                perm = torch.randperm(self.n, generator=gen)
            else:
                perm = torch.arange(self.n)
            if len(self._cache) >= 2:
                self._cache.pop(min(self._cache))
            self._cache[epoch] = perm
        return perm

    def take(self, start: int, count: int) -> Tensor:
        """Items at positions ``start .. start + count - 1``."""
        if count <= 0:
            return torch.empty(0, dtype=torch.int64)
        first, last = start // self.n, (start + count - 1) // self.n
        if first == last:
            offset = start - first * self.n
            return self._epoch(first)[offset : offset + count]
        chunks = torch.cat([self._epoch(e) for e in range(first, last + 1)])
        offset = start - first * self.n
        return chunks[offset : offset + count]


class SourceBatch(NamedTuple):
    """One multi-source batch.

    Attributes:
        indices: ``(B,)`` int64 indices into the concatenation of the sources.
        domains: ``(B,)`` int64 source (domain) id of each index.
    """

    indices: Tensor
    domains: Tensor


class MultiSourceSampler:
    r"""Infinite batches of indices over several source datasets, pooled or domain-balanced.

    Indices refer to the concatenation of the sources in the order of ``domain_sizes`` (as
    :class:`torch.utils.data.ConcatDataset` numbers them); domain ``d`` owns indices
    ``[c_d, c_d + n_d)`` with ``c_d = n_0 + ... + n_{d-1}``.

    * ``mode="pooled"`` (the paper): one stream of epochs over all ``N = Σ n_d`` indices; a domain's
      share of the batches is ``n_d / N`` (JAFFE's 213 images are ~0.3% of a six-dataset pool).
    * ``mode="balanced"``: each batch holds ``B // S`` indices of every one of the ``S`` domains;
      the ``B % S`` remaining slots rotate over the domains from batch to batch, so each domain
      gets ``1/S`` of the draws in the long run. Each domain has its own stream of epochs. With
      ``class_balanced=True`` a domain's slots cycle through its classes (a fresh permutation of
      the classes present in the domain each cycle) and each class has its own stream of epochs,
      so classes are drawn equally often within a domain.

    Integer arguments may be Python ints, numpy integers or 0-dim integer tensors (not ``bool``);
    they are stored as Python ints.

    Args:
        domain_sizes: Number of samples of each source (each ``>= 1``): a sequence of integers or
            a 1-D integer tensor or array.
        batch_size: Indices per batch on this rank, ``B``.
        mode: ``"pooled"`` or ``"balanced"``.
        labels: Labels of the concatenation, needed for ``class_balanced`` (class indices
            ``>= 0`` then; without it they are not used).
        class_balanced: Draw classes equally often within each domain (``mode="balanced"``).
        seed: Seed of every stream.
        rank: This process's rank.
        world_size: Number of processes; each step consumes ``world_size`` batches of the global
            stream and this rank gets part ``rank``.

    Shape:
        - labels: ``(N,)``.
        - ``sample()``: :class:`SourceBatch` of two ``(B,)`` int64 tensors.

    Raises:
        TypeError: On arguments of the wrong type (``labels`` not of an integer dtype).
        ValueError: On empty domains, ``rank`` outside ``[0, world_size)``, ``labels`` of the
            wrong length, ``class_balanced`` without labels, with ``mode="pooled"`` or with a
            negative label.

    Example:
        >>> s = MultiSourceSampler([3, 5], 4, mode="balanced", seed=0)
        >>> b = s.sample()
        >>> b.domains.tolist(), all(0 <= i < 3 for i in b.indices[:2].tolist())
        ([0, 0, 1, 1], True)
    """

    def __init__(
        self,
        domain_sizes: Union[Sequence[int], Tensor, np.ndarray],
        batch_size: int,
        *,
        mode: str = "pooled",
        labels: Optional[Union[Tensor, Sequence[int]]] = None,
        class_balanced: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.domain_sizes = _check_sizes(domain_sizes)
        self.batch_size = _check_int(batch_size, "batch_size", minimum=1)
        self.mode = check_choice(mode, "mode", ("pooled", "balanced"))
        self.seed = seed = _check_int(seed, "seed")
        self.rank, self.world_size = _check_rank(rank, world_size)
        self.class_balanced = bool(class_balanced)
        sizes = torch.tensor(self.domain_sizes, dtype=torch.int64)
        self.offsets = torch.cat((torch.zeros(1, dtype=torch.int64), sizes.cumsum(0)[:-1]))
        self.total_size = int(sizes.sum())
        self._bounds = sizes.cumsum(0)
        self.labels: Optional[Tensor] = None
        if labels is not None:
            lab = labels if isinstance(labels, Tensor) else torch.as_tensor(labels)
            if lab.is_floating_point() or lab.is_complex() or lab.dtype == torch.bool:
                raise TypeError(f"`labels` must be an integer tensor, got dtype {lab.dtype}")
            if lab.ndim != 1 or lab.shape[0] != self.total_size:
                raise ValueError(
                    f"`labels` must be an integer tensor of shape ({self.total_size},) = "
                    f"(sum of domain_sizes,), got dtype {lab.dtype} and shape {tuple(lab.shape)}"
                )
            self.labels = lab.to(torch.int64).cpu()
        if self.class_balanced:
            if self.labels is None:
                raise ValueError("`class_balanced=True` needs `labels`")
            if self.mode != "balanced":
                raise ValueError("`class_balanced=True` needs mode='balanced', got mode='pooled'")
            if int(self.labels.min()) < 0:
                first = int(torch.nonzero(self.labels < 0)[0])
                raise ValueError(
                    "`labels` must hold class indices >= 0 with `class_balanced=True`, got "
                    f"{int(self.labels[first])} at index {first}"
                )
        num = len(self.domain_sizes)
        self._pool = _Stream(self.total_size, (seed, 0))
        self._domain_streams = [_Stream(n, (seed, 1, d)) for d, n in enumerate(self.domain_sizes)]
        # Class-balanced streams: per domain, the classes present and their members.
        self._classes: list[Tensor] = []
        self._members: list[list[Tensor]] = []
        self._class_streams: list[_Stream] = []
        self._member_streams: list[list[_Stream]] = []
        if self.class_balanced and self.labels is not None:
            for d in range(num):
                lo, n = int(self.offsets[d]), self.domain_sizes[d]
                lab_d = self.labels[lo : lo + n]
                classes = torch.unique(lab_d)
                order = torch.argsort(lab_d, stable=True)
                counts = torch.bincount(torch.searchsorted(classes, lab_d), minlength=len(classes))
                members = list(torch.split(order, counts.tolist()))
                self._classes.append(classes)
                self._members.append(members)
                self._class_streams.append(_Stream(len(classes), (seed, 2, d)))
                self._member_streams.append(
                    [_Stream(len(m), (seed, 3, d, int(c))) for c, m in zip(classes, members)]
                )
        self._step = 0
        self._pool_pos = 0
        self._domain_pos = [0] * num
        self._class_pos = [0] * (num if self.class_balanced else 0)
        self._member_pos = [[0] * len(m) for m in self._members]

    @property
    def num_domains(self) -> int:
        """Number of source domains ``S``."""
        return len(self.domain_sizes)

    @property
    def domain_ids(self) -> Tensor:
        """``(N,)`` int64 domain id of every index of the concatenation."""
        return torch.repeat_interleave(
            torch.arange(self.num_domains), torch.tensor(self.domain_sizes)
        )

    def domain_of(self, indices: Tensor) -> Tensor:
        """Domain ids of indices into the concatenation (same shape, int64)."""
        return torch.bucketize(indices.to(torch.int64), self._bounds.to(indices.device), right=True)

    def quotas(self, step: Optional[int] = None) -> Tensor:
        """``(S,)`` indices per domain in this rank's batch at ``step`` (default: the next one).

        Only defined for ``mode="balanced"``.
        """
        if self.mode != "balanced":
            raise ValueError("`quotas` is only defined for mode='balanced'")
        t = self._step if step is None else step
        num = self.num_domains
        base, rem = divmod(self.batch_size, num)
        q = torch.full((num,), base, dtype=torch.int64)
        if rem:
            q[(t * rem + torch.arange(rem)) % num] += 1
        return q

    def _draw_domain(self, d: int, count: int) -> Tensor:
        """``count`` local indices of domain ``d`` from its stream(s), advancing positions."""
        if not self.class_balanced:
            out = self._domain_streams[d].take(self._domain_pos[d], count)
            self._domain_pos[d] += count
            return out
        slots = self._class_streams[d].take(self._class_pos[d], count)
        self._class_pos[d] += count
        out = torch.empty(count, dtype=torch.int64)
        counts = torch.bincount(slots, minlength=len(self._classes[d])).tolist()
        for k, n_k in enumerate(counts):  # loop over classes (<= K), not samples
            if n_k == 0:
                continue
            pos = self._member_pos[d][k]
            picked = self._member_streams[d][k].take(pos, n_k)
            self._member_pos[d][k] = pos + n_k
            out[slots == k] = self._members[d][k][picked]
        return out

    def sample(self) -> SourceBatch:
        """Draw this rank's next batch and advance the stream by one (global) step."""
        b, w, r = self.batch_size, self.world_size, self.rank
        if self.mode == "pooled":
            glob = self._pool.take(self._pool_pos, b * w)
            self._pool_pos += b * w
            indices = glob[r * b : (r + 1) * b]
        else:
            parts = []
            for d, q in enumerate(self.quotas().tolist()):  # loop over domains, not samples
                if q == 0:
                    continue
                local = self._draw_domain(d, q * w)[r * q : (r + 1) * q]
                parts.append(local + self.offsets[d])
            indices = torch.cat(parts)
        self._step += 1
        return SourceBatch(indices, self.domain_of(indices))

    def __iter__(self) -> Iterator[list[int]]:
        """Yield index lists forever (for ``DataLoader(batch_sampler=...)``).

        The domain ids of a batch are ``domain_of(torch.tensor(batch))``; :meth:`batches` yields
        both.
        """
        while True:
            yield self.sample().indices.tolist()

    def batches(self) -> Iterator[SourceBatch]:
        """Yield :class:`SourceBatch` (indices and domain ids) forever."""
        while True:
            yield self.sample()

    def state_dict(self) -> dict[str, Any]:
        """The stream positions (plus the arguments that must match on loading)."""
        return {
            "domain_sizes": list(self.domain_sizes),
            "batch_size": self.batch_size,
            "mode": self.mode,
            "class_balanced": self.class_balanced,
            "seed": self.seed,
            "step": self._step,
            "pool_pos": self._pool_pos,
            "domain_pos": list(self._domain_pos),
            "class_pos": list(self._class_pos),
            "member_pos": [list(m) for m in self._member_pos],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the stream saved by :meth:`state_dict`.

        ``rank`` may differ (every rank holds the same state); a state loaded with another
        ``world_size`` continues the streams with another global batch (see the module docstring).

        Raises:
            ValueError: If the state was saved by a sampler with other sizes, batch size, mode,
                class balancing or seed.
        """
        for key in ("domain_sizes", "batch_size", "mode", "class_balanced", "seed"):
            mine = getattr(self, key)
            mine = list(mine) if isinstance(mine, tuple) else mine
            if state.get(key) != mine:
                raise ValueError(
                    f"`state` was saved with {key}={state.get(key)!r}, this sampler has {mine!r}"
                )
        self._step = int(state["step"])
        self._pool_pos = int(state["pool_pos"])
        self._domain_pos = [int(p) for p in state["domain_pos"]]
        self._class_pos = [int(p) for p in state["class_pos"]]
        self._member_pos = [[int(p) for p in m] for m in state["member_pos"]]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(domain_sizes={list(self.domain_sizes)}, "
            f"batch_size={self.batch_size}, mode={self.mode!r}, "
            f"class_balanced={self.class_balanced}, seed={self.seed}, rank={self.rank}, "
            f"world_size={self.world_size})"
        )


class InfiniteSampler:
    """Infinite batches of indices over one dataset (the target stream), resumable and sharded.

    Same rules as :class:`MultiSourceSampler` with one domain: epochs of seeded permutations
    (``shuffle=False``: ``0, 1, ..., n - 1`` repeated), each step consumes ``world_size`` batches
    and rank ``r`` takes part ``r``.

    Integer arguments may be Python ints, numpy integers or 0-dim integer tensors (not ``bool``).

    Args:
        size: Dataset size ``n``.
        batch_size: Indices per batch on this rank.
        shuffle: Permute each epoch.
        seed: Seed of the stream.
        rank: This process's rank.
        world_size: Number of processes.

    Example:
        >>> s = InfiniteSampler(5, 3, shuffle=False)
        >>> [s.sample().tolist() for _ in range(2)]
        [[0, 1, 2], [3, 4, 0]]
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.size = _check_int(size, "size", minimum=1)
        self.batch_size = _check_int(batch_size, "batch_size", minimum=1)
        self.seed = _check_int(seed, "seed")
        self.shuffle = bool(shuffle)
        self.rank, self.world_size = _check_rank(rank, world_size)
        self._stream = _Stream(self.size, (self.seed, 4), shuffle=self.shuffle)
        self._pos = 0

    def sample(self) -> Tensor:
        """This rank's next ``(B,)`` int64 index batch; advances the stream by one step."""
        b, w, r = self.batch_size, self.world_size, self.rank
        glob = self._stream.take(self._pos, b * w)
        self._pos += b * w
        return glob[r * b : (r + 1) * b]

    def __iter__(self) -> Iterator[list[int]]:
        """Yield index lists forever (for ``DataLoader(batch_sampler=...)``)."""
        while True:
            yield self.sample().tolist()

    def state_dict(self) -> dict[str, Any]:
        """The stream position (plus the arguments that must match on loading)."""
        return {
            "size": self.size,
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "seed": self.seed,
            "pos": self._pos,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the stream saved by :meth:`state_dict`.

        Raises:
            ValueError: If the state was saved with another size, batch size, shuffle or seed.
        """
        for key in ("size", "batch_size", "shuffle", "seed"):
            if state.get(key) != getattr(self, key):
                raise ValueError(
                    f"`state` was saved with {key}={state.get(key)!r}, this sampler has "
                    f"{getattr(self, key)!r}"
                )
        self._pos = int(state["pos"])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(size={self.size}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, seed={self.seed}, rank={self.rank}, "
            f"world_size={self.world_size})"
        )


class _WithSource(Dataset[Any]):
    """The items of a concatenation of sources with their source id (by index range): appended
    to a tuple or list item, under ``"source"`` in a mapping, ``(item, id)`` for anything else."""

    def __init__(self, dataset: Any, sizes: Sequence[int]) -> None:
        self.dataset, self.bounds = dataset, list(itertools.accumulate(sizes))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        item, source = self.dataset[index], bisect.bisect_right(self.bounds, index)
        if isinstance(item, (tuple, list)):
            return (*item, source)
        if isinstance(item, Mapping):
            if "source" in item:
                raise ValueError(
                    "items of `dataset` are mappings with a key 'source' already; the sampler "
                    "adds the source id under that key"
                )
            return {**item, "source": source}
        return item, source


def _position(sampler: Union[MultiSourceSampler, InfiniteSampler]) -> str:
    """Where ``sampler``'s stream stands, read from its state: ``""`` at the start."""
    state = sampler.state_dict()
    if isinstance(sampler, InfiniteSampler):
        return f"position {state['pos']}" if state["pos"] else ""
    positions = [state["pool_pos"], *state["domain_pos"], *state["class_pos"]]
    positions += [p for member in state["member_pos"] for p in member]
    if state["step"]:
        return f"step {state['step']}"
    return "step 0 with its streams advanced" if any(positions) else ""


def sampler_loader(
    dataset: Any,
    sampler: Union[MultiSourceSampler, InfiniteSampler],
    *,
    start: int = 0,
    **loader_kwargs: Any,
) -> Iterator[Any]:
    r"""An endless stream of batches: a :class:`~torch.utils.data.DataLoader` over ``dataset``
    whose batches are the draws of ``sampler``.

    Resuming is exact, also with loader workers that prefetch ahead: the first ``start`` draws are
    made and dropped first (index arithmetic, no item is read), so a run resumed after ``start``
    steps continues with the very batches it would have drawn, without saving the sampler's
    state. With a :class:`MultiSourceSampler`, ``dataset`` is the concatenation of the sources in
    the sampler's order (as :class:`torch.utils.data.ConcatDataset` numbers it) and every item
    also carries its source id: appended to a tuple item (``(image, label)`` items give batches
    ``(images, labels, sources)``), under the key ``"source"`` of a mapping item, and as
    ``(item, source)`` for any other item (an image alone).

    A sampler that has drawn already (or was given a state with
    :meth:`~MultiSourceSampler.load_state_dict`) is continued from its position with ``start=0``;
    with ``start > 0`` it must be fresh, since ``start`` counts the draws from the stream's start.

    Args:
        dataset: Indexable dataset (the sources concatenated, for a multi-source sampler).
        sampler: A fresh sampler (its stream at the start) when ``start > 0``; with
            ``start=0``, any sampler, continued from its position.
        start: Draws to skip: the steps already taken (an integer >= 0).
        **loader_kwargs: Passed to the DataLoader (``num_workers``, ``pin_memory``, ...).

    Returns:
        An iterator over collated batches; it never ends.

    Raises:
        TypeError: If ``sampler`` is neither sampler of this module or ``start`` is no integer.
        ValueError: If ``start`` is negative, ``start > 0`` with a sampler that is not at its
            stream's start, or the dataset's size does not match a multi-source sampler's; when a
            batch is read, if a mapping item already has a key ``"source"``.

    Example:
        >>> data = torch.utils.data.TensorDataset(torch.arange(10.0), torch.arange(10))
        >>> first = sampler_loader(data, InfiniteSampler(10, 4, seed=1))
        >>> _ = next(first); expected = next(first)
        >>> resumed = sampler_loader(data, InfiniteSampler(10, 4, seed=1), start=1)
        >>> torch.equal(next(resumed)[0], expected[0])
        True
    """
    if not isinstance(sampler, (MultiSourceSampler, InfiniteSampler)):
        raise TypeError(
            f"`sampler` must be a MultiSourceSampler or an InfiniteSampler, got {type(sampler).__name__}"
        )
    start = _check_int(start, "start", minimum=0)
    if start > 0:
        position = _position(sampler)
        if position:
            raise ValueError(
                f"`start` = {start} counts the draws from the stream's start, so `sampler` must be "
                f"fresh, but it is at {position}: pass start=0 to continue from there, or a new "
                "sampler"
            )
    if isinstance(sampler, MultiSourceSampler):
        if len(dataset) != sampler.total_size:
            raise ValueError(
                f"`dataset` has {len(dataset)} items, the sampler's sources {sampler.total_size} "
                f"(domain_sizes={list(sampler.domain_sizes)})"
            )
        dataset = _WithSource(dataset, sampler.domain_sizes)
    for _ in range(start):
        sampler.sample()
    return iter(DataLoader(dataset, batch_sampler=sampler, **loader_kwargs))
