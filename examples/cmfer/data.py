"""Data of one leave-one-domain-out task, as the training loop consumes it.

:class:`CMFERData` hands out, on the training device,

* ``next_batch()`` -- a :class:`TrainBatch`: ``B_s`` source images with labels and domain ids from
  :class:`~lacmfer.data.MultiSourceSampler` and ``B_t`` target images from
  :class:`~lacmfer.data.InfiniteSampler` (raw ``[0, 1]`` pixels; the loop augments and normalises);
* ``test_batches()`` -- the target test set, sharded over DDP ranks;
* ``state_dict()`` / ``load_state_dict()`` -- the sampler positions of the batches *consumed*.

The task itself comes from :func:`lacmfer.data.leave_one_domain_out`, over
:func:`lacmfer.data.synthetic_domains` (no ``--data-root``) or :func:`lacmfer.data.fer_list_domains`
(real image lists). Two back ends, chosen by the datasets:

* **tensors on the device** (synthetic data: datasets with an ``images`` tensor, or subsets of
  one): every image is moved to the device once and batches are index operations there;
* **a DataLoader** (real image files): worker processes decode, pinned memory, non-blocking copies.
  The sampler runs in the main process inside the loader's batch sampler; the state after each
  drawn batch is queued and popped when that batch is consumed, so a checkpoint holds the position
  of the batches trained on, not of the ones the loader prefetched (exact resume).

The target labels travel with the target batches only for logged diagnostics (pseudo-label
accuracy); the training loop never passes them to a loss.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Iterator
from typing import Any, Callable, NamedTuple, Optional

import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, DataLoader, Subset

from lacmfer.data import (
    SIX_DOMAINS,
    InfiniteSampler,
    LeaveOneDomainOutTask,
    MultiSourceSampler,
    fer_list_domains,
    leave_one_domain_out,
    protocol_lists_dir,
    synthetic_domains,
)

from .config import TrainConfig

__all__ = ["TARGETS", "CMFERData", "TrainBatch", "build_data", "real_task", "synthetic_task"]

TARGETS: tuple[str, ...] = tuple(SIX_DOMAINS)


class TrainBatch(NamedTuple):
    """One training step's data (on the device).

    Attributes:
        x_s: ``(B_s, 3, S, S)`` source images in ``[0, 1]``.
        y_s: ``(B_s,)`` source labels.
        d_s: ``(B_s,)`` source-domain ids.
        x_t: ``(B_t, 3, S, S)`` target images in ``[0, 1]``.
        y_t: ``(B_t,)`` target labels -- diagnostics only, never a loss.
    """

    x_s: Tensor
    y_s: Tensor
    d_s: Tensor
    x_t: Tensor
    y_t: Tensor


def _labels(ds: Any) -> Tensor:
    labels = getattr(ds, "labels", None)
    if isinstance(labels, Tensor):
        return labels
    inner, indices = getattr(ds, "dataset", None), getattr(ds, "indices", None)
    if inner is not None and isinstance(indices, Tensor):
        return _labels(inner)[indices]
    if isinstance(ds, ConcatDataset):
        return torch.cat([_labels(d) for d in ds.datasets])
    return torch.tensor([int(ds[i][1]) for i in range(len(ds))])


def _images(ds: Any) -> Optional[Tensor]:
    """All images of a tensor-backed dataset (``SyntheticFER``, or a subset of one), else None."""
    images = getattr(ds, "images", None)
    if isinstance(images, Tensor):
        return images
    inner, indices = getattr(ds, "dataset", None), getattr(ds, "indices", None)
    if inner is not None and isinstance(indices, Tensor):
        base = _images(inner)
        return None if base is None else base[indices]
    if isinstance(ds, ConcatDataset):
        parts = [_images(d) for d in ds.datasets]
        return None if any(p is None for p in parts) else torch.cat(parts)  # type: ignore[arg-type]
    return None


@functools.lru_cache(maxsize=1)
def _synthetic_splits(
    train_size: int, test_size: int, image_size: int, seed: int, domains: tuple[str, ...]
) -> dict[str, Any]:
    """The rendered domains, kept for the next task of the same data (``--target all``, the
    benchmark driver): rendering is deterministic and training never writes into the images."""
    return synthetic_domains(
        train_size, test_size, domains=domains, image_size=image_size, seed=seed
    )


def synthetic_task(
    target: str,
    *,
    train_size: int,
    test_size: int,
    image_size: int,
    seed: int,
    domains: tuple[str, ...] = TARGETS,
) -> LeaveOneDomainOutTask:
    """The six synthetic domains with ``target`` held out: ``train_size`` images per domain for
    training/adaptation and a *separate* draw of ``test_size`` target test images (data seeds
    ``2·seed`` and ``2·seed + 1``)."""
    splits = _synthetic_splits(train_size, test_size, image_size, 2 * seed, tuple(domains))
    task = leave_one_domain_out(splits, target)
    task.notes.append("synthetic data: the target test set is a separate draw (no leakage)")
    return task


class _TrackedBatches:
    """A ``batch_sampler`` that draws in the main process and queues the sampler state (and the
    domain ids) of every batch it hands to the loader."""

    def __init__(self, draw: Callable[[], tuple[Tensor, Tensor]], state: Callable[[], Any]) -> None:
        self.draw, self.state = draw, state
        self.queue: collections.deque[tuple[Any, Tensor]] = collections.deque()

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            indices, domains = self.draw()
            self.queue.append((self.state(), domains))
            yield indices.tolist()


class CMFERData:
    """Source and target streams and the target test set of one task, on ``device``.

    Args:
        task: the datasets (see :func:`synthetic_task` and :func:`build_data`).
        device: where batches are delivered.
        batch_size: source images per step on this rank.
        target_batch_size: target images per step on this rank.
        eval_batch_size: test images per evaluation batch.
        source_mode: ``"pooled"`` (paper) or ``"balanced"``.
        seed: sampler seed (the same on every rank: ranks take disjoint parts of one stream).
        rank, world_size: DDP layout.
        num_workers: loader workers (file-backed datasets only).
        source_val: held-out labelled source images (never trained on), or None.
    """

    def __init__(
        self,
        task: LeaveOneDomainOutTask,
        *,
        device: torch.device,
        batch_size: int,
        target_batch_size: int,
        eval_batch_size: int,
        source_mode: str = "pooled",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        source_val: Optional[Any] = None,
    ) -> None:
        self.device = device
        self.target_name = task.target
        self.source_names = list(task.sources)
        self.notes = list(task.notes)
        self.num_domains = len(task.sources)
        sources = list(task.source_sets)
        self.num_classes = 7
        self.eval_batch_size = eval_batch_size
        self.rank, self.world_size = rank, world_size
        sizes = [len(ds) for ds in sources]
        self.source_sampler = MultiSourceSampler(
            sizes, batch_size, mode=source_mode, seed=seed, rank=rank, world_size=world_size
        )
        self.target_sampler = InfiniteSampler(
            len(task.target_adapt),
            target_batch_size,
            seed=seed,
            rank=rank,
            world_size=world_size,
        )
        self.test_set = task.target_test
        self.adapt_set = task.target_adapt
        self.source_val_set = source_val
        src_images = [_images(ds) for ds in sources]
        tgt_images = _images(task.target_adapt)
        self.tensors = tgt_images is not None and all(x is not None for x in src_images)
        if self.tensors:
            self.x_src = torch.cat(src_images).to(device)  # type: ignore[arg-type]
            self.y_src = torch.cat([_labels(ds) for ds in sources]).to(device)
            self.x_tgt = tgt_images.to(device)  # type: ignore[union-attr]
            self.y_tgt = _labels(task.target_adapt).to(device)
        else:
            pin = device.type == "cuda"
            self._src_batches = _TrackedBatches(self._draw_source, self.source_sampler.state_dict)
            self._tgt_batches = _TrackedBatches(self._draw_target, self.target_sampler.state_dict)
            common: dict[str, Any] = {"num_workers": num_workers, "pin_memory": pin}
            if num_workers > 0:
                common.update(persistent_workers=False, prefetch_factor=2)
            self._src_loader: DataLoader[Any] = DataLoader(
                ConcatDataset(sources), batch_sampler=self._src_batches, **common
            )
            self._tgt_loader: DataLoader[Any] = DataLoader(
                task.target_adapt, batch_sampler=self._tgt_batches, **common
            )
            self._loader_common = common
            self._src_iter: Optional[Iterator[Any]] = None
            self._tgt_iter: Optional[Iterator[Any]] = None
            self._src_state: Any = self.source_sampler.state_dict()
            self._tgt_state: Any = self.target_sampler.state_dict()

    # -- training stream -------------------------------------------------------------------------
    def _draw_source(self) -> tuple[Tensor, Tensor]:
        b = self.source_sampler.sample()
        return b.indices, b.domains

    def _draw_target(self) -> tuple[Tensor, Tensor]:
        idx = self.target_sampler.sample()
        return idx, idx

    def next_batch(self) -> TrainBatch:
        """The next step's source and target batches (this rank's share)."""
        if self.tensors:
            src = self.source_sampler.sample()
            idx_s = src.indices.to(self.device, non_blocking=True)
            idx_t = self.target_sampler.sample().to(self.device, non_blocking=True)
            return TrainBatch(
                self.x_src[idx_s],
                self.y_src[idx_s],
                src.domains.to(self.device, non_blocking=True),
                self.x_tgt[idx_t],
                self.y_tgt[idx_t],
            )
        if self._src_iter is None or self._tgt_iter is None:
            self._src_batches.queue.clear()
            self._tgt_batches.queue.clear()
            self._src_iter, self._tgt_iter = iter(self._src_loader), iter(self._tgt_loader)
        x_s, y_s = next(self._src_iter)
        self._src_state, d_s = self._src_batches.queue.popleft()
        x_t, y_t = next(self._tgt_iter)
        self._tgt_state, _ = self._tgt_batches.queue.popleft()

        def move(t: Tensor) -> Tensor:
            return t.to(self.device, non_blocking=True)

        return TrainBatch(move(x_s), move(y_s), move(d_s), move(x_t), move(y_t))

    def state_dict(self) -> dict[str, Any]:
        """Sampler positions after the last batch returned by :meth:`next_batch`."""
        if self.tensors:
            return {
                "source": self.source_sampler.state_dict(),
                "target": self.target_sampler.state_dict(),
            }
        return {"source": self._src_state, "target": self._tgt_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.source_sampler.load_state_dict(state["source"])
        self.target_sampler.load_state_dict(state["target"])
        if not self.tensors:
            self._src_state, self._tgt_state = state["source"], state["target"]
            self._src_iter = self._tgt_iter = None  # restart the loaders from the loaded state

    def close(self) -> None:
        """Stop the loader workers now (instead of whenever the iterators are collected)."""
        if self.tensors:
            return
        for it in (self._src_iter, self._tgt_iter):
            shutdown = getattr(it, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
        self._src_iter = self._tgt_iter = None

    # -- evaluation ------------------------------------------------------------------------------
    def _batches(self, ds: Any, rank: int, world_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """``(images, labels)`` batches of this rank's shard (``rank::world_size``) of ``ds``."""
        shard = torch.arange(rank, len(ds), world_size)
        images = _images(ds)
        if images is not None:
            labels = _labels(ds)
            for chunk in shard.split(self.eval_batch_size):
                yield (
                    images[chunk].to(self.device, non_blocking=True),
                    labels[chunk].to(self.device, non_blocking=True),
                )
            return
        loader = DataLoader(
            Subset(ds, shard.tolist()),
            batch_size=self.eval_batch_size,
            shuffle=False,
            **{k: v for k, v in self._loader_common.items() if k != "prefetch_factor"},
        )
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def test_batches(
        self, *, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """``(images, labels)`` batches of this rank's shard of the target test set."""
        yield from self._batches(self.test_set, rank, world_size)

    def adaptation_images(self, *, rank: int = 0, world_size: int = 1) -> Iterator[Tensor]:
        """Image batches of this rank's shard of the (unlabelled) target adaptation set, for the
        unsupervised validators. Only images: the labels are dropped here, before anything
        downstream could read them."""
        for x, _ in self._batches(self.adapt_set, rank, world_size):
            yield x

    def source_val_batches(
        self, *, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """``(images, labels)`` of the held-out source images (``--source-val-fraction``)."""
        if self.source_val_set is not None:
            yield from self._batches(self.source_val_set, rank, world_size)


def real_task(cfg: TrainConfig, target: str) -> LeaveOneDomainOutTask:
    """The paper's protocol on real image lists (:func:`lacmfer.data.fer_list_domains`).

    ``--lists`` is the folder of the list files (default: the ones shipped with lacmfer,
    :func:`lacmfer.data.protocol_lists_dir`), ``--data-root`` the folder the list paths point into
    once ``--strip-prefix`` (default ``../datasets``, as the published lists start) is removed.
    AffectNet's lists are not distributed: give them with ``--affectnet-lists ADAPT,TEST`` or leave
    AffectNet out with ``--domains``.
    """
    names = cfg.domain_names
    extra: dict[str, tuple[str, str]] = {}
    if cfg.affectnet_lists:
        adapt, _, test = cfg.affectnet_lists.partition(",")
        extra["AffectNet"] = (adapt, test or adapt)
    elif "AffectNet" in names:
        raise ValueError(
            "AffectNet's image lists are not distributed: pass `affectnet_lists` ADAPT,TEST or "
            "`domains` without AffectNet (e.g. --domains CK+,JAFFE,Oulu-CASIA,RAF-DB,FER-2013)"
        )
    domains = fer_list_domains(
        cfg.lists if cfg.lists is not None else protocol_lists_dir(),
        domains=names,
        lists=extra,
        root=cfg.data_root,
        strip_prefix=cfg.strip_prefix or None,
        image_size=cfg.image_size,
    )
    return leave_one_domain_out(domains, target, leakage_free=cfg.leakage_free, seed=cfg.split_seed)


def hold_out_sources(
    sources: list[Any], fraction: float, seed: int
) -> tuple[list[Any], Optional[ConcatDataset[Any]]]:
    """Split each source dataset into a training part and a held-out part of ``fraction`` of its
    images (a fixed draw of ``seed``); the held-out parts are pooled. ``fraction = 0``: no split."""
    if fraction == 0.0:
        return sources, None
    gen = torch.Generator().manual_seed(seed)
    train, held_out = [], []
    for ds in sources:
        order = torch.randperm(len(ds), generator=gen)
        n_val = max(1, round(fraction * len(ds)))
        train.append(Subset(ds, order[n_val:]))  # type: ignore[arg-type]
        held_out.append(Subset(ds, order[:n_val]))  # type: ignore[arg-type]
    return train, ConcatDataset(held_out)


def build_data(
    cfg: TrainConfig, *, device: torch.device, rank: int = 0, world_size: int = 1
) -> CMFERData:
    """The :class:`CMFERData` of ``cfg.target``: synthetic without ``data_root``, else real.

    The data and the adaptation/test split depend on ``cfg.split_seed`` only, never on
    ``cfg.seed``: runs with different seeds see the same images and are tested on the same set.
    """
    if cfg.data_root is None:
        task = synthetic_task(
            cfg.target,
            train_size=cfg.synthetic_train_size,
            test_size=cfg.synthetic_test_size,
            image_size=cfg.image_size,
            seed=cfg.split_seed,
            domains=cfg.domain_names,
        )
    else:
        task = real_task(cfg, cfg.target)
    sources, source_val = hold_out_sources(
        list(task.source_sets), cfg.source_val_fraction, cfg.split_seed
    )
    if source_val is not None:
        task = dataclasses.replace(task, source_sets=tuple(sources))
    return CMFERData(
        task,
        device=device,
        batch_size=cfg.batch_size // world_size,
        target_batch_size=cfg.target_batch // world_size,
        eval_batch_size=max(64, 2 * cfg.batch_size // world_size),
        source_mode=cfg.source_mode,
        seed=cfg.seed,
        rank=rank,
        world_size=world_size,
        num_workers=cfg.num_workers,
        source_val=source_val,
    )
