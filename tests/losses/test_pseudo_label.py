"""Pseudo-label refinement by multi-view voting and its loss, function and module.

Loop references of ``tests/reference.py``, the vote's rule, the empty vote, gradients, input errors,
hypothesis properties, the module (its ``kept_fraction``), compile and autocast.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lacmfer.functional import (
    multi_view_pseudo_label_loss,
    pseudo_label_refinement,
    refine_pseudo_labels,
)
from lacmfer.losses import PseudoLabelRefiner
from tests.reference import mvv_reference, refine_reference

from .cases import (
    ANY_FINITE32,
    check_keyword_only,
    check_pickle_and_state_dict_round_trip,
    check_signatures_agree,
    check_view_errors,
    matrix,
    random_case,
    view_cases,
    views,
)

CASES = view_cases()
TOL = {"rtol": 1e-10, "atol": 1e-10}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("threshold", [0.9, 0.5, 1.0])
def test_refine_matches_reference(name: str, threshold: float) -> None:
    zg, zl = CASES[name]
    labels, mask = refine_pseudo_labels(zg, zl, threshold=threshold)
    ref_labels, ref_mask = refine_reference(zg, zl, threshold)
    assert labels.dtype == torch.int64 and mask.dtype == torch.bool
    assert labels.tolist() == ref_labels
    assert mask.tolist() == ref_mask


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("threshold", [0.9, 0.5])
def test_mvv_matches_reference(name: str, threshold: float) -> None:
    zg, zl = CASES[name]
    got = multi_view_pseudo_label_loss(zg, zl, threshold=threshold)
    torch.testing.assert_close(got, mvv_reference(zg, zl, threshold), **TOL)


def test_vote_rule_details() -> None:
    # Strict ">": a confidence of exactly tau is not enough.
    half = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    _, mask = refine_pseudo_labels(half, half, threshold=0.5)
    assert not bool(mask[0])
    # One confident view suffices if the views agree; disagreement never keeps.
    zg = torch.tensor([[6.0, 0.0], [6.0, 0.0], [0.1, 0.0]])
    zl = torch.tensor([[0.1, 0.0], [0.0, 6.0], [0.2, 0.0]])
    labels, mask = refine_pseudo_labels(zg, zl, threshold=0.9)
    assert mask.tolist() == [True, False, False]
    assert labels.tolist() == [0, 0, 0]


def test_mvv_nothing_kept_is_exact_zero_and_connected() -> None:
    zg = torch.zeros(4, 3, requires_grad=True)
    zl = torch.zeros(4, 3, requires_grad=True)
    loss = multi_view_pseudo_label_loss(zg, zl)
    assert float(loss.detach()) == 0.0 and loss.requires_grad
    loss.backward()
    assert zg.grad is not None and zl.grad is not None
    assert float(zg.grad.abs().sum()) == 0.0


def test_mvv_labels_detached_and_gradcheck() -> None:
    zg, zl = views(6, b=7, k=3, scale=4.0)
    _, mask = refine_pseudo_labels(zg, zl, threshold=0.6)
    assert 0 < int(mask.sum()) < 7, "the case must keep some samples and drop others"
    assert torch.autograd.gradcheck(
        lambda a, b: multi_view_pseudo_label_loss(a, b, threshold=0.6),
        (zg.clone().requires_grad_(), zl.clone().requires_grad_()),
    )


def test_refinement_bundle_matches_parts() -> None:
    zg, zl = views(7, scale=4.0)
    out = pseudo_label_refinement(zg, zl, threshold=0.7)
    labels, mask = refine_pseudo_labels(zg, zl, threshold=0.7)
    assert torch.equal(out.labels, labels) and torch.equal(out.mask, mask)
    torch.testing.assert_close(out.loss, multi_view_pseudo_label_loss(zg, zl, threshold=0.7))
    torch.testing.assert_close(out.kept_fraction, mask.to(torch.float64).mean())
    assert not out.kept_fraction.requires_grad


def test_extreme_logits_finite() -> None:
    for dtype in (torch.float32, torch.float64):
        info = torch.finfo(dtype)
        zg = torch.tensor([[info.max, -info.max], [-info.max, info.max]], dtype=dtype)
        zl = torch.tensor([[info.max, -info.max], [info.max, -info.max]], dtype=dtype)
        a, b = zg.clone().requires_grad_(), zl.clone().requires_grad_()
        loss = multi_view_pseudo_label_loss(a, b)
        loss.backward()
        assert torch.isfinite(loss)
        assert a.grad is not None and torch.isfinite(a.grad).all()


# ------------------------------------------------------------------ properties


@given(matrix(st.integers(1, 6), 3, ANY_FINITE32.map(lambda v: v)))
def test_finite_mask_and_labels(z: torch.Tensor) -> None:
    zg = z.float().requires_grad_()
    zl = z.flip(1).float().requires_grad_()
    out = pseudo_label_refinement(zg, zl)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert zg.grad is not None and torch.isfinite(zg.grad).all()
    assert out.mask.dtype == torch.bool
    assert bool(((out.labels >= 0) & (out.labels < 3)).all())


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("fn", [multi_view_pseudo_label_loss, refine_pseudo_labels])
def test_view_errors(fn: Callable[..., Any]) -> None:
    check_view_errors(fn)


@pytest.mark.parametrize("fn", [refine_pseudo_labels, multi_view_pseudo_label_loss])
def test_refiner_threshold_errors(fn: Callable[..., Any]) -> None:
    z = torch.randn(5, 3)
    with pytest.raises(ValueError, match=r"`threshold`.*\(0, 1\]"):
        fn(z, z, threshold=0.0)
    with pytest.raises(ValueError, match="`threshold`"):
        fn(z, z, threshold=1.01)


# ------------------------------------------------------------------ module and compile


def test_module_signature_agrees_with_function() -> None:
    check_signatures_agree(PseudoLabelRefiner, pseudo_label_refinement)


def test_module_equals_function() -> None:
    g = torch.Generator().manual_seed(0)
    zg, zl = 4 * torch.randn(10, 5, generator=g), 4 * torch.randn(10, 5, generator=g)
    refiner = PseudoLabelRefiner(threshold=0.7)
    out = refiner(zg, zl)
    want = pseudo_label_refinement(zg, zl, threshold=0.7)
    assert torch.equal(out.labels, want.labels) and torch.equal(out.mask, want.mask)
    torch.testing.assert_close(out.loss, want.loss, rtol=0, atol=0)
    torch.testing.assert_close(refiner.kept_fraction, want.kept_fraction)
    assert 0 < float(refiner.kept_fraction) < 1


def test_kept_fraction_follows_the_input() -> None:
    """The buffer takes the device and dtype of the last call's result: no copy into a fixed one."""
    refiner = PseudoLabelRefiner(threshold=0.5)
    assert refiner.kept_fraction.dtype == torch.float32
    zg = torch.tensor([[5.0, 0.0], [0.0, 5.0]], dtype=torch.float64)
    zl = torch.tensor([[4.0, 0.0], [5.0, 0.0]], dtype=torch.float64)
    out = refiner(zg, zl)
    assert refiner.kept_fraction is out.kept_fraction
    assert refiner.kept_fraction.dtype == torch.float64
    assert refiner.kept_fraction.device == zg.device
    assert not refiner.kept_fraction.requires_grad
    assert float(refiner.kept_fraction) == 0.5
    assert "kept_fraction" in dict(refiner.named_buffers())
    # A move of the module moves the buffer, and the next call replaces it again.
    refiner.to(torch.float32)
    assert refiner.kept_fraction.dtype == torch.float32
    refiner(zg.float(), zl.float())
    assert refiner.kept_fraction.dtype == torch.float32


