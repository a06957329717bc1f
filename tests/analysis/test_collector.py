"""FeatureCollector: equals a manual pass, restores modes, records no graph, respects its bound."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from lacmfer.analysis import CollectedFeatures, FeatureCollector
from lacmfer.modules import LACMFEROutput


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Toy(nn.Module):
    """A model with BatchNorm and Dropout (eval mode matters) and LA-CMFER's output fields."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.5))
        self.head_g = nn.Linear(3, 4)
        self.head_l = nn.Linear(3, 4)
        self.grad_enabled: list[bool] = []

    def forward(self, x: Tensor) -> LACMFEROutput:
        self.grad_enabled.append(torch.is_grad_enabled())
        h = self.body(x)
        feat_g, feat_l = h[:, :3], h[:, 3:]
        logits_g, logits_l = self.head_g(feat_g), self.head_l(feat_l)
        return LACMFEROutput(feat_g, feat_l, logits_g, logits_l, (logits_g + logits_l) / 2)


def _data(n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = _gen(seed)
    return torch.randn(n, 5, generator=g), torch.randint(0, 4, (n,), generator=g)


def _batches(images: Tensor, labels: Tensor, size: int) -> list[tuple[Tensor, Tensor]]:
    return list(zip(images.split(size), labels.split(size)))


def _manual(model: Toy, images: Tensor) -> LACMFEROutput:
    model.eval()
    with torch.no_grad():
        return model(images)


class FunctionModel(nn.Module):
    """A model that applies a function (the output need not be a tensor)."""

    def __init__(self, fn: Any) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Any:
        return self.fn(x)


def test_equals_a_manual_pass() -> None:
    model = Toy()
    src_x, src_y = _data(11, seed=1)
    tgt_x, tgt_y = _data(7, seed=2)
    out = (
        FeatureCollector()
        .collect(model, _batches(src_x, src_y, 4), domain=0)
        .collect(model, _batches(tgt_x, tgt_y, 3), domain=1, use_labels=False)
        .compute()
    )
    assert isinstance(out, CollectedFeatures)
    want_s, want_t = _manual(model, src_x), _manual(model, tgt_x)
    torch.testing.assert_close(out.features, torch.cat([want_s.feat_g, want_t.feat_g]))
    torch.testing.assert_close(out.logits, torch.cat([want_s.logits, want_t.logits]))
    assert torch.equal(out.labels, torch.cat([src_y, torch.full((7,), -1)]))
    assert torch.equal(out.domains, torch.tensor([0] * 11 + [1] * 7))
    assert out.features.dtype == torch.float32 and out.features.device.type == "cpu"
    assert out.labels.dtype == out.domains.dtype == torch.int64


def test_selectors() -> None:
    model = Toy()
    x, y = _data(6)
    want = _manual(model, x)
    both = FeatureCollector(features=("feat_g", "feat_l"), logits="logits_l")
    out = both.collect(model, _batches(x, y, 4)).compute()
    torch.testing.assert_close(out.features, torch.cat([want.feat_g, want.feat_l], dim=1))
    torch.testing.assert_close(out.logits, want.logits_l)
    fn = FeatureCollector(features=lambda o: o.feat_l * 2, logits=None)
    out = fn.collect(model, [x]).compute()  # plain image batches: no labels, domain 0
    torch.testing.assert_close(out.features, want.feat_l * 2)
    assert out.logits is None and bool((out.labels == -1).all()) and bool((out.domains == 0).all())
    plain = FeatureCollector(features=lambda o: o, logits=None)
    out = plain.collect(nn.Identity(), [(x, y, torch.full((6,), 3))]).compute()
    assert torch.equal(out.features, x) and bool((out.domains == 3).all())
    keyed = FeatureCollector(features="f", logits="z")
    out = keyed.collect(FunctionModel(lambda t: {"f": t, "z": t[:, :2]}), [x]).compute()
    assert torch.equal(out.logits, x[:, :2])


def test_modes_restored_and_no_graph() -> None:
    model = Toy()
    model.train()
    model.body[1].eval()  # a frozen BatchNorm inside a training model keeps its own mode
    before = [m.training for m in model.modules()]
    x, y = _data(8)
    out = FeatureCollector().collect(model, _batches(x, y, 3)).compute()
    assert [m.training for m in model.modules()] == before
    assert model.grad_enabled == [False, False, False]
    assert not out.features.requires_grad and out.features.grad_fn is None
    assert all(p.grad is None for p in model.parameters())
    # dropout was off: two passes agree
    again = FeatureCollector().collect(model, _batches(x, y, 5)).compute()
    torch.testing.assert_close(again.features, out.features)


def test_modes_restored_after_an_error() -> None:
    model = Toy()
    model.train()

    def failing() -> Iterator[Tensor]:
        yield torch.randn(2, 5)
        raise RuntimeError("loader failed")

    with pytest.raises(RuntimeError, match="loader failed"):
        FeatureCollector().collect(model, failing())
    assert all(m.training for m in model.modules())


def test_device_argument_and_model_without_parameters() -> None:
    x, _ = _data(4)
    out = FeatureCollector(features=lambda o: o, logits=None)
    assert torch.equal(out.collect(nn.Identity(), [x], device="cpu").compute().features, x)


def test_update_with_tensors() -> None:
    c = FeatureCollector()
    f1, f2 = torch.randn(3, 2, dtype=torch.float64), torch.randn(2, 2)
    c.update(f1, torch.tensor([1, 2, 0]), 4, torch.zeros(3, 5))
    c.update(f2, None, torch.tensor([0, 1]), torch.ones(2, 5))
    c.update(torch.zeros(0, 2), logits=torch.zeros(0, 5))  # an empty batch is fine
    out = c.compute()
    torch.testing.assert_close(out.features, torch.cat([f1.float(), f2]))
    assert out.labels.tolist() == [1, 2, 0, -1, -1]
    assert out.domains.tolist() == [4, 4, 4, 0, 1]
    assert c.num_seen == 5
    c.reset()
    assert c.num_seen == 0
    with pytest.raises(RuntimeError, match="before any row"):
        c.compute()


def test_memory_bound_first() -> None:
    g = _gen(3)
    n = 300
    feats = torch.randn(n, 4, generator=g)
    domains = torch.randint(0, 3, (n,), generator=g)
    c = FeatureCollector(max_samples=7, subsample="first")
    peak = 0
    for f, d in zip(feats.split(10), domains.split(10)):
        c.update(f, domains=d)
        peak = max(peak, c.num_buffered)
    assert peak <= 2 * 7 * 3 + 10
    out = c.compute()
    want = torch.cat([torch.nonzero(domains == i)[:7, 0] for i in range(3)]).sort().values
    assert torch.equal(out.features, feats[want])
    assert torch.equal(out.domains, domains[want])


def test_memory_bound_random() -> None:
    g = _gen(4)
    n = 400
    feats = torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 2)  # row i holds i
    domains = torch.randint(0, 2, (n,), generator=g)
    counts = [int((domains == i).sum()) for i in range(2)]

    def run(seed: int, batch: int = 16) -> Tensor:
        c = FeatureCollector(max_samples=20, seed=seed, logits=None)
        for f, d in zip(feats.split(batch), domains.split(batch)):
            c.update(f, domains=d)
            assert c.num_buffered <= 2 * 20 * 2 + batch
        out = c.compute()
        rows = out.features[:, 0].long()
        assert torch.equal(out.domains, domains[rows])  # rows kept whole
        assert bool((rows[1:] > rows[:-1]).all())  # in arrival order, no duplicates
        assert [int((out.domains == i).sum()) for i in range(2)] == [min(20, k) for k in counts]
        return rows

    first = run(0)
    assert torch.equal(first, run(0))
    assert not torch.equal(first, run(1))
    # a uniform sample: over many seeds, every row is kept about 20 / n_domain of the time
    hits: Counter[int] = Counter()
    seeds = 150
    for seed in range(seeds):
        hits.update(run(seed, batch=64).tolist())
    rates = torch.tensor([hits[i] / seeds for i in range(n)])
    expect = torch.tensor([20 / counts[int(domains[i])] for i in range(n)])
    # binomial z-scores: their mean square is about 1 (1.07 and 0.96 for other seed ranges, 1.06
    # over 1000 seeds); 1.5 is ~6 standard deviations of the mean of 400 squares away
    z = (rates - expect) / torch.sqrt(expect * (1 - expect) / seeds)
    assert float((z * z).mean()) < 1.5
    # no preference for early or late rows: each half's mean rate has a sd of ~0.002
    early, late = rates[: n // 2].mean(), rates[n // 2 :].mean()
    assert abs(float(early - late)) < 0.01


def test_bound_not_reached_keeps_everything() -> None:
    feats = torch.randn(10, 3)
    c = FeatureCollector(max_samples=10)
    c.update(feats)
    assert torch.equal(c.compute().features, feats)


def test_update_errors() -> None:
    c = FeatureCollector()
    with pytest.raises(ValueError, match=r"`features` must have 2 dimensions \(B, D\)"):
        c.update(torch.zeros(3))
    with pytest.raises(TypeError, match=r"`features` must be a floating-point tensor"):
        c.update(torch.zeros(3, 2, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"`labels` must be an integer tensor"):
        c.update(torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(ValueError, match=r"Batch sizes \(dim 0\) of `labels` and `features`"):
        c.update(torch.zeros(3, 2), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"`domains` must be >= 0"):
        c.update(torch.zeros(3, 2), domains=torch.tensor([0, -1, 0]))
    with pytest.raises(TypeError, match=r"`domains` must be an int"):
        c.update(torch.zeros(3, 2), domains=True)
    c.update(torch.zeros(3, 2), logits=torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"`features` has D = 5 .* earlier batches had D = 2"):
        c.update(torch.zeros(3, 5), logits=torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"`logits` must be given for every batch or for none"):
        c.update(torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"`logits` has K = 3 .* earlier batches had K = 4"):
        c.update(torch.zeros(3, 2), logits=torch.zeros(3, 3))


def test_collect_and_setting_errors() -> None:
    x, _ = _data(4)
    with pytest.raises(ValueError, match=r"no attribute or key 'feat_x' for `features`"):
        FeatureCollector(features="feat_x").collect(Toy(), [x])
    with pytest.raises(
        ValueError, match=r"\(Tensor\) has no attribute or key 'feat_g'.*lambda out: out"
    ):
        FeatureCollector().collect(nn.Identity(), [x])
    with pytest.raises(TypeError, match=r"each item of `batches` must be an image tensor"):
        FeatureCollector().collect(Toy(), [{"image": x}])
    with pytest.raises(TypeError, match=r"`features` must select a tensor"):
        FeatureCollector(features=lambda o: 3).collect(Toy(), [x])
    with pytest.raises(TypeError, match=r"`domain` must be an int or None"):
        FeatureCollector().collect(Toy(), [x], domain=1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"`features` must be an attribute name"):
        FeatureCollector(features=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"`logits` must be .* or None"):
        FeatureCollector(logits=[])
    with pytest.raises(ValueError, match=r"`max_samples` must be an int >= 1"):
        FeatureCollector(max_samples=0)
    with pytest.raises(ValueError, match=r"`subsample` must be one of 'random', 'first'"):
        FeatureCollector(subsample="last")
    with pytest.raises(TypeError, match=r"`sync_dist` must be a bool"):
        FeatureCollector(sync_dist=1)  # type: ignore[arg-type]


def test_repr_and_sync_dist_without_a_group() -> None:
    c = FeatureCollector(features=("feat_g", "feat_l"), max_samples=5, sync_dist=True)
    assert repr(c) == (
        "FeatureCollector(features=('feat_g', 'feat_l'), logits='logits', max_samples=5, "
        "subsample='random', seed=0, sync_dist=True)"
    )
    c.update(torch.ones(2, 3), logits=torch.zeros(2, 2))  # no process group: a no-op
    assert torch.equal(c.compute().features, torch.ones(2, 3))
