r"""The global branch :math:`A_G` and the local patch branch :math:`A_L` of LA-CMFER."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Optional

import torch
from einops import rearrange
from torch import Tensor, nn

from lacmfer._checks import (
    GridLike,
    check_choice,
    check_feature_map,
    check_grid,
    check_grid_divides,
    check_positive_int,
)
from lacmfer.modules._attention import (
    AttentionBasicBlock,
    NormLayer,
    PatchBatchNorm2d,
    init_resnet_weights,
)

__all__ = ["GlobalBranch", "LocalPatchBranch"]

#: Which patches of :class:`LocalPatchBranch` share a sub-network: ``"column"`` (the authors' code),
#: ``"none"`` (four sub-networks) or ``"all"`` (one).
SHARE_MODES = ("column", "none", "all")
PATCH_NORMS = ("per_patch", "joint")


def _check_positive_int_tuple(value: Any, name: str) -> tuple[int, ...]:
    """Check a non-empty sequence of ints ``>= 1``; returns it as a tuple."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        raise TypeError(f"`{name}` must be a non-empty sequence of ints, got {value!r}")
    return tuple(check_positive_int(v, name) for v in value)


def _stage(
    in_channels: int,
    out_channels: int,
    blocks: int,
    *,
    reduction: int,
    spatial_kernel_size: int,
    norm_layer: Optional[NormLayer] = None,
) -> nn.Sequential:
    """``blocks`` attention blocks ``in_channels -> out_channels``, the first with stride 2."""
    layers = [
        AttentionBasicBlock(
            in_channels if i == 0 else out_channels,
            out_channels,
            stride=2 if i == 0 else 1,
            reduction=reduction,
            spatial_kernel_size=spatial_kernel_size,
            norm_layer=norm_layer,
        )
        for i in range(blocks)
    ]
    return nn.Sequential(*layers)


class GlobalBranch(nn.Module):
    r"""Global branch :math:`A_G`: stages of attention blocks and a global average pool.

    Stage ``s`` holds ``blocks[s]`` :class:`~lacmfer.modules.AttentionBasicBlock` s going to
    ``channels[s]`` channels, the first with stride 2. LA-CMFER's defaults: 6 blocks 128→256, then
    3 blocks 256→1024, pooled to :math:`f_G \in \mathbb{R}^{1024}`.

    Args:
        in_channels: Channels of the encoder map.
        channels: Output channels of each stage; ``channels[-1]`` is the feature size.
        blocks: Number of attention blocks of each stage (same length as ``channels``).
        reduction: CBAM reduction ratio.
        spatial_kernel_size: CBAM spatial kernel size (49 as in the paper's code).

    Shape:
        - Input: :math:`(B, C, H, W)` with ``C = in_channels``.
        - Output: :math:`(B, D)` with ``D = channels[-1]``.

    Raises:
        TypeError: If a setting has the wrong type.
        ValueError: If a setting is out of range or ``channels``/``blocks`` differ in length; at
            call time if the input is not ``(B, in_channels, H, W)``, or, in training mode, is
            one map that the last stage reduces to 1×1 (BatchNorm cannot train on it).

    Example:
        >>> import torch
        >>> branch = GlobalBranch(16, channels=(32, 64), blocks=(1, 1), spatial_kernel_size=7)
        >>> branch(torch.randn(2, 16, 8, 8)).shape
        torch.Size([2, 64])
    """

    def __init__(
        self,
        in_channels: int = 128,
        *,
        channels: Sequence[int] = (256, 1024),
        blocks: Sequence[int] = (6, 3),
        reduction: int = 16,
        spatial_kernel_size: int = 49,
    ):
        super().__init__()
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.channels = _check_positive_int_tuple(channels, "channels")
        self.blocks = _check_positive_int_tuple(blocks, "blocks")
        if len(self.channels) != len(self.blocks):
            raise ValueError(
                f"`channels` and `blocks` must have the same length (one entry per stage), got "
                f"channels={self.channels} and blocks={self.blocks}"
            )
        self.reduction = reduction
        self.spatial_kernel_size = spatial_kernel_size
        ins = (self.in_channels, *self.channels[:-1])
        self.stages = nn.Sequential(
            *(
                _stage(c_in, c_out, n, reduction=reduction, spatial_kernel_size=spatial_kernel_size)
                for c_in, c_out, n in zip(ins, self.channels, self.blocks)
            )
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        init_resnet_weights(self)

    @property
    def out_features(self) -> int:
        """Size ``D`` of the output feature (``channels[-1]``)."""
        return self.channels[-1]

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, channels={self.channels}, blocks={self.blocks}, "
            f"reduction={self.reduction}, spatial_kernel_size={self.spatial_kernel_size}"
        )

    def map_size(self, height: int, width: int) -> tuple[int, int]:
        """Height and width of the last stage's map for an input map of ``height × width`` (each
        stage halves them, rounding up)."""
        for _ in self.channels:
            height, width = (height + 1) // 2, (width + 1) // 2
        return height, width

    def forward(self, x: Tensor) -> Tensor:
        check_feature_map(x, "x", self.in_channels, "in_channels")
        if self.training and x.shape[0] == 1 and self.map_size(x.shape[-2], x.shape[-1]) == (1, 1):
            raise ValueError(
                f"`x` with shape {tuple(x.shape)} in training mode: the last stage maps it to 1×1, "
                "and BatchNorm needs more than one value per channel to train; give a batch of 2 "
                "or more, a larger map, or call .eval()"
            )
        return torch.flatten(self.pool(self.stages(x)), 1)


