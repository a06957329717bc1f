"""domain_distance_matrix against double-loop MMD references, and its properties."""

from __future__ import annotations

import math
from typing import Optional

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

import lacmfer.analysis._domain_distance as module
from lacmfer.analysis import DomainDistances, domain_distance_matrix
from lacmfer.functional import mmd2

NAN = float("nan")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def sqdist(a: Tensor, b: Tensor) -> float:
    return sum((float(a[d]) - float(b[d])) ** 2 for d in range(a.shape[0]))


def median_reference(x: Tensor, points: int = 1024) -> float:
    """Lower median of the squared distances of distinct points of the strided subsample."""
    n = x.shape[0]
    if n > points:
        x = x[[i * n // points for i in range(points)]]
        n = points
    values = sorted(sqdist(x[i], x[j]) for i in range(n) for j in range(i + 1, n))
    if not values:
        return 1.0
    median = values[(len(values) - 1) // 2]
    if median > 0:
        return median
    mean = sum(values) / len(values)
    return mean if mean > 0 else 1.0


def mmd_reference(xs: list[Tensor], ys: list[Tensor], h: float) -> float:
    """Biased MMD^2 with k(u, v) = exp(-|u - v|^2 / h), by explicit double loops; NaN if empty."""
    if not xs or not ys:
        return NAN

    def mean_k(p: list[Tensor], q: list[Tensor]) -> float:
        return sum(math.exp(-sqdist(u, v) / h) for u in p for v in q) / (len(p) * len(q))

    return max(0.0, mean_k(xs, xs) + mean_k(ys, ys) - 2.0 * mean_k(xs, ys))


def linear_reference(xs: list[Tensor], ys: list[Tensor]) -> float:
    if not xs or not ys:
        return NAN
    d = xs[0].shape[0]
    mx = [sum(float(x[k]) for x in xs) / len(xs) for k in range(d)]
    my = [sum(float(y[k]) for y in ys) / len(ys) for k in range(d)]
    return sum((mx[k] - my[k]) ** 2 for k in range(d))


def reference(
    features: Tensor,
    domains: Tensor,
    labels: Optional[Tensor],
    m: int,
    k: int,
    kind: str,
    h: Optional[float],
) -> dict[str, Tensor]:
    if kind == "mmd" and h is None:
        h = median_reference(features)

    def dist(xs: list[Tensor], ys: list[Tensor]) -> float:
        return mmd_reference(xs, ys, h) if kind == "mmd" else linear_reference(xs, ys)  # type: ignore[arg-type]

    rows = list(range(features.shape[0]))
    by_domain = [[features[r] for r in rows if int(domains[r]) == i] for i in range(m)]
    out = {
        "matrix": torch.tensor(
            [[dist(by_domain[i], by_domain[j]) for j in range(m)] for i in range(m)],
            dtype=torch.float64,
        )
    }
    if labels is None:
        return out
    cell = [
        [
            [features[r] for r in rows if int(domains[r]) == i and int(labels[r]) == c]
            for i in range(m)
        ]
        for c in range(k)
    ]
    out["per_class"] = torch.tensor(
        [[[dist(cell[c][i], cell[c][j]) for j in range(m)] for i in range(m)] for c in range(k)],
        dtype=torch.float64,
    )
    class_matrix = torch.full((k, k), NAN, dtype=torch.float64)
    for c in range(k):
        for c2 in range(k):
            values = [
                dist(cell[c][i], cell[c2][j])
                for i in range(m)
                for j in range(m)
                if i != j and cell[c][i] and cell[c2][j]
            ]
            if values:
                class_matrix[c, c2] = sum(values) / len(values)
    out["class_matrix"] = class_matrix
    out["class_counts"] = torch.tensor([[len(cell[c][i]) for i in range(m)] for c in range(k)])
    return out


def _cases() -> dict[str, tuple[Tensor, Tensor, Optional[Tensor], dict]]:
    g = _gen(0)
    n = 24
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    domains = torch.randint(0, 3, (n,), generator=g)
    x = x + domains[:, None].double() * 0.7
    labels = torch.randint(0, 3, (n,), generator=g)
    some_unlabelled = labels.clone()
    some_unlabelled[::4] = -1
    missing_cell = labels.clone()
    missing_cell[(domains == 1) & (labels == 2)] = 0
    return {
        "domains_only": (x, domains, None, {}),
        "with_labels": (x, domains, labels, {}),
        "unlabelled_rows": (x, domains, some_unlabelled, {}),
        "missing_class_in_a_domain": (x, domains, missing_cell, {}),
        "empty_domain_and_class": (x, domains, labels, {"num_domains": 5, "num_classes": 4}),
        "one_domain": (x, torch.zeros(n, dtype=torch.int64), labels, {}),
        "fixed_bandwidth": (x, domains, labels, {"bandwidth": 0.7}),
        "linear": (x, domains, labels, {"kind": "linear"}),
        "linear_empty_domain": (x, domains, None, {"kind": "linear", "num_domains": 4}),
        "identical_features": (torch.ones(n, 3, dtype=torch.float64), domains, labels, {}),
        "large_offset": (x + 1e6, domains, labels, {}),
        "duplicates": (x.round(), domains, labels, {}),
    }


CASES = _cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_reference(name: str) -> None:
    x, domains, labels, kwargs = CASES[name]
    out = domain_distance_matrix(x, domains, labels=labels, **kwargs)
    assert isinstance(out, DomainDistances)
    m = kwargs.get("num_domains", int(domains.max()) + 1)
    k = kwargs.get("num_classes", int(labels.max()) + 1) if labels is not None else 0
    want = reference(x, domains, labels, m, k, kwargs.get("kind", "mmd"), kwargs.get("bandwidth"))
    tol = {"rtol": 1e-9, "atol": 1e-9, "equal_nan": True}
    torch.testing.assert_close(out.matrix, want["matrix"], **tol)
    assert out.counts.tolist() == [int((domains == i).sum()) for i in range(m)]
    if kwargs.get("kind") == "linear":
        assert out.bandwidth is None
    else:
        h = kwargs.get("bandwidth", median_reference(x))
        assert float(out.bandwidth) == pytest.approx(h, rel=1e-9)
    if labels is None:
        assert out.per_class is None and out.class_matrix is None and out.class_counts is None
        return
    torch.testing.assert_close(out.per_class, want["per_class"], **tol)
    torch.testing.assert_close(out.class_matrix, want["class_matrix"], **tol)
    assert torch.equal(out.class_counts, want["class_counts"])


def test_equals_mmd2_of_the_functional_package_with_one_kernel() -> None:
    x, domains, labels, _ = CASES["with_labels"]
    out = domain_distance_matrix(x, domains, labels=labels)
    h = float(out.bandwidth)
    for i in range(3):
        for j in range(3):
            want = mmd2(x[domains == i], x[domains == j], kernel_num=1, bandwidth=h)
            torch.testing.assert_close(out.matrix[i, j], want.clamp_min(0), rtol=1e-9, atol=1e-12)


def test_row_blocks_and_median_subsample(monkeypatch: pytest.MonkeyPatch) -> None:
    x, domains, labels, _ = CASES["with_labels"]
    whole = domain_distance_matrix(x, domains, labels=labels)
    monkeypatch.setattr(module, "_BLOCK", 5)
    blocked = domain_distance_matrix(x, domains, labels=labels)
    for a, b in zip(whole, blocked):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14, equal_nan=True)
    monkeypatch.setattr(module, "MEDIAN_POINTS", 7)
    strided = domain_distance_matrix(x, domains)
    assert float(strided.bandwidth) == pytest.approx(median_reference(x, points=7), rel=1e-12)


def test_symmetric_zero_diagonal_bounded() -> None:
    g = _gen(1)
    x = torch.randn(90, 5, generator=g)
    domains = torch.randint(0, 4, (90,), generator=g)
    labels = torch.randint(0, 3, (90,), generator=g)
    for kind in ("mmd", "linear"):
        out = domain_distance_matrix(x, domains, labels=labels, kind=kind)
        assert torch.equal(out.matrix, out.matrix.T)
        assert torch.equal(out.per_class, out.per_class.transpose(1, 2))
        assert torch.equal(out.class_matrix, out.class_matrix.T)
        assert torch.equal(torch.diagonal(out.matrix), torch.zeros(4))
        assert torch.equal(torch.diagonal(out.per_class, dim1=1, dim2=2), torch.zeros(3, 4))
        assert bool((out.matrix >= 0).all())
        if kind == "mmd":
            assert bool((out.matrix <= 2).all())


def test_one_distribution_is_small_and_a_shift_is_large() -> None:
    g = _gen(2)
    x = torch.randn(300, 4, generator=g)
    domains = torch.arange(3).repeat_interleave(100)
    x[domains == 2] += 2.0
    out = domain_distance_matrix(x, domains).matrix
    assert float(out[0, 1]) < 0.05  # V-statistic bias ~ 1/n
    assert float(out[0, 2]) > 10 * float(out[0, 1])
    assert float(out[1, 2]) > 10 * float(out[0, 1])


def test_class_aware_vs_class_mixing_alignment() -> None:
    # class-aware: each class of domain 1 sits on the same class of domain 0; class-mixing: the
    # domains overlap as wholes, but each class of domain 1 sits on another class of domain 0
    g = _gen(3)
    centres = 4.0 * torch.eye(3, dtype=torch.float64)
    labels = torch.arange(3).repeat(60)
    domains = torch.arange(2).repeat_interleave(90)
    noise = 0.3 * torch.randn(180, 3, generator=g, dtype=torch.float64)
    aware = centres[labels] + noise
    mixing = centres[torch.where(domains == 1, (labels + 1) % 3, labels)] + noise
    a = domain_distance_matrix(aware, domains, labels=labels)
    b = domain_distance_matrix(mixing, domains, labels=labels)
    assert float(a.matrix[0, 1]) < 0.05 and float(b.matrix[0, 1]) < 0.05
    same_a, same_b = torch.diagonal(a.class_matrix), torch.diagonal(b.class_matrix)
    assert float(same_a.max()) < 0.1 and float(same_b.min()) > 1.0


def test_scale_invariant_and_permutation_invariant() -> None:
    x, domains, labels, _ = CASES["with_labels"]
    out = domain_distance_matrix(x, domains, labels=labels)
    scaled = domain_distance_matrix(x * 123.0, domains, labels=labels)
    torch.testing.assert_close(scaled.matrix, out.matrix, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(scaled.per_class, out.per_class, equal_nan=True)
    perm = torch.randperm(x.shape[0], generator=_gen(4))
    permuted = domain_distance_matrix(x[perm], domains[perm], labels=labels[perm])
    for a, b in zip(out, permuted):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, equal_nan=True)
    linear = domain_distance_matrix(x, domains, kind="linear").matrix
    torch.testing.assert_close(
        domain_distance_matrix(x * 3.0, domains, kind="linear").matrix, 9.0 * linear
    )


def test_empty_cells_give_nan_but_finite_gradients() -> None:
    x, domains, labels, _ = CASES["with_labels"]
    x = x.clone().requires_grad_()
    out = domain_distance_matrix(x, domains, labels=labels, num_domains=4, num_classes=5)
    assert bool(out.matrix[3].isnan().all()) and bool(out.matrix[:, 3].isnan().all())
    assert bool(out.per_class[4].isnan().all())
    assert bool(out.matrix[:3, :3].isfinite().all())
    total = out.matrix.nansum() + out.per_class.nansum() + out.class_matrix.nansum()
    total.backward()
    assert x.grad is not None and bool(x.grad.isfinite().all()) and bool((x.grad != 0).any())
    assert out.bandwidth is not None and out.bandwidth.grad_fn is None


def test_dtypes() -> None:
    x, domains, labels, _ = CASES["with_labels"]
    assert domain_distance_matrix(x.float(), domains).matrix.dtype == torch.float32
    half = domain_distance_matrix(x.half(), domains, labels=labels)
    assert half.matrix.dtype == torch.float32 and half.counts.dtype == torch.int64
    torch.testing.assert_close(
        half.matrix, domain_distance_matrix(x.half().float(), domains).matrix
    )


@given(
    n=st.integers(1, 12),
    m=st.integers(1, 4),
    seed=st.integers(0, 2**16),
    kind=st.sampled_from(["mmd", "linear"]),
)
def test_properties(n: int, m: int, seed: int, kind: str) -> None:
    g = _gen(seed)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64) * 10.0 ** float(seed % 7 - 3)
    domains = torch.randint(0, m, (n,), generator=g)
    labels = torch.randint(-1, 3, (n,), generator=g)
    out = domain_distance_matrix(x, domains, labels=labels, num_domains=m, num_classes=3, kind=kind)
    present = out.counts > 0
    both = present[:, None] & present[None, :]
    assert torch.equal(out.matrix.isnan(), ~both)
    assert torch.equal(out.matrix, out.matrix.T) or bool(out.matrix.isnan().any())
    finite = out.matrix[both]
    assert bool((finite >= 0).all()) and bool(finite.isfinite().all())
    assert torch.equal(
        torch.diagonal(out.matrix)[present], torch.zeros(int(present.sum()), dtype=x.dtype)
    )
    filled = out.class_counts > 0
    assert torch.equal(out.per_class.isnan(), ~(filled[:, :, None] & filled[:, None, :]))


def test_errors() -> None:
    x = torch.randn(6, 3)
    domains = torch.tensor([0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match=r"`features` must have 2 dimensions \(N, D\), got 1"):
        domain_distance_matrix(x[:, 0], domains)
    with pytest.raises(TypeError, match=r"`features` must be a floating-point tensor"):
        domain_distance_matrix(x.long(), domains)
    with pytest.raises(TypeError, match=r"`domains` must be an integer tensor"):
        domain_distance_matrix(x, domains.float())
    with pytest.raises(ValueError, match=r"`domains` and `features`.*\(5\).*\(6, 3\)"):
        domain_distance_matrix(x, domains[:5])
    with pytest.raises(ValueError, match=r"`domains` must hold values in \[0, 2\)"):
        domain_distance_matrix(x, domains, num_domains=2)
    with pytest.raises(ValueError, match=r"`domains` must hold values in \[0, 3\).*-1"):
        domain_distance_matrix(x, domains - 1, num_domains=3)
    with pytest.raises(ValueError, match=r"`labels` must hold values in \[0, 2\)"):
        domain_distance_matrix(x, domains, labels=domains, num_classes=2)
    with pytest.raises(ValueError, match=r"`labels` holds no index >= 0.*pass `num_classes`"):
        domain_distance_matrix(x, domains, labels=torch.full((6,), -1))
    with pytest.raises(ValueError, match=r"`kind` must be one of 'mmd', 'linear'; got 'cosine'"):
        domain_distance_matrix(x, domains, kind="cosine")
    with pytest.raises(ValueError, match=r"`bandwidth` is a setting of kind='mmd'"):
        domain_distance_matrix(x, domains, kind="linear", bandwidth=1.0)
    with pytest.raises(ValueError, match=r"`bandwidth` must be > 0"):
        domain_distance_matrix(x, domains, bandwidth=0.0)
    with pytest.raises(ValueError, match=r"`num_domains` must be an int >= 1"):
        domain_distance_matrix(x, domains, num_domains=0)
    with pytest.raises(ValueError, match=r"`features` must hold at least one"):
        domain_distance_matrix(x[:0], domains[:0])
