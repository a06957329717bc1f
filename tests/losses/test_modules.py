"""The loss modules: equal to their functions, settings validated, state, pickling, repr."""

from __future__ import annotations

import inspect
import io
import math
import pickle
from typing import Any, Callable

import pytest
import torch

from lacmfer.functional import (
    dual_level_alignment,
    multi_view_clustering_consistency,
    pseudo_label_refinement,
)
from lacmfer.losses import (
    DualLevelInterDomainAlignment,
    MultiViewClusteringConsistency,
    PseudoLabelRefiner,
)
from tests.functional.cases import random_case

PAIRS: list[tuple[type, Callable[..., Any]]] = [
    (DualLevelInterDomainAlignment, dual_level_alignment),
    (MultiViewClusteringConsistency, multi_view_clustering_consistency),
    (PseudoLabelRefiner, pseudo_label_refinement),
]


@pytest.mark.parametrize("cls, fn", PAIRS, ids=lambda x: getattr(x, "__name__", str(x)))
def test_signatures_agree(cls: type, fn: Callable[..., Any]) -> None:
    """Every setting of the function is a keyword-only setting of the module, same default."""
    fn_params = inspect.signature(fn).parameters
    mod_params = inspect.signature(cls.__init__).parameters
    for name, p in fn_params.items():
        if p.kind is not inspect.Parameter.KEYWORD_ONLY or name in ("return_terms", "domains_s"):
            continue
        assert name in mod_params, f"{cls.__name__} lacks setting {name!r}"
        assert mod_params[name].kind is inspect.Parameter.KEYWORD_ONLY
        if name not in ("cluster_weight",):
            assert mod_params[name].default == p.default, name
    # Positional inputs of forward and function agree in name and order.
    fwd = [
        n
        for n, p in inspect.signature(cls.forward).parameters.items()
        if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and n != "self"
    ]
    pos = [n for n, p in fn_params.items() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert fwd[: len(pos)] == pos


def test_alignment_module_equals_function() -> None:
    c = random_case(0)
    for settings in (
        {},
        {"threshold": 0.6, "kernel_num": 3, "kernel_mul": 1.5, "cluster_weight": 0.5},
    ):
        module = DualLevelInterDomainAlignment(**settings)
        torch.testing.assert_close(
            module(*c.args), dual_level_alignment(*c.args, **settings), rtol=0, atol=0
        )
    c = random_case(1, num_domains=3)
    module = DualLevelInterDomainAlignment(num_domains=3)
    got = module(*c.args, domains_s=c.domains_s, return_terms=True)
    want = dual_level_alignment(*c.args, domains_s=c.domains_s, num_domains=3, return_terms=True)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_intra_modules_equal_functions() -> None:
    g = torch.Generator().manual_seed(0)
    zg, zl = 4 * torch.randn(10, 5, generator=g), 4 * torch.randn(10, 5, generator=g)
    for from_logits in (False, True):
        torch.testing.assert_close(
            MultiViewClusteringConsistency(from_logits=from_logits)(zg, zl),
            multi_view_clustering_consistency(zg, zl, from_logits=from_logits),
            rtol=0,
            atol=0,
        )
    refiner = PseudoLabelRefiner(threshold=0.7)
    out = refiner(zg, zl)
    want = pseudo_label_refinement(zg, zl, threshold=0.7)
    assert torch.equal(out.labels, want.labels) and torch.equal(out.mask, want.mask)
    torch.testing.assert_close(out.loss, want.loss, rtol=0, atol=0)
    torch.testing.assert_close(refiner.kept_fraction, want.kept_fraction)
    assert 0 < float(refiner.kept_fraction) < 1


def test_cluster_ramp() -> None:
    c = random_case(2)
    module = DualLevelInterDomainAlignment(
        cluster_ramp="dann_sigmoid", ramp_steps=10, cluster_weight=0.5
    )
    terms = dual_level_alignment(*c.args, return_terms=True)
    for step in range(13):
        p = min(step / 10, 1.0)
        weight = 0.5 * (2 / (1 + math.exp(-10 * p)) - 1)
        torch.testing.assert_close(
            torch.as_tensor(module.current_cluster_weight()),
            torch.tensor(weight),
            rtol=1e-6,
            atol=1e-7,
        )
        torch.testing.assert_close(
            module(*c.args), terms.sid + weight * terms.cid, rtol=1e-6, atol=1e-7
        )
        module.step()
    assert int(module.num_steps) == 13
    # The progress lives in state_dict: a fresh module resumes the ramp.
    fresh = DualLevelInterDomainAlignment(
        cluster_ramp="dann_sigmoid", ramp_steps=10, cluster_weight=0.5
    )
    fresh.load_state_dict(module.state_dict())
    assert int(fresh.num_steps) == 13
    assert float(fresh.progress) == 1.0
    # The constant schedule ignores the progress.
    const = DualLevelInterDomainAlignment()
    const.step(100)
    assert const.current_cluster_weight() == 0.02


def test_per_source_module_requires_domains() -> None:
    c = random_case(3)
    with pytest.raises(ValueError, match=r"`domains_s` is required.*num_domains=2"):
        DualLevelInterDomainAlignment(num_domains=2)(*c.args)


BAD_SETTINGS = [
    (DualLevelInterDomainAlignment, {"threshold": 0}, ValueError, "`threshold`"),
    (DualLevelInterDomainAlignment, {"threshold": 1.2}, ValueError, "`threshold`"),
    (DualLevelInterDomainAlignment, {"kernel_num": 0}, ValueError, "`kernel_num`"),
    (DualLevelInterDomainAlignment, {"kernel_num": 2.0}, TypeError, "`kernel_num`"),
    (DualLevelInterDomainAlignment, {"kernel_mul": -1.0}, ValueError, "`kernel_mul`"),
    (DualLevelInterDomainAlignment, {"cluster_weight": -0.1}, ValueError, "`cluster_weight`"),
    (DualLevelInterDomainAlignment, {"cluster_ramp": "linear"}, ValueError, r"`cluster_ramp`.*'none', 'dann_sigmoid'.*'linear'"),
    (DualLevelInterDomainAlignment, {"ramp_steps": 0}, ValueError, "`ramp_steps`"),
    (DualLevelInterDomainAlignment, {"num_domains": 0}, ValueError, "`num_domains`"),
    (MultiViewClusteringConsistency, {"from_logits": "yes"}, TypeError, "`from_logits`"),
    (PseudoLabelRefiner, {"threshold": 0.0}, ValueError, "`threshold`"),
    (PseudoLabelRefiner, {"threshold": "high"}, TypeError, "`threshold`"),
]  # fmt: skip


@pytest.mark.parametrize("cls, settings, exc, match", BAD_SETTINGS)
def test_settings_validated_at_construction(
    cls: type, settings: dict[str, Any], exc: type, match: str
) -> None:
    with pytest.raises(exc, match=match):
        cls(**settings)


def test_settings_are_keyword_only() -> None:
    for cls, _ in PAIRS:
        with pytest.raises(TypeError):
            cls(0.5)


def test_extra_repr_shows_settings() -> None:
    text = repr(
        DualLevelInterDomainAlignment(threshold=0.5, cluster_ramp="dann_sigmoid", num_domains=5)
    )
    for part in ("threshold=0.5", "kernel_num=5", "cluster_ramp='dann_sigmoid'", "num_domains=5"):
        assert part in text
    assert "from_logits=True" in repr(MultiViewClusteringConsistency(from_logits=True))
    assert "threshold=0.8" in repr(PseudoLabelRefiner(threshold=0.8))


@pytest.mark.parametrize("cls, fn", PAIRS, ids=lambda x: getattr(x, "__name__", str(x)))
def test_pickle_and_state_dict_round_trip(cls: type, fn: Callable[..., Any]) -> None:
    module = cls()
    if isinstance(module, DualLevelInterDomainAlignment):
        module.step(7)
    clone = pickle.loads(pickle.dumps(module))
    assert repr(clone) == repr(module)
    for key, value in module.state_dict().items():
        assert torch.equal(clone.state_dict()[key], value)
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    fresh = cls()
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert fresh.state_dict().keys() == module.state_dict().keys()
    if isinstance(module, DualLevelInterDomainAlignment):
        assert int(fresh.num_steps) == 7
    # The refiner's kept fraction is a diagnostic, not state.
    if isinstance(module, PseudoLabelRefiner):
        assert "kept_fraction" not in module.state_dict()


def test_modules_follow_device_and_dtype_moves() -> None:
    module = DualLevelInterDomainAlignment(cluster_ramp="dann_sigmoid").double()
    assert module.num_steps.dtype == torch.int64  # integer buffers are not cast
    c = random_case(4)
    assert module(*c.args).dtype == torch.float64
