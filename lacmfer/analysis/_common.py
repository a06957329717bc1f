"""Checks and vectorised building blocks shared by the diagnostics of :mod:`lacmfer.analysis`.

The argument checks follow the package's conventions (``TypeError`` for types and dtypes,
``ValueError`` for shapes and values, the message names the argument and shows what was expected and
what was received) and reuse the checks of :mod:`lacmfer._checks`. Unlike the losses, the
diagnostics run once per evaluation, not once per step, so they may read values (a count of domains
inferred from the data, the range of the indices) at the price of a host synchronisation.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from .._checks import (
    check_float,
    check_index_range,
    check_labels,
    check_nonempty,
    check_positive_int,
    check_size,
)

__all__: list[str] = []

# Guards a division by the feature scale when every feature entry is exactly zero.
TINY_SCALE = 1e-30


def new_figure(width: float, height: float) -> Any:
    """A matplotlib ``Figure`` of that size, or None when matplotlib is not installed. Made without
    pyplot, so drawing neither switches the caller's backend nor registers a window."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure(figsize=(width, height))


def shape_str(x: Tensor) -> str:
    """``(2, 3)``-style shape for messages."""
    return "(" + ", ".join(str(s) for s in x.shape) + ")"


def check_features(x: Any, name: str, axes: str = "(N, D)") -> Tensor:
    """A non-empty floating-point feature matrix ``(N, D)`` with ``N, D >= 1``."""
    check_float(x, name, ndim=2, axes=axes)
    check_nonempty(x, name)
    check_nonempty(x, name, dim=1, what="feature")
    return x


def check_index(
    index: Any,
    name: str,
    features: Tensor,
    features_name: str,
    count: Optional[int],
    count_name: str,
    *,
    allow_negative: bool,
) -> int:
    """An integer index vector ``(N,)`` aligned with ``features``, with values in ``[0, count)``.

    With ``allow_negative`` entries below 0 are allowed and mean "no index" (an unlabelled sample).
    ``count`` ``None`` infers it as ``max + 1`` (one host read). Returns the count.
    """
    check_labels(index, name, axes="(N,)")
    check_size(index, name, 0, features, features_name, 0, "Sample counts (dim 0)")
    if index.device != features.device:
        raise ValueError(
            f"`{name}` and `{features_name}` must be on one device, got {index.device} and "
            f"{features.device}"
        )
    if count is not None:
        check_positive_int(count, count_name)
    valid = index[index >= 0] if allow_negative else index
    if count is None:
        if not allow_negative and int(index.min()) < 0:  # before inferring the count from them
            raise ValueError(
                f"`{name}` must hold indices >= 0, got values in [{int(index.min())}, "
                f"{int(index.max())}] (shape {shape_str(index)})"
            )
        if valid.numel() == 0:
            raise ValueError(
                f"`{name}` holds no index >= 0 (shape {shape_str(index)}), so `{count_name}` cannot "
                f"be inferred; pass `{count_name}`"
            )
        count = int(valid.max()) + 1
    check_index_range(valid, name, count, f"`{count_name}`")
    return count


def membership(index: Tensor, count: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """The row-normalised one-hot membership matrix of ``index`` and the counts.

    Returns ``(weights, counts)`` with ``weights[i, c] = 1[index_i = c] / n_c`` (a column of zeros
    for an empty cell, never a division by zero), shape ``(N, count)``, and ``counts`` ``(count,)``
    int64. Entries below 0 belong to no column.
    """
    cells = torch.arange(count, device=index.device)
    onehot = (index[:, None] == cells[None, :]).to(dtype)
    counts = onehot.sum(dim=0)
    weights = onehot / counts.clamp_min(1.0)
    return weights, counts.round().to(torch.int64)


def scaled_centred(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(x - mean) / s`` with ``s`` the largest absolute entry (both detached), and ``s``.

    Any finite input gives entries in ``[-2, 2]``: no overflow in the squared distances, and no
    cancellation for features with a large common offset. Distances scale back by ``s**2``.
    """
    scale = x.detach().abs().amax().clamp_min(TINY_SCALE)
    z = x / scale
    return z - z.detach().mean(dim=0, keepdim=True), scale


def sq_distances(a: Tensor, b: Tensor) -> Tensor:
    """Squared Euclidean distances ``(n, m)`` from one matrix product, clamped at 0."""
    sq_a = (a * a).sum(dim=1)
    sq_b = (b * b).sum(dim=1)
    return (sq_a[:, None] + sq_b[None, :] - 2.0 * (a @ b.T)).clamp_min(0.0)


def gram_distances(gram: Tensor) -> Tensor:
    """``G_ii + G_jj - 2 G_ij``, clamped at 0, exactly symmetric, for a Gram matrix ``G``."""
    gram = 0.5 * (gram + gram.T)
    diag = torch.diagonal(gram)
    return (diag[:, None] + diag[None, :] - 2.0 * gram).clamp_min(0.0)
