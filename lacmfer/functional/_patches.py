r"""Split a feature map into a fixed grid of patches and fold it back.

These are the functional counterpart of :class:`lacmfer.modules.LocalPatchBranch` (the local branch
:math:`A_L` of LA-CMFER, Yang et al., ACM MM 2024, arXiv:2407.05688), which splits the encoder map
into a 2×2 grid of quadrants and runs each quadrant through an attention sub-network.

Patches are numbered row-major: for a 2×2 grid, ``0`` top-left, ``1`` top-right, ``2`` bottom-left,
``3`` bottom-right.
"""

from __future__ import annotations

from typing import Any

from einops import rearrange
from torch import Tensor

from .._checks import GridLike, _shape, check_grid, check_grid_divides, check_tensor

__all__ = ["merge_patches", "split_patches"]


def _check_patch_stack(patches: Any, grid: tuple[int, int], name: str = "patches") -> None:
    """A ``(B, P, C, h, w)`` stack with ``P = g_h·g_w`` patches."""
    check_tensor(patches, name)
    gh, gw = grid
    if patches.ndim != 5:
        raise ValueError(
            f"`{name}` must have 5 dimensions (B, P, C, h, w), got "
            f"{patches.ndim} with shape {_shape(patches)}"
        )
    if patches.shape[1] != gh * gw:
        raise ValueError(
            f"`{name}` must hold P = g_h·g_w = {gh * gw} patches for `grid` = ({gh}, {gw}) in "
            f"dimension 1, got shape {_shape(patches)}"
        )


def split_patches(x: Tensor, grid: GridLike = (2, 2)) -> Tensor:
    r"""Split a feature map into a ``grid`` of equal, non-overlapping patches (row-major order).

    Patch ``p = i·g_w + j`` is ``x[..., i·h:(i+1)·h, j·w:(j+1)·w]`` with ``h = H/g_h`` and
    ``w = W/g_w``;
    for the default 2×2 grid the order is top-left, top-right, bottom-left, bottom-right.

    Args:
        x: Feature map.
        grid: Patch grid ``(g_h, g_w)`` (rows, columns); an int ``g`` means ``(g, g)``.

    Shape:
        - x: :math:`(B, C, H, W)` with :math:`g_h \mid H` and :math:`g_w \mid W`.
        - Output: :math:`(B, P, C, H/g_h, W/g_w)` with :math:`P = g_h g_w`.

    Returns:
        The patches, stacked along a new dimension 1.

    Raises:
        TypeError: If ``x`` is not a tensor or ``grid`` is not an int or a pair of ints.
        ValueError: If ``x`` is not 4-D, a ``grid`` entry is < 1, or the grid does not divide
            ``H``/``W``.

    Example:
        >>> import torch
        >>> x = torch.arange(16.0).view(1, 1, 4, 4)
        >>> split_patches(x)[0, :, 0]
        tensor([[[ 0.,  1.],
                 [ 4.,  5.]],
        <BLANKLINE>
                [[ 2.,  3.],
                 [ 6.,  7.]],
        <BLANKLINE>
                [[ 8.,  9.],
                 [12., 13.]],
        <BLANKLINE>
                [[10., 11.],
                 [14., 15.]]])
    """
    gh, gw = check_grid(grid)
    check_grid_divides(x, (gh, gw), "x")
    return rearrange(x, "b c (gh h) (gw w) -> b (gh gw) c h w", gh=gh, gw=gw)


def merge_patches(patches: Tensor, grid: GridLike = (2, 2)) -> Tensor:
    r"""Fold a row-major stack of patches back into one map; the inverse of :func:`split_patches`.

    Args:
        patches: Patches in row-major grid order (as returned by :func:`split_patches`).
        grid: Patch grid ``(g_h, g_w)``; an int ``g`` means ``(g, g)``.

    Shape:
        - patches: :math:`(B, P, C, h, w)` with :math:`P = g_h g_w`.
        - Output: :math:`(B, C, g_h h, g_w w)`.

    Returns:
        The merged map.

    Raises:
        TypeError: If ``patches`` is not a tensor or ``grid`` is not an int or a pair of ints.
        ValueError: If ``patches`` is not 5-D or its patch dimension ``P`` is not ``g_h·g_w``.

    Example:
        >>> import torch
        >>> x = torch.randn(2, 3, 4, 6)
        >>> torch.equal(merge_patches(split_patches(x, (2, 3)), (2, 3)), x)
        True
    """
    gh, gw = check_grid(grid)
    _check_patch_stack(patches, (gh, gw), "patches")
    return rearrange(patches, "b (gh gw) c h w -> b c (gh h) (gw w)", gh=gh, gw=gw)
