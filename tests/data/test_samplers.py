"""Multi-source and infinite samplers: streams, quotas, proportions, resumption, rank sharding."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import ConcatDataset, DataLoader, TensorDataset

from lacmfer.data import InfiniteSampler, MultiSourceSampler, sampler_loader

# The six protocol datasets' sizes: JAFFE 213 ... AffectNet ~34k (about 160x apart).
SIZES = (1050, 213, 2988, 33800, 15206, 28709)


def _domain_reference(indices: torch.Tensor, sizes: tuple[int, ...]) -> list[int]:
    out = []
    for i in indices.tolist():
        acc = 0
        for d, n in enumerate(sizes):
            if i < acc + n:
                out.append(d)
                break
            acc += n
    return out


@pytest.mark.parametrize("mode", ["pooled", "balanced"])
def test_indices_in_range_and_domain_ids(mode: str) -> None:
    sizes = (3, 50, 7)
    s = MultiSourceSampler(sizes, 16, mode=mode, seed=1)
    for _ in range(20):
        b = s.sample()
        assert b.indices.shape == (16,) and b.indices.dtype == torch.int64
        assert int(b.indices.min()) >= 0 and int(b.indices.max()) < sum(sizes)
        assert b.domains.tolist() == _domain_reference(b.indices, sizes)
    assert s.domain_ids.tolist() == _domain_reference(torch.arange(60), sizes)


def test_pooled_stream_is_epochs_of_permutations() -> None:
    s = MultiSourceSampler((3, 5, 4), 4, mode="pooled", seed=7)
    first = torch.cat([s.sample().indices for _ in range(3)])
    second = torch.cat([s.sample().indices for _ in range(3)])
    assert sorted(first.tolist()) == list(range(12)) == sorted(second.tolist())
    assert first.tolist() != second.tolist()  # a fresh permutation each epoch


def test_batches_spanning_epochs() -> None:
    s = MultiSourceSampler((2, 3), 7, mode="pooled", seed=0)
    stream = torch.cat([s.sample().indices for _ in range(5)])  # 35 = 7 epochs of 5
    for e in range(7):
        assert sorted(stream[5 * e : 5 * e + 5].tolist()) == list(range(5))


def test_balanced_quotas_rotate_the_remainder() -> None:
    sizes = (10, 20, 30, 40)
    s = MultiSourceSampler(sizes, 10, mode="balanced", seed=0)  # 10 = 4 * 2 + 2
    total = torch.zeros(4, dtype=torch.int64)
    for t in range(8):
        q = s.quotas()
        assert int(q.sum()) == 10 and set(q.tolist()) <= {2, 3}
        b = s.sample()
        counts = torch.bincount(b.domains, minlength=4)
        assert counts.tolist() == q.tolist()
        total += counts
        if t % 2 == 1:  # every 2 batches each domain got the same
            assert len(set(total.tolist())) == 1
    # Each domain's own stream is epochs of permutations of its indices.
    s = MultiSourceSampler((4, 6), 4, mode="balanced", seed=3)
    seen = torch.cat([s.sample().indices for _ in range(2)])  # 4 from each domain
    first = sorted(i for i in seen.tolist() if i < 4)
    assert first == [0, 1, 2, 3]


def test_class_balanced_within_domain() -> None:
    # Domain 0: classes 0 (90 samples) and 1 (10); domain 1: classes 2, 3, 4 (1, 1, 48).
    labels = torch.tensor([0] * 90 + [1] * 10 + [2] + [3] + [4] * 48)
    s = MultiSourceSampler((100, 50), 12, mode="balanced", labels=labels, class_balanced=True)
    drawn = torch.cat([s.sample().indices for _ in range(10)])  # 60 per domain
    lab = labels[drawn]
    assert torch.bincount(lab, minlength=5).tolist() == [30, 30, 20, 20, 20]
    # The rare classes cycle through their members (epochs): class 1's 10 members 3 times each.
    rare = drawn[lab == 1]
    assert torch.bincount(rare - 90, minlength=10).tolist() == [3] * 10


@pytest.mark.parametrize(
    ("mode", "class_balanced"), [("pooled", False), ("balanced", False), ("balanced", True)]
)
def test_resume_continues_the_same_stream(mode: str, class_balanced: bool) -> None:
    labels = torch.arange(sum(SIZES)) % 7
    kw = {"mode": mode, "labels": labels, "class_balanced": class_balanced, "seed": 11}
    a = MultiSourceSampler(SIZES, 64, **kw)  # type: ignore[arg-type]
    for _ in range(5):
        a.sample()
    state = json.loads(json.dumps(a.state_dict()))  # plain data
    expected = [a.sample() for _ in range(7)]
    b = MultiSourceSampler(SIZES, 64, **kw)  # type: ignore[arg-type]
    b.load_state_dict(state)
    for e in expected:
        got = b.sample()
        assert torch.equal(got.indices, e.indices) and torch.equal(got.domains, e.domains)


def test_load_state_rejects_other_settings() -> None:
    a = MultiSourceSampler((5, 5), 4, seed=0)
    with pytest.raises(ValueError, match="seed"):
        MultiSourceSampler((5, 5), 4, seed=1).load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="domain_sizes"):
        MultiSourceSampler((5, 6), 4).load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="mode"):
        MultiSourceSampler((5, 5), 4, mode="balanced").load_state_dict(a.state_dict())


@pytest.mark.parametrize("world_size", [2, 3])
def test_pooled_ranks_split_one_global_stream(world_size: int) -> None:
    b = 8
    single = MultiSourceSampler(SIZES, b * world_size, seed=5)
    ranks = [
        MultiSourceSampler(SIZES, b, seed=5, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    for _ in range(6):
        parts = [r.sample().indices for r in ranks]
        glob = single.sample().indices
        assert torch.equal(torch.cat(parts), glob)
        assert len(set(torch.cat(parts).tolist())) == b * world_size  # disjoint within a step


def test_balanced_ranks_split_one_global_stream() -> None:
    sizes, b = (30, 40, 50), 6  # 6 divisible by 3 domains
    single = MultiSourceSampler(sizes, 2 * b, mode="balanced", seed=2)
    ranks = [
        MultiSourceSampler(sizes, b, mode="balanced", seed=2, rank=r, world_size=2)
        for r in range(2)
    ]
    for _ in range(5):
        parts = [r.sample() for r in ranks]
        glob = single.sample().indices
        both = torch.cat([p.indices for p in parts])
        assert sorted(both.tolist()) == sorted(glob.tolist())
        assert len(set(both.tolist())) == 2 * b
        for p in parts:  # each rank keeps the per-domain quota
            assert torch.bincount(p.domains, minlength=3).tolist() == [2, 2, 2]


def test_state_moves_between_world_sizes() -> None:
    single = MultiSourceSampler(SIZES, 16, seed=9)
    for _ in range(3):
        single.sample()
    state = single.state_dict()
    nxt = single.sample().indices
    halves = []
    for r in range(2):
        s = MultiSourceSampler(SIZES, 8, seed=9, rank=r, world_size=2)
        s.load_state_dict({**state, "batch_size": 8})
        halves.append(s.sample().indices)
    assert torch.equal(torch.cat(halves), nxt)


@pytest.mark.parametrize("mode", ["pooled", "balanced"])
def test_realised_domain_proportions(mode: str) -> None:
    batch, steps = 128, 300
    s = MultiSourceSampler(SIZES, batch, mode=mode, seed=0)
    counts = torch.zeros(len(SIZES), dtype=torch.float64)
    for _ in range(steps):
        counts += torch.bincount(s.sample().domains, minlength=len(SIZES))
    n = batch * steps
    total = sum(SIZES)
    for d, size in enumerate(SIZES):
        p = size / total if mode == "pooled" else 1 / len(SIZES)
        sd = math.sqrt(p * (1 - p) / n)  # binomial standard deviation of a proportion
        assert abs(float(counts[d]) / n - p) < 5 * sd, (mode, d, float(counts[d]) / n, p)
    if mode == "pooled":  # JAFFE is ~0.26% of the pool, ~1/6 of the balanced batches
        assert float(counts[1]) / n < 0.005
    else:
        assert float(counts[1]) / n > 0.16


def test_batches_iterator_matches_sample() -> None:
    a = MultiSourceSampler((4, 9), 6, mode="balanced", seed=2)
    b = MultiSourceSampler((4, 9), 6, mode="balanced", seed=2)
    for got in itertools.islice(a.batches(), 4):
        want = b.sample()
        assert torch.equal(got.indices, want.indices) and torch.equal(got.domains, want.domains)
    listed = next(iter(a))
    assert listed == b.sample().indices.tolist()


def test_dataloader_batch_sampler() -> None:
    sets = [TensorDataset(torch.full((n,), float(d))) for d, n in enumerate((3, 4))]
    s = MultiSourceSampler((3, 4), 5, mode="balanced")
    loader = DataLoader(ConcatDataset(sets), batch_sampler=s)
    for (values,) in itertools.islice(loader, 3):
        assert values.shape == (5,)
        assert sorted(values.tolist())[0] == 0.0 and sorted(values.tolist())[-1] == 1.0


def test_errors() -> None:
    with pytest.raises(ValueError, match="at least one domain"):
        MultiSourceSampler([], 4)
    with pytest.raises(ValueError, match=r"domain_sizes\[1\]"):
        MultiSourceSampler([3, 0], 4)
    with pytest.raises(TypeError, match="domain_sizes"):
        MultiSourceSampler(5, 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        MultiSourceSampler([3], 0)
    with pytest.raises(ValueError, match="mode"):
        MultiSourceSampler([3], 2, mode="uniform")
    with pytest.raises(ValueError, match="rank"):
        MultiSourceSampler([3], 2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="needs `labels`"):
        MultiSourceSampler([3], 2, mode="balanced", class_balanced=True)
    with pytest.raises(ValueError, match="mode='balanced'"):
        MultiSourceSampler([3], 2, labels=[0, 1, 2], class_balanced=True)
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        MultiSourceSampler([3, 2], 2, labels=[0, 1])
    with pytest.raises(
        TypeError, match=r"`labels` must be an integer tensor, got dtype torch.float"
    ):
        MultiSourceSampler([3, 2], 2, labels=torch.zeros(5))
    with pytest.raises(
        TypeError, match=r"`labels` must be an integer tensor, got dtype torch.bool"
    ):
        MultiSourceSampler([3, 2], 2, labels=[True] * 5)
    with pytest.raises(ValueError, match="quotas"):
        MultiSourceSampler([3], 2).quotas()


def test_class_balanced_refuses_negative_labels() -> None:
    labels = torch.tensor([0, 1, 2, 1, -1])
    with pytest.raises(
        ValueError, match=r"^`labels` must hold class indices >= 0 .* got -1 at index 4$"
    ):
        MultiSourceSampler([3, 2], 2, mode="balanced", labels=labels, class_balanced=True)
    # Unused without class balancing, so a -1 (e.g. "unlabelled") is still accepted there.
    MultiSourceSampler([3, 2], 2, mode="balanced", labels=labels)


@pytest.mark.parametrize(
    "sizes",
    [
        [np.int64(3), np.int32(5), np.uint16(4)],
        (torch.tensor(3), torch.tensor(5, dtype=torch.int32), 4),
        torch.tensor([3, 5, 4]),
        torch.tensor([3, 5, 4], dtype=torch.int16),
        np.array([3, 5, 4]),
    ],
    ids=["numpy-ints", "0d-tensors", "tensor", "int16-tensor", "ndarray"],
)
@pytest.mark.parametrize("mode", ["pooled", "balanced"])
def test_integer_like_domain_sizes_draw_as_ints(sizes: object, mode: str) -> None:
    labels = torch.arange(12) % 3
    kw = {"mode": mode, "labels": labels, "class_balanced": mode == "balanced"}
    want = MultiSourceSampler([3, 5, 4], 5, seed=4, **kw)  # type: ignore[arg-type]
    got = MultiSourceSampler(sizes, np.int64(5), seed=np.int64(4), **kw)  # type: ignore[arg-type]
    assert got.domain_sizes == (3, 5, 4) and all(type(n) is int for n in got.domain_sizes)
    assert type(got.batch_size) is int and type(got.seed) is int
    for _ in range(6):
        a, b = want.sample(), got.sample()
        assert torch.equal(a.indices, b.indices) and torch.equal(a.domains, b.domains)
    assert json.loads(json.dumps(got.state_dict())) == want.state_dict()
    ranked = MultiSourceSampler(sizes, 2, rank=np.int64(1), world_size=torch.tensor(2))  # type: ignore[arg-type]
    assert (ranked.rank, ranked.world_size) == (1, 2)


@pytest.mark.parametrize(
    ("sizes", "error", "match"),
    [
        ([True, 3], TypeError, r"`domain_sizes\[0\]` must be an int, got bool"),
        ([3, np.True_], TypeError, r"`domain_sizes\[1\]` must be an int, got bool"),
        ([3, 2.0], TypeError, r"`domain_sizes\[1\]` must be an int, got float"),
        ([3, torch.tensor(2.0)], TypeError, r"`domain_sizes\[1\]` must be an int, got Tensor"),
        ([3, torch.tensor([2])], TypeError, r"`domain_sizes\[1\]` must be an int, got Tensor"),
        (
            torch.tensor([True, True]),
            TypeError,
            r"integer tensor, got Tensor of dtype torch.bool and shape \(2,\)",
        ),
        (
            torch.tensor([3.0, 2.0]),
            TypeError,
            r"`domain_sizes` must .* got Tensor of dtype torch.float32",
        ),
        (np.array([3.0, 2.0]), TypeError, r"`domain_sizes` must .* got ndarray of dtype float64"),
        (torch.tensor(3), TypeError, r"`domain_sizes` must .* of dtype torch.int64 and shape \(\)"),
        (torch.tensor([[3, 2]]), ValueError, r"`domain_sizes` must be 1-D, got shape \(1, 2\)"),
        (torch.tensor([3, 0]), ValueError, r"`domain_sizes\[1\]` must be an int >= 1, got 0"),
        (torch.zeros(0, dtype=torch.int64), ValueError, "at least one domain"),
    ],
)
def test_domain_sizes_rejects_non_integers(sizes: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        MultiSourceSampler(sizes, 4)  # type: ignore[arg-type]


def test_integer_like_settings_are_checked() -> None:
    with pytest.raises(TypeError, match="`batch_size` must be an int, got bool"):
        MultiSourceSampler([3], True)
    with pytest.raises(TypeError, match="`seed` must be an int, got float"):
        MultiSourceSampler([3], 2, seed=1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`rank` must be an int, got bool"):
        MultiSourceSampler([3], 2, rank=False)
    with pytest.raises(TypeError, match="`world_size` must be an int, got float"):
        InfiniteSampler(3, 2, world_size=np.float64(2))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`size` must be an int, got bool"):
        InfiniteSampler(True, 2)


# --- InfiniteSampler ---------------------------------------------------------------------------


def test_infinite_sampler_epochs_and_order() -> None:
    s = InfiniteSampler(10, 4, seed=0)
    stream = torch.cat([s.sample() for _ in range(5)])  # 20 = 2 epochs
    assert sorted(stream[:10].tolist()) == list(range(10)) == sorted(stream[10:].tolist())
    seq = InfiniteSampler(3, 2, shuffle=False)
    assert [seq.sample().tolist() for _ in range(3)] == [[0, 1], [2, 0], [1, 2]]


def test_infinite_sampler_resume_and_ranks() -> None:
    a = InfiniteSampler(37, 5, seed=4)
    for _ in range(4):
        a.sample()
    state = a.state_dict()
    expected = [a.sample() for _ in range(6)]
    b = InfiniteSampler(37, 5, seed=4)
    b.load_state_dict(state)
    assert all(torch.equal(b.sample(), e) for e in expected)
    single = InfiniteSampler(37, 10, seed=4)
    ranks = [InfiniteSampler(37, 5, seed=4, rank=r, world_size=2) for r in range(2)]
    for _ in range(6):
        assert torch.equal(torch.cat([r.sample() for r in ranks]), single.sample())
    with pytest.raises(ValueError, match="size"):
        InfiniteSampler(38, 5, seed=4).load_state_dict(state)
    batches = list(itertools.islice(iter(InfiniteSampler(4, 3)), 2))
    assert all(isinstance(x, list) and len(x) == 3 for x in batches)
    with pytest.raises(ValueError, match="rank"):
        InfiniteSampler(4, 2, rank=-1)


def test_infinite_sampler_takes_integer_like_settings() -> None:
    want = InfiniteSampler(10, 4, seed=3, rank=1, world_size=2)
    got = InfiniteSampler(
        np.int64(10),
        torch.tensor(4),
        seed=np.uint8(3),
        rank=np.int32(1),
        world_size=np.int64(2),  # type: ignore[arg-type]
    )
    assert all(type(v) is int for v in (got.size, got.batch_size, got.seed, got.rank))
    assert all(torch.equal(got.sample(), want.sample()) for _ in range(5))
    assert json.loads(json.dumps(got.state_dict())) == want.state_dict()


# ------------------------------------------------------------------------------ sampler_loader
def _tensor_sources(sizes: list[int]) -> torch.utils.data.ConcatDataset:
    parts, start = [], 0
    for n in sizes:
        values = torch.arange(start, start + n, dtype=torch.float32)
        parts.append(torch.utils.data.TensorDataset(values, values.long() % 7))
        start += n
    return torch.utils.data.ConcatDataset(parts)


@pytest.mark.parametrize("workers", [0, 2])
def test_sampler_loader_yields_the_sampler_draws_with_source_ids(workers: int) -> None:
    sizes = [5, 3, 7]
    data = _tensor_sources(sizes)
    draws = MultiSourceSampler(sizes, 4, seed=3)
    stream = sampler_loader(data, MultiSourceSampler(sizes, 4, seed=3), num_workers=workers)
    for _ in range(6):
        want = draws.sample()
        images, labels, sources = next(stream)
        assert images.tolist() == want.indices.float().tolist()  # item i holds the value i
        assert labels.tolist() == (want.indices % 7).tolist()
        assert sources.tolist() == want.domains.tolist()


class _Items(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Item i of a dataset of one kind of item: a mapping, an image alone, or a list."""

    def __init__(self, kind: str, offset: int, size: int) -> None:
        self.kind, self.offset, self.size = kind, offset, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> Any:
        image = torch.full((3, 2, 2), float(self.offset + i))
        if self.kind == "mapping":
            return {"image": image, "label": (self.offset + i) % 7}
        return image if self.kind == "image" else [image, (self.offset + i) % 7]


