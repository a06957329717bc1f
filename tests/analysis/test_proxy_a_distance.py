"""proxy_a_distance against a loop-over-folds reference with Newton's method, and its properties."""

from __future__ import annotations

from typing import Optional

import pytest
import torch
from torch import Tensor

from lacmfer.analysis import ProxyADistance, proxy_a_distance


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def logistic_newton(z: Tensor, y: Tensor, lam: float, iters: int = 60) -> Tensor:
    """Weights and bias of mean logistic loss + lam/2 |w|^2 (bias free), by plain Newton steps."""
    n, d = z.shape
    zb = torch.cat([z, torch.ones(n, 1, dtype=z.dtype)], dim=1)
    theta = torch.zeros(d + 1, dtype=z.dtype)
    reg = torch.tensor([lam] * d + [0.0], dtype=z.dtype)
    for _ in range(iters):
        p = torch.sigmoid(zb @ theta)
        grad = zb.T @ (p - y) / n + reg * theta
        hess = zb.T @ (zb * (p * (1 - p))[:, None]) / n + torch.diag(reg)
        theta = theta - torch.linalg.solve(hess, grad)
    return theta


def pad_reference(
    a: Tensor, b: Tensor, folds: int, seed: int, max_per_domain: Optional[int], lam: float
) -> list[float]:
    """The documented procedure, one fold at a time: the held-out error of each fold."""
    n = min(a.shape[0], b.shape[0])
    if max_per_domain is not None:
        n = min(n, max_per_domain)
    g = _gen(seed)
    pick_a = torch.randperm(a.shape[0], generator=g)[:n].tolist()
    pick_b = torch.randperm(b.shape[0], generator=g)[:n].tolist()
    rows = [(a[i], 0.0, k % folds) for k, i in enumerate(pick_a)]
    rows += [(b[i], 1.0, k % folds) for k, i in enumerate(pick_b)]
    errors = []
    for f in range(folds):
        train = [r for r in rows if r[2] != f]
        test = [r for r in rows if r[2] == f]
        x = torch.stack([r[0] for r in train])
        y = torch.tensor([r[1] for r in train], dtype=x.dtype)
        mean = x.mean(dim=0)
        std = x.std(dim=0, correction=0)
        std = torch.where(std > 1e-9, std, torch.ones_like(std))  # constant features: centred only
        theta = logistic_newton((x - mean) / std, y, lam)
        wrong = 0
        for x_i, y_i, _ in test:
            score = float(((x_i - mean) / std) @ theta[:-1] + theta[-1])
            wrong += int((score > 0) != (y_i == 1.0))
        errors.append(wrong / len(test))
    return errors


def _cases() -> dict[str, tuple[Tensor, Tensor, dict]]:
    g = _gen(3)
    a5 = torch.randn(60, 5, generator=g, dtype=torch.float64)
    b5 = torch.randn(45, 5, generator=g, dtype=torch.float64) + 0.3
    a20 = torch.randn(50, 20, generator=g, dtype=torch.float64)
    b20 = torch.randn(50, 20, generator=g, dtype=torch.float64) + 0.5
    const_a = torch.cat([a5, torch.full((60, 1), 2.0, dtype=torch.float64)], dim=1)
    const_b = torch.cat([b5, torch.full((45, 1), 2.0, dtype=torch.float64)], dim=1)
    same_b = torch.randn(47, 5, generator=g, dtype=torch.float64)
    # a few outliers and a strong penalty: the fit depends on the standardisation, so statistics
    # that leak from the held-out fold change the errors
    g_out = _gen(21)
    out_a = torch.randn(40, 4, generator=g_out, dtype=torch.float64)
    out_b = torch.randn(40, 4, generator=g_out, dtype=torch.float64)
    out_b += torch.tensor([0.8, 0.0, 0.0, 0.3], dtype=torch.float64)
    out_a[:3, 1] += 30.0
    out_b[:2, 2] -= 25.0
    return {
        "unequal_sizes": (a5, b5, {"folds": 4, "seed": 7, "weight_decay": 1e-3}),
        "strong_decay": (a5, b5, {"folds": 4, "seed": 7, "weight_decay": 0.1}),
        "two_folds": (a5, b5, {"folds": 2, "seed": 1}),
        "capped": (a5, b5, {"folds": 3, "seed": 2, "max_per_domain": 23}),
        "wide": (a20, b20, {"seed": 5}),
        "constant_feature": (const_a, const_b, {"folds": 4, "seed": 7}),
        "same_distribution": (a5, same_b, {"folds": 5, "seed": 4}),
        "large_offset": (a5 * 1e3 + 1e6, b5 * 1e3 + 1e6, {"folds": 4, "seed": 7}),
        "outliers_strong_decay": (out_a, out_b, {"folds": 4, "seed": 0, "weight_decay": 1.0}),
    }


CASES = _cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_reference(name: str) -> None:
    a, b, kwargs = CASES[name]
    want = pad_reference(
        a, b, kwargs.get("folds", 5), kwargs.get("seed", 0), kwargs.get("max_per_domain"),
        kwargs.get("weight_decay", 1e-3),
    )  # fmt: skip
    got = proxy_a_distance(a, b, max_iter=200, **kwargs)
    assert isinstance(got, ProxyADistance)
    assert got.error.tolist() == pytest.approx(want, abs=1e-12)
    per_fold = [min(2.0, max(0.0, 2.0 * (1.0 - 2.0 * e))) for e in want]
    assert got.per_fold.tolist() == pytest.approx(per_fold, abs=1e-12)
    mean = sum(per_fold) / len(per_fold)
    std = (sum((p - mean) ** 2 for p in per_fold) / (len(per_fold) - 1)) ** 0.5
    assert float(got.mean) == pytest.approx(mean, abs=1e-12)
    assert float(got.std) == pytest.approx(std, abs=1e-12)


