"""embed_2d: PCA against an eigendecomposition reference, t-SNE through scikit-learn, fallbacks."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from torch import Tensor

import lacmfer.analysis._embedding as module
from lacmfer.analysis import Embedding, embed_2d


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _iterations(n: int) -> dict[str, int]:
    """t-SNE's iteration setting, named ``max_iter`` since scikit-learn 1.5 and ``n_iter`` before."""
    from sklearn.manifold import TSNE

    return {"max_iter" if "max_iter" in inspect.signature(TSNE).parameters else "n_iter": n}


def pca_reference(x: Tensor) -> np.ndarray:
    """Projection on the two leading eigenvectors of the covariance (numpy), with the documented
    sign: the largest-magnitude entry of each axis is positive."""
    a = x.double().numpy()
    centred = a - a.mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred)
    axes = vectors[:, np.argsort(values)[::-1][:2]]
    for j in range(axes.shape[1]):
        if axes[np.argmax(np.abs(axes[:, j])), j] < 0:
            axes[:, j] = -axes[:, j]
    points = centred @ axes
    if points.shape[1] < 2:
        points = np.concatenate([points, np.zeros((points.shape[0], 2 - points.shape[1]))], axis=1)
    return points


def _anisotropic(n: int, d: int, seed: int) -> Tensor:
    g = _gen(seed)
    scales = torch.linspace(3.0, 0.2, d, dtype=torch.float64)  # distinct variances: unique axes
    return torch.randn(n, d, generator=g, dtype=torch.float64) * scales + 10.0


@pytest.mark.parametrize("shape", [(40, 6), (5, 12), (30, 2), (30, 1)])
def test_pca_matches_reference(shape: tuple[int, int]) -> None:
    x = _anisotropic(*shape, seed=shape[0] + shape[1])
    out = embed_2d(x, method="pca")
    assert isinstance(out, Embedding) and out.method == "pca"
    assert out.points.shape == (shape[0], 2) and out.points.dtype == torch.float64
    want = torch.from_numpy(pca_reference(x))
    torch.testing.assert_close(out.points, want, rtol=1e-8, atol=1e-8)
    # up to sign, it is the plain SVD projection
    u, s, _ = torch.linalg.svd(x - x.mean(dim=0), full_matrices=False)
    scores = (u * s)[:, :2]
    for j in range(min(2, shape[1])):
        assert torch.allclose(out.points[:, j].abs(), scores[:, j].abs(), atol=1e-8)


def test_pca_edge_cases_and_dtypes() -> None:
    single = embed_2d(torch.tensor([[1.0, 2.0, 3.0]]), method="pca")
    assert torch.equal(single.points, torch.zeros(1, 2))
    constant = embed_2d(torch.ones(4, 3), method="pca").points
    assert torch.equal(constant, torch.zeros(4, 2))
    assert embed_2d(torch.randn(5, 3).half(), method="pca").points.dtype == torch.float32
    x = _anisotropic(20, 4, seed=1).requires_grad_()
    points = embed_2d(x, method="pca").points
    assert points.grad_fn is None


def test_pca_is_deterministic_and_permutation_equivariant() -> None:
    x = _anisotropic(25, 5, seed=2)
    out = embed_2d(x, method="pca").points
    assert torch.equal(out, embed_2d(x, method="pca").points)
    perm = torch.randperm(25, generator=_gen(3))
    torch.testing.assert_close(embed_2d(x[perm], method="pca").points, out[perm])


def test_auto_falls_back_to_pca_without_sklearn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "_sklearn_tsne", lambda: None)
    x = _anisotropic(10, 3, seed=4)
    out = embed_2d(x)
    assert out.method == "pca"
    assert torch.equal(out.points, embed_2d(x, method="pca").points)
    with pytest.raises(ImportError, match=r"pip install scikit-learn.*lacmfer\[analysis\]"):
        embed_2d(x, method="tsne")


def test_tsne() -> None:
    pytest.importorskip("sklearn")
    g = _gen(5)
    labels = torch.arange(3).repeat_interleave(20)
    x = 6.0 * torch.eye(3)[labels] + torch.randn(60, 3, generator=g)
    kwargs = {"perplexity": 10.0, "tsne_kwargs": _iterations(250)}
    out = embed_2d(x, method="tsne", seed=0, **kwargs)
    assert out.method == "tsne" and out.points.shape == (60, 2)
    assert out.points.dtype == torch.float32 and bool(out.points.isfinite().all())
    assert torch.equal(out.points, embed_2d(x, method="tsne", seed=0, **kwargs).points)
    # with the default PCA initialisation t-SNE uses no randomness; a random one follows the seed
    assert torch.equal(out.points, embed_2d(x, method="tsne", seed=1, **kwargs).points)
    rand = {"perplexity": 10.0, "tsne_kwargs": {**_iterations(250), "init": "random"}}
    first = embed_2d(x, method="tsne", seed=0, **rand).points
    assert torch.equal(first, embed_2d(x, method="tsne", seed=0, **rand).points)
    assert not torch.equal(first, embed_2d(x, method="tsne", seed=1, **rand).points)
    assert embed_2d(x[:8], method="auto", tsne_kwargs=_iterations(250)).method == "tsne"
    # the clusters stay apart: each point's nearest neighbour has its label
    d = torch.cdist(out.points, out.points) + torch.eye(60) * 1e9
    assert bool((labels[d.argmin(dim=1)] == labels).float().mean() > 0.9)


def test_errors() -> None:
    x = torch.randn(6, 3)
    with pytest.raises(ValueError, match=r"`features` must have 2 dimensions"):
        embed_2d(x[0])
    with pytest.raises(TypeError, match=r"`features` must be a floating-point tensor"):
        embed_2d(x.long())
    with pytest.raises(
        ValueError, match=r"`method` must be one of 'auto', 'tsne', 'pca'; got 'umap'"
    ):
        embed_2d(x, method="umap")
    with pytest.raises(ValueError, match=r"`perplexity` must be > 0"):
        embed_2d(x, perplexity=0.0)
    with pytest.raises(TypeError, match=r"`seed` must be an int"):
        embed_2d(x, seed=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"`tsne_kwargs` must be a mapping"):
        embed_2d(x, tsne_kwargs=[("max_iter", 250)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`features` must be finite, got 3 NaN or infinite"):
        embed_2d(torch.cat([x, torch.full((1, 3), float("inf"))]), method="pca")  # SVD failed
    if module._sklearn_tsne() is not None:
        with pytest.raises(ValueError, match=r"t-SNE needs at least 2 samples"):
            embed_2d(x[:1], method="tsne")
        with pytest.raises(ValueError, match=r"at least 2 features in `features`.*\(6, 1\)"):
            embed_2d(x[:, :1], method="tsne")
        # a random initialisation does not need two features
        out = embed_2d(x[:, :1], method="tsne", tsne_kwargs={"init": "random", **_iterations(250)})
        assert out.points.shape == (6, 2) and bool(torch.isfinite(out.points).all())