@pytest.mark.parametrize("kind", ["mapping", "image", "list"])
def test_sampler_loader_adds_the_source_id_to_any_kind_of_item(kind: str) -> None:
    sizes = [4, 3]
    data = torch.utils.data.ConcatDataset([_Items(kind, 0, 4), _Items(kind, 4, 3)])
    draws = MultiSourceSampler(sizes, 5, seed=1)
    stream = sampler_loader(data, MultiSourceSampler(sizes, 5, seed=1))
    for _ in range(3):
        want = draws.sample()
        batch = next(stream)
        if kind == "mapping":
            images, labels, sources = batch["image"], batch["label"], batch["source"]
        elif kind == "image":
            (images, sources), labels = batch, want.indices % 7
        else:
            images, labels, sources = batch
        assert images.shape == (5, 3, 2, 2)  # whole images, never split along a dimension
        assert images[:, 0, 0, 0].tolist() == want.indices.float().tolist()
        assert labels.tolist() == (want.indices % 7).tolist()
        assert sources.tolist() == want.domains.tolist()


def test_sampler_loader_refuses_to_overwrite_a_source_key() -> None:
    class Keyed(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> dict[str, int]:
            return {"source": i}

    with pytest.raises(ValueError, match="key 'source'"):
        next(sampler_loader(Keyed(), MultiSourceSampler([2, 2], 2)))


@pytest.mark.parametrize("start", [0, 1, 5])
def test_sampler_loader_resumes_after_start_draws(start: int) -> None:
    data = torch.utils.data.TensorDataset(torch.arange(11.0))
    whole = sampler_loader(data, InfiniteSampler(11, 4, seed=2))
    batches = [next(whole)[0] for _ in range(start + 3)]
    resumed = sampler_loader(data, InfiniteSampler(11, 4, seed=2), start=start, num_workers=2)
    for want in batches[start:]:
        assert torch.equal(next(resumed)[0], want)


def test_sampler_loader_checks_its_arguments() -> None:
    data = _tensor_sources([2, 2])
    with pytest.raises(ValueError, match="`dataset` has 4 items"):
        sampler_loader(data, MultiSourceSampler([2, 3], 2))
    with pytest.raises(ValueError, match="`start`"):
        sampler_loader(data, InfiniteSampler(4, 2), start=-1)
    with pytest.raises(TypeError, match="`start` must be an int, got float"):
        sampler_loader(data, InfiniteSampler(4, 2), start=1.0)  # type: ignore[arg-type]
    numpy_start = sampler_loader(data, InfiniteSampler(4, 3, seed=1), start=np.int64(2))
    int_start = sampler_loader(data, InfiniteSampler(4, 3, seed=1), start=2)
    assert torch.equal(next(numpy_start)[0], next(int_start)[0])
    with pytest.raises(TypeError, match="`sampler`"):
        sampler_loader(data, [0, 1])  # type: ignore[arg-type]


SAMPLERS = {
    "infinite": lambda: InfiniteSampler(5, 2, seed=1),
    "pooled": lambda: MultiSourceSampler([2, 3], 2, seed=1),
    "balanced": lambda: MultiSourceSampler([2, 3], 2, mode="balanced", seed=1),
    "class-balanced": lambda: MultiSourceSampler(
        [2, 3], 2, mode="balanced", labels=[0, 1, 0, 1, 1], class_balanced=True, seed=1
    ),
}


@pytest.mark.parametrize("how", ["drawn", "loaded"])
@pytest.mark.parametrize("kind", list(SAMPLERS))
def test_sampler_loader_refuses_start_with_a_sampler_past_its_start(kind: str, how: str) -> None:
    data = torch.utils.data.TensorDataset(torch.arange(5.0))
    sampler, ahead = SAMPLERS[kind](), SAMPLERS[kind]()
    ahead.sample()
    if how == "drawn":
        sampler.sample()
    else:
        sampler.load_state_dict(ahead.state_dict())
    where = "position 2" if kind == "infinite" else "step 1"
    with pytest.raises(
        ValueError, match=rf"^`start` = 3 .* `sampler` must be fresh, but it is at {where}: "
    ):
        sampler_loader(data, sampler, start=3)
    # start=0 continues from the sampler's position: the batch it draws next.
    want = ahead.sample()
    want = want if isinstance(want, torch.Tensor) else want.indices
    assert torch.equal(next(sampler_loader(data, sampler))[0], want.float())


def test_sampler_loader_refuses_start_with_a_stream_advanced_at_step_0() -> None:
    sampler = MultiSourceSampler([2, 3], 2, seed=1)
    state = sampler.state_dict()
    sampler.load_state_dict({**state, "pool_pos": 4})  # a hand-made state: streams moved
    with pytest.raises(ValueError, match="step 0 with its streams advanced"):
        sampler_loader(torch.utils.data.TensorDataset(torch.arange(5.0)), sampler, start=1)