def test_one_distribution_is_near_zero() -> None:
    # n = 400 per side, 5 folds: a held-out fold has 160 rows, so at chance a fold's error has a
    # standard deviation of sqrt(0.25 / 160) = 0.04 and its clipped PAD about 0.16 (mean ~0.06);
    # the mean of 5 folds then stays within ~0.06 + 6 * 0.04 = 0.3.
    g = _gen(11)
    for seed in range(3):
        a = torch.randn(400, 8, generator=g)
        b = torch.randn(400, 8, generator=g)
        out = proxy_a_distance(a, b, seed=seed)
        assert 0.0 <= float(out.mean) < 0.3
        assert out.error.mean() == pytest.approx(0.5, abs=0.06)


def test_separated_clouds_are_near_two() -> None:
    g = _gen(12)
    a = torch.randn(300, 16, generator=g)
    b = torch.randn(300, 16, generator=g) + 2.0  # 8 standard deviations apart along the diagonal
    out = proxy_a_distance(a, b)
    assert float(out.mean) > 1.8
    assert float(out.error.max()) < 0.05


def test_partial_shift_is_in_between_and_grows() -> None:
    g = _gen(13)
    a = torch.randn(300, 4, generator=g)
    noise = torch.randn(300, 4, generator=g)
    values = [float(proxy_a_distance(a, noise + s).mean) for s in (0.0, 0.3, 0.8)]
    assert values[0] < values[1] < values[2] < 2.0


def test_deterministic_for_a_seed_and_seeds_differ() -> None:
    a, b, _ = CASES["unequal_sizes"]
    first = proxy_a_distance(a, b, seed=3)
    again = proxy_a_distance(a, b, seed=3)
    for x, y in zip(first, again):
        assert torch.equal(x, y)
    others = [proxy_a_distance(a, b, seed=s).per_fold for s in range(4, 9)]
    assert any(not torch.equal(first.per_fold, o) for o in others)


def test_invariant_to_per_feature_affine_maps() -> None:
    # each fold standardises with its training statistics: the probe cannot see scale or offset
    a, b, _ = CASES["unequal_sizes"]
    scale = torch.tensor([1e-3, 2.0, 50.0, 1.0, 7.0], dtype=torch.float64)
    shift = torch.tensor([1e3, -4.0, 0.0, 3.0, 1e5], dtype=torch.float64)
    plain = proxy_a_distance(a, b, seed=1)
    mapped = proxy_a_distance(a * scale + shift, b * scale + shift, seed=1)
    torch.testing.assert_close(mapped.error, plain.error)


def test_shapes_dtypes_and_no_graph() -> None:
    g = _gen(15)
    a = torch.randn(40, 3, generator=g, requires_grad=True)
    b = torch.randn(30, 3, generator=g)
    out = proxy_a_distance(a, b, folds=3)
    assert out.mean.shape == out.std.shape == ()
    assert out.per_fold.shape == out.error.shape == (3,)
    assert out.mean.dtype == torch.float32 and out.mean.grad_fn is None and a.grad is None
    half = proxy_a_distance(a.detach().half(), b.half(), folds=3)
    assert half.mean.dtype == torch.float32
    assert proxy_a_distance(a.double(), b, folds=3).mean.dtype == torch.float64
    with torch.no_grad():
        assert torch.equal(proxy_a_distance(a, b, folds=3).per_fold, out.per_fold)
    with torch.inference_mode():
        assert torch.equal(proxy_a_distance(a, b, folds=3).per_fold, out.per_fold)


def test_errors() -> None:
    a, b = torch.randn(10, 3), torch.randn(12, 3)
    with pytest.raises(ValueError, match=r"`feat_a` must have 2 dimensions .*\(10, 3, 1\)"):
        proxy_a_distance(a[..., None], b)
    with pytest.raises(ValueError, match=r"`feat_b` must have 2 dimensions"):
        proxy_a_distance(a, b[0])
    with pytest.raises(ValueError, match=r"Feature sizes D .* `feat_a` has shape \(10, 3\)"):
        proxy_a_distance(a, torch.randn(12, 4))
    with pytest.raises(ValueError, match=r"`feat_b` must hold at least `folds` = 5 rows.*\(4, 3\)"):
        proxy_a_distance(a, b[:4])
    with pytest.raises(ValueError, match=r"`folds` must be an int >= 2, got 1"):
        proxy_a_distance(a, b, folds=1)
    with pytest.raises(TypeError, match=r"`folds` must be an int"):
        proxy_a_distance(a, b, folds=2.0)  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match=r"`feat_a` must be a floating-point tensor, got dtype torch.int64"
    ):
        proxy_a_distance(a.long(), b)
    with pytest.raises(TypeError, match=r"`feat_b` must be a torch.Tensor"):
        proxy_a_distance(a, b.tolist())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`max_per_domain` must be an int >= 5"):
        proxy_a_distance(a, b, max_per_domain=3)
    with pytest.raises(ValueError, match=r"`weight_decay` must be >= 0"):
        proxy_a_distance(a, b, weight_decay=-1.0)
    with pytest.raises(ValueError, match=r"`max_iter` must be an int >= 1"):
        proxy_a_distance(a, b, max_iter=0)
    with pytest.raises(TypeError, match=r"`seed` must be an int"):
        proxy_a_distance(a, b, seed=0.5)  # type: ignore[arg-type]
    bad = a.clone()
    bad[0, 0] = float("nan")  # failed deep inside L-BFGS
    with pytest.raises(ValueError, match=r"`feat_a` must be finite, got 1 NaN or infinite entry"):
        proxy_a_distance(bad, b)
