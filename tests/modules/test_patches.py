"""split_patches / merge_patches: order, round trips, errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lacmfer.functional._patches import merge_patches, split_patches


def split_reference(x: torch.Tensor, gh: int, gw: int) -> torch.Tensor:
    """Row-major manual slicing: patch i*gw + j is rows i*h:(i+1)*h, columns j*w:(j+1)*w."""
    h, w = x.shape[2] // gh, x.shape[3] // gw
    patches = []
    for i in range(gh):
        for j in range(gw):
            patches.append(x[:, :, i * h : (i + 1) * h, j * w : (j + 1) * w])
    return torch.stack(patches, dim=1)


@pytest.mark.parametrize("grid", [(2, 2), (1, 1), (2, 3), (3, 1), (1, 4)])
def test_split_equals_manual_slicing(grid: tuple[int, int]) -> None:
    x = torch.randn(2, 3, 6 * grid[0], 4 * grid[1])
    out = split_patches(x, grid)
    assert out.shape == (2, grid[0] * grid[1], 3, 6, 4)
    assert torch.equal(out, split_reference(x, *grid))


def test_default_grid_is_quadrants_in_paper_order() -> None:
    x = torch.zeros(1, 1, 4, 4)
    x[..., :2, :2] = 0  # top-left
    x[..., :2, 2:] = 1  # top-right
    x[..., 2:, :2] = 2  # bottom-left
    x[..., 2:, 2:] = 3  # bottom-right
    patches = split_patches(x)
    for p in range(4):
        assert torch.all(patches[0, p] == p)


def test_int_grid_means_square_grid() -> None:
    x = torch.randn(1, 2, 9, 9)
    assert torch.equal(split_patches(x, 3), split_patches(x, (3, 3)))
    assert torch.equal(merge_patches(split_patches(x, 3), 3), x)


@settings(deadline=None, max_examples=25)
@given(
    b=st.integers(1, 3),
    c=st.integers(1, 3),
    gh=st.integers(1, 3),
    gw=st.integers(1, 3),
    h=st.integers(1, 3),
    w=st.integers(1, 3),
)
def test_round_trips(b: int, c: int, gh: int, gw: int, h: int, w: int) -> None:
    x = torch.randn(b, c, gh * h, gw * w)
    patches = split_patches(x, (gh, gw))
    assert torch.equal(merge_patches(patches, (gh, gw)), x)
    assert torch.equal(split_patches(merge_patches(patches, (gh, gw)), (gh, gw)), patches)


def test_split_keeps_gradient_and_dtype() -> None:
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    split_patches(x).sum().backward()
    assert x.grad is not None and torch.equal(x.grad, torch.ones_like(x))
    assert split_patches(x).dtype == torch.float64


def test_split_errors() -> None:
    with pytest.raises(ValueError, match=r"`grid` = \(2, 2\) must divide .* shape \(1, 3, 5, 4\)"):
        split_patches(torch.randn(1, 3, 5, 4))
    with pytest.raises(ValueError, match=r"`grid` = \(2, 3\) must divide .* \(1, 3, 4, 4\)"):
        split_patches(torch.randn(1, 3, 4, 4), (2, 3))
    with pytest.raises(ValueError, match=r"`x` must have 4 dimensions .* shape \(3, 4, 4\)"):
        split_patches(torch.randn(3, 4, 4))
    with pytest.raises(TypeError, match=r"`x` must be a torch\.Tensor"):
        split_patches([[1.0]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`grid` entries must be >= 1, got \(0, 2\)"):
        split_patches(torch.randn(1, 1, 4, 4), (0, 2))
    with pytest.raises(TypeError, match="`grid` must be an int or a pair"):
        split_patches(torch.randn(1, 1, 4, 4), (2, 2, 2))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`grid` must be an int or a pair"):
        split_patches(torch.randn(1, 1, 4, 4), (2.0, 2))  # type: ignore[arg-type]


def test_merge_errors() -> None:
    with pytest.raises(ValueError, match=r"P = g_h·g_w = 4 .* shape \(1, 3, 2, 2, 2\)"):
        merge_patches(torch.randn(1, 3, 2, 2, 2))
    with pytest.raises(ValueError, match=r"`patches` must have 5 dimensions .* \(4, 2, 2, 2\)"):
        merge_patches(torch.randn(4, 2, 2, 2))
