"""Input and setting checks that several operations share.

One message style holds everywhere: ``ValueError`` for shapes and values, ``TypeError`` for dtypes
and types; every message names the argument and prints what was expected and what was received. A
check that serves one operation lives beside it (e.g. the objective's settings in
``functional/_objective.py``), built from these. The tensor checks are *static* (ndim, shapes,
dtypes, devices, Python settings): they cost no host sync and trace cleanly under
``torch.compile``. The data-dependent checks (:func:`check_label_range`,
:func:`check_index_range`) are opt-in, through ``validate_args`` (:func:`resolve_validate_args`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, Optional, Union

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


def check_labels(
    x: Any, name: str, *, ndim: int = 1, axes: str = "(B,)", what: str = "class indices",
    hint: str = "",
) -> Tensor:  # fmt: skip
    """Check that ``x`` is an integer (``int64``/``int32``/...) label tensor with ``ndim`` dims
    (``what`` it holds and a ``hint`` for a wrong dtype go into the message)."""
    check_tensor(x, name)
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise TypeError(
            f"`{name}` must be an integer tensor of {what}, got dtype {x.dtype} with shape "
            f"{_shape(x)}{hint}"
        )
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


def _real(value: Any, name: str) -> Any:
    """``value`` if it is an ``int`` or ``float`` (symbolic under ``torch.compile``), a numpy or
    other real number as a ``float``; ``TypeError`` for anything else, ``bool`` included."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise TypeError(f"`{name}` must be a real number, got {type(value).__name__}")
        return float(value)
    return value


def check_weight(value: Any, name: str) -> Union[float, Tensor]:
    """A weight: a finite real ``>= 0``, or a 0-dim tensor (a schedule's value, whose value is
    not read: reading it would sync the device)."""
    if isinstance(value, Tensor):
        if value.ndim != 0:
            raise ValueError(
                f"`{name}` must be a real number or a 0-dim tensor, got a tensor of shape "
                f"{_shape(value)}"
            )
        return value
    return check_real(value, name, minimum=0.0)


def check_probability(
    value: Any, name: str, *, low_inclusive: bool = False, high_inclusive: bool = True
) -> float:
    """Check a threshold-like setting in ``(0, 1]`` (bounds configurable)."""
    value = _real(value, name)
    if torch.compiler.is_compiling():  # a changing float becomes symbolic: checked when eager
        return value
    value = float(value)
    lo_ok = value >= 0.0 if low_inclusive else value > 0.0
    hi_ok = value <= 1.0 if high_inclusive else value < 1.0
    if not (lo_ok and hi_ok and math.isfinite(value)):
        interval = ("[" if low_inclusive else "(") + "0, 1" + ("]" if high_inclusive else ")")
        raise ValueError(f"`{name}` must lie in {interval}, got {value}")
    return value


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """Check an integer setting ``>= minimum`` (a numpy integer counts, as an ``int``)."""
    if isinstance(value, bool) or not isinstance(value, int):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise TypeError(f"`{name}` must be an int, got {type(value).__name__}")
        value = int(value)
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
    value = _real(value, name)
    if torch.compiler.is_compiling():  # a changing float becomes symbolic: checked when eager
        return value
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


def check_bool(value: Any, name: str) -> bool:
    """Check a ``bool`` setting (no truthy stand-ins such as ``"yes"`` or ``1``)."""
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be a bool, got {type(value).__name__}")
    return value


def check_optional_bool(value: Any, name: str) -> Optional[bool]:
    """``None``, or a ``bool`` setting."""
    return None if value is None else check_bool(value, name)


def check_optional_positive_int(value: Any, name: str, *, minimum: int = 1) -> Optional[int]:
    """``None``, or an integer setting ``>= minimum``."""
    return None if value is None else check_positive_int(value, name, minimum=minimum)


def check_same_device(tensors: Sequence[tuple[str, Tensor]]) -> None:
    """Raise ``ValueError`` unless all the named tensors are on one device."""
    devices = {t.device for _, t in tensors}
    if len(devices) > 1:
        names = [f"`{n}`" for n, _ in tensors]
        listed = ", ".join(names[:-1]) + " and " + names[-1]
        raise ValueError(f"{listed} must be on one device, got {sorted(str(d) for d in devices)}")


