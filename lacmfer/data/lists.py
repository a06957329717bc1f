r"""Reading FER image lists exactly as published.

An image list is a text file with one ``path label`` pair per line, the label an integer in RAF-DB
order (:data:`~lacmfer.data.CLASSES`). The lists of the six-dataset protocol come from several
hands, so the reader accepts what they contain:

* ``\r\n`` (Windows), ``\n`` and ``\r`` line ends, a UTF-8 byte-order mark, and a last line without
  a line end;
* ``\`` path separators (AffectNet's published lists) -- paths are normalised to ``/``;
* blank lines (ignored) and surrounding whitespace.

A line that is not ``<path> <integer>`` (one field, three fields, a label like ``5.0``, ``+3`` or
``1_0``: a label is an optional ``-`` and ASCII digits) is *malformed*; :func:`parse_image_list`
reports it with its 1-based line number, and :func:`read_image_list` raises listing them. Paths
with spaces are not supported (none of the published lists has one). Paths stay relative:
:func:`resolve_list_path` joins them to a root.
"""

from __future__ import annotations

import operator
import os
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Optional, Union

import torch
from torch import Tensor

from .._checks import check_positive_int
from .labels import NUM_CLASSES

__all__ = [
    "ImageList",
    "ListEntry",
    "MalformedLine",
    "class_histogram",
    "normalize_list_path",
    "parse_image_list",
    "read_image_list",
    "resolve_list_path",
]

PathLike = Union[str, "os.PathLike[str]"]

_LINE_END = re.compile(r"\r\n|\r|\n")
# A label: an optional minus sign and ASCII digits -- not int()'s "+3", "1_0" or non-ASCII digits.
_LABEL = re.compile(r"-?[0-9]+")


@dataclass(frozen=True)
class ListEntry:
    r"""One well-formed line of an image list.

    Attributes:
        line: 1-based line number in the file.
        path: The path with ``\`` replaced by ``/`` (see :func:`normalize_list_path`).
        label: The integer label as written (not range-checked).
        raw_path: The path exactly as written.
    """

    line: int
    path: str
    label: int
    raw_path: str


@dataclass(frozen=True)
class MalformedLine:
    """A line that is not ``<path> <integer label>`` (a label is ``-?[0-9]+``).

    Attributes:
        line: 1-based line number.
        text: The line without its line end.
        reason: Why it was rejected.
    """

    line: int
    text: str
    reason: str


@dataclass
class ImageList:
    """The parsed content of an image list file.

    Attributes:
        source: The file name (or ``"<text>"``).
        entries: Well-formed lines, in file order.
        malformed: Malformed lines, in file order.
        line_ends: Count of each line-end style seen, keys ``"crlf"``, ``"lf"``, ``"cr"``.
        total_lines: Number of physical lines (blank ones included).
    """

    source: str
    entries: list[ListEntry] = field(default_factory=list)
    malformed: list[MalformedLine] = field(default_factory=list)
    line_ends: dict[str, int] = field(default_factory=dict)
    total_lines: int = 0

    @property
    def paths(self) -> list[str]:
        """Normalised paths of the entries."""
        return [e.path for e in self.entries]

    @property
    def labels(self) -> list[int]:
        """Labels of the entries."""
        return [e.label for e in self.entries]

    def __len__(self) -> int:
        return len(self.entries)


def normalize_list_path(path: str) -> str:
    r"""Normalise a list path: ``\`` to ``/``, repeated and trailing ``/`` and ``./`` removed.

    Leading ``..`` components are kept (the published lists start with ``../datasets/``).

    Example:
        >>> normalize_list_path(r"..\datasets\AffectNet\val\0\1.jpg")
        '../datasets/AffectNet/val/0/1.jpg'
        >>> normalize_list_path("./a//b/../c.png")
        'a/c.png'
    """
    if not isinstance(path, str):
        raise TypeError(f"`path` must be a str, got {type(path).__name__}")
    return posixpath.normpath(path.replace("\\", "/")) if path else path


def _read_text(path: PathLike) -> str:
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"image list {os.fspath(path)!r} is not UTF-8 text: {err}") from err


def parse_image_list(source: PathLike, *, text: Optional[str] = None) -> ImageList:
    r"""Parse an image list into entries and malformed lines (nothing is raised for bad lines).

    A label is an optional ``-`` followed by ASCII digits (``-?[0-9]+``); anything else that
    Python's ``int`` would read (``+3``, ``1_0``, non-ASCII digits) makes the line malformed.
    Negative labels are entries (:func:`read_image_list` rejects them as out of range).

    Args:
        source: Path of the list file (read as UTF-8; a BOM is dropped).
        text: Parse this text instead of reading ``source`` (``source`` then only names it).

    Returns:
        An :class:`ImageList`.

    Raises:
        ValueError: If the file is not UTF-8.
        OSError: If the file cannot be read.

    Example:
        >>> lst = parse_image_list("demo.txt", text="a\\x.jpg 3\r\n\r\nb.jpg\r\nc.jpg 5.0\r\n")
        >>> [(e.line, e.path, e.label) for e in lst.entries]
        [(1, 'a/x.jpg', 3)]
        >>> [(m.line, m.reason) for m in lst.malformed]  # doctest: +NORMALIZE_WHITESPACE
        [(3, 'expected 2 fields <path> <label>, got 1'),
         (4, "label '5.0' is not an integer")]
    """
    name = os.fspath(source) if text is None else str(source)
    body = _read_text(source) if text is None else text
    out = ImageList(source=name)
    ends = {"crlf": 0, "lf": 0, "cr": 0}
    pos = 0
    lines: list[str] = []
    for match in _LINE_END.finditer(body):
        lines.append(body[pos : match.start()])
        ends[{"\r\n": "crlf", "\n": "lf", "\r": "cr"}[match.group()]] += 1
        pos = match.end()
    if pos < len(body):
        lines.append(body[pos:])
    out.line_ends = ends
    out.total_lines = len(lines)
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            out.malformed.append(
                MalformedLine(number, line, f"expected 2 fields <path> <label>, got {len(fields)}")
            )
            continue
        raw_path, raw_label = fields
        if _LABEL.fullmatch(raw_label) is None:
            out.malformed.append(
                MalformedLine(number, line, f"label {raw_label!r} is not an integer")
            )
            continue
        out.entries.append(
            ListEntry(number, normalize_list_path(raw_path), int(raw_label), raw_path)
        )
    return out


