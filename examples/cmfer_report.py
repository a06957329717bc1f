"""What ``train_cmfer.py`` writes and prints: classification metrics, the metrics log, progress
lines and plots. Nothing here takes part in training; optional packages (matplotlib,
tensorboard) are imported when used, and a missing one turns its output off."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import Tensor

__all__ = [
    "MetricsLog",
    "Progress",
    "classification_metrics",
    "confusion_matrix",
    "json_safe",
    "plot_confusion",
    "plot_curves",
    "read_jsonl",
]


# ----------------------------------------------------------------------------------------- metrics
def confusion_matrix(preds: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """``C[i, j]`` = samples of true class ``i`` predicted as ``j``; additive over batches and ranks.

    Example:
        >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]), 2)
        tensor([[1, 1],
                [0, 1]])
    """
    flat = labels.long() * num_classes + preds.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def classification_metrics(confusion: Tensor) -> dict[str, Any]:
    """Accuracy, per-class accuracy (``nan`` for a class absent from the labels), macro-F1 over the
    classes present in labels or predictions (scikit-learn's convention) and the matrix.

    Example:
        >>> m = classification_metrics(torch.tensor([[3, 1], [0, 4]]))
        >>> round(m["accuracy"], 4), m["per_class_accuracy"], round(m["macro_f1"], 4)
        (0.875, [0.75, 1.0], 0.873)
    """
    c = confusion.double()
    tp, support, predicted, total = c.diagonal(), c.sum(1), c.sum(0), c.sum()
    per_class = torch.where(support > 0, tp / support.clamp_min(1), torch.full_like(tp, math.nan))
    present = (support + predicted) > 0
    f1 = 2 * tp / (support + predicted).clamp_min(1)
    return {
        "accuracy": float(tp.sum() / total) if total > 0 else math.nan,
        "per_class_accuracy": per_class.tolist(),
        "macro_f1": float(f1[present].mean()) if bool(present.any()) else math.nan,
        "confusion": confusion.long().tolist(),
        "num_samples": int(total),
    }


# -------------------------------------------------------------------------------------------- log
def json_safe(value: Any) -> Any:
    """A copy with NaN/inf (which JSON lacks) as ``None``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricsLog:
    """``metrics.jsonl``, one record a line (``{"kind": "train"|"eval", "step", ...}``), mirrored to
    TensorBoard (``tensorboard=None``: when installed). Only the writing rank enables it."""

    def __init__(self, out: Path, *, enabled: bool, tensorboard: Optional[bool]) -> None:
        self.path, self.enabled, self.notes = out / "metrics.jsonl", enabled, []
        self._tb: Any = None
        if enabled and tensorboard is not False:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                if tensorboard:
                    self.notes.append("tensorboard requested but not installed: skipped")
            else:
                self._tb = SummaryWriter(str(out / "tb"))

    def records(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path)

    def keep(self, records: list[dict[str, Any]]) -> None:
        """Rewrite the log with ``records`` (on resume: drop what the interrupted run logged after
        its checkpoint, since those steps are redone)."""
        if self.enabled:
            self.path.write_text("".join(json.dumps(r) + "\n" for r in records))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(json_safe(record)) + "\n")
        if self._tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step" and math.isfinite(value):
                    self._tb.add_scalar(f"{record['kind']}/{key}", value, record["step"])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


class Progress:
    """A line on stdout at every logged step: the losses, images/s and the time left."""

    def __init__(
        self, total: int, initial: int, *, enabled: bool, desc: str, images_per_step: int
    ) -> None:
        self.total, self.desc, self.images_per_step, self.enabled = (
            total,
            desc,
            images_per_step,
            enabled,
        )
        self._start, self._first = time.perf_counter(), initial

    def update(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        elapsed, done = time.perf_counter() - self._start, step - self._first
        rate = done / elapsed if elapsed > 0 and done > 0 else 0.0
        left = (self.total - step) / rate if rate > 0 else math.nan
        losses = " ".join(f"{k} {v:.4g}" for k, v in values.items())
        print(f"{self.desc} | step {step}/{self.total} | {losses} | "
              f"{rate * self.images_per_step:.0f} img/s | ETA {_duration(left)}", flush=True)  # fmt: skip


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-"
    minutes, sec = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{sec:02d}s"


# ------------------------------------------------------------------------------------------- plots
def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_confusion(confusion: Sequence[Sequence[int]], class_names: Sequence[str], path: Path,
                   title: str) -> bool:  # fmt: skip
    """Row-normalised confusion matrix with counts; False when matplotlib is missing."""
    plt = _pyplot()
    if plt is None:
        return False
    k = len(class_names)
    norm = [[c / max(1, sum(row)) for c in row] for row in confusion]
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * k, 0.6 + 0.7 * k))
    ax.imshow(norm, vmin=0.0, vmax=1.0, cmap="Blues")
    for i in range(k):
        for j in range(k):
            colour = "white" if norm[i][j] > 0.5 else "black"
            ax.text(j, i, str(confusion[i][j]), ha="center", va="center", fontsize=8, color=colour)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set(xlabel="predicted", ylabel="true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_curves(records: list[dict[str, Any]], path: Path, title: str) -> bool:
    """Training losses (left) and target accuracies (right) over the steps."""
    plt = _pyplot()
    if plt is None:
        return False
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("loss", "ce", "align", "consistency", "voting"):
        if train and key in train[0]:
            left.plot([r["step"] for r in train], [r[key] for r in train], label=key)
    left.set(xlabel="step", ylabel="loss")
    left.legend(fontsize=8)
    for view in ("acc_fused", "acc_global", "acc_local"):
        right.plot([r["step"] for r in evals], [r[view] for r in evals], marker="o", label=view)
    kept = [r for r in train if r.get("pseudo_label_acc") is not None]
    right.plot([r["step"] for r in kept], [r["pseudo_label_acc"] for r in kept], ":",
               label="pseudo-label acc (diagnostic)")  # fmt: skip
    right.set(xlabel="step", ylabel="target accuracy", ylim=(0.0, 1.0))
    right.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
