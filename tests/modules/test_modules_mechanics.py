"""Mechanical checks: channels_last, bf16 autocast, torch.compile, state_dict, pickling, public API."""

from __future__ import annotations

import copy
import pickle
import re
from typing import Callable

import pytest
import torch
from torch import nn

import lacmfer.modules
from lacmfer.functional._patches import merge_patches, split_patches
from lacmfer.modules import CBAM, LACMFER, LocalPatchBranch, PatchBatchNorm2d

TINY = {"spatial_kernel_size": 7}


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _compare_outputs(
    a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...], **tol: float
) -> None:
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, **tol)


@pytest.mark.parametrize("training", [False, True])
def test_channels_last_gives_the_same_output(
    training: bool, randomise_bn: Callable[[nn.Module], None]
) -> None:
    model = LACMFER.tiny(**TINY).train(training)
    randomise_bn(model)
    x = torch.randn(3, 3, 64, 64)
    state = _state(model)
    with torch.no_grad():
        expected = model(x)
        expected_state = _state(model)
        model.load_state_dict(state)
        model = model.to(memory_format=torch.channels_last)
        assert model.encoder.conv1.weight.is_contiguous(memory_format=torch.channels_last)
        out = model(x.to(memory_format=torch.channels_last))
    _compare_outputs(out, expected, rtol=1e-4, atol=1e-4)
    # the running statistics moved the same way
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, expected_state[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.parametrize("training", [False, True])
def test_bf16_autocast_on_cpu(training: bool) -> None:
    model = LACMFER.tiny(**TINY).train(training)
    x = torch.randn(4, 3, 64, 64)
    state = _state(model)
    expected = model(x)
    model.load_state_dict(state)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    for name, got, ref in zip(expected._fields, out, expected):
        assert got.dtype == torch.bfloat16 and torch.isfinite(got).all(), name
        rel = (got.float() - ref).abs().max() / ref.abs().max()
        assert rel < 0.1, f"{name}: relative error {float(rel):.3g}"
    (out.logits_g.float().sum() + out.logits_l.float().sum()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_state_dict_round_trip() -> None:
    model = LACMFER.tiny(**TINY)
    model.train()(torch.randn(4, 3, 64, 64))  # non-trivial running statistics
    torch.manual_seed(123)
    other = LACMFER.tiny(**TINY)
    other.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    other.eval()
    with torch.no_grad():
        _compare_outputs(other(x), model(x), rtol=0, atol=0)
    assert list(other.state_dict()) == list(model.state_dict())
    assert all(
        torch.equal(a, b) for a, b in zip(other.state_dict().values(), model.state_dict().values())
    )


@pytest.mark.parametrize(
    "factory,shape",
    [
        (lambda: CBAM(16, spatial_kernel_size=7), (2, 16, 5, 5)),
        (lambda: PatchBatchNorm2d(4, 2), (4, 4, 3, 3)),
        (lambda: LocalPatchBranch(16, 16, blocks=1, share="all", **TINY), (2, 16, 8, 8)),
        (lambda: LACMFER.tiny(**TINY), (2, 3, 32, 32)),
    ],
)
def test_pickle_and_deepcopy(factory: Callable[[], nn.Module], shape: tuple[int, ...]) -> None:
    module = factory().eval()
    x = torch.randn(shape)
    with torch.no_grad():
        expected = module(x)
        for clone in (pickle.loads(pickle.dumps(module)), copy.deepcopy(module)):
            out = clone(x)
            if isinstance(expected, tuple):
                _compare_outputs(out, expected, rtol=0, atol=0)
            else:
                torch.testing.assert_close(out, expected, rtol=0, atol=0)
            assert repr(clone) == repr(module)


# ------------------------------------------------------------------------------ torch.compile


def _compile_matches_eager(module: nn.Module, x: torch.Tensor, backend: str) -> None:
    eager = copy.deepcopy(module)
    compiled = torch.compile(module, backend=backend, fullgraph=True)
    out = compiled(x)
    expected = eager(x)
    if isinstance(expected, tuple):
        _compare_outputs(out, expected, rtol=1e-4, atol=1e-5)
        loss_c, loss_e = out.logits.sum(), expected.logits.sum()
    else:
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
        loss_c, loss_e = out.sum(), expected.sum()
    # buffers (running statistics) updated identically, gradients identical
    for (k, a), b in zip(module.state_dict().items(), eager.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=k)
    loss_c.backward()
    loss_e.backward()
    for (k, a), b in zip(module.named_parameters(), eager.parameters()):
        assert a.grad is not None and b.grad is not None, k
        # relative to the gradient's norm: float32 reductions differ after fusion
        err = (a.grad - b.grad).norm() / (b.grad.norm() + 1e-12)
        assert err < 1e-3, f"{k}: relative gradient error {float(err):.3g}"


@pytest.mark.parametrize("training", [True, False])
def test_compile_tiny_model_traces_fullgraph(training: bool) -> None:
    """Dynamo + AOTAutograd (no C++ build): one graph, same outputs, buffers and gradients."""
    torch._dynamo.reset()
    model = LACMFER.tiny(**TINY).train(training)
    _compile_matches_eager(model, torch.randn(2, 3, 32, 32), "aot_eager")


def test_compile_local_branch_inductor() -> None:
    torch._dynamo.reset()
    branch = LocalPatchBranch(16, 16, blocks=1, **TINY).train()
    _compile_matches_eager(branch, torch.randn(2, 16, 8, 8), "inductor")


@pytest.mark.slow
@pytest.mark.parametrize("training", [True, False])
def test_compile_tiny_model_inductor(training: bool) -> None:
    torch._dynamo.reset()
    model = LACMFER.tiny(**TINY).train(training)
    _compile_matches_eager(model, torch.randn(4, 3, 64, 64), "inductor")


@pytest.mark.slow
def test_compile_cbam_inductor() -> None:
    torch._dynamo.reset()
    _compile_matches_eager(CBAM(32), torch.randn(2, 32, 6, 6), "inductor")


# ------------------------------------------------------------------------------ public API


def _isort_key(name: str) -> tuple[int, str]:
    """ruff RUF022 order: SCREAMING_CASE, then CamelCase, then the rest, each alphabetical."""
    if re.fullmatch(r"[A-Z0-9_]+", name) and len(name) > 1:
        return (0, name)
    if name[:1].isupper():
        return (1, name)
    return (2, name)


def test_public_api() -> None:
    names = lacmfer.modules.__all__
    assert names == sorted(names, key=_isort_key)
    for name in names:
        assert getattr(lacmfer.modules, name).__module__.startswith("lacmfer.modules")
    for name in ("CBAM", "AttentionBasicBlock", "ResNet18Encoder", "GlobalBranch"):
        assert name in names
    assert {"LocalPatchBranch", "LACMFER", "LACMFEROutput"} <= set(names)
    assert split_patches.__module__ == merge_patches.__module__ == "lacmfer.functional._patches"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    model = LACMFER.tiny(**TINY).train()
    gpu = copy.deepcopy(model).cuda()
    x = torch.randn(4, 3, 64, 64)
    expected = model(x)
    out = gpu(x.cuda())
    _compare_outputs(tuple(t.cpu() for t in out), expected, rtol=1e-3, atol=1e-3)
    for k, v in gpu.state_dict().items():
        torch.testing.assert_close(v.cpu(), model.state_dict()[k], rtol=1e-3, atol=1e-4, msg=k)