def resolve_validate_args(validate_args: Optional[bool], t: Tensor) -> bool:
    """Whether to run the data-dependent checks: ``None`` means on CPU only, where reading values
    costs no device sync; never while ``torch.compile`` traces."""
    check_optional_bool(validate_args, "validate_args")
    if torch.compiler.is_compiling():
        return False
    if validate_args is None:
        return t.device.type == "cpu"
    return bool(validate_args)


# ------------------------------------------------------------------------------------------------
# losses


def check_kernel_settings(kernel_num: Any, kernel_mul: Any) -> tuple[int, float]:
    """Validate the multi-kernel settings ``kernel_num`` (int >= 1) and ``kernel_mul`` (> 0)."""
    kernel_num = check_positive_int(kernel_num, "kernel_num")
    kernel_mul = check_real(kernel_mul, "kernel_mul", minimum=0.0, exclusive_minimum=True)
    return kernel_num, kernel_mul


def check_views(logits_g: Any, logits_l: Any) -> None:
    """The two views' target logits: float ``(B_t, K)`` each, same shape, non-empty, one device."""
    check_float(logits_g, "logits_g", ndim=2, axes="(B_t, K)")
    check_float(logits_l, "logits_l", ndim=2, axes="(B_t, K)")
    check_size(logits_g, "logits_g", 0, logits_l, "logits_l", 0, "Batch sizes (dim 0)")
    check_size(logits_g, "logits_g", 1, logits_l, "logits_l", 1, "Numbers of classes K (dim 1)")
    check_nonempty(logits_g, "logits_g")
    check_nonempty(logits_g, "logits_g", dim=1, what="class")
    check_same_device([("logits_g", logits_g), ("logits_l", logits_l)])


def check_domains(domains_s: Any, num_domains: Any, batch: Tensor, batch_name: str) -> int:
    """Source-domain ids ``(B_s,)`` with their count; returns the number of groups ``G``.

    ``domains_s=None`` pools the sources (one group); ``num_domains`` is then only type-checked.
    """
    if domains_s is None:
        if num_domains is not None:
            check_positive_int(num_domains, "num_domains")
        return 1
    check_labels(domains_s, "domains_s", axes="(B_s,)", what="source-domain ids")
    check_size(batch, batch_name, 0, domains_s, "domains_s", 0, "Batch sizes (dim 0)")
    if num_domains is None:
        raise ValueError(
            "`num_domains` must be given with `domains_s` (the number of source domains; "
            "inferring it would read the data back to the host)"
        )
    return check_positive_int(num_domains, "num_domains")


def require_domains(domains_s: Any, num_domains: Any) -> None:
    """Raise ``ValueError`` if ``num_domains`` asks for the per-source mode without ``domains_s``."""
    if num_domains is not None and domains_s is None:
        raise ValueError(
            f"`domains_s` is required with `num_domains` (num_domains={num_domains}): the "
            "per-source mode needs each source sample's domain id"
        )


# ------------------------------------------------------------------------------------------------
# feature maps and patches


def check_feature_map(x: Any, name: str, channels: int, channels_name: str = "") -> None:
    """A ``(B, C, H, W)`` tensor with ``C = channels`` (``channels_name`` names the setting)."""
    check_tensor(x, name)
    if x.ndim != 4 or x.shape[1] != channels:
        what = f"{channels_name} = {channels}" if channels_name else str(channels)
        raise ValueError(
            f"`{name}` must have shape (B, C, H, W) with C = {what}, got shape {_shape(x)}"
        )


#: A patch grid: an int ``g`` (a ``g×g`` grid) or a pair ``(g_h, g_w)`` (rows, columns).
GridLike = Union[int, tuple[int, int]]


