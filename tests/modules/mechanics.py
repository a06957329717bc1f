"""Mechanical checks shared by the model tests: outputs compared, compile vs eager, pickling."""

from __future__ import annotations

import copy
import pickle
from typing import Callable

import torch
from torch import nn

#: A CBAM spatial kernel small enough for fast tests (the default 49 is the paper code's).
TINY = {"spatial_kernel_size": 7}


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def compare_outputs(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...], **tol: float) -> None:
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, **tol)


def check_pickle_and_deepcopy(factory: Callable[[], nn.Module], shape: tuple[int, ...]) -> None:
    """Pickled and deep-copied modules give the same output and repr."""
    module = factory().eval()
    x = torch.randn(shape)
    with torch.no_grad():
        expected = module(x)
        for clone in (pickle.loads(pickle.dumps(module)), copy.deepcopy(module)):
            out = clone(x)
            if isinstance(expected, tuple):
                compare_outputs(out, expected, rtol=0, atol=0)
            else:
                torch.testing.assert_close(out, expected, rtol=0, atol=0)
            assert repr(clone) == repr(module)


def compile_matches_eager(module: nn.Module, x: torch.Tensor, backend: str) -> None:
    """``torch.compile(fullgraph=True)`` equals eager: outputs, buffers and gradients."""
    eager = copy.deepcopy(module)
    compiled = torch.compile(module, backend=backend, fullgraph=True)
    out = compiled(x)
    expected = eager(x)
    if isinstance(expected, tuple):
        compare_outputs(out, expected, rtol=1e-4, atol=1e-5)
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
