r"""CBAM attention, ResNet basic blocks with and without it, and per-patch batch normalisation.

The attention block of LA-CMFER (Yang et al., ACM MM 2024, arXiv:2407.05688) is a ResNet
``BasicBlock`` whose second BatchNorm output passes through CBAM (Woo et al., ECCV 2018) before the
shortcut is added.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lacmfer._checks import _shape, check_feature_map, check_positive_int

__all__ = ["CBAM", "AttentionBasicBlock", "BasicBlock", "PatchBatchNorm2d"]

NormLayer = Callable[[int], nn.Module]


def _check_odd_int(value: Any, name: str, *, reason: str = "") -> int:
    """Check an odd integer setting ``>= 1``; ``reason`` says why it must be odd."""
    check_positive_int(value, name)
    if value % 2 == 0:
        why = f" ({reason})" if reason else ""
        raise ValueError(f"`{name}` must be odd{why}, got {value}")
    return int(value)


class CBAM(nn.Module):
    r"""Convolutional block attention module with a residual connection.

    Channel attention, then spatial attention on the re-weighted map, then the input added back:

    .. math::
        a_c &= \sigma\big(\mathrm{MLP}(\mathrm{maxpool}(x))
            + \mathrm{MLP}(\mathrm{avgpool}(x))\big),
        \qquad x' = x \cdot a_c, \\
        a_s &= \sigma\big(\mathrm{conv}_{k\times k}([\max_c x';\ \mathrm{mean}_c x'])\big), \\
        y &= x' \cdot a_s + x,

    where the MLP is ``1×1 conv (C → C/r, no bias) → ReLU → 1×1 conv (C/r → C, no bias)`` shared
    by both pooled descriptors and the spatial convolution (2 → 1 channels, padding ``k // 2``) has
    a bias.
    LA-CMFER's code uses ``k = 49`` (padding 24), the default here; CBAM's original paper uses
    ``k = 7``.

    Args:
        channels: Number of channels ``C``.
        reduction: MLP reduction ratio ``r``; the hidden width is ``C // r`` (must be >= 1).
        spatial_kernel_size: Odd kernel size ``k`` of the spatial-attention convolution.

    Shape:
        - Input: :math:`(B, C, H, W)`.
        - Output: :math:`(B, C, H, W)`.

    Raises:
        TypeError: If a setting is not an int.
        ValueError: If a setting is out of range, or at call time if the input is not
            ``(B, C, H, W)`` with ``C = channels``.

    Example:
        >>> import torch
        >>> cbam = CBAM(32, spatial_kernel_size=7)
        >>> cbam(torch.randn(2, 32, 8, 8)).shape
        torch.Size([2, 32, 8, 8])
    """

    def __init__(self, channels: int, *, reduction: int = 16, spatial_kernel_size: int = 49):
        super().__init__()
        self.channels = check_positive_int(channels, "channels")
        self.reduction = check_positive_int(reduction, "reduction")
        if channels // reduction < 1:
            raise ValueError(
                f"`reduction` must be <= `channels` so the channel MLP keeps >= 1 hidden unit, "
                f"got channels={channels}, reduction={reduction}"
            )
        self.spatial_kernel_size = _check_odd_int(
            spatial_kernel_size,
            "spatial_kernel_size",
            reason="the map keeps its size with padding k // 2",
        )
        hidden = channels // reduction
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )
        k = spatial_kernel_size
        self.spatial = nn.Conv2d(2, 1, k, padding=k // 2, bias=True)

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, reduction={self.reduction}, "
            f"spatial_kernel_size={self.spatial_kernel_size}"
        )

    def forward(self, x: Tensor) -> Tensor:
        check_feature_map(x, "x", self.channels)
        mx = torch.amax(x, dim=(2, 3), keepdim=True)
        avg = torch.mean(x, dim=(2, 3), keepdim=True)
        # One MLP call on both descriptors (stacked in the batch), instead of two.
        both = self.mlp(torch.cat([mx, avg], dim=0))
        ca = torch.sigmoid(both[: x.shape[0]] + both[x.shape[0] :])
        out = x * ca
        desc = torch.cat(
            [torch.amax(out, dim=1, keepdim=True), torch.mean(out, dim=1, keepdim=True)], dim=1
        )
        sa = torch.sigmoid(self.spatial(desc))
        return out * sa + x


class PatchBatchNorm2d(nn.BatchNorm2d):
    r"""BatchNorm2d whose batch holds ``num_patches`` patch groups normalised separately.

    :class:`~lacmfer.modules.LocalPatchBranch` folds the patches that share a sub-network into the
    batch dimension (patch-major: rows ``[g·B, (g+1)·B)`` are patch ``g``) so the sub-network runs
    once. A plain BatchNorm would then pool the statistics of, say, the eye and the mouth quadrants.
    This layer instead normalises each group with its own batch statistics in training mode and
    updates the running statistics exactly as ``num_patches`` consecutive calls of
    :class:`torch.nn.BatchNorm2d`, one per patch, would (the paper's code runs the patches one by
    one). In evaluation mode (running statistics) the normalisation is per sample, so it simply
    calls :class:`torch.nn.BatchNorm2d`. Parameter and buffer names are those of
    :class:`torch.nn.BatchNorm2d`.

    Args:
        num_features: Number of channels ``C``.
        num_patches: Number of patch groups ``G`` folded into the batch.
        eps: Added to the variance.
        momentum: Running-statistics momentum (``None``: cumulative average).
        affine: Learn a per-channel scale and shift.
        track_running_stats: Keep running statistics.

    Shape:
        - Input: :math:`(G \cdot B, C, H, W)`.
        - Output: same as the input.

    Raises:
        ValueError: At call time, in training mode, if the batch is not a multiple of
            ``num_patches``.
    """

    def __init__(
        self,
        num_features: int,
        num_patches: int = 1,
        eps: float = 1e-5,
        momentum: Optional[float] = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.num_patches = check_positive_int(num_patches, "num_patches")

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_patches={self.num_patches}"

    def forward(self, x: Tensor) -> Tensor:
        g = self.num_patches
        uses_batch_stats = self.training or not self.track_running_stats
        if g == 1 or not uses_batch_stats:
            return super().forward(x)
        if x.ndim != 4 or x.shape[0] % g:
            raise ValueError(
                f"`x` must be (G·B, C, H, W) with a batch that is a multiple of num_patches = {g}, "
                f"got shape {_shape(x)}"
            )
        n, c, h, w = x.shape
        b = n // g
        # Patch groups side by side as channels, (B, G·C, H, W), so one fused native batch_norm
        # normalises every (patch, channel) pair over its own B·H·W values.
        xg = x.reshape(g, b, c, h, w).transpose(0, 1).reshape(b, g * c, h, w)
        weight = self.weight.repeat(g) if self.weight is not None else None
        bias = self.bias.repeat(g) if self.bias is not None else None
        update = self.training and self.track_running_stats
        stats_mean: Optional[Tensor] = None
        stats_var: Optional[Tensor] = None
        if update:
            # momentum 1 makes batch_norm write the batch mean and unbiased variance here.
            assert self.running_mean is not None
            stats_mean = self.running_mean.new_zeros(g * c)
            stats_var = self.running_mean.new_ones(g * c)
        y = F.batch_norm(xg, stats_mean, stats_var, weight, bias, True, 1.0, self.eps)
        if stats_mean is not None and stats_var is not None:
            self._update_running_stats(stats_mean.view(g, c), stats_var.view(g, c))
        return y.reshape(b, g, c, h, w).transpose(0, 1).reshape(n, c, h, w)

    def _update_running_stats(self, mean: Tensor, var: Tensor) -> None:
        """Apply the updates of ``G`` consecutive BatchNorm2d calls (batch means, unbiased vars)."""
        assert self.running_mean is not None and self.running_var is not None
        assert self.num_batches_tracked is not None
        with torch.no_grad():
            for i in range(self.num_patches):  # G (2 to 4) tiny in-place updates of C-vectors
                self.num_batches_tracked.add_(1)
                if self.momentum is None:
                    factor: Tensor | float = 1.0 / self.num_batches_tracked.to(self.running_mean)
                else:
                    factor = self.momentum
                self.running_mean.mul_(1 - factor).add_(mean[i] * factor)
                self.running_var.mul_(1 - factor).add_(var[i] * factor)


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    r"""ResNet basic block, with torchvision's parameter names.

    ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``; the shortcut is the identity, or
    ``downsample = Sequential(1×1 conv (no bias), norm)`` when the stride or the channel count
    changes.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        stride: Stride of ``conv1`` and of the shortcut.
        norm_layer: Factory ``C -> nn.Module`` for the normalisation layers (default
            :class:`torch.nn.BatchNorm2d`).

    Shape:
        - Input: :math:`(B, C_{in}, H, W)`.
        - Output: :math:`(B, C_{out}, \lceil H/s \rceil, \lceil W/s \rceil)`.

    Example:
        >>> import torch
        >>> BasicBlock(8, 16, stride=2)(torch.randn(2, 8, 7, 7)).shape
        torch.Size([2, 16, 4, 4])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        norm_layer: Optional[NormLayer] = None,
    ):
        super().__init__()
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.out_channels = check_positive_int(out_channels, "out_channels")
        self.stride = check_positive_int(stride, "stride")
        norm = norm_layer if norm_layer is not None else nn.BatchNorm2d
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn1 = norm(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.bn2 = norm(out_channels)
        self.downsample: Optional[nn.Sequential] = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                norm(out_channels),
            )

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"

    def _residual(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self._residual(x) + identity)


