"""class_separation against a loop reference (centroids, spreads and pairs by hand), and properties."""

from __future__ import annotations

import math
from typing import Optional

import pytest
import torch
from torch import Tensor

from lacmfer.analysis import ClassSeparation, class_separation, domain_distance_matrix

NAN = float("nan")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def separation_reference(rows: list[tuple[Tensor, int]], k: int) -> tuple[float, float, float]:
    """(within, between, ratio) of labelled rows ``(feature, label)``, by loops."""
    rows = [(x, y) for x, y in rows if y >= 0]
    if not rows:
        return NAN, NAN, NAN
    d = rows[0][0].shape[0]
    centroids: dict[int, list[float]] = {}
    for c in range(k):
        members = [x for x, y in rows if y == c]
        if members:
            centroids[c] = [sum(float(x[j]) for x in members) / len(members) for j in range(d)]
    within = sum(
        sum((float(x[j]) - centroids[y][j]) ** 2 for j in range(d)) for x, y in rows
    ) / len(rows)
    present = sorted(centroids)
    pairs = [
        sum((centroids[a][j] - centroids[b][j]) ** 2 for j in range(d))
        for i, a in enumerate(present)
        for b in present[i + 1 :]
    ]
    if not pairs:
        return within, NAN, NAN
    between = sum(pairs) / len(pairs)
    if between == 0:  # coinciding centroids
        return within, between, math.inf if within > 0 else NAN
    return within, between, within / between


def reference(
    x: Tensor, labels: Tensor, domains: Optional[Tensor], k: int, m: int
) -> dict[str, list[float]]:
    rows = [(x[i], int(labels[i])) for i in range(x.shape[0])]
    out = {"pooled": list(separation_reference(rows, k))}
    if domains is not None:
        per = [
            separation_reference([r for i, r in enumerate(rows) if int(domains[i]) == dom], k)
            for dom in range(m)
        ]
        out["within"] = [p[0] for p in per]
        out["between"] = [p[1] for p in per]
        out["ratio"] = [p[2] for p in per]
    return out


def _cases() -> dict[str, tuple[Tensor, Tensor, Optional[Tensor], dict]]:
    g = _gen(0)
    n = 30
    x = torch.randn(n, 4, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (n,), generator=g)
    x = x + 2.0 * labels[:, None].double()
    domains = torch.randint(0, 3, (n,), generator=g)
    unlabelled = labels.clone()
    unlabelled[::3] = -1
    one_class_domain = torch.where(domains == 2, torch.zeros_like(labels), labels)
    no_labels_domain = torch.where(domains == 1, torch.full_like(labels, -1), labels)
    same_centroids = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]).double()
    return {
        "pooled": (x, labels, None, {}),
        "per_domain": (x, labels, domains, {}),
        "unlabelled_rows": (x, unlabelled, domains, {}),
        "one_class_in_a_domain": (x, one_class_domain, domains, {}),
        "domain_without_labels": (x, no_labels_domain, domains, {}),
        "empty_domain_and_class": (x, labels, domains, {"num_domains": 4, "num_classes": 5}),
        "single_class": (x, torch.zeros(n, dtype=torch.int64), domains, {}),
        "coinciding_centroids": (same_centroids, torch.tensor([0, 0, 1, 1]), None, {}),
        "identical_features": (
            torch.ones(6, 2, dtype=torch.float64),
            torch.tensor([0, 1] * 3),
            None,
            {},
        ),
        "large_offset": (x + 1e6, labels, domains, {}),
    }


CASES = _cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_reference(name: str) -> None:
    x, labels, domains, kwargs = CASES[name]
    out = class_separation(x, labels, domains, **kwargs)
    assert isinstance(out, ClassSeparation)
    k = kwargs.get("num_classes", int(labels.max()) + 1)
    m = kwargs.get("num_domains", int(domains.max()) + 1) if domains is not None else 0
    want = reference(x, labels, domains, k, m)
    got = [float(out.within), float(out.between), float(out.ratio)]
    assert got == pytest.approx(want["pooled"], rel=1e-8, abs=1e-9, nan_ok=True)
    if domains is None:
        assert out.domain_ratio is None and out.domain_within is None and out.domain_between is None
        return
    assert out.domain_within.tolist() == pytest.approx(
        want["within"], rel=1e-8, abs=1e-9, nan_ok=True
    )
    assert out.domain_between.tolist() == pytest.approx(
        want["between"], rel=1e-8, abs=1e-9, nan_ok=True
    )
    assert out.domain_ratio.tolist() == pytest.approx(
        want["ratio"], rel=1e-8, abs=1e-9, nan_ok=True
    )


