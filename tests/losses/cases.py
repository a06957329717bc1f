"""Inputs and checks shared by the loss tests (one file per operation in this folder).

Random batches and the named edge cases of the alignment (one class, nothing masked in, batch of one,
identical features, all-zero logits, ...), the two-view logits of the intra-domain losses, the
hypothesis strategy of small matrices, and the mechanical checks every loss module gets (signature
agreement with its function, pickling and ``state_dict`` round trips, input errors of the views).
"""

from __future__ import annotations

import inspect
import io
import pickle
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional

import numpy as np
import pytest
import torch
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import Tensor, nn


@dataclass
class AlignmentCase:
    feat_s: Tensor
    logits_s: Tensor
    labels_s: Tensor
    feat_t: Tensor
    logits_t: Tensor
    domains_s: Optional[Tensor] = None
    num_domains: Optional[int] = None
    threshold: float = 0.4

    @property
    def args(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        return (self.feat_s, self.logits_s, self.labels_s, self.feat_t, self.logits_t)

    @property
    def kwargs(self) -> dict[str, object]:
        return {
            "threshold": self.threshold,
            "domains_s": self.domains_s,
            "num_domains": self.num_domains,
        }


def random_case(
    seed: int = 0,
    b_s: int = 12,
    b_t: int = 10,
    dim: int = 5,
    num_classes: int = 4,
    num_domains: Optional[int] = None,
    logit_scale: float = 3.0,
    dtype: torch.dtype = torch.float64,
) -> AlignmentCase:
    g = torch.Generator().manual_seed(seed)
    feat_s = torch.randn(b_s, dim, generator=g, dtype=dtype)
    feat_t = torch.randn(b_t, dim, generator=g, dtype=dtype) + 0.7
    logits_s = logit_scale * torch.randn(b_s, num_classes, generator=g, dtype=dtype)
    logits_t = logit_scale * torch.randn(b_t, num_classes, generator=g, dtype=dtype)
    labels_s = torch.randint(0, num_classes, (b_s,), generator=g)
    domains = None
    if num_domains is not None:
        domains = torch.randint(0, num_domains, (b_s,), generator=g)
    return AlignmentCase(feat_s, logits_s, labels_s, feat_t, logits_t, domains, num_domains)


def _confident(labels: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    return 8.0 * torch.nn.functional.one_hot(labels, num_classes).to(dtype)


def edge_cases() -> dict[str, Callable[[], AlignmentCase]]:
    """Named edge cases of the alignment: each a factory of a float64 case."""

    def one_class() -> AlignmentCase:
        c = random_case(1)
        labels = torch.zeros_like(c.labels_s)
        return replace(
            c,
            labels_s=labels,
            logits_s=_confident(labels, 4, c.feat_s.dtype),
            logits_t=_confident(torch.zeros(10, dtype=torch.long), 4, c.feat_s.dtype),
        )

    def nothing_masked() -> AlignmentCase:
        c = random_case(2, num_classes=7)
        return replace(
            c, logits_s=torch.zeros_like(c.logits_s), logits_t=torch.zeros_like(c.logits_t)
        )

    def all_zero_logits_low_threshold() -> AlignmentCase:
        # All masked in (1/K >= threshold), every pseudo-label 0 (argmax ties go to index 0).
        c = random_case(3, num_classes=4)
        return replace(
            c,
            logits_s=torch.zeros_like(c.logits_s),
            logits_t=torch.zeros_like(c.logits_t),
            threshold=0.25,
        )

    def batch_of_one() -> AlignmentCase:
        return random_case(4, b_s=1, b_t=1)

    def identical_features() -> AlignmentCase:
        c = random_case(5)
        row = c.feat_s[:1]
        return replace(
            c, feat_s=row.expand_as(c.feat_s).clone(), feat_t=row.expand_as(c.feat_t).clone()
        )

    def all_zero_features() -> AlignmentCase:
        c = random_case(6)
        return replace(c, feat_s=torch.zeros_like(c.feat_s), feat_t=torch.zeros_like(c.feat_t))

    def class_only_in_target() -> AlignmentCase:
        c = random_case(7, num_classes=5)
        labels = torch.randint(0, 3, c.labels_s.shape, generator=torch.Generator().manual_seed(1))
        pseudo = torch.tensor([3, 4, 3, 4, 0, 1, 2, 3, 4, 0])
        return replace(
            c,
            labels_s=labels,
            logits_s=_confident(labels, 5, c.feat_s.dtype) + 0.5 * c.logits_s,
            logits_t=_confident(pseudo, 5, c.feat_s.dtype) + 0.5 * c.logits_t,
        )

    def confident_and_cross_pairs() -> AlignmentCase:
        c = random_case(8, b_s=16, b_t=14, num_classes=3, logit_scale=6.0)
        return c

    def large_offset_features() -> AlignmentCase:
        c = random_case(9)
        return replace(c, feat_s=c.feat_s + 1e3, feat_t=c.feat_t + 1e3)

    def per_source_three_domains() -> AlignmentCase:
        return random_case(10, b_s=15, num_domains=3)

    def per_source_missing_domain() -> AlignmentCase:
        c = random_case(11, b_s=9, num_domains=4)
        return replace(c, domains_s=torch.tensor([0, 0, 1, 1, 1, 3, 3, 0, 1]))

    def single_class_k1() -> AlignmentCase:
        return random_case(12, num_classes=1)

    return {
        "one_class": one_class,
        "nothing_masked": nothing_masked,
        "all_zero_logits": all_zero_logits_low_threshold,
        "batch_of_one": batch_of_one,
        "identical_features": identical_features,
        "all_zero_features": all_zero_features,
        "class_only_in_target": class_only_in_target,
        "confident_and_cross_pairs": confident_and_cross_pairs,
        "large_offset_features": large_offset_features,
        "per_source_three_domains": per_source_three_domains,
        "per_source_missing_domain": per_source_missing_domain,
        "single_class_k1": single_class_k1,
    }


def all_cases() -> dict[str, Callable[[], AlignmentCase]]:
    cases: dict[str, Callable[[], AlignmentCase]] = {
        f"random_{seed}": (lambda seed=seed: random_case(seed + 100)) for seed in range(3)
    }
    cases["random_per_source"] = lambda: random_case(200, num_domains=2)
    cases.update(edge_cases())
    return cases


# ------------------------------------------------------------------ two views


def views(seed: int, b: int = 9, k: int = 4, scale: float = 3.0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    zg = scale * torch.randn(b, k, generator=g, dtype=torch.float64)
    zl = scale * torch.randn(b, k, generator=g, dtype=torch.float64)
    return zg, zl


def view_cases() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Named two-view cases (float64) of the consistency and pseudo-label tests."""
    zg, zl = views(0)
    agree = views(1, scale=6.0)[0]
    one = views(2, b=1)
    zeros = torch.zeros(6, 7, dtype=torch.float64)
    one_class = torch.zeros(5, 3, dtype=torch.float64)
    one_class[:, 1] = 40.0
    return {
        "random": (zg, zl),
        "views_agree": (agree, agree + 0.1),
        "batch_of_one": one,
        "all_zero_logits": (zeros, zeros),
        "one_cluster": (one_class, one_class),
        "k1": (torch.randn(4, 1, dtype=torch.float64), torch.randn(4, 1, dtype=torch.float64)),
        "large_logits": (zg * 50, zl * 50),
    }


# ------------------------------------------------------------------ hypothesis

FINITE64 = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=64)

ANY_FINITE32 = st.floats(allow_nan=False, allow_infinity=False, width=32)


def matrix(
    rows: st.SearchStrategy[int], cols: int, elements: st.SearchStrategy[float]
) -> st.SearchStrategy[torch.Tensor]:
    return rows.flatmap(
        lambda n: arrays(np.float64, (n, cols), elements=elements).map(torch.from_numpy)
    )


# ------------------------------------------------------------------ shared checks


def check_view_errors(fn: Callable[..., Any]) -> None:
    """The input errors every function of the two views ``(logits_g, logits_l)`` raises."""
    z = torch.randn(5, 3)
    with pytest.raises(ValueError, match=r"`logits_g`.*2 dimensions.*\(5\)"):
        fn(torch.randn(5), z)
    with pytest.raises(
        ValueError, match=r"Batch sizes.*`logits_g`.*\(5, 3\).*`logits_l`.*\(4, 3\)"
    ):
        fn(z, torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"classes.*`logits_g`.*\(5, 3\).*`logits_l`.*\(5, 2\)"):
        fn(z, torch.randn(5, 2))
    with pytest.raises(TypeError, match=r"`logits_l`.*floating"):
        fn(z, torch.zeros(5, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"`logits_g`.*at least one"):
        fn(torch.randn(0, 3), torch.randn(0, 3))


def check_signatures_agree(cls: type, fn: Callable[..., Any]) -> None:
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


def check_pickle_and_state_dict_round_trip(module: nn.Module) -> nn.Module:
    """Pickle and ``state_dict`` round trips of a loss module; returns the module re-loaded."""
    cls = type(module)
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
    return fresh


def check_keyword_only(cls: type) -> None:
    """Settings are keyword-only: a positional setting is a ``TypeError``."""
    with pytest.raises(TypeError):
        cls(0.5)
