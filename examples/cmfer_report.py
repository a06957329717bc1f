"""What ``train_cmfer.py`` writes and prints: the metrics log, progress lines and the curves.
Nothing here takes part in training; optional packages (matplotlib, tensorboard) are imported
when used, and a missing one turns its output off."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Optional

__all__ = ["MetricsLog", "Progress", "json_safe", "plot_curves", "read_jsonl"]


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

    def __init__(self, total: int, initial: int, *, enabled: bool, desc: str, images_per_step: int):
        self.total, self.initial, self.enabled, self.desc = total, initial, enabled, desc
        self.images_per_step, self.start = images_per_step, time.perf_counter()

    def update(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        rate = (step - self.initial) / max(time.perf_counter() - self.start, 1e-9)
        minutes, seconds = divmod(round((self.total - step) / rate) if rate > 0 else 0, 60)
        losses = " ".join(f"{k} {v:.4g}" for k, v in values.items())
        print(f"{self.desc} | step {step}/{self.total} | {losses} | {rate * self.images_per_step:.0f}"
              f" img/s | ETA {minutes // 60}h{minutes % 60:02d}m{seconds:02d}s", flush=True)  # fmt: skip


# ------------------------------------------------------------------------------------------- plots
def plot_curves(records: list[dict[str, Any]], path: Path, title: str) -> bool:
    """Training losses (left) and target accuracies (right) over the steps."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
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
