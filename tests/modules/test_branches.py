"""GlobalBranch and LocalPatchBranch: shapes, sharing, batched == patch-by-patch, errors."""

from __future__ import annotations

import copy
from typing import Callable

import pytest
import torch
from torch import nn

from lacmfer.modules import AttentionBasicBlock, GlobalBranch, LocalPatchBranch, PatchBatchNorm2d

from .mechanics import TINY, check_pickle_and_deepcopy, compile_matches_eager

SMALL = {"blocks": 2, "reduction": 4, "spatial_kernel_size": 3}


def expected_subnet(share: str, patch: int, gw: int) -> int:
    """Which sub-network a row-major patch uses: column j, the patch itself, or the only one."""
    if share == "column":
        return patch % gw
    if share == "none":
        return patch
    return 0


def patch_by_patch_reference(
    branch: LocalPatchBranch, x: torch.Tensor
) -> tuple[torch.Tensor, nn.Module]:
    """The paper's way: slice each patch by hand and run it alone through its sub-network.

    The reference runs on a copy whose grouped BatchNorms are switched to one group, i.e. plain
    BatchNorm2d per call. Returns the features and the copy (for its running stats / gradients).
    """
    ref = copy.deepcopy(branch)
    for m in ref.modules():
        if isinstance(m, PatchBatchNorm2d):
            m.num_patches = 1
    gh, gw = branch.grid
    h, w = x.shape[2] // gh, x.shape[3] // gw
    feats = []
    for i in range(gh):
        for j in range(gw):
            p = i * gw + j
            patch = x[:, :, i * h : (i + 1) * h, j * w : (j + 1) * w]
            y = ref.subnets[expected_subnet(branch.share, p, gw)](patch)
            feats.append(y.mean(dim=(2, 3)))
    return torch.cat(feats, dim=1), ref


@pytest.mark.parametrize("share,n_subnets", [("column", 2), ("none", 4), ("all", 1)])
def test_subnet_count_and_shape(share: str, n_subnets: int) -> None:
    branch = LocalPatchBranch(16, 16, share=share, **SMALL)
    assert len(branch.subnets) == n_subnets
    assert all(branch.subnet_index(p) == expected_subnet(share, p, 2) for p in range(4))
    assert branch(torch.randn(2, 16, 8, 8)).shape == (2, 64)
    assert branch.out_features == 64 and branch.num_patches == 4
    first = branch.subnets[0][0]
    assert isinstance(first, AttentionBasicBlock) and first.stride == 2
    assert len(branch.subnets[0]) == 2


@pytest.mark.parametrize("share", ["column", "none", "all"])
@pytest.mark.parametrize("grid", [(2, 2), (2, 3), (3, 1)])
@pytest.mark.parametrize("training", [True, False])
def test_batched_equals_patch_by_patch(
    share: str, grid: tuple[int, int], training: bool, randomise_bn: Callable[[nn.Module], None]
) -> None:
    branch = LocalPatchBranch(8, 8, grid=grid, share=share, **SMALL).double()
    randomise_bn(branch)
    branch.train(training)
    x = torch.randn(3, 8, 4 * grid[0], 4 * grid[1], dtype=torch.float64)
    x[:, :, : 4 * grid[0] // 2] += 1.0  # top patches with other statistics than bottom ones
    expected, ref = patch_by_patch_reference(branch, x)
    out = branch(x)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    # the running statistics moved the same way, and the gradients agree
    torch.testing.assert_close(branch.state_dict(), ref.state_dict(), rtol=1e-10, atol=1e-12)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    (expected * weights).sum().backward()
    for (name, p), q in zip(branch.named_parameters(), ref.parameters()):
        assert p.grad is not None and q.grad is not None, name
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-8, atol=1e-10, msg=name)


