"""Labelled evaluation: the confusion matrix, the scores read from it, and its figure."""

from __future__ import annotations

import os
from typing import NamedTuple, Sequence, Union

import torch
from torch import Tensor

from .._checks import check_index_range, check_labels, check_positive_int, check_size
from ._common import new_figure

__all__ = ["ClassificationMetrics", "classification_metrics", "confusion_matrix", "plot_confusion"]


def confusion_matrix(preds: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    r"""Count ``C[i, j]``: the samples of true class ``i`` predicted as class ``j``.

    Counts add up: the matrix of a test set is the sum of its batches' matrices, and under
    :mod:`torch.distributed` the ``all_reduce`` (sum) of the ranks' matrices. One ``bincount``, no
    host synchronisation on an accelerator; on the CPU the values are checked to lie in
    ``[0, num_classes)``. A negative label marks an unlabelled sample (as everywhere in
    :mod:`lacmfer.analysis`): it is not counted.

    Args:
        preds: predicted classes :math:`(N,)`, e.g. ``logits.argmax(1)``.
        labels: true classes :math:`(N,)`; below 0: unlabelled, left out.
        num_classes: :math:`K`.

    Returns:
        int64 :math:`(K, K)` on the inputs' device.

    Example:
        >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]), 2)
        tensor([[1, 1],
                [0, 1]])
    """
    check_labels(preds, "preds", axes="(N,)")
    check_labels(labels, "labels", axes="(N,)")
    check_size(preds, "preds", 0, labels, "labels", 0, "Sample counts (dim 0)")
    k = check_positive_int(num_classes, "num_classes")
    if preds.device.type == "cpu":
        check_index_range(preds, "preds", k, "`num_classes`")
        check_index_range(labels.clamp_min(0), "labels", k, "`num_classes`")  # < 0: unlabelled
    labels = labels.long()
    flat = torch.where(labels >= 0, labels * k + preds.long(), k * k)  # unlabelled: bin k * k
    return torch.bincount(flat, minlength=k * k + 1)[: k * k].view(k, k)


class ClassificationMetrics(NamedTuple):
    """What :func:`classification_metrics` reads from a confusion matrix (float64 tensors)."""

    #: ``()``: correct over all samples; NaN for an empty matrix.
    accuracy: Tensor
    #: ``(K,)``: recall of each class; NaN for a class absent from the labels.
    per_class_accuracy: Tensor
    #: ``()``: mean F1 over the classes present in the labels or the predictions (scikit-learn's
    #: ``f1_score(average="macro")``); NaN for an empty matrix.
    macro_f1: Tensor
    #: ``()``: the number of samples counted.
    num_samples: Tensor


def classification_metrics(confusion: Tensor) -> ClassificationMetrics:
    """Accuracy, per-class accuracy and macro-F1 of a confusion matrix (:func:`confusion_matrix`).

    A class absent from the labels has no recall: its ``per_class_accuracy`` is NaN (the balanced
    accuracy of the classes present is ``per_class_accuracy.nanmean()``), and ``macro_f1``
    averages over the classes present in the labels or the predictions, as scikit-learn's
    ``f1_score(average="macro")`` on the same samples.

    Args:
        confusion: :math:`(K, K)` counts, rows the true classes, columns the predicted ones:
            non-negative (integer, or floating-point such as summed or weighted counts).

    Raises:
        TypeError: if ``confusion`` is not a tensor, or a boolean or complex one.
        ValueError: if it is not ``(K, K)`` with K >= 1, or holds a negative or
            non-finite count (reads the values).

    Example:
        >>> m = classification_metrics(torch.tensor([[3, 1], [0, 4]]))
        >>> round(float(m.accuracy), 4), m.per_class_accuracy.tolist(), round(float(m.macro_f1), 4)
        (0.875, [0.75, 1.0], 0.873)
    """
    if not isinstance(confusion, Tensor):
        raise TypeError(f"`confusion` must be a torch.Tensor, got {type(confusion).__name__}")
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1] or confusion.shape[0] == 0:
        raise ValueError(f"`confusion` must be (K, K) with K >= 1, got {tuple(confusion.shape)}")
    if confusion.dtype == torch.bool or confusion.is_complex():
        raise TypeError(f"`confusion` must hold counts (integer or real), got {confusion.dtype}")
    c = confusion.double()
    if not bool((torch.isfinite(c) & (c >= 0)).all()):
        raise ValueError(
            "`confusion` must hold non-negative finite counts, got values in "
            f"[{float(c.min())}, {float(c.max())}] (shape {tuple(confusion.shape)})"
        )
    tp, support, predicted, total = c.diagonal(), c.sum(1), c.sum(0), c.sum()
    nan = torch.full_like(total, float("nan"))
    per_class = torch.where(support > 0, tp / support.clamp_min(1), nan)
    present = ((support + predicted) > 0).double()
    f1 = 2 * tp / (support + predicted).clamp_min(1)
    macro = torch.where(present.sum() > 0, (f1 * present).sum() / present.sum().clamp_min(1), nan)
    accuracy = torch.where(total > 0, tp.sum() / total.clamp_min(1), nan)
    return ClassificationMetrics(accuracy, per_class, macro, total)


def plot_confusion(
    confusion: Union[Tensor, Sequence[Sequence[int]]],
    class_names: Sequence[str],
    path: Union[str, os.PathLike[str]],
    *,
    title: str = "",
) -> bool:
    """Draw a confusion matrix, each row coloured by its share of the row, the counts written in.

    Args:
        confusion: :math:`(K, K)` counts (a tensor or nested lists).
        class_names: the :math:`K` class names.
        path: the PNG.
        title: the figure's title.

    Returns:
        ``False`` when matplotlib is not installed (nothing drawn), else ``True``.
    """
    counts, k = torch.as_tensor(confusion).double(), len(class_names)
    if counts.shape != (k, k):
        raise ValueError(
            f"`confusion` must be (K, K) with K = len(class_names) = {len(class_names)}, got "
            f"{tuple(counts.shape)}"
        )
    fig = new_figure(1.0 + 0.75 * k, 0.6 + 0.7 * k)
    if fig is None:
        return False
    share = (counts / counts.sum(1, keepdim=True).clamp_min(1)).tolist()
    ax = fig.subplots()
    ax.imshow(share, vmin=0.0, vmax=1.0, cmap="Blues")
    for i in range(k):
        for j in range(k):
            colour = "white" if share[i][j] > 0.5 else "black"
            ax.text(j, i, f"{counts[i, j]:.0f}", ha="center", va="center", fontsize=8, color=colour)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set(xlabel="predicted", ylabel="true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True
