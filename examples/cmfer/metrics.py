"""Classification metrics for the target test set, vectorised in torch.

Everything is derived from one integer confusion matrix, which is additive over batches and over
distributed ranks (sum the matrices, then derive), so evaluation never keeps per-sample predictions.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["classification_metrics", "confusion_matrix"]


def confusion_matrix(preds: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Count matrix ``C[i, j]`` = number of samples of true class ``i`` predicted as ``j``.

    Args:
        preds: predicted class indices.
        labels: true class indices.
        num_classes: ``K``.

    Shape:
        - preds, labels: ``(B,)`` integer.
        - output: ``(K, K)`` ``int64`` on the inputs' device.

    Raises:
        ValueError: if the shapes differ or are not 1-D.

    Example:
        >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]), 2)
        tensor([[1, 1],
                [0, 1]])
    """
    if preds.ndim != 1 or preds.shape != labels.shape:
        raise ValueError(
            f"`preds` and `labels` must be 1-D of the same length, got shapes "
            f"{tuple(preds.shape)} and {tuple(labels.shape)}"
        )
    flat = labels.long() * num_classes + preds.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def classification_metrics(confusion: Tensor) -> dict[str, Any]:
    """Accuracy, per-class accuracy (recall), macro-F1 and the matrix itself, as plain Python values.

    Per-class accuracy of a class absent from the labels is ``nan`` (undefined, not 0). Macro-F1
    averages ``F1_k = 2 TP_k / (2 TP_k + FP_k + FN_k)`` over the classes that occur in the labels or
    the predictions (scikit-learn's ``f1_score(average="macro")`` convention).

    Args:
        confusion: a confusion matrix from :func:`confusion_matrix` (rows = true class).

    Shape:
        - confusion: ``(K, K)``.

    Returns:
        ``{"accuracy", "per_class_accuracy" (list of K), "macro_f1", "confusion" (K×K nested list),
        "num_samples"}``.

    Example:
        >>> m = classification_metrics(torch.tensor([[3, 1], [0, 4]]))
        >>> round(m["accuracy"], 4), m["per_class_accuracy"], round(m["macro_f1"], 4)
        (0.875, [0.75, 1.0], 0.873)
    """
    c = confusion.double()
    tp = c.diagonal()
    support = c.sum(dim=1)
    predicted = c.sum(dim=0)
    total = c.sum()
    accuracy = (tp.sum() / total).item() if total > 0 else float("nan")
    per_class = torch.where(
        support > 0, tp / support.clamp_min(1), torch.full_like(tp, float("nan"))
    )
    denom = support + predicted  # = 2TP + FP + FN
    present = denom > 0
    f1 = 2 * tp / denom.clamp_min(1)
    macro_f1 = (f1[present].mean().item()) if bool(present.any()) else float("nan")
    return {
        "accuracy": accuracy,
        "per_class_accuracy": per_class.tolist(),
        "macro_f1": macro_f1,
        "confusion": confusion.long().tolist(),
        "num_samples": int(total.item()),
    }
