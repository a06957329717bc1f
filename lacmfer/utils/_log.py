"""What a training run writes and prints: a JSON-lines metrics log mirrored to TensorBoard,
progress lines, and the curves of the log. Optional packages (tensorboard, matplotlib) are imported
when used; a missing one turns its output off and says so."""

from __future__ import annotations

import json
import math
import operator
import os
import sys
import time
import warnings
from pathlib import Path
from typing import IO, Any, Optional, Sequence, Union

import torch

from ..analysis._common import new_figure

__all__: list[str] = []

PathLike = Union[str, "os.PathLike[str]"]

#: The curves :func:`plot_metrics` draws by default: the terms of
#: :class:`~lacmfer.losses.LACMFERLoss` (left) and the accuracies of the three views (right).
LOSS_KEYS = ("loss", "ce", "align", "consistency", "voting")
ACCURACY_KEYS = ("acc_fused", "acc_global", "acc_local")


def json_safe(value: Any) -> Any:
    """A copy of ``value`` (nested dicts, lists, tuples) that :func:`json.dumps` writes as strict
    JSON: 0-dim tensors and numpy scalars become Python numbers (``bool``, ``int``, ``float``),
    tensors and numpy arrays of more dimensions nested lists of them, then NaN and infinities,
    which JSON lacks, become ``None``. Anything else is left as it is.

    Example:
        >>> import numpy as np, torch
        >>> from lacmfer.utils import json_safe
        >>> json_safe({"a": float("nan"), "b": [1.0, float("inf")]})
        {'a': None, 'b': [1.0, None]}
        >>> json_safe([torch.tensor(0.5), np.int64(3), np.float32("nan"), torch.tensor(float("inf"))])
        [0.5, 3, None, None]
        >>> json_safe({"masked": torch.tensor([12.0, float("nan")]), "counts": np.arange(2)})
        {'masked': [12.0, None], 'counts': [0, 1]}
    """
    if isinstance(value, torch.Tensor) or _is_numpy(value):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _is_numpy(value: Any) -> bool:
    """Whether ``value`` is a numpy number, bool or array (numpy is not imported for the check: a
    value cannot be a numpy one unless numpy was imported)."""
    np = sys.modules.get("numpy")
    return np is not None and isinstance(value, (np.number, np.bool_, np.ndarray))


def read_jsonl(path: PathLike) -> list[dict[str, Any]]:
    """The records of a JSON-lines file, one dict a line (blank lines skipped); ``[]`` when the
    file does not exist.

    A last line that does not parse is skipped with a warning: it is what a process killed while
    writing it (or a full disk) leaves, and the records before it are whole.

    Args:
        path: the file.

    Returns:
        The records, in file order.

    Raises:
        ValueError: a line before the last one does not parse, or a line (the last too) holds
            JSON that is not an object (``[1, 2]``, ``3``: a write cut short leaves no such line);
            the message names the file and the line number.
    """
    return _read_jsonl(Path(path), stacklevel=3)


def _read_jsonl(path: Path, stacklevel: int) -> list[dict[str, Any]]:
    """:func:`read_jsonl`; ``stacklevel`` is :func:`warnings.warn`'s, counted from here (3: the
    caller of this function's caller)."""
    if not path.exists():
        return []
    lines = path.read_bytes().splitlines()
    numbered = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    records = []
    for n, line in numbered:
        try:
            record = json.loads(line)
        except ValueError as err:  # json.JSONDecodeError, UnicodeDecodeError
            if n != numbered[-1][0]:
                why = (
                    f"{err.msg}, column {err.colno}"
                    if isinstance(err, json.JSONDecodeError)
                    else err
                )
                raise ValueError(f"{path}: line {n} is not valid JSON ({why})") from err
            warnings.warn(
                f"{path}: line {n}, the last, is not valid JSON (a write cut short?): skipped",
                stacklevel=stacklevel,
            )
            continue
        if not isinstance(record, dict):
            text = line.decode().strip()
            shown = text if len(text) <= 40 else text[:37] + "..."
            raise ValueError(
                f"{path}: line {n} is not a JSON object (one record, a dict, a line): {shown}"
            )
        records.append(record)
    return records


def _end_with_whole_line(f: IO[bytes], path: Path) -> None:
    """Make the JSON-lines file ``f`` (opened ``"a+b"``) end with a newline after its last whole
    record, so that a record appended next starts a line of its own: a last line that does not
    parse (a write cut short) is dropped with a warning; one that parses but lacks its newline gets
    it."""
    f.seek(0)
    data = f.read()
    body = data.rstrip()
    if not body:
        return
    start = body.rfind(b"\n") + 1
    try:
        json.loads(body[start:])
    except ValueError:  # json.JSONDecodeError, UnicodeDecodeError
        n = data.count(b"\n", 0, start) + 1
        warnings.warn(
            f"{path}: line {n}, the last, is not valid JSON (a write cut short?): dropped "
            "before appending",
            stacklevel=3,
        )
        f.truncate(start)
        return
    if not data.endswith(b"\n"):
        f.write(b"\n")


