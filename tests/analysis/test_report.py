"""``shift_report`` / ``plot_shift``: the report equals the functions it composes, survives a JSON
round trip, names a bad target, and draws its two figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from lacmfer.analysis import (
    CollectedFeatures,
    ShiftReport,
    class_separation,
    domain_distance_matrix,
    embed_2d,
    plot_shift,
    proxy_a_distance,
    shift_report,
)


def collected(shift: float, classes: int = 3, seed: int = 0) -> CollectedFeatures:
    """Three domains of three classes; domain 2 (the target) moved by ``shift``; class 2 absent
    from domain 0, so that some class-wise cells are empty."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat(30)
    domains = torch.arange(3).repeat_interleave(30)
    keep = ~((domains == 0) & (labels == 2))
    labels, domains = labels[keep], domains[keep]
    feats = 3.0 * torch.eye(4)[labels] + 0.4 * torch.randn(len(labels), 4, generator=g)
    feats[domains == 2] += shift
    return CollectedFeatures(feats, labels, domains, None)


def test_report_equals_the_functions_it_composes() -> None:
    data = collected(1.0)
    report = shift_report(data, target=2, embed="pca", seed=3)
    dist = domain_distance_matrix(data.features, data.domains, labels=data.labels, num_classes=3)
    torch.testing.assert_close(report.distances, dist.matrix, equal_nan=True)
    torch.testing.assert_close(report.same_class, dist.class_matrix.diagonal(), equal_nan=True)
    off = [float(dist.class_matrix[i, j]) for i in range(3) for j in range(3) if i != j]
    off = [v for v in off if not math.isnan(v)]
    assert float(report.other_class) == pytest.approx(sum(off) / len(off))
    sep = class_separation(data.features, data.labels, data.domains, num_classes=3)
    torch.testing.assert_close(report.separation, sep.ratio)
    torch.testing.assert_close(report.domain_separation, sep.domain_ratio, equal_nan=True)
    target = data.domains == 2
    pad = proxy_a_distance(data.features[~target], data.features[target], seed=3)
    assert report.proxy_a == (float(pad.mean), float(pad.std))
    torch.testing.assert_close(report.points, embed_2d(data.features, method="pca", seed=3).points)
    assert report.method == "pca"
    assert torch.equal(report.domains, data.domains) and torch.equal(report.labels, data.labels)


def test_unlabelled_rows_give_nan_class_numbers_not_an_error() -> None:
    data = collected(1.0)
    unlabelled = data._replace(labels=torch.full_like(data.labels, -1))
    report = shift_report(unlabelled, target=2, embed="pca", seed=3)
    labelled = shift_report(data, target=2, embed="pca", seed=3)
    torch.testing.assert_close(report.distances, labelled.distances)  # no labels needed
    assert report.proxy_a == labelled.proxy_a
    for value in (report.same_class, report.other_class, report.separation):
        assert bool(value.isnan().all())


def test_a_shifted_target_is_farther_and_easier_to_tell_apart() -> None:
    near, far = (shift_report(collected(s), target=2, embed="pca") for s in (0.0, 3.0))
    assert float(far.distances[0, 2]) > float(near.distances[0, 2])
    assert far.proxy_a[0] > near.proxy_a[0] + 0.5


def test_json_round_trip_keeps_every_value() -> None:
    report = shift_report(collected(1.0), target=2, embed="pca")
    text = json.dumps(report.to_dict())  # NaN (empty cells) become null: valid JSON
    assert "NaN" not in text
    back = ShiftReport.from_dict(json.loads(text))
    for name, value in report._asdict().items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(
                getattr(back, name), value, equal_nan=True, check_dtype=False
            )
        else:
            assert getattr(back, name) == value


def test_a_target_without_rows_is_named() -> None:
    with pytest.raises(ValueError, match="`target`"):
        shift_report(collected(0.0), target=7)


def test_plots_are_drawn(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    reports = [
        (t, shift_report(collected(s), target=2, embed="pca"))
        for t, s in (("before", 3.0), ("after", 0.5))
    ]
    paths = {"features": tmp_path / "f.png", "distances": tmp_path / "d.png"}
    assert plot_shift(reports, ["A", "B", "T"], ["x", "y", "z"], **paths)
    assert all(p.stat().st_size > 1000 for p in paths.values())


@pytest.mark.parametrize("target", [0, 2])
def test_the_target_drawn_in_black_is_the_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: int
) -> None:
    matplotlib = pytest.importorskip("matplotlib")
    drawn: list[tuple[str, str]] = []
    scatter = matplotlib.axes.Axes.scatter

    def record(self: object, *args: object, **kwargs: object) -> object:
        drawn.append((str(kwargs.get("label")), str(kwargs.get("c"))))
        return scatter(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "scatter", record)
    report = shift_report(collected(2.0), target=target, embed="pca")
    assert report.target == target
    paths = {"features": tmp_path / "f.png", "distances": tmp_path / "d.png"}
    assert plot_shift([("r", report)], ["A", "B", "C"], ["x", "y", "z"], **paths)
    assert [name for name, colour in drawn if colour == "black"] == ["ABC"[target]]
    old = report.to_dict()
    del old["target"]  # a report written before the target was kept: the last domain
    assert ShiftReport.from_dict(old).target is None