def check_grid(grid: Any, name: str = "grid") -> tuple[int, int]:
    """Normalise a patch grid (an int ``g`` or a pair ``(g_h, g_w)``) to a pair of ints >= 1."""
    if isinstance(grid, bool):
        raise TypeError(f"`{name}` must be an int or a pair of ints (g_h, g_w), got bool")
    if isinstance(grid, int):
        grid = (grid, grid)
    if not isinstance(grid, (tuple, list)) or len(grid) != 2:
        raise TypeError(f"`{name}` must be an int or a pair of ints (g_h, g_w), got {grid!r}")
    for g in grid:
        if isinstance(g, bool) or not isinstance(g, int):
            raise TypeError(f"`{name}` must be an int or a pair of ints (g_h, g_w), got {grid!r}")
        if g < 1:
            raise ValueError(f"`{name}` entries must be >= 1, got {tuple(grid)!r}")
    return int(grid[0]), int(grid[1])


def check_grid_divides(x: Any, grid: tuple[int, int], name: str = "x") -> None:
    """A ``(B, C, H, W)`` tensor whose ``H``/``W`` the grid ``(g_h, g_w)`` divides."""
    check_tensor(x, name)
    if x.ndim != 4:
        raise ValueError(
            f"`{name}` must have 4 dimensions (B, C, H, W), got {x.ndim} with shape {_shape(x)}"
        )
    gh, gw = grid
    h, w = x.shape[-2], x.shape[-1]
    if h % gh or w % gw:
        raise ValueError(
            f"`grid` = ({gh}, {gw}) must divide the spatial size of `{name}`: got `{name}` with "
            f"shape {_shape(x)} (H = {h}, W = {w}); H must be a multiple of {gh} and W of {gw}"
        )


# ------------------------------------------------------------------------------------------------
# batch sizes, index ranges


def check_min_size(
    x: Tensor, name: str, minimum: int, *, dim: int = 0, what: str = "samples", reason: str = ""
) -> None:
    """Raise ``ValueError`` if ``x`` has fewer than ``minimum`` entries along ``dim``."""
    if x.shape[dim] < minimum:
        why = f" ({reason})" if reason else ""
        raise ValueError(
            f"`{name}` must hold at least {minimum} {what}{why}, got shape {_shape(x)}"
        )


def check_index_range(index: Tensor, name: str, upper: int, upper_name: str) -> None:
    """Raise ``ValueError`` if any entry of ``index`` falls outside ``[0, upper)``.

    Like :func:`check_label_range` (whose message speaks of classes), for other index tensors such
    as source-domain ids; ``upper_name`` names the setting that gives ``upper``. It reads the data
    (one host sync), so it is skipped while ``torch.compile`` traces and only runs where the caller
    opted in (:func:`resolve_validate_args`).
    """
    if torch.compiler.is_compiling() or index.numel() == 0:
        return
    lo = int(index.min())
    hi = int(index.max())
    if lo < 0 or hi >= upper:
        raise ValueError(
            f"`{name}` must hold values in [0, {upper}) ({upper_name} = {upper}), got values in "
            f"[{lo}, {hi}] with shape {_shape(index)}"
        )


# ------------------------------------------------------------------------------------------------
# validators (lacmfer.validation)


def check_finite(x: Tensor, name: str) -> None:
    """Finite entries only (NaN and infinities refused). Reads the data (one host sync): for
    analysis tools that read their inputs anyway, not for losses."""
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(
            f"`{name}` must be finite, got {bad} NaN or infinite entr{'y' if bad == 1 else 'ies'} "
            f"(shape {_shape(x)})"
        )


def check_logits(logits: Any, name: str = "logits", axes: str = "(B, K)") -> Tensor:
    """A non-empty floating-point logit matrix ``(B, K)`` with ``B, K >= 1``."""
    check_float(logits, name, ndim=2, axes=axes)
    check_nonempty(logits, name)
    check_nonempty(logits, name, dim=1, what="class")
    return logits


def check_seed(value: Any, name: str = "seed") -> int:
    """An integer seed (any sign)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__}")
    return value


def check_snd_settings(temperature: Any, max_samples: Any, seed: Any) -> float:
    """Soft-neighbourhood-density settings: ``temperature > 0``, ``max_samples`` None or >= 2, an
    int ``seed``; returns the temperature as a float."""
    temperature = check_real(temperature, "temperature", minimum=0.0, exclusive_minimum=True)
    check_optional_positive_int(max_samples, "max_samples", minimum=2)
    check_seed(seed)
    return temperature