@pytest.mark.parametrize("share", ["column", "all"])
def test_joint_patch_norm_equals_patch_by_patch_in_eval(
    share: str, randomise_bn: Callable[[nn.Module], None]
) -> None:
    branch = LocalPatchBranch(8, 8, share=share, patch_norm="joint", **SMALL).double().eval()
    assert not any(isinstance(m, PatchBatchNorm2d) for m in branch.modules())
    randomise_bn(branch)
    x = torch.randn(2, 8, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(
        branch(x), patch_by_patch_reference(branch, x)[0], rtol=1e-10, atol=1e-10
    )
    # in training mode, joint statistics differ from the per-patch ones
    branch.train()
    x[:, :, :4] += 2.0
    per_patch = LocalPatchBranch(8, 8, share=share, **SMALL).double()
    per_patch.load_state_dict(branch.state_dict())
    assert not torch.allclose(branch(x), per_patch(x))


@pytest.mark.parametrize(
    "share,calls,batch", [("column", [1, 1], 2 * 3), ("all", [1], 4 * 3), ("none", [1] * 4, 3)]
)
def test_shared_subnets_run_once_on_folded_batch(share: str, calls: list[int], batch: int) -> None:
    branch = LocalPatchBranch(8, 8, share=share, **SMALL)
    seen: list[list[int]] = [[] for _ in branch.subnets]
    for k, subnet in enumerate(branch.subnets):
        subnet.register_forward_hook(lambda m, inp, out, k=k: seen[k].append(inp[0].shape[0]))
    branch(torch.randn(3, 8, 8, 8))
    assert [len(s) for s in seen] == calls
    assert all(s == [batch] for s in seen)


def test_local_branch_paper_sizes_at_112_and_224() -> None:
    branch = LocalPatchBranch().eval()  # 128 -> 256, 2 blocks, column sharing, k = 49
    with torch.no_grad():
        assert branch(torch.randn(1, 128, 14, 14)).shape == (1, 1024)  # 7x7 quadrants -> 4x4
        assert branch(torch.randn(1, 128, 28, 28)).shape == (1, 1024)
    assert branch.subnets[0][0].cbam.spatial_kernel_size == 49


def test_global_branch_structure_and_shapes() -> None:
    branch = GlobalBranch()
    assert [len(stage) for stage in branch.stages] == [6, 3]
    assert [stage[0].stride for stage in branch.stages] == [2, 2]
    assert [stage[-1].out_channels for stage in branch.stages] == [256, 1024]
    assert branch.out_features == 1024
    small = GlobalBranch(
        16, channels=(8, 32, 24), blocks=(1, 2, 1), reduction=4, spatial_kernel_size=3
    )
    assert small(torch.randn(2, 16, 16, 16)).shape == (2, 24)
    assert small.out_features == 24
    for size in (1, 5, 8, 9, 16):  # map_size is the shape the stages give
        assert small.stages(torch.randn(2, 16, size, size + 3)).shape[-2:] == small.map_size(
            size, size + 3
        )
    with pytest.raises(ValueError, match=r"`x` with shape \(1, 16, 8, 8\) in training mode"):
        small(torch.randn(1, 16, 8, 8))  # 8 -> 4 -> 2 -> 1
    assert small(torch.randn(1, 16, 9, 9)).shape == (1, 24)  # 9 -> 5 -> 3 -> 2


def test_global_branch_equals_manual_composition(randomise_bn: Callable[[nn.Module], None]) -> None:
    branch = GlobalBranch(8, channels=(8, 16), blocks=(2, 1), reduction=4, spatial_kernel_size=3)
    branch.eval()
    randomise_bn(branch)
    x = torch.randn(2, 8, 8, 8)
    y = x
    for stage in branch.stages:
        for block in stage:
            y = block(y)
    torch.testing.assert_close(branch(x), y.mean(dim=(2, 3)))


def test_branch_errors() -> None:
    branch = LocalPatchBranch(8, 8, **SMALL)
    with pytest.raises(ValueError, match=r"`grid` = \(2, 2\) must divide .* shape \(1, 8, 7, 8\)"):
        branch(torch.randn(1, 8, 7, 8))
    with pytest.raises(ValueError, match=r"C = in_channels = 8, got shape \(1, 4, 8, 8\)"):
        branch(torch.randn(1, 4, 8, 8))
    with pytest.raises(TypeError, match=r"`x` must be a torch\.Tensor"):
        branch("x")  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match="`share` must be one of 'column', 'none', 'all'; got 'rows'"
    ):
        LocalPatchBranch(share="rows")
    with pytest.raises(ValueError, match="`patch_norm` must be one of"):
        LocalPatchBranch(patch_norm="group")
    with pytest.raises(ValueError, match="`grid` entries must be >= 1"):
        LocalPatchBranch(grid=(0, 2))
    with pytest.raises(ValueError, match="`blocks` must be an int >= 1, got 0"):
        LocalPatchBranch(blocks=0)
    with pytest.raises(ValueError, match="`reduction` must be <= `channels`"):
        LocalPatchBranch(8, 8, reduction=16)
    with pytest.raises(ValueError, match=r"`patch` must lie in \[0, 4\), got 4"):
        branch.subnet_index(4)
    with pytest.raises(
        ValueError, match=r"same length .* channels=\(256, 1024\) and blocks=\(6,\)"
    ):
        GlobalBranch(channels=(256, 1024), blocks=(6,))
    with pytest.raises(TypeError, match="`channels` must be a non-empty sequence of ints"):
        GlobalBranch(channels=256)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"C = in_channels = 128, got shape \(1, 64, 8, 8\)"):
        GlobalBranch(reduction=4, spatial_kernel_size=3)(torch.randn(1, 64, 8, 8))


# ------------------------------------------------------------------------------ mechanics


def test_pickle_and_deepcopy() -> None:
    check_pickle_and_deepcopy(
        lambda: LocalPatchBranch(16, 16, blocks=1, share="all", **TINY), (2, 16, 8, 8)
    )


def test_compile_local_branch_inductor() -> None:
    torch._dynamo.reset()
    branch = LocalPatchBranch(16, 16, blocks=1, **TINY).train()
    compile_matches_eager(branch, torch.randn(2, 16, 8, 8), "inductor")