def test_example_values() -> None:
    x = torch.tensor([[0.0, 0.0], [0.0, 2.0], [4.0, 0.0], [4.0, 2.0]])
    out = class_separation(x, torch.tensor([0, 0, 1, 1]))
    assert (float(out.within), float(out.between), float(out.ratio)) == (1.0, 16.0, 0.0625)


def test_scale_and_permutation() -> None:
    x, labels, domains, _ = CASES["per_domain"]
    out = class_separation(x, labels, domains)
    scaled = class_separation(3.0 * x + 5.0, labels, domains)
    torch.testing.assert_close(scaled.ratio, out.ratio)
    torch.testing.assert_close(scaled.domain_ratio, out.domain_ratio)
    torch.testing.assert_close(scaled.within, 9.0 * out.within)
    torch.testing.assert_close(scaled.domain_between, 9.0 * out.domain_between)
    perm = torch.randperm(x.shape[0], generator=_gen(1))
    permuted = class_separation(x[perm], labels[perm], domains[perm])
    for a, b in zip(out, permuted):
        torch.testing.assert_close(a, b)


def test_separated_vs_overlapping_classes() -> None:
    g = _gen(2)
    labels = torch.arange(4).repeat(50)
    centres = 5.0 * torch.eye(4)
    noise = torch.randn(200, 4, generator=g)
    assert float(class_separation(centres[labels] + noise, labels).ratio) < 0.2
    assert float(class_separation(noise, labels).ratio) > 5.0  # classes on top of each other


def test_aligned_but_collapsed() -> None:
    # before: two domains apart, classes well separated in each; after a collapsing alignment:
    # the domains overlap (small MMD) but the classes have merged (ratio far above 1)
    g = _gen(3)
    labels = torch.arange(3).repeat(80)
    domains = torch.arange(2).repeat_interleave(120)
    centres = 4.0 * torch.eye(3)
    noise = 0.5 * torch.randn(240, 3, generator=g)
    before = centres[labels] + noise + 3.0 * domains[:, None].float()
    collapsed = 0.05 * centres[labels] + noise
    d_before = domain_distance_matrix(before, domains).matrix[0, 1]
    d_after = domain_distance_matrix(collapsed, domains).matrix[0, 1]
    r_before = class_separation(before, labels, domains).domain_ratio
    r_after = class_separation(collapsed, labels, domains).domain_ratio
    assert float(d_after) < 0.1 * float(d_before)
    assert float(r_before.max()) < 0.1 and float(r_after.min()) > 1.0


def test_gradients_finite_with_missing_data() -> None:
    x, labels, domains, _ = CASES["one_class_in_a_domain"]
    x = x.clone().requires_grad_()
    out = class_separation(x, labels, domains, num_domains=4)
    assert bool(out.domain_ratio[2].isnan()) and bool(out.domain_ratio[3].isnan())
    (out.ratio + out.domain_ratio.nansum()).backward()
    assert x.grad is not None and bool(x.grad.isfinite().all())


def test_dtypes() -> None:
    x, labels, domains, _ = CASES["per_domain"]
    assert class_separation(x.float(), labels).ratio.dtype == torch.float32
    out = class_separation(x.half(), labels, domains)
    assert out.ratio.dtype == out.domain_ratio.dtype == torch.float32
    assert out.ratio.shape == () and out.domain_ratio.shape == (3,)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32])
def test_any_integer_dtype_of_labels_and_domains(dtype: torch.dtype) -> None:
    x, labels, domains, _ = CASES["per_domain"]
    want = class_separation(x, labels, domains)
    got = class_separation(x, labels.to(dtype), domains.to(dtype))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, equal_nan=True)


def test_errors() -> None:
    x = torch.randn(6, 3)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    with pytest.raises(ValueError, match=r"`features` must have 2 dimensions"):
        class_separation(x[None], labels)
    with pytest.raises(TypeError, match=r"`labels` must be an integer tensor"):
        class_separation(x, labels.float())
    with pytest.raises(ValueError, match=r"`labels` and `features` must match.*\(5\)"):
        class_separation(x, labels[:5])
    with pytest.raises(ValueError, match=r"`labels` must hold values in \[0, 2\)"):
        class_separation(x, labels, num_classes=2)
    with pytest.raises(ValueError, match=r"`domains` must hold values in \[0, 1\)"):
        class_separation(x, labels, labels, num_domains=1)
    with pytest.raises(TypeError, match=r"`domains` must be an integer tensor"):
        class_separation(x, labels, x[:, 0])
    with pytest.raises(ValueError, match=r"`labels` holds no index >= 0"):
        class_separation(x, torch.full((6,), -1))
    # with no num_domains given, negative domains were reported against "num_domains = 0"
    with pytest.raises(
        ValueError, match=r"`domains` must hold indices >= 0, got values in \[-1, -1\]"
    ):
        class_separation(x, labels, torch.full((6,), -1))
