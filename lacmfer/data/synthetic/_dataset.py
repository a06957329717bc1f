"""The synthetic FER datasets: one domain (:class:`SyntheticFER`), the six (:func:`synthetic_domains`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Optional, Union

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..._checks import check_positive_int
from ..protocol import DomainSplits
from ._faces import _draw_identities, _identity_pool, _render, _uniform
from ._styles import (
    _CONFUSION,
    SYNTHETIC_DOMAINS,
    SyntheticStyle,
    _domain_seed,
    canonical_domain,
    synthetic_style,
)

__all__ = ["SyntheticFER", "synthetic_domains"]


class SyntheticFER(Dataset[tuple[Tensor, int]]):
    """A synthetic FER dataset in the style of one of the six protocol datasets.

    Args:
        domain: One of :data:`SYNTHETIC_DOMAINS` (case-insensitive; aliases such as ``"ck"``,
            ``"raf"``, ``"fer2013"``, ``"oulu"``) or a :class:`SyntheticStyle`.
        size: Number of images ``N``.
        image_size: Side ``S``.
        seed: Seed; different seeds give disjoint draws (use one per split).
        label_noise: Override the style's label-noise rate.

    Attributes:
        images: ``(N, 3, S, S)`` float32 in ``[0, 1]`` (``12·N·S²`` bytes: 10 000 images at
            112 px take 1.5 GB, at 64 px 0.5 GB).
        labels: ``(N,)`` int64 labels, noisy where the domain has label noise.
        clean_labels: ``(N,)`` int64 expressions actually rendered.
        intensity: ``(N,)`` float32 expression intensities.
        identity: ``(N,)`` int64 subject ids (pool ids for lab domains, ``-1`` in the wild).
        domain: Canonical domain name.
        style: The :class:`SyntheticStyle`.

    Shape:
        - ``dataset[i]``: ``((3, S, S) image, int label)``.

    Example:
        >>> ds = SyntheticFER("jaffe", 8, image_size=32, seed=0)
        >>> ds.images.shape, ds.domain, len(ds)
        (torch.Size([8, 3, 32, 32]), 'JAFFE', 8)
    """

    def __init__(
        self,
        domain: Union[str, SyntheticStyle],
        size: int,
        *,
        image_size: int = 112,
        seed: int = 0,
        label_noise: Optional[float] = None,
    ) -> None:
        style = synthetic_style(domain)
        if label_noise is not None:
            style = replace(style, label_noise=float(label_noise))
        self.style = style
        self.domain = style.name
        self.size = check_positive_int(size, "size", minimum=0)
        self.image_size = check_positive_int(image_size, "image_size", minimum=8)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"`seed` must be an int, got {type(seed).__name__}")
        self.seed = seed
        gen = torch.Generator().manual_seed(_domain_seed(style.name) * 1_000_003 + seed)
        prior = torch.tensor(style.class_counts, dtype=torch.float64)
        self.clean_labels: Tensor = (
            torch.multinomial(prior, size, replacement=True, generator=gen)
            if size
            else torch.zeros(0, dtype=torch.int64)  # multinomial refuses to draw nothing
        )
        self.intensity: Tensor = _uniform(size, style.intensity[0], style.intensity[1], gen)
        flip = torch.rand(size, generator=gen) < style.label_noise
        confusion = torch.tensor(_CONFUSION, dtype=torch.float64)
        wrong = (
            torch.multinomial(confusion[self.clean_labels], 1, generator=gen).squeeze(1)
            if size
            else self.clean_labels.clone()
        )
        self.labels: Tensor = torch.where(flip, wrong, self.clean_labels)
        if style.identities is None:
            self.identity: Tensor = torch.full((size,), -1, dtype=torch.int64)
            ident = _draw_identities(size, style, gen)
        else:
            self.identity = torch.randint(style.identities, (size,), generator=gen)
            ident = _identity_pool(style)[self.identity]
        self.images: Tensor = _render(
            self.clean_labels, self.intensity, style, self.image_size, gen, ident
        )

    @property
    def keys(self) -> list[str]:
        """Sample identities ``"synthetic:<domain>:<seed>:<index>"``."""
        return [f"synthetic:{self.domain}:{self.seed}:{i}" for i in range(self.size)]

    @property
    def domain_index(self) -> int:
        """Position of the domain in :data:`SYNTHETIC_DOMAINS` (-1 for a custom style)."""
        return SYNTHETIC_DOMAINS.index(self.domain) if self.domain in SYNTHETIC_DOMAINS else -1

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.images[index], int(self.labels[index])

    def get_batch(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        """Images and labels at ``indices`` in one indexing call (no per-sample work).

        Shape:
            - indices: ``(B,)``.
            - output: ``(B, 3, S, S)`` and ``(B,)``.
        """
        return self.images[indices], self.labels[indices]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.domain!r}, size={self.size}, "
            f"image_size={self.image_size}, seed={self.seed})"
        )


def synthetic_domains(
    size: int = 2000,
    test_size: int = 1000,
    *,
    domains: Sequence[str] = SYNTHETIC_DOMAINS,
    image_size: int = 112,
    seed: int = 0,
) -> dict[str, DomainSplits]:
    """The six synthetic domains as disjoint adaptation / test :class:`SyntheticFER` sets.

    The mapping :func:`~lacmfer.data.leave_one_domain_out` takes, like
    :func:`~lacmfer.data.fer_list_domains` for the real lists.

    Args:
        size: Adaptation images per domain.
        test_size: Test images per domain.
        domains: Domain names, in order.
        image_size: Side of the images.
        seed: Adaptation sets use ``seed``, test sets ``seed + 1``.

    Returns:
        ``name -> DomainSplits(adapt, test)``.

    Example:
        >>> from lacmfer.data import leave_one_domain_out
        >>> doms = synthetic_domains(20, 10, domains=("CK+", "JAFFE", "RAF-DB"), image_size=16)
        >>> task = leave_one_domain_out(doms, "raf")
        >>> task.sources, task.source_sizes, len(task.target_test)
        (('CK+', 'JAFFE'), [20, 20], 10)
    """
    out: dict[str, DomainSplits] = {}
    for raw in domains:
        name = canonical_domain(raw)
        out[name] = DomainSplits(
            SyntheticFER(name, size, image_size=image_size, seed=seed),
            SyntheticFER(name, test_size, image_size=image_size, seed=seed + 1),
        )
    return out
