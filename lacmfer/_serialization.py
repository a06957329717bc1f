"""Errors of ``torch.load`` a user can act on."""

from __future__ import annotations

import re

__all__: list[str] = []

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def load_error_reason(err: BaseException, limit: int = 200) -> str:
    """The gist of an error of :func:`torch.load`, on one line: its class and the first sentence of
    the part of its message that names the problem.

    ``weights_only=True`` errors open with generic advice on PyTorch's defaults and on loading with
    ``weights_only=False`` (not an option for a file one does not trust); what names the problem
    (``Unsupported global: GLOBAL argparse.Namespace ...``, ``Unsupported operand 103`` for bytes
    that are not a checkpoint) follows ``WeightsUnpickler error:``. Other errors give their first
    line; an empty message gives the class alone.
    """
    text = _ANSI.sub("", str(err))
    _, marker, detail = text.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in (detail if marker else text).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    first = lines[0]
    if ". " in first:
        first = first[: first.index(". ") + 1]
    if len(first) > limit:
        first = first[: limit - 3].rstrip() + "..."
    return f"{type(err).__name__}: {first}"