class LocalPatchBranch(nn.Module):
    r"""Local branch :math:`A_L`: a fixed grid of patches, each through an attention sub-network.

    The map is split into a ``grid`` of equal patches (row-major: top-left, top-right, bottom-left,
    bottom-right for 2×2, see :func:`lacmfer.functional.split_patches`); each patch goes through a
    sub-network of ``blocks`` :class:`~lacmfer.modules.AttentionBasicBlock` s to ``out_channels``
    (first stride 2) and a global average pool; the pooled patch features are concatenated in patch
    order, giving :math:`f_L \in \mathbb{R}^{P \cdot C_{out}}` (1024 for the defaults).

    Which patches share a sub-network (``share``):

    * ``"column"`` -- one sub-network per grid column, as in the paper's code (the two left
      quadrants share one, the two right ones another);
    * ``"none"`` -- one sub-network per patch;
    * ``"all"`` -- one sub-network for every patch.

    Patches that share a sub-network run through it in **one** batched call: they are folded into
    the batch dimension (patch-major), never fed one call per patch.

    Note:
        Folding patches into the batch would make a plain BatchNorm pool the statistics of the
        patches that share a sub-network. With ``patch_norm="per_patch"`` (default) the sub-networks
        use :class:`~lacmfer.modules.PatchBatchNorm2d`, which normalises each patch with its own
        batch statistics and updates the running statistics as consecutive per-patch calls would,
        so the batched branch equals running the patches one by one (the paper's code) in training
        mode as well. ``patch_norm="joint"`` uses plain :class:`torch.nn.BatchNorm2d` over the
        folded batch (slightly faster; equal to patch-by-patch only in evaluation mode). Both give
        the same parameter and buffer names.

    Args:
        in_channels: Channels ``C`` of the input map.
        out_channels: Channels of each sub-network's output (per-patch feature size).
        grid: Patch grid ``(g_h, g_w)``; an int ``g`` means ``(g, g)``.
        blocks: Attention blocks per sub-network (the first has stride 2).
        share: ``"column"``, ``"none"`` or ``"all"`` (see above).
        patch_norm: ``"per_patch"`` or ``"joint"`` BatchNorm statistics for shared sub-networks.
        reduction: CBAM reduction ratio.
        spatial_kernel_size: CBAM spatial kernel size (49 as in the paper's code).

    Shape:
        - Input: :math:`(B, C, H, W)` with :math:`g_h \mid H`, :math:`g_w \mid W`.
        - Output: :math:`(B, P \cdot C_{out})`, :math:`P = g_h g_w`, patch ``p`` in columns
          ``[p·C_out, (p+1)·C_out)``.

    Raises:
        TypeError: If a setting has the wrong type.
        ValueError: If a setting is out of range; at call time if the input is not
            ``(B, in_channels, H, W)`` or the grid does not divide ``H``/``W``.

    Example:
        >>> import torch
        >>> branch = LocalPatchBranch(16, 16, blocks=1, spatial_kernel_size=7)
        >>> branch(torch.randn(2, 16, 8, 8)).shape
        torch.Size([2, 64])
        >>> len(branch.subnets)  # share="column": one sub-network per grid column
        2
    """

    def __init__(
        self,
        in_channels: int = 128,
        out_channels: int = 256,
        *,
        grid: GridLike = (2, 2),
        blocks: int = 2,
        share: str = "column",
        patch_norm: str = "per_patch",
        reduction: int = 16,
        spatial_kernel_size: int = 49,
    ):
        super().__init__()
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.out_channels = check_positive_int(out_channels, "out_channels")
        self.grid = check_grid(grid)
        self.blocks = check_positive_int(blocks, "blocks")
        self.share = check_choice(share, "share", SHARE_MODES)
        self.patch_norm = check_choice(patch_norm, "patch_norm", PATCH_NORMS)
        self.reduction = reduction
        self.spatial_kernel_size = spatial_kernel_size
        gh, gw = self.grid
        n_subnets = {"column": gw, "none": gh * gw, "all": 1}[share]
        # patches folded into each sub-network's batch
        group = {"column": gh, "none": 1, "all": gh * gw}[share]
        norm_layer: Optional[NormLayer] = None
        if patch_norm == "per_patch" and group > 1:
            norm_layer = functools.partial(PatchBatchNorm2d, num_patches=group)
        self.subnets = nn.ModuleList(
            _stage(
                self.in_channels,
                self.out_channels,
                self.blocks,
                reduction=reduction,
                spatial_kernel_size=spatial_kernel_size,
                norm_layer=norm_layer,
            )
            for _ in range(n_subnets)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        init_resnet_weights(self)

    @property
    def num_patches(self) -> int:
        """Number of patches ``P = g_h·g_w``."""
        return self.grid[0] * self.grid[1]

    @property
    def out_features(self) -> int:
        """Size of the output feature, ``P·out_channels``."""
        return self.num_patches * self.out_channels

    def subnet_index(self, patch: int) -> int:
        """Index in :attr:`subnets` of the sub-network patch ``patch`` (row-major) goes through."""
        gh, gw = self.grid
        if not 0 <= patch < gh * gw:
            raise ValueError(f"`patch` must lie in [0, {gh * gw}), got {patch}")
        return {"column": patch % gw, "none": patch, "all": 0}[self.share]

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, grid={self.grid}, blocks={self.blocks}, "
            f"share={self.share!r}, patch_norm={self.patch_norm!r}, reduction={self.reduction}, "
            f"spatial_kernel_size={self.spatial_kernel_size}"
        )

    def _run(self, index: int, x: Tensor) -> Tensor:
        return torch.flatten(self.pool(self.subnets[index](x)), 1)

    def forward(self, x: Tensor) -> Tensor:
        check_feature_map(x, "x", self.in_channels, "in_channels")
        check_grid_divides(x, self.grid, "x")
        gh, gw = self.grid
        if self.share == "all":
            # every patch in one batch, patch-major: (gh gw b)
            folded = rearrange(x, "b c (gh h) (gw w) -> (gh gw b) c h w", gh=gh, gw=gw)
            feat = self._run(0, folded)
            return rearrange(feat, "(p b) d -> b (p d)", p=gh * gw)
        if self.share == "column":
            # one batch per column, row-major inside it: (gw, (gh b), c, h, w)
            cols = rearrange(x, "b c (gh h) (gw w) -> gw (gh b) c h w", gh=gh, gw=gw)
            feats = torch.stack([self._run(j, cols[j]) for j in range(gw)])
            return rearrange(feats, "gw (gh b) d -> b (gh gw d)", gh=gh)
        # "none": one sub-network (and one call) per patch
        patches = rearrange(x, "b c (gh h) (gw w) -> (gh gw) b c h w", gh=gh, gw=gw)
        feats = torch.stack([self._run(p, patches[p]) for p in range(gh * gw)])
        return rearrange(feats, "p b d -> b (p d)")
