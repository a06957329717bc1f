"""Input and setting validation shared by every public function and module.

Rules (STYLE.md §4): ``ValueError`` for shapes and values, ``TypeError`` for dtypes and types; every
message names the argument and prints what was expected and what was received. Only *static* checks
(ndim, shapes, dtypes, Python settings) live here, so they cost no host sync and trace cleanly under
``torch.compile``. Data-dependent checks (label ranges) are separate and opt-in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Optional

import torch
from torch import Tensor

__all__: list[str] = []


def _shape(x: Tensor) -> str:
    return "(" + ", ".join(str(s) for s in x.shape) + ")"


def check_tensor(x: Any, name: str) -> Tensor:
    """Raise ``TypeError`` unless ``x`` is a tensor."""
    if not isinstance(x, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}")
    return x


def check_float(x: Any, name: str, *, ndim: Optional[int] = None, axes: str = "") -> Tensor:
    """Check that ``x`` is a floating-point tensor with ``ndim`` dimensions.

    ``axes`` names the dimensions for the message, e.g. ``"(B_s, D)"``.
    """
    check_tensor(x, name)
    if not x.is_floating_point():
        raise TypeError(f"`{name}` must be a floating-point tensor, got dtype {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(
            f"`{name}` must have {ndim} dimensions {axes}".rstrip()
            + f", got {x.ndim} with shape {_shape(x)}"
        )
    return x


def check_labels(x: Any, name: str, *, ndim: int = 1, axes: str = "(B,)") -> Tensor:
    """Check that ``x`` is an integer (``int64``/``int32``/...) label tensor with ``ndim`` dims."""
    check_tensor(x, name)
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"`{name}` must be an integer tensor of class indices, got dtype {x.dtype}")
    if x.ndim != ndim:
        raise ValueError(
            f"`{name}` must have {ndim} dimension(s) {axes}, got {x.ndim} with shape {_shape(x)}"
        )
    return x


def check_size(
    a: Tensor, a_name: str, a_dim: int, b: Tensor, b_name: str, b_dim: int, what: str
) -> None:
    """Raise ``ValueError`` unless ``a.shape[a_dim] == b.shape[b_dim]``."""
    if a.shape[a_dim] != b.shape[b_dim]:
        raise ValueError(
            f"{what} of `{a_name}` and `{b_name}` must match: `{a_name}` has shape {_shape(a)} "
            f"and `{b_name}` has shape {_shape(b)}"
        )


def check_nonempty(x: Tensor, name: str, dim: int = 0, what: str = "batch") -> None:
    """Raise ``ValueError`` if ``x`` has size 0 along ``dim``."""
    if x.shape[dim] == 0:
        raise ValueError(f"`{name}` must hold at least one {what} entry, got shape {_shape(x)}")


def check_label_range(labels: Tensor, name: str, num_classes: int) -> None:
    """Raise ``ValueError`` if any label falls outside ``[0, num_classes)``.

    This check reads the data (one host sync), so it is skipped while ``torch.compile`` traces and
    is only run where the caller opted in (``validate=True``).
    """
    if torch.compiler.is_compiling() or labels.numel() == 0:
        return
    lo = int(labels.min())
    hi = int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(
            f"`{name}` must hold class indices in [0, {num_classes}) (K = {num_classes} from the "
            f"logits), got values in [{lo}, {hi}] with shape {_shape(labels)}"
        )


def check_probability(
    value: Any, name: str, *, low_inclusive: bool = False, high_inclusive: bool = True
) -> float:
    """Check a threshold-like setting in ``(0, 1]`` (bounds configurable)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a real number, got {type(value).__name__}")
    value = float(value)
    lo_ok = value >= 0.0 if low_inclusive else value > 0.0
    hi_ok = value <= 1.0 if high_inclusive else value < 1.0
    if not (lo_ok and hi_ok and math.isfinite(value)):
        interval = ("[" if low_inclusive else "(") + "0, 1" + ("]" if high_inclusive else ")")
        raise ValueError(f"`{name}` must lie in {interval}, got {value}")
    return value


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """Check an integer setting ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value}")
    return value


def check_real(
    value: Any,
    name: str,
    *,
    minimum: Optional[float] = None,
    exclusive_minimum: bool = False,
) -> float:
    """Check a finite real setting, optionally bounded below."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite, got {value}")
    if minimum is not None:
        if exclusive_minimum and value <= minimum:
            raise ValueError(f"`{name}` must be > {minimum}, got {value}")
        if not exclusive_minimum and value < minimum:
            raise ValueError(f"`{name}` must be >= {minimum}, got {value}")
    return value


def check_choice(value: Any, name: str, choices: Sequence[Any]) -> Any:
    """Check that ``value`` is one of ``choices``."""
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"`{name}` must be one of {allowed}; got {value!r}")
    return value
