"""CBAM, BasicBlock, AttentionBasicBlock and PatchBatchNorm2d against references from their equations."""

from __future__ import annotations

import copy
from typing import Callable, Optional

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lacmfer.modules import CBAM, AttentionBasicBlock, BasicBlock, PatchBatchNorm2d

from .mechanics import check_pickle_and_deepcopy, compile_matches_eager


def cbam_reference(
    x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, ws: torch.Tensor, bs: torch.Tensor
) -> torch.Tensor:
    """CBAM written from its equations, one sample and one kernel offset at a time.

    ca = σ(W2 relu(W1 maxpool(x)) + W2 relu(W1 avgpool(x))); x' = x·ca;
    sa = σ(conv_k([max_c x'; mean_c x']) + b) (zero padding k // 2, cross-correlation);
    y = x'·sa + x.
    """
    b_, c, h, w = x.shape
    k = ws.shape[-1]
    pad = k // 2
    out = torch.empty_like(x)
    for b in range(b_):
        flat = x[b].reshape(c, h * w)
        v_max = flat.max(dim=1).values
        v_avg = flat.sum(dim=1) / (h * w)

        def mlp(v: torch.Tensor) -> torch.Tensor:
            return w2 @ torch.relu(w1 @ v)

        ca = torch.sigmoid(mlp(v_max) + mlp(v_avg))
        xp = x[b] * ca[:, None, None]
        desc = torch.stack([xp.max(dim=0).values, xp.sum(dim=0) / c])
        padded = torch.zeros(2, h + 2 * pad, w + 2 * pad, dtype=x.dtype)
        padded[:, pad : pad + h, pad : pad + w] = desc
        s = torch.full((h, w), float(bs[0]), dtype=x.dtype)
        for u in range(k):
            for v in range(k):
                s = s + (ws[0, :, u, v, None, None] * padded[:, u : u + h, v : v + w]).sum(0)
        out[b] = xp * torch.sigmoid(s) + x[b]
    return out


def _cbam_weights(m: CBAM) -> tuple[torch.Tensor, ...]:
    w1 = m.mlp[0].weight[:, :, 0, 0]
    w2 = m.mlp[2].weight[:, :, 0, 0]
    return w1, w2, m.spatial.weight, m.spatial.bias


@pytest.mark.parametrize("kernel", [7, 49, 1])
@pytest.mark.parametrize("channels,reduction", [(32, 16), (8, 2)])
def test_cbam_equals_reference(kernel: int, channels: int, reduction: int) -> None:
    m = CBAM(channels, reduction=reduction, spatial_kernel_size=kernel).double()
    with torch.no_grad():
        m.spatial.weight.normal_(0, 0.05)
        m.spatial.bias.fill_(0.3)
    x = torch.randn(2, channels, 6, 5, dtype=torch.float64)
    expected = cbam_reference(x, *(t.detach() for t in _cbam_weights(m)))
    torch.testing.assert_close(m(x), expected, rtol=1e-12, atol=1e-12)


def test_cbam_structure_and_defaults() -> None:
    m = CBAM(64)
    assert m.reduction == 16 and m.spatial_kernel_size == 49
    assert m.spatial.kernel_size == (49, 49) and m.spatial.padding == (24, 24)
    assert m.spatial.bias is not None and m.spatial.in_channels == 2
    assert m.mlp[0].bias is None and m.mlp[2].bias is None
    assert m.mlp[0].weight.shape == (4, 64, 1, 1) and m.mlp[2].weight.shape == (64, 4, 1, 1)
    assert CBAM(64, spatial_kernel_size=7).spatial.padding == (3, 3)
    assert "spatial_kernel_size=49" in repr(m)


def test_cbam_gradcheck() -> None:
    m = CBAM(4, reduction=2, spatial_kernel_size=3).double()
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))


