r"""One report of a feature space: how far the domains lie apart, class by class, and a 2-D map."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, NamedTuple, Optional, Union

import torch
from torch import Tensor

from ._class_separation import class_separation
from ._collector import CollectedFeatures
from ._common import new_figure
from ._domain_distance import domain_distance_matrix
from ._embedding import embed_2d
from ._proxy_a_distance import proxy_a_distance

__all__ = ["ShiftReport", "plot_shift", "shift_report"]


class ShiftReport(NamedTuple):
    r"""Result of :func:`shift_report`: numbers and map of one feature space, JSON-ready.

    Attributes:
        distances: :math:`(M, M)` squared MMD between every pair of domains (sources and target).
        same_class: :math:`(K,)` squared MMD between class :math:`k` in one domain and class
            :math:`k` in another, averaged over the pairs of domains (NaN for a class that no two
            domains hold).
        other_class: scalar, the same between *different* classes, averaged over classes: the
            scale against which ``same_class`` is small or not.
        proxy_a: proxy A-distance between the pooled sources and the target, ``(mean, std)``.
        separation: scalar, within-class spread over between-class distance, all labelled rows.
        domain_separation: :math:`(M,)` the same within each domain.
        points: :math:`(N, 2)` 2-D map of the rows.
        method: ``"tsne"`` or ``"pca"``, what made ``points``.
        domains: :math:`(N,)` domain of each row.
        labels: :math:`(N,)` label of each row (``-1``: none).
        target: the target's domain index (``None`` in a report written before it was kept:
            :func:`plot_shift` then takes the last domain).
    """

    distances: Tensor
    same_class: Tensor
    other_class: Tensor
    proxy_a: tuple[float, float]
    separation: Tensor
    domain_separation: Tensor
    points: Tensor
    method: str
    domains: Tensor
    labels: Tensor
    target: Optional[int] = None

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values (NaN as ``None``), for JSON; :meth:`from_dict` reads them back."""

        def plain(v: Any) -> Any:
            if isinstance(v, Tensor):
                v = v.tolist()
            if isinstance(v, float):
                return None if math.isnan(v) else v
            if isinstance(v, (list, tuple)):
                return [plain(x) for x in v]
            return v

        return {k: plain(v) for k, v in self._asdict().items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ShiftReport:
        """The report :meth:`to_dict` wrote."""

        def tensor(v: Any, dtype: torch.dtype = torch.float32) -> Tensor:
            return torch.tensor(_nan(v), dtype=dtype)

        return cls(
            distances=tensor(values["distances"]),
            same_class=tensor(values["same_class"]),
            other_class=tensor(values["other_class"]),
            proxy_a=(float(values["proxy_a"][0]), float(values["proxy_a"][1])),
            separation=tensor(values["separation"]),
            domain_separation=tensor(values["domain_separation"]),
            points=tensor(values["points"]).reshape(-1, 2),
            method=str(values["method"]),
            domains=tensor(values["domains"], torch.int64),
            labels=tensor(values["labels"], torch.int64),
            target=None if values.get("target") is None else int(values["target"]),
        )


def _nan(v: Any) -> Any:
    if v is None:
        return math.nan
    if isinstance(v, list):
        return [_nan(x) for x in v]
    return v


def shift_report(
    data: CollectedFeatures,
    *,
    target: int,
    num_classes: Optional[int] = None,
    embed: str = "auto",
    seed: int = 0,
) -> ShiftReport:
    r"""Measure a feature space with every function of :mod:`lacmfer.analysis` at once.

    :func:`domain_distance_matrix` (with the labels, for the class-wise distances),
    :func:`class_separation`, :func:`proxy_a_distance` of the pooled sources (every domain but
    ``target``) against the target, and :func:`embed_2d`. Give the target rows labels only for an
    evaluation (its test set); unlabelled rows (``-1``) are left out of the class-wise numbers.

    Args:
        data: rows collected by :class:`FeatureCollector` (features, labels, domains).
        target: the target's domain index.
        num_classes: :math:`K` (default: the largest label + 1; 1 when no row is labelled, and
            the class-wise numbers are NaN).
        embed: ``"auto"``, ``"tsne"`` or ``"pca"``, passed to :func:`embed_2d`.
        seed: seed of the A-distance's folds and of the map.

    Returns:
        :class:`ShiftReport`.

    Raises:
        ValueError: if ``target`` has no rows or no other domain has any (and as the functions
            it calls).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> labels = torch.arange(3).repeat(40)
        >>> domains = torch.arange(2).repeat_interleave(60)
        >>> features = 4.0 * torch.eye(3)[labels] + 0.5 * torch.randn(120, 3, generator=g)
        >>> report = shift_report(CollectedFeatures(features, labels, domains, None), target=1,
        ...                       embed="pca")
        >>> report.distances.shape, report.method, report.proxy_a[0] < 0.5
        (torch.Size([2, 2]), 'pca', True)
    """
    feats, domains, labels = data.features, data.domains, data.labels
    is_target = domains == target
    if not bool(is_target.any()) or bool(is_target.all()):
        raise ValueError(
            f"`target` ({target}) must hold some rows of `data` and other domains the rest; "
            f"domains present: {sorted(set(domains.tolist()))}"
        )
    k = num_classes if num_classes is not None else max(int(labels.max()) + 1, 1)
    dist = domain_distance_matrix(feats, domains, labels=labels, num_classes=k)
    assert dist.class_matrix is not None  # labels were given
    off = ~torch.eye(k, dtype=torch.bool)
    other = dist.class_matrix[off]
    other = (
        other[~other.isnan()].mean() if bool((~other.isnan()).any()) else other.new_tensor(math.nan)
    )
    sep = class_separation(feats, labels, domains, num_classes=k)
    pad = proxy_a_distance(feats[~is_target], feats[is_target], seed=seed)
    emb = embed_2d(feats, method=embed, seed=seed)
    assert sep.domain_ratio is not None  # domains were given
    return ShiftReport(
        distances=dist.matrix,
        same_class=dist.class_matrix.diagonal(),
        other_class=other,
        proxy_a=(float(pad.mean), float(pad.std)),
        separation=sep.ratio,
        domain_separation=sep.domain_ratio,
        points=emb.points,
        method=emb.method,
        domains=domains,
        labels=labels,
        target=int(target),
    )


def plot_shift(
    reports: Sequence[tuple[str, ShiftReport]],
    domain_names: Sequence[str],
    class_names: Sequence[str],
    *,
    features: Union[str, os.PathLike[str]],
    distances: Union[str, os.PathLike[str]],
) -> bool:
    r"""Draw :class:`ShiftReport`\ s side by side (e.g. before and after adaptation).

    ``features``: one row per report, the 2-D map coloured by domain (the report's target in
    black) and by class. ``distances``: one column per report, the domain-by-domain distances,
    and below them ``same_class`` against ``other_class``.

    Args:
        reports: ``(title, report)`` pairs.
        domain_names: the name of each domain index.
        class_names: the name of each class.
        features: the map's PNG.
        distances: the distances' PNG.

    Returns:
        ``False`` when matplotlib is not installed (nothing drawn), else ``True``.
    """
    n = len(reports)
    fig = new_figure(10, 4.4 * n)
    if fig is None:
        return False
    axes = fig.subplots(n, 2, squeeze=False)
    for row, (title, r) in enumerate(reports):
        xy, target = r.points.numpy(), len(domain_names) - 1 if r.target is None else r.target
        for d, name in enumerate(domain_names):
            keep = (r.domains == d).numpy()
            style = {"c": "black", "marker": "x"} if d == target else {}
            axes[row][0].scatter(xy[keep, 0], xy[keep, 1], s=5, label=name, **style)
        for c, name in enumerate(class_names):
            keep = (r.labels == c).numpy()
            axes[row][1].scatter(xy[keep, 0], xy[keep, 1], s=5, label=name)
        for ax, by in zip(axes[row], ("domain (target: black x)", "class")):
            ax.set_title(f"{title}: {r.method} map by {by}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.legend(fontsize=6, markerscale=2)
    fig.tight_layout()
    fig.savefig(features, dpi=110)
    fig = new_figure(4.6 * n, 8)
    axes = fig.subplots(2, n, squeeze=False)
    top = max(float(r.distances.nan_to_num().max()) for _, r in reports) or 1.0
    bars = max(
        max(float(r.same_class.nan_to_num().max()), float(r.other_class.nan_to_num()))
        for _, r in reports
    )
    for col, (title, r) in enumerate(reports):
        ax = axes[0][col]
        im = ax.imshow(r.distances.numpy(), vmin=0.0, vmax=top, cmap="viridis")
        ax.set_xticks(range(len(domain_names)), domain_names, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(domain_names)), domain_names, fontsize=7)
        ax.set_title(f"{title}: squared MMD between domains\nproxy A-distance sources/target "
                     f"{r.proxy_a[0]:.2f} ± {r.proxy_a[1]:.2f}", fontsize=8)  # fmt: skip
        fig.colorbar(im, ax=ax, fraction=0.046)
        ax = axes[1][col]
        ax.bar(range(len(class_names)), r.same_class.nan_to_num().numpy(), label="same class")
        ax.axhline(float(r.other_class), color="red", linestyle="--", label="other classes (mean)")
        ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right", fontsize=7)
        ax.set_ylim(0.0, 1.15 * bars or 1.0)
        ax.set_title(f"same class across domains; class separation {float(r.separation):.2f}",
                     fontsize=8)  # fmt: skip
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(distances, dpi=110)
    return True
