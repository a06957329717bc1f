"""Run bookkeeping for training loops: checkpoints that survive a crash and resume exactly, a metrics
log, progress lines and curves.

Nothing here is specific to LA-CMFER; it is what the training example (``examples/train_cmfer.py``)
and a loop of your own (``docs/guides/own_training_loop.rst``) need to never lose a run:

* :func:`save_checkpoint` writes atomically (a crash leaves the previous file) and refuses what
  :func:`load_checkpoint` could not read back; :func:`load_checkpoint` reads with
  ``weights_only=True`` and names the file in its errors.
* :func:`get_rng_state` / :func:`set_rng_state`: torch's, CUDA's and your generators' states, of
  every rank under DDP, so a resumed run draws what the uninterrupted one would have drawn.
* :func:`state_dict_hash`: whether two models (two ranks, a run and its resume) hold identical
  weights.
* :func:`environment`: the software and hardware a result was computed with (a run repeats bit
  for bit only where they match).
* :class:`MetricsLog` (JSON lines, mirrored to TensorBoard), :class:`Progress` (plain progress
  lines), :func:`plot_metrics` (the log's curves), :func:`json_safe`, :func:`read_jsonl`.
"""

from ._checkpoint import (
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
    state_dict_hash,
)
from ._environment import environment
from ._log import MetricsLog, Progress, json_safe, plot_metrics, read_jsonl

__all__ = [
    "MetricsLog",
    "Progress",
    "environment",
    "get_rng_state",
    "json_safe",
    "load_checkpoint",
    "plot_metrics",
    "read_jsonl",
    "save_checkpoint",
    "set_rng_state",
    "state_dict_hash",
]
