"""``confusion_matrix`` / ``classification_metrics`` / ``plot_confusion`` against loop
transcriptions of the definitions: counts, recall per class, F1 per class averaged over the classes
present (scikit-learn's macro average)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lacmfer.analysis import classification_metrics, confusion_matrix, plot_confusion


def loop_scores(labels: list[int], preds: list[int], k: int) -> tuple[float, list[float], float]:
    pairs = list(zip(labels, preds))
    accuracy = sum(y == p for y, p in pairs) / len(pairs)
    recall, f1s = [], []
    for c in range(k):
        tp = sum(y == c and p == c for y, p in pairs)
        fp = sum(y != c and p == c for y, p in pairs)
        fn = sum(y == c and p != c for y, p in pairs)
        recall.append(tp / (tp + fn) if tp + fn else math.nan)
        if tp + fp + fn:  # present in the labels or the predictions
            f1s.append(2 * tp / (2 * tp + fp + fn))
    return accuracy, recall, sum(f1s) / len(f1s)


@pytest.mark.parametrize("seed", range(5))
def test_matches_loops(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    k, n = 6, 150
    labels = torch.randint(0, k - 2, (n,), generator=g)  # class 4 only predicted, 5 never seen
    preds = torch.randint(0, k - 1, (n,), generator=g)
    cm = confusion_matrix(preds, labels, k)
    ref = torch.zeros(k, k, dtype=torch.int64)
    for y, p in zip(labels.tolist(), preds.tolist()):
        ref[y, p] += 1
    assert torch.equal(cm, ref)
    accuracy, recall, macro = loop_scores(labels.tolist(), preds.tolist(), k)
    m = classification_metrics(cm)
    assert float(m.accuracy) == pytest.approx(accuracy)
    assert float(m.macro_f1) == pytest.approx(macro)
    assert int(m.num_samples) == n
    for got, want in zip(m.per_class_accuracy.tolist(), recall):
        assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want)


def test_counts_add_over_batches() -> None:
    g = torch.Generator().manual_seed(0)
    labels, preds = torch.randint(0, 7, (2, 90), generator=g)
    parts = sum(confusion_matrix(p, y, 7) for p, y in zip(preds.split(32), labels.split(32)))
    assert torch.equal(parts, confusion_matrix(preds, labels, 7))


def test_unlabelled_samples_are_not_counted() -> None:
    g = torch.Generator().manual_seed(3)
    labels, preds = torch.randint(0, 4, (2, 60), generator=g)
    hidden = labels.clone()
    hidden[::3] = -1  # the package's mark of an unlabelled sample
    keep = hidden >= 0
    assert torch.equal(
        confusion_matrix(preds, hidden, 4), confusion_matrix(preds[keep], labels[keep], 4)
    )
    assert int(confusion_matrix(preds, torch.full_like(labels, -1), 4).sum()) == 0
    with pytest.raises(ValueError, match="`labels`"):  # too large is still an error
        confusion_matrix(preds, hidden.clamp_max(3) + 1, 4)


def test_empty_matrix_is_nan_not_an_error() -> None:
    m = classification_metrics(torch.zeros(3, 3, dtype=torch.int64))
    assert math.isnan(float(m.accuracy)) and math.isnan(float(m.macro_f1))
    assert bool(m.per_class_accuracy.isnan().all())


def test_bad_input_names_the_argument() -> None:
    with pytest.raises(ValueError, match="`labels`"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 3]), 3)
    with pytest.raises(ValueError, match=r"`preds`.*`labels`"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0]), 3)
    with pytest.raises(TypeError, match="`preds`"):
        confusion_matrix(torch.tensor([0.5]), torch.tensor([0]), 3)
    with pytest.raises(ValueError, match="`confusion`"):
        classification_metrics(torch.zeros(2, 3))
    # a negative count gave an accuracy above 1 and a recall of 1.5
    with pytest.raises(ValueError, match=r"`confusion` must hold non-negative.*\[-1.0, 4.0\]"):
        classification_metrics(torch.tensor([[3, -1], [0, 4]]))
    with pytest.raises(ValueError, match=r"`confusion` must hold non-negative finite"):
        classification_metrics(torch.tensor([[3.0, float("nan")], [0.0, 4.0]]))
    with pytest.raises(TypeError, match=r"`confusion` must hold counts.*torch.bool"):
        classification_metrics(torch.eye(2, dtype=torch.bool))
    weighted = classification_metrics(torch.tensor([[1.5, 0.5], [0.0, 2.0]]))  # real counts: fine
    assert float(weighted.accuracy) == 3.5 / 4.0
    with pytest.raises(ValueError, match="`confusion`"):
        plot_confusion([[1, 2], [3, 4]], ["a", "b", "c"], "unused.png")


def test_plot_confusion_draws_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "cm.png"
    assert plot_confusion(torch.tensor([[3, 1], [0, 4]]), ["a", "b"], path, title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plotting_leaves_the_callers_backend_alone(tmp_path: Path) -> None:
    matplotlib = pytest.importorskip("matplotlib")
    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        assert plot_confusion([[1, 0], [0, 1]], ["a", "b"], tmp_path / "cm.png")
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