def read_image_list(path: PathLike, *, num_classes: int = NUM_CLASSES) -> list[tuple[str, int]]:
    r"""Read an image list into ``(path, label)`` pairs, rejecting bad lines.

    Paths are normalised (``\`` to ``/``) and left relative; join them to a root with
    :func:`resolve_list_path`.

    Args:
        path: The list file.
        num_classes: Labels must lie in ``[0, num_classes)``.

    Returns:
        The pairs in file order (blank lines skipped).

    Raises:
        ValueError: If a line is malformed or a label is out of range; the message gives the line
            numbers (the first ten of each kind).
        OSError: If the file cannot be read.
    """
    check_positive_int(num_classes, "num_classes")
    lst = parse_image_list(path)
    problems = [f"line {m.line}: {m.reason}: {m.text!r}" for m in lst.malformed[:10]]
    bad = [e for e in lst.entries if not 0 <= e.label < num_classes]
    problems += [f"line {e.line}: label {e.label} outside [0, {num_classes})" for e in bad[:10]]
    if problems:
        count = len(lst.malformed) + len(bad)
        raise ValueError(
            f"image list {lst.source!r} has {count} bad line(s) (malformed: {len(lst.malformed)}, "
            f"label out of range: {len(bad)}):\n  " + "\n  ".join(problems)
        )
    return [(e.path, e.label) for e in lst.entries]


def resolve_list_path(
    path: str, *, root: Optional[PathLike] = None, strip_prefix: Optional[str] = None
) -> str:
    r"""Join a list path to ``root`` and normalise it.

    Args:
        path: A path as written in a list (``\`` or ``/`` separators).
        root: Folder the path is relative to (default: the current folder; the published lists
            are relative to their own folder, see :class:`~lacmfer.data.ImageListDataset`).
        strip_prefix: A leading prefix removed first, e.g. ``"../datasets/"`` to point the
            published lists at a folder that holds ``CK+/``, ``RAF-DB/``, ... directly.

    Returns:
        The normalised joined path (OS separators).

    Example:
        >>> resolve_list_path("../datasets/CK+/anger/x.png", root="/data/lists")
        '/data/datasets/CK+/anger/x.png'
        >>> resolve_list_path("../datasets/CK+/anger/x.png", root="/data", strip_prefix="../datasets")
        '/data/CK+/anger/x.png'
    """
    rel = normalize_list_path(path)
    if strip_prefix:
        prefix = normalize_list_path(strip_prefix).rstrip("/") + "/"
        if rel.startswith(prefix):
            rel = rel[len(prefix) :]
    joined = rel if root is None else posixpath.join(os.fspath(root).replace(os.sep, "/"), rel)
    return os.path.normpath(joined)


def _integer(item: object) -> Optional[int]:
    """``item`` as an int if it is an integer (numpy and 0-dim tensor ones too), else ``None``.

    ``bool`` is not an integer here, nor is a one-element tensor of more than 0 dimensions.
    """
    if isinstance(item, bool) or (
        isinstance(item, Tensor) and (item.ndim != 0 or item.dtype == torch.bool)
    ):
        return None
    try:
        return operator.index(item)  # type: ignore[arg-type]
    except TypeError:
        return None


def class_histogram(
    labels: Union[Tensor, Sequence[int], Iterable[int]], num_classes: int = NUM_CLASSES
) -> list[int]:
    """Count labels per class (labels outside ``[0, num_classes)`` are not counted).

    Args:
        labels: A tensor of integer dtype (any shape), or a sequence or iterable of integers
            (Python ints, numpy integers, 0-dim integer tensors; not ``bool``).
        num_classes: Number of classes ``K``.

    Returns:
        ``K`` counts.

    Raises:
        TypeError: If ``labels`` is a tensor of non-integer dtype (float, complex, bool) or holds
            a non-integer item (e.g. ``0.5``, ``3.0`` or ``True``); labels are never truncated.

    Example:
        >>> class_histogram([0, 3, 3, 6, 9])
        [1, 0, 0, 2, 0, 0, 1]
    """
    check_positive_int(num_classes, "num_classes")
    if isinstance(labels, Tensor):
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise TypeError(f"`labels` must be a tensor of integer dtype, got dtype {labels.dtype}")
        x = labels
    else:
        values = []
        for i, item in enumerate(labels):
            value = _integer(item)
            if value is None:
                raise TypeError(
                    f"`labels` must hold integers, got {item!r} ({type(item).__name__}) at "
                    f"position {i}"
                )
            values.append(value)
        x = torch.tensor(values, dtype=torch.int64)
    x = x.reshape(-1).to(torch.int64)
    x = x[(x >= 0) & (x < num_classes)]
    return torch.bincount(x, minlength=num_classes).tolist()