class MetricsLog:
    """A metrics log: ``<folder>/metrics.jsonl``, one record a line, mirrored to TensorBoard.

    Each record is a dict with a ``"step"`` (int) and usually a ``"kind"`` (``"train"``,
    ``"eval"``...); its finite numbers go to TensorBoard as ``<kind>/<key>`` at that step. Non-finite
    numbers are written as ``null``. Under DDP, enable it on the writing rank only.

    Args:
        folder: where ``metrics.jsonl`` (and ``tb/``) go; created on the first write.
        enabled: ``False`` makes every method a no-op (the other ranks).
        tensorboard: write ``<folder>/tb`` too: ``None`` when ``torch.utils.tensorboard`` can be
            imported, ``True`` always (a note in :attr:`notes` when it cannot), ``False`` never.

    Attributes:
        notes: what was skipped and why, for the run's summary.

    Raises:
        ValueError: ``folder`` names an existing file (checked at construction, not at the first
            write an hour into a run).

    Example:
        >>> import tempfile
        >>> from lacmfer.utils import MetricsLog
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     log = MetricsLog(folder, tensorboard=False)
        ...     log.write({"kind": "train", "step": 1, "loss": 2.5})
        ...     log.write({"kind": "train", "step": 2, "loss": float("nan")})
        ...     log.records()
        [{'kind': 'train', 'step': 1, 'loss': 2.5}, {'kind': 'train', 'step': 2, 'loss': None}]
    """

    def __init__(
        self, folder: PathLike, *, enabled: bool = True, tensorboard: Optional[bool] = None
    ) -> None:
        self.folder, self.enabled = Path(folder), enabled
        if enabled and self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"`folder` must be a folder (or not exist yet), got the file {folder}")
        self.path = self.folder / "metrics.jsonl"
        self.notes: list[str] = []
        self._tb: Any = None
        self._whole = False  # whether the file is known to end with a whole line
        if enabled and tensorboard is not False:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                if tensorboard:
                    self.notes.append("tensorboard requested but not installed: skipped")
            else:
                self._tb = SummaryWriter(str(self.folder / "tb"))

    def records(self) -> list[dict[str, Any]]:
        """Every record written so far (also by an earlier process into the same folder). A last
        line cut short (the process was killed while writing it) is skipped with a warning, as
        :func:`read_jsonl` does."""
        return _read_jsonl(self.path, stacklevel=3)

    def keep(self, records: Sequence[dict[str, Any]]) -> None:
        """Rewrite the log with ``records`` alone: on resume, drop what an interrupted run logged
        after its checkpoint, since those steps are taken again."""
        if self.enabled:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.path.write_text("".join(json.dumps(json_safe(r)) + "\n" for r in records))
            self._whole = True

    def write(self, record: dict[str, Any]) -> None:
        """Append one record: a dict with an integer ``"step"`` (an ``int`` or an integer-like
        value such as ``numpy.int64``; not a ``bool`` or a ``float``). Its values go through
        :func:`json_safe` (tensors and numpy values are written as numbers, or lists of them).
        The first append of a log whose file ends with a line cut short (an earlier process killed
        while writing it) drops that line, with a warning.

        Raises:
            TypeError: ``record`` is not a dict, its ``"step"`` is not an integer, or a value
                cannot be written as JSON (the message names its key).
            ValueError: ``record`` has no ``"step"``.
        """
        if not isinstance(record, dict):
            raise TypeError(f"record must be a dict with an int 'step', got {record!r:.80}")
        if "step" not in record:
            raise ValueError(f"record must be a dict with an int 'step', got {record!r:.80}")
        step = record["step"]
        try:
            if isinstance(step, bool):
                raise TypeError
            step = operator.index(step)
        except TypeError:
            raise TypeError(
                f"record['step'] must be an int, got {type(step).__name__} {step!r:.40}"
            ) from None
        if not self.enabled:
            return
        safe = {**json_safe(record), "step": step}
        try:
            line = (json.dumps(safe) + "\n").encode()
        except (TypeError, ValueError):  # name the value that JSON cannot hold
            for key, value in safe.items():
                try:
                    json.dumps(value)
                except (TypeError, ValueError) as err:
                    raise TypeError(f"record[{key!r}] cannot be written as JSON: {err}") from None
            raise
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+b") as f:
            try:
                if not self._whole:
                    _end_with_whole_line(f, self.path)
                f.write(line)
                f.flush()
                self._whole = True
            except BaseException:
                self._whole = False
                raise
        if self._tb is not None:
            kind = safe.get("kind")
            for key, value in safe.items():
                if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
                    continue
                tag = f"{kind}/{key}" if kind else key
                self._tb.add_scalar(tag, value, step)

    def close(self) -> None:
        """Flush and close TensorBoard's writer."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None


class Progress:
    """A progress line on stdout at each :meth:`update`: step, the values given, images per second
    and the time left at the current rate. Plain lines, not a redrawn bar: they read the same in a
    terminal, a log file or a batch system's output.

    Args:
        total: the last step.
        initial: the step the run (or its resume) starts at; the rate counts from here.
        enabled: ``False`` prints nothing (the other ranks; ``--no-progress``).
        desc: what runs, at the start of each line.
        images_per_step: images one step reads (all ranks), for the rate; ``None`` for steps/s.
    """

    def __init__(
        self,
        total: int,
        initial: int = 0,
        *,
        enabled: bool = True,
        desc: str = "",
        images_per_step: Optional[int] = None,
    ) -> None:
        self.total, self.initial, self.enabled, self.desc = total, initial, enabled, desc
        self.images_per_step, self.start = images_per_step, time.perf_counter()

    def line(self, step: int, values: dict[str, Optional[float]], elapsed: float) -> str:
        """The line :meth:`update` prints, ``elapsed`` seconds after the start. A value that is
        ``None`` (what :class:`MetricsLog` writes for NaN) is shown as ``nan``, as NaN is."""
        rate = (step - self.initial) / max(elapsed, 1e-9)
        minutes, seconds = divmod(round((self.total - step) / rate) if rate > 0 else 0, 60)
        shown = " ".join(
            f"{k} {'nan' if v is None else format(v, '.4g')}" for k, v in values.items()
        )
        speed = (
            f"{rate * self.images_per_step:.0f} img/s"
            if self.images_per_step
            else f"{rate:.3g} it/s"
        )
        parts = [self.desc, f"step {step}/{self.total}", shown, speed]
        parts.append(f"ETA {minutes // 60}h{minutes % 60:02d}m{seconds:02d}s")
        return " | ".join(p for p in parts if p)

    def update(self, step: int, values: Optional[dict[str, Optional[float]]] = None) -> None:
        """Print the line of ``step``."""
        if self.enabled:
            print(self.line(step, values or {}, time.perf_counter() - self.start), flush=True)


def plot_metrics(
    records: Sequence[dict[str, Any]],
    path: PathLike,
    *,
    losses: Sequence[str] = LOSS_KEYS,
    accuracies: Sequence[str] = ACCURACY_KEYS,
    diagnostics: Sequence[str] = ("pseudo_label_acc",),
    title: str = "",
) -> bool:
    """Training curves of a metrics log: ``losses`` of the ``"train"`` records against the step
    (left), ``accuracies`` of the ``"eval"`` records with markers and ``diagnostics`` of the
    ``"train"`` records dotted (right, in [0, 1]). Keys a record lacks, or holds as ``None``, are
    skipped. Drawn without pyplot (the caller's matplotlib backend is left alone).

    Args:
        records: the log, as :meth:`MetricsLog.records` returns it.
        path: the image file to write (its suffix picks the format).
        losses, accuracies, diagnostics: the keys to draw.
        title: the figure's title.

    Returns:
        ``False`` when matplotlib is not installed (nothing written), else ``True``.

    Raises:
        ValueError: a ``"train"`` or ``"eval"`` record has no ``"step"``; the message names the
            record (its index in ``records``).
    """
    for i, record in enumerate(records):
        if record.get("kind") in ("train", "eval") and "step" not in record:
            raise ValueError(
                f"records[{i}] lacks the key 'step' (the x axis of its curves): {record!r:.80}"
            )
    fig = new_figure(11, 4)
    if fig is None:
        return False
    left, right = fig.subplots(1, 2)
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]

    def curve(axes: Any, rows: Sequence[dict[str, Any]], key: str, *style: str, **kw: Any) -> None:
        rows = [r for r in rows if r.get(key) is not None]
        if rows:
            axes.plot([r["step"] for r in rows], [r[key] for r in rows], *style, label=key, **kw)

    for key in losses:
        curve(left, train, key)
    for key in accuracies:
        curve(right, evals, key, marker="o")
    for key in diagnostics:
        curve(right, train, key, ":")
    left.set(xlabel="step", ylabel="loss")
    right.set(xlabel="step", ylabel="accuracy", ylim=(0.0, 1.0))
    for axes in (left, right):
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True