@pytest.mark.gpu
def test_kept_fraction_stays_on_the_gpu() -> None:
    refiner = PseudoLabelRefiner()  # built on the CPU, never moved
    zg = torch.randn(8, 3, device="cuda")
    refiner(zg, zg)
    assert refiner.kept_fraction.device.type == "cuda"


@pytest.mark.parametrize(
    "settings, exc, match",
    [
        ({"threshold": 0.0}, ValueError, "`threshold`"),
        ({"threshold": "high"}, TypeError, "`threshold`"),
    ],
)
def test_module_settings_validated_at_construction(
    settings: dict[str, Any], exc: type, match: str
) -> None:
    with pytest.raises(exc, match=match):
        PseudoLabelRefiner(**settings)


def test_module_settings_are_keyword_only() -> None:
    check_keyword_only(PseudoLabelRefiner)


def test_module_extra_repr_shows_settings() -> None:
    assert "threshold=0.8" in repr(PseudoLabelRefiner(threshold=0.8))


def test_module_pickle_and_state_dict_round_trip() -> None:
    module = PseudoLabelRefiner()
    check_pickle_and_state_dict_round_trip(module)
    # The refiner's kept fraction is a diagnostic, not state.
    assert "kept_fraction" not in module.state_dict()


def test_compiled_function_equals_eager() -> None:
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(1)
    zg, zl = 4 * torch.randn(12, 7, generator=g), 4 * torch.randn(12, 7, generator=g)
    vote = torch.compile(pseudo_label_refinement, fullgraph=True)
    got, want = vote(zg, zl, threshold=0.6), pseudo_label_refinement(zg, zl, threshold=0.6)
    assert torch.equal(got.mask, want.mask)
    torch.testing.assert_close(got.loss, want.loss)


def test_compiled_module_equals_eager() -> None:
    torch._dynamo.reset()
    c = random_case(2, dtype=torch.float32)
    refiner = PseudoLabelRefiner(threshold=0.5)
    out = torch.compile(refiner, fullgraph=True)(c.logits_t, c.logits_t * 0.5)
    torch.testing.assert_close(refiner.kept_fraction, out.kept_fraction)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_cpu_matches_fp32(dtype: torch.dtype) -> None:
    c = random_case(3, b_s=16, b_t=16, dim=32, num_classes=7, dtype=torch.float32)
    head = torch.nn.Linear(32, 32)
    torch.nn.init.eye_(head.weight)
    torch.nn.init.zeros_(head.bias)

    def loss() -> torch.Tensor:
        zt = head(c.feat_t)[:, :7] + c.logits_t
        return pseudo_label_refinement(zt, zt * 1.1, threshold=0.6).loss

    want = loss()
    with torch.autocast("cpu", dtype=dtype):
        got = loss()
    assert got.dtype == torch.float32
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=5e-2, atol=5e-2)


def test_compiled_with_changing_float_settings() -> None:
    # Dynamo makes a float argument that changes between calls symbolic; the settings checks
    # must not break the graph (fullgraph) and the values must still follow the setting.
    compiled = torch.compile(pseudo_label_refinement, fullgraph=True)
    z = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    for threshold in (0.6, 0.7, 0.8):
        got = compiled(z, 2 * z, threshold=threshold)
        want = pseudo_label_refinement(z, 2 * z, threshold=threshold)
        torch.testing.assert_close(got.loss, want.loss)
        assert torch.equal(got.mask, want.mask)