def test_cbam_errors() -> None:
    with pytest.raises(ValueError, match=r"`reduction` must be <= `channels`.*channels=8"):
        CBAM(8)
    with pytest.raises(ValueError, match=r"`spatial_kernel_size` must be odd.*got 4"):
        CBAM(32, spatial_kernel_size=4)
    with pytest.raises(ValueError, match="`channels` must be an int >= 1"):
        CBAM(0)
    with pytest.raises(TypeError, match="`reduction` must be an int"):
        CBAM(32, reduction=2.0)  # type: ignore[arg-type]
    m = CBAM(32)
    with pytest.raises(ValueError, match=r"C = 32, got shape \(2, 16, 4, 4\)"):
        m(torch.randn(2, 16, 4, 4))
    with pytest.raises(ValueError, match=r"got shape \(32, 4, 4\)"):
        m(torch.randn(32, 4, 4))


def _bn_eval(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    shape = (1, -1, 1, 1)
    return (x - bn.running_mean.view(shape)) / torch.sqrt(
        bn.running_var.view(shape) + bn.eps
    ) * bn.weight.view(shape) + bn.bias.view(shape)


def block_reference(block: BasicBlock, x: torch.Tensor) -> torch.Tensor:
    """relu([cbam](bn2(conv2(relu(bn1(conv1(x)))))) + shortcut(x)), eval-mode BN."""
    out = F.conv2d(x, block.conv1.weight, stride=block.stride, padding=1)
    out = torch.relu(_bn_eval(out, block.bn1))
    out = _bn_eval(F.conv2d(out, block.conv2.weight, padding=1), block.bn2)
    if isinstance(block, AttentionBasicBlock):
        out = cbam_reference(out, *_cbam_weights(block.cbam))
    if block.downsample is None:
        shortcut = x
    else:
        shortcut = _bn_eval(
            F.conv2d(x, block.downsample[0].weight, stride=block.stride), block.downsample[1]
        )
    return torch.relu(out + shortcut)


@pytest.mark.parametrize("cls", [BasicBlock, AttentionBasicBlock])
@pytest.mark.parametrize("cin,cout,stride", [(16, 16, 1), (16, 32, 2), (16, 32, 1), (16, 16, 2)])
def test_blocks_equal_reference(
    cls: type, cin: int, cout: int, stride: int, randomise_bn: Callable[[nn.Module], None]
) -> None:
    kwargs = {"spatial_kernel_size": 3} if cls is AttentionBasicBlock else {}
    block = cls(cin, cout, stride=stride, **kwargs).double().eval()
    randomise_bn(block)
    has_shortcut_conv = stride != 1 or cin != cout
    assert (block.downsample is not None) == has_shortcut_conv
    x = torch.randn(2, cin, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(block(x), block_reference(block, x), rtol=1e-10, atol=1e-10)


def test_attention_block_torchvision_names() -> None:
    names = set(AttentionBasicBlock(8, 16, stride=2, reduction=4).state_dict())
    for key in (
        "conv1.weight",
        "bn1.running_var",
        "conv2.weight",
        "bn2.num_batches_tracked",
        "downsample.0.weight",
        "downsample.1.weight",
        "cbam.mlp.0.weight",
        "cbam.mlp.2.weight",
        "cbam.spatial.weight",
        "cbam.spatial.bias",
    ):
        assert key in names
    assert "downsample.0.weight" not in BasicBlock(8, 8).state_dict()


# --------------------------------------------------------------------------- PatchBatchNorm2d


def _grouped_reference(
    bn: nn.BatchNorm2d, x: torch.Tensor, groups: int
) -> tuple[torch.Tensor, nn.BatchNorm2d]:
    """One plain BatchNorm2d call per patch group, as the paper's patch-by-patch code does."""
    ref = nn.BatchNorm2d(
        bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats
    ).double()
    ref.load_state_dict(bn.state_dict())
    ref.train(bn.training)
    chunks = x.chunk(groups, dim=0)
    return torch.cat([ref(c) for c in chunks]), ref


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("track", [True, False])
def test_patch_batch_norm_equals_one_call_per_patch(
    momentum: Optional[float], training: bool, track: bool
) -> None:
    groups = 3
    bn = PatchBatchNorm2d(5, groups, momentum=momentum, track_running_stats=track).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    bn.train(training)
    x = torch.randn(groups * 4, 5, 3, 2, dtype=torch.float64) * 2 + 1
    x[4:8] += 3.0  # patch groups with different statistics
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    for _ in range(2):  # the second call starts from updated running statistics
        expected, ref = _grouped_reference(bn, x2, groups)
        out = bn(x1)
        torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
        if track:
            torch.testing.assert_close(bn.running_mean, ref.running_mean, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(bn.running_var, ref.running_var, rtol=1e-12, atol=1e-12)
            assert bn.num_batches_tracked == ref.num_batches_tracked
    w = torch.randn_like(x)
    (gx1, gw1) = torch.autograd.grad((out * w).sum(), (x1, bn.weight))
    (gx2, gw2) = torch.autograd.grad((expected * w).sum(), (x2, ref.weight))
    torch.testing.assert_close(gx1, gx2, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(gw1, gw2, rtol=1e-9, atol=1e-10)


def test_patch_batch_norm_differs_from_pooled_statistics() -> None:
    """The grouped normalisation is not plain BN over the folded batch when groups differ."""
    bn = PatchBatchNorm2d(2, 2)
    plain = nn.BatchNorm2d(2)
    x = torch.cat([torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3) + 5])
    assert not torch.allclose(bn(x), plain(x), atol=1e-2)
    # each group comes out with zero mean, unit variance per channel
    y = bn(x).view(2, 4, 2, 9)
    torch.testing.assert_close(y.mean(dim=(1, 3)), torch.zeros(2, 2), atol=1e-5, rtol=0)


def test_patch_batch_norm_is_batch_norm_state_compatible() -> None:
    bn = PatchBatchNorm2d(4, 2)
    assert set(bn.state_dict()) == set(nn.BatchNorm2d(4).state_dict())
    assert isinstance(bn, nn.BatchNorm2d) and "num_patches=2" in repr(bn)
    x = torch.randn(6, 4, 2, 2)
    torch.testing.assert_close(PatchBatchNorm2d(4, 1)(x), nn.BatchNorm2d(4)(x))


def test_patch_batch_norm_bf16_and_errors() -> None:
    bn = PatchBatchNorm2d(4, 2)
    x = torch.randn(6, 4, 3, 3)
    out = bn(x.bfloat16())
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    with pytest.raises(ValueError, match=r"multiple of num_patches = 4, got shape \(6, 4, 3, 3\)"):
        PatchBatchNorm2d(4, 4)(x)
    with pytest.raises(ValueError, match="`num_patches` must be an int >= 1"):
        PatchBatchNorm2d(4, 0)


def test_blocks_take_norm_layer() -> None:
    block = AttentionBasicBlock(
        8, 16, stride=2, reduction=4, norm_layer=lambda c: PatchBatchNorm2d(c, 2)
    )
    bns = [m for m in block.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 3 and all(isinstance(m, PatchBatchNorm2d) for m in bns)
    assert copy.deepcopy(block)(torch.randn(4, 8, 4, 4)).shape == (4, 16, 2, 2)


# ------------------------------------------------------------------------------ mechanics


@pytest.mark.parametrize(
    "factory,shape",
    [
        (lambda: CBAM(16, spatial_kernel_size=7), (2, 16, 5, 5)),
        (lambda: PatchBatchNorm2d(4, 2), (4, 4, 3, 3)),
    ],
)
def test_pickle_and_deepcopy(factory: Callable[[], nn.Module], shape: tuple[int, ...]) -> None:
    check_pickle_and_deepcopy(factory, shape)


@pytest.mark.slow
def test_compile_cbam_inductor() -> None:
    torch._dynamo.reset()
    compile_matches_eager(CBAM(32), torch.randn(2, 32, 6, 6), "inductor")