class AttentionBasicBlock(BasicBlock):
    r"""LA-CMFER's attention block: a ResNet basic block with :class:`CBAM` after its second BN.

    ``relu(cbam(bn2(conv2(relu(bn1(conv1(x)))))) + shortcut(x))``, where CBAM already adds its own
    input back (``x·a_c·a_s + x``) and the shortcut is the identity or a 1×1 conv + norm
    (torchvision style) when the stride or the channel count changes.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        stride: Stride of ``conv1`` and of the shortcut.
        reduction: CBAM channel-MLP reduction ratio.
        spatial_kernel_size: CBAM spatial kernel size (49 as in the paper's code; 7 in CBAM's
            paper).
        norm_layer: Factory ``C -> nn.Module`` for the normalisation layers (default
            :class:`torch.nn.BatchNorm2d`).

    Shape:
        - Input: :math:`(B, C_{in}, H, W)`.
        - Output: :math:`(B, C_{out}, \lceil H/s \rceil, \lceil W/s \rceil)`.

    Raises:
        TypeError: If a setting is not an int.
        ValueError: If a setting is out of range (see :class:`CBAM`).

    Example:
        >>> import torch
        >>> block = AttentionBasicBlock(16, 32, stride=2, spatial_kernel_size=7)
        >>> block(torch.randn(2, 16, 8, 8)).shape
        torch.Size([2, 32, 4, 4])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        reduction: int = 16,
        spatial_kernel_size: int = 49,
        norm_layer: Optional[NormLayer] = None,
    ):
        super().__init__(in_channels, out_channels, stride=stride, norm_layer=norm_layer)
        self.cbam = CBAM(out_channels, reduction=reduction, spatial_kernel_size=spatial_kernel_size)

    def _residual(self, x: Tensor) -> Tensor:
        return self.cbam(super()._residual(x))


def init_resnet_weights(module: nn.Module) -> None:
    """torchvision's ResNet initialisation: Kaiming-normal (fan-out) convs, unit-scale norms."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
