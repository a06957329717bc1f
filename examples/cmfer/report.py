"""What a run writes: JSON-lines metrics, TensorBoard (optional), PNG plots (optional), progress bar.

Only rank 0 writes. Optional dependencies (tqdm, matplotlib, tensorboard) are imported lazily; a
missing one turns its output off with a note instead of failing the run.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

__all__ = ["MetricsLog", "Progress", "json_safe", "plot_confusion", "plot_curves", "read_jsonl"]


def json_safe(value: Any) -> Any:
    """A copy with NaN/inf (which JSON lacks) as ``None`` (written as ``null``)."""
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
    """Append-only ``metrics.jsonl`` (one record a line: ``{"kind": "train"|"eval", "step", ...}``)
    mirrored to TensorBoard when enabled.

    ``truncate_after(step)`` drops records past ``step``: on resume, the steps an interrupted run
    logged after its last checkpoint are about to be redone.
    """

    def __init__(self, out: Path, *, enabled: bool, tensorboard: Optional[bool]) -> None:
        self.path = out / "metrics.jsonl"
        self.enabled = enabled
        self.notes: list[str] = []
        self._tb: Any = None
        if enabled:
            out.mkdir(parents=True, exist_ok=True)
            if tensorboard is not False:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError:
                    if tensorboard:
                        self.notes.append("tensorboard requested but not installed: skipped")
                else:
                    self._tb = SummaryWriter(str(out / "tb"))

    def truncate_after(self, step: int) -> None:
        if not self.enabled:
            return
        kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(json_safe(record)) + "\n")
        if self._tb is not None:
            prefix = record.get("kind", "train")
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step" and math.isfinite(value):
                    self._tb.add_scalar(f"{prefix}/{key}", value, record["step"])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


class Progress:
    """Progress of a run: a tqdm bar on stderr, or a line on stdout at every logged step.

    ``enabled=None`` shows the bar when stderr is a terminal; otherwise (a job's log file, ``nohup``,
    ``--no-progress``, tqdm missing) each :meth:`log` call prints one flushed line with the step, the
    losses, images/s and the estimated time left, so a redirected run is never silent.
    """

    def __init__(
        self,
        total: int,
        initial: int,
        *,
        enabled: Optional[bool],
        desc: str,
        images_per_step: int = 0,
        quiet: bool = False,
    ) -> None:
        self._bar: Any = None
        self.total, self.desc = total, desc
        self.images_per_step = images_per_step
        self.quiet = quiet
        self._start, self._start_step = time.perf_counter(), initial
        if enabled is None:
            enabled = sys.stderr.isatty()
        if enabled and not quiet:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                return
            self._bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def log(self, step: int, values: dict[str, float]) -> None:
        """Show the losses of ``step``: in the bar's postfix, or as a line on stdout."""
        if self._bar is not None:
            self._bar.set_postfix({k: f"{v:.3g}" for k, v in values.items()}, refresh=False)
            return
        if self.quiet:
            return
        elapsed = time.perf_counter() - self._start
        done = step - self._start_step
        rate = done / elapsed if elapsed > 0 and done > 0 else 0.0
        eta = (self.total - step) / rate if rate > 0 else math.nan
        losses = " ".join(f"{k} {v:.4g}" for k, v in values.items())
        speed = f"{rate * self.images_per_step:.0f} img/s" if rate > 0 else "- img/s"
        print(
            f"{self.desc} | step {step}/{self.total} | {losses} | {speed} | ETA {_duration(eta)}",
            flush=True,
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-"
    minutes, sec = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{sec:02d}s"


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_confusion(
    confusion: Sequence[Sequence[int]], class_names: Sequence[str], path: Path, title: str
) -> bool:
    """Row-normalised confusion matrix with counts; returns False when matplotlib is missing."""
    plt = _pyplot()
    if plt is None:
        return False
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * k, 0.6 + 0.7 * k))
    rows = [max(1, sum(r)) for r in confusion]
    norm = [[c / rows[i] for c in r] for i, r in enumerate(confusion)]
    ax.imshow(norm, vmin=0.0, vmax=1.0, cmap="Blues")
    for i in range(k):
        for j in range(k):
            colour = "white" if norm[i][j] > 0.5 else "black"
            ax.text(j, i, str(confusion[i][j]), ha="center", va="center", fontsize=8, color=colour)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_curves(records: list[dict[str, Any]], path: Path, title: str) -> bool:
    """Training losses (left) and target accuracies (right) over steps."""
    plt = _pyplot()
    if plt is None:
        return False
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    keys = [k for k in ("loss", "ce", "align", "consistency", "voting") if train and k in train[0]]
    for key in keys:
        left.plot([r["step"] for r in train], [r[key] for r in train], label=key)
    left.set_xlabel("step")
    left.set_ylabel("loss")
    left.legend(fontsize=8)
    for view in ("acc_fused", "acc_global", "acc_local"):
        if evals and view in evals[0]:
            right.plot([r["step"] for r in evals], [r[view] for r in evals], marker="o", label=view)
    if train and "pseudo_label_acc" in train[0]:
        steps = [r["step"] for r in train if r.get("pseudo_label_acc") is not None]
        right.plot(
            steps,
            [r["pseudo_label_acc"] for r in train if r.get("pseudo_label_acc") is not None],
            ":",
            label="pseudo-label acc (diagnostic)",
        )
    right.set_xlabel("step")
    right.set_ylabel("target accuracy")
    right.set_ylim(0.0, 1.0)
    right.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
