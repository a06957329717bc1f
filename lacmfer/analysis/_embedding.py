r"""Two-dimensional embeddings of features for plots: t-SNE (scikit-learn) or PCA (torch)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Optional

import torch
from torch import Tensor

from .._checks import check_choice, check_finite, check_real, check_seed
from .._precision import compute_dtype, no_autocast
from ._common import check_features

__all__ = ["EMBED_METHODS", "Embedding", "embed_2d"]

#: The methods of :func:`embed_2d`: ``"auto"`` (t-SNE when scikit-learn is installed, else PCA),
#: ``"tsne"`` and ``"pca"``.
EMBED_METHODS = ("auto", "tsne", "pca")


class Embedding(NamedTuple):
    """Result of :func:`embed_2d`.

    Attributes:
        points: :math:`(N, 2)` coordinates, one row per input row.
        method: the method that produced them, ``"tsne"`` or ``"pca"`` (``method="auto"`` says here
            whether it fell back to PCA).
    """

    points: Tensor
    method: str


def _sklearn_tsne() -> Optional[Any]:
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        return None
    return TSNE


def pca_2d(x: Tensor) -> Tensor:
    """Projection of the centred rows of ``x`` on its two leading principal axes (sign-fixed)."""
    n = x.shape[0]
    centred = x - x.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)  # vh: (min(n, d), d)
    axes = vh[:2]
    # Deterministic signs: the largest-magnitude entry of each axis is positive.
    pivot = axes.abs().argmax(dim=1, keepdim=True)
    signs = torch.sign(axes.gather(1, pivot))
    axes = axes * torch.where(signs == 0, torch.ones_like(signs), signs)
    points = centred @ axes.T
    if points.shape[1] < 2:  # one sample or one feature: the second coordinate is 0
        points = torch.cat([points, points.new_zeros(n, 2 - points.shape[1])], dim=1)
    return points


def embed_2d(
    features: Tensor,
    *,
    method: str = "auto",
    seed: int = 0,
    perplexity: float = 30.0,
    tsne_kwargs: Optional[Mapping[str, Any]] = None,
) -> Embedding:
    r"""Embed features in two dimensions for a scatter plot.

    * ``"tsne"``: t-SNE (van der Maaten and Hinton, JMLR 2008) through
      :class:`sklearn.manifold.TSNE` with ``init="pca"``, ``learning_rate="auto"``,
      ``random_state=seed`` and the given ``perplexity`` (lowered to :math:`(N - 1)/3` for small
      :math:`N`, which t-SNE needs); ``tsne_kwargs`` passes further settings (e.g.
      ``{"max_iter": 500}``, ``n_iter`` before scikit-learn 1.5). Deterministic for a seed; with
      the default PCA initialisation it uses no randomness at all
      (``tsne_kwargs={"init": "random"}`` makes the seed matter). scikit-learn is an optional
      dependency (``pip install lacmfer[analysis]``). t-SNE keeps neighbourhoods, not distances:
      the size of and the gaps between its clusters mean little; compare domains with
      :func:`~lacmfer.analysis.domain_distance_matrix` instead.
    * ``"pca"``: the projection of the centred features on their two leading principal axes, from
      an exact SVD in torch (no randomness; ``seed`` is unused). Each axis's sign makes its
      largest-magnitude entry positive, so the result does not depend on the SVD routine.
    * ``"auto"`` (default): t-SNE when scikit-learn is importable, else PCA, silently; the result's
      ``method`` says which ran.

    Embed all domains **in one call** so that their points share one map. t-SNE costs roughly
    :math:`O(N \log N)` per iteration (Barnes-Hut) and runs on the CPU: subsample to a few thousand
    points (:class:`~lacmfer.analysis.FeatureCollector`'s ``max_samples``).

    Args:
        features: the features to embed (e.g. of every domain, concatenated).
        method: ``"auto"``, ``"tsne"`` or ``"pca"`` (:data:`EMBED_METHODS`).
        seed: the random state of t-SNE (any int, taken modulo :math:`2^{32}`).
        perplexity: t-SNE's perplexity (> 0), about the number of neighbours each point keeps.
        tsne_kwargs: further keyword arguments of :class:`sklearn.manifold.TSNE`.

    Shape:
        - features: :math:`(N, D)`.
        - Output: points :math:`(N, 2)` on the device of ``features``, float32 for t-SNE and for
          half-precision features, else their dtype.

    Returns:
        :class:`Embedding` ``(points, method)``.

    Raises:
        ImportError: for ``method="tsne"`` without scikit-learn.
        TypeError: if ``features`` is not floating-point or a setting has the wrong type.
        ValueError: on wrong dimensions, an unknown method, a non-positive perplexity, fewer
            than 2 samples for t-SNE, or fewer than 2 features for its PCA initialisation.

    Example:
        >>> features = torch.tensor([[0.0, 0.0, 1.0], [2.0, 0.0, 1.0], [4.0, 0.0, 1.0]])
        >>> embed_2d(features, method="pca")
        Embedding(points=tensor([[-2.,  0.],
                [ 0.,  0.],
                [ 2.,  0.]]), method='pca')
    """
    check_features(features, "features")
    check_finite(features, "features")
    check_choice(method, "method", EMBED_METHODS)
    check_seed(seed)
    perplexity = check_real(perplexity, "perplexity", minimum=0.0, exclusive_minimum=True)
    if tsne_kwargs is not None and not isinstance(tsne_kwargs, Mapping):
        raise TypeError(
            f"`tsne_kwargs` must be a mapping or None, got {type(tsne_kwargs).__name__}"
        )
    tsne = None if method == "pca" else _sklearn_tsne()
    if method == "tsne" and tsne is None:
        raise ImportError(
            "embed_2d(method='tsne') needs scikit-learn: `pip install scikit-learn` (or "
            "`pip install lacmfer[analysis]`), or use method='pca'"
        )
    dtype = compute_dtype(features)
    if tsne is None:
        with no_autocast(features.device):
            return Embedding(pca_2d(features.detach().to(dtype)), "pca")
    n = features.shape[0]
    if n < 2:
        raise ValueError(
            f"t-SNE needs at least 2 samples in `features`, got shape {tuple(features.shape)}; "
            "use method='pca'"
        )
    settings: dict[str, Any] = {
        "n_components": 2,
        "perplexity": min(perplexity, (n - 1) / 3.0),
        "init": "pca",
        "learning_rate": "auto",
        "random_state": seed % (1 << 32),
    }
    settings.update(tsne_kwargs or {})
    if isinstance(settings["init"], str) and settings["init"] == "pca" and features.shape[1] < 2:
        raise ValueError(
            f"t-SNE's PCA initialisation needs at least 2 features in `features`, got shape "
            f"{tuple(features.shape)}; use method='pca' or tsne_kwargs={{'init': 'random'}}"
        )
    array = features.detach().to("cpu", torch.float32).numpy()
    points = torch.from_numpy(tsne(**settings).fit_transform(array)).to(torch.float32)
    return Embedding(points.to(features.device), "tsne")
