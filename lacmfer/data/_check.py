"""The FER image-list checker behind ``python -m lacmfer.data.check`` (see that module for what
it reports and its exit status)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Union

from .._checks import check_positive_int
from .labels import CLASSES, NUM_CLASSES
from .lists import ImageList, parse_image_list, resolve_list_path

__all__ = [
    "ListReport",
    "check_image_list",
    "check_image_lists",
    "check_images",
    "check_protocol_lists",
    "main",
]

PathLike = Union[str, "os.PathLike[str]"]
_SHOW = 10  # examples printed per kind of problem


@dataclass
class ListReport:
    r"""What :func:`check_image_list` found in one list.

    Attributes:
        list_file: The list.
        entries: Well-formed lines.
        total_lines: Physical lines (blank ones included).
        line_ends: Counts of ``crlf``/``lf``/``cr`` line ends.
        backslash_paths: Entries written with ``\`` separators.
        histogram: Entries per class ``0..num_classes-1`` (out-of-range labels not counted).
        out_of_range: ``(line, label)`` of labels outside ``[0, num_classes)``.
        malformed: ``(line, reason, text)`` of malformed lines.
        duplicate_lines: Lines naming an image already named on an earlier line.
        duplicate_images: Distinct images named more than once.
        conflicting_duplicates: Images named more than once with different labels.
        duplicate_examples: ``(path, [lines])`` of a few duplicated images.
        files_checked: Whether files were looked at (``--root`` given).
        decode_checked: Whether existing files were decoded (Pillow available and wanted).
        missing: ``(line, path)`` of files that do not exist.
        unreadable: ``(line, path, error)`` of files that exist but cannot be read or decoded.
        test_list: The test list compared against (``None`` if none).
        test_images: Distinct images in the test list.
        overlap: Distinct test images this list also names.
        overlap_label_mismatch: Overlapping images whose labels differ between the two lists.
        overlap_examples: A few overlapping paths.
    """

    list_file: str
    entries: int = 0
    total_lines: int = 0
    line_ends: dict[str, int] = field(default_factory=dict)
    backslash_paths: int = 0
    histogram: list[int] = field(default_factory=list)
    out_of_range: list[tuple[int, int]] = field(default_factory=list)
    malformed: list[tuple[int, str, str]] = field(default_factory=list)
    duplicate_lines: int = 0
    duplicate_images: int = 0
    conflicting_duplicates: int = 0
    duplicate_examples: list[tuple[str, list[int]]] = field(default_factory=list)
    files_checked: bool = False
    decode_checked: bool = False
    missing: list[tuple[int, str]] = field(default_factory=list)
    unreadable: list[tuple[int, str, str]] = field(default_factory=list)
    test_list: Optional[str] = None
    test_images: int = 0
    overlap: int = 0
    overlap_label_mismatch: int = 0
    overlap_examples: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """One line per kind of problem found (empty when the list is clean)."""
        out: list[str] = []
        if self.malformed:
            out.append(f"{len(self.malformed)} malformed line(s)")
        if self.out_of_range:
            out.append(f"{len(self.out_of_range)} label(s) out of range")
        if self.duplicate_lines:
            out.append(
                f"{self.duplicate_lines} duplicate line(s) over {self.duplicate_images} image(s)"
                + (
                    f", {self.conflicting_duplicates} with conflicting labels"
                    if self.conflicting_duplicates
                    else ""
                )
            )
        if self.missing:
            out.append(f"{len(self.missing)} missing file(s)")
        if self.unreadable:
            out.append(f"{len(self.unreadable)} unreadable file(s)")
        if self.overlap:
            out.append(
                f"contains {self.overlap} of the {self.test_images} images of the test list "
                f"{os.path.basename(self.test_list or '')}"
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field plus ``problems``."""
        out = asdict(self)
        out["problems"] = self.problems
        return out

    def format(self) -> str:
        """A human-readable multi-line summary."""
        name = self.list_file
        ends = ", ".join(f"{k.upper()} {v}" for k, v in self.line_ends.items() if v)
        lines = [f"{name}: {self.entries} entries ({self.total_lines} lines; {ends or 'no'} ends)"]
        if self.backslash_paths:
            lines.append(f"  paths with '\\' separators: {self.backslash_paths}")
        names = [*CLASSES, *(str(k) for k in range(len(CLASSES), len(self.histogram)))]
        hist = ", ".join(f"{k} {names[k]} {c}" for k, c in enumerate(self.histogram))
        lines.append(f"  classes: {hist}")
        lines.append(f"  labels out of range: {len(self.out_of_range)}")
        lines += [f"    line {ln}: label {lab}" for ln, lab in self.out_of_range[:_SHOW]]
        lines.append(f"  malformed lines: {len(self.malformed)}")
        lines += [f"    line {ln}: {why}: {txt!r}" for ln, why, txt in self.malformed[:_SHOW]]
        lines.append(
            f"  duplicate lines: {self.duplicate_lines} (images listed more than once: "
            f"{self.duplicate_images}, with conflicting labels: {self.conflicting_duplicates})"
        )
        lines += [f"    {p} on lines {ls}" for p, ls in self.duplicate_examples[:_SHOW]]
        if self.files_checked:
            lines.append(f"  missing files: {len(self.missing)}")
            lines += [f"    line {ln}: {p}" for ln, p in self.missing[:_SHOW]]
            how = "decoded" if self.decode_checked else "opened (decode check skipped)"
            lines.append(f"  unreadable files ({how}): {len(self.unreadable)}")
            lines += [f"    line {ln}: {p}: {e}" for ln, p, e in self.unreadable[:_SHOW]]
        else:
            lines.append("  files: not checked (no --root)")
        if self.test_list is not None:
            pct = 100.0 * self.overlap / self.test_images if self.test_images else 0.0
            lines.append(
                f"  overlap with test list {self.test_list}: contains {self.overlap} of its "
                f"{self.test_images} images ({pct:.1f}%), labels differ on "
                f"{self.overlap_label_mismatch}"
            )
            lines += [f"    {p}" for p in self.overlap_examples[:_SHOW]]
        status = "PROBLEMS: " + "; ".join(self.problems) if self.problems else "OK"
        lines.append(f"  => {status}")
        return "\n".join(lines)


def _identity(path: str, list_file: str, root: Optional[PathLike], strip: Optional[str]) -> str:
    base = root if root is not None else (os.path.dirname(os.path.abspath(list_file)) or ".")
    return os.path.normpath(os.path.abspath(resolve_list_path(path, root=base, strip_prefix=strip)))


def _identities(
    lst: ImageList, root: Optional[PathLike], strip: Optional[str]
) -> dict[str, list[tuple[int, int]]]:
    out: dict[str, list[tuple[int, int]]] = {}
    for e in lst.entries:
        out.setdefault(_identity(e.path, lst.source, root, strip), []).append((e.line, e.label))
    return out


def _read_check(path: str, decode: bool) -> Optional[str]:
    """``None`` if the file reads (and decodes), else the error."""
    try:
        if decode:
            from PIL import Image

            with Image.open(path) as img:
                img.load()
        else:
            with open(path, "rb") as fh:
                if not fh.read(16):
                    return "empty file"
    except Exception as err:  # any decoder error means unreadable
        return f"{type(err).__name__}: {err}"
    return None


def check_images(paths: Sequence[PathLike], *, decode: bool = False) -> dict[str, str]:
    """The image files of ``paths`` that a training run could not read, before it starts.

    Every file must exist and, with Pillow installed, open as an image: its header is parsed
    (fast: the pixels are not read); ``decode=True`` decodes every pixel as well (slower, and
    catches a file cut short after its header). Without Pillow only existence and a non-empty
    start are checked.

    Args:
        paths: Image files (e.g. an :class:`~lacmfer.data.ImageListDataset`'s ``paths``).
        decode: Decode the pixels too.

    Returns:
        ``path -> reason`` for each file that fails, in the order given; empty when all read.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "bad.jpg").write_bytes(b"not an image")
        >>> sorted(check_images([d / "bad.jpg", d / "gone.png"]).values())
        ['FileNotFoundError', 'UnidentifiedImageError']
    """
    pillow = _pillow_available()
    bad = {}
    for path in paths:
        try:
            if pillow:
                from PIL import Image

                with Image.open(path) as img:
                    if decode:
                        img.load()
            else:
                with open(path, "rb") as fh:
                    if not fh.read(16):
                        raise OSError("empty file")
        except Exception as err:  # any file or decoder error means unreadable
            bad[os.fspath(path)] = type(err).__name__
    return bad


def _pillow_available() -> bool:
    try:
        import PIL.Image  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the environment
        return False
    return True


def check_image_list(
    list_file: PathLike,
    *,
    root: Optional[PathLike] = None,
    strip_prefix: Optional[str] = None,
    test: Optional[PathLike] = None,
    num_classes: int = NUM_CLASSES,
    decode: bool = True,
) -> ListReport:
    r"""Check one image list (see the module docstring for what is checked).

    Args:
        list_file: The list.
        root: Folder the paths are relative to; given, files are checked for existence and
            readability. Also the base of image identities (default: the list's folder).
        strip_prefix: Prefix removed from the paths before joining them to ``root``.
        test: A test list whose images this list should not contain.
        num_classes: Valid labels are ``0..num_classes-1``.
        decode: Decode existing files with Pillow (if installed) instead of only opening them.

    Returns:
        A :class:`ListReport`.

    Raises:
        OSError: If a list cannot be read.
        ValueError: If a list is not UTF-8.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "a.txt").write_bytes(b"x\\1.jpg 0\r\nx/1.jpg 0\r\nx/2.jpg 9\r\nbad\r\n")
        >>> check_image_list(d / "a.txt").problems  # doctest: +NORMALIZE_WHITESPACE
        ['1 malformed line(s)', '1 label(s) out of range', '1 duplicate line(s) over 1 image(s)']
    """
    check_positive_int(num_classes, "num_classes")
    lst = parse_image_list(list_file)
    report = ListReport(list_file=os.fspath(list_file))
    report.entries = len(lst.entries)
    report.total_lines = lst.total_lines
    report.line_ends = dict(lst.line_ends)
    report.backslash_paths = sum("\\" in e.raw_path for e in lst.entries)
    report.malformed = [(m.line, m.reason, m.text) for m in lst.malformed]
    report.out_of_range = [(e.line, e.label) for e in lst.entries if not 0 <= e.label < num_classes]
    hist = [0] * num_classes
    for e in lst.entries:
        if 0 <= e.label < num_classes:
            hist[e.label] += 1
    report.histogram = hist
    ids = _identities(lst, root, strip_prefix)
    for ident, occ in ids.items():
        if len(occ) > 1:
            report.duplicate_images += 1
            report.duplicate_lines += len(occ) - 1
            if len({lab for _, lab in occ}) > 1:
                report.conflicting_duplicates += 1
            if len(report.duplicate_examples) < _SHOW:
                report.duplicate_examples.append((ident, [ln for ln, _ in occ]))
    if root is not None:
        report.files_checked = True
        report.decode_checked = decode and _pillow_available()
        for ident, occ in ids.items():
            line = occ[0][0]
            if not os.path.isfile(ident):
                report.missing.append((line, ident))
                continue
            error = _read_check(ident, report.decode_checked)
            if error is not None:
                report.unreadable.append((line, ident, error))
        report.missing.sort()
        report.unreadable.sort()
    if test is not None:
        test_lst = parse_image_list(test)
        test_ids = _identities(test_lst, root, strip_prefix)
        report.test_list = os.fspath(test)
        report.test_images = len(test_ids)
        shared = [k for k in test_ids if k in ids]
        report.overlap = len(shared)
        report.overlap_label_mismatch = sum(
            {lab for _, lab in ids[k]} != {lab for _, lab in test_ids[k]} for k in shared
        )
        report.overlap_examples = shared[:_SHOW]
    return report


def check_image_lists(
    lists: Sequence[PathLike],
    *,
    root: Optional[PathLike] = None,
    strip_prefix: Optional[str] = None,
    test: Optional[PathLike] = None,
    num_classes: int = NUM_CLASSES,
    decode: bool = True,
) -> list[ListReport]:
    """Check several lists against one optional test list (:func:`check_image_list` on each).

    A list given both in ``lists`` and as ``test`` is compared with itself (the CK+, JAFFE and
    Oulu-CASIA protocol uses one list for adaptation and test, and the report says so).

    Returns:
        One :class:`ListReport` per list, in order.
    """
    return [
        check_image_list(
            path,
            root=root,
            strip_prefix=strip_prefix,
            test=test,
            num_classes=num_classes,
            decode=decode,
        )
        for path in lists
    ]


def check_protocol_lists(
    lists_dir: Optional[PathLike] = None,
    *,
    root: Optional[PathLike] = None,
    strip_prefix: Optional[str] = None,
    num_classes: int = NUM_CLASSES,
    decode: bool = True,
) -> list[ListReport]:
    """Check the lists of the six-dataset protocol, each against its domain's test list.

    For every domain of :data:`~lacmfer.data.FER_LIST_FILES` whose lists are in ``lists_dir``
    (AffectNet's are not distributed), the adaptation list is checked with the test list as
    ``test``; a test list that is a separate file is then checked on its own. On the lists shipped
    with the package this reports the protocol's known flaws: ``RAF_train.txt`` holds all 3031
    images of ``RAF_test.txt``; ``CK.txt``, ``JAFFE.txt`` and ``Oulu.txt`` are their own test
    lists; ``Oulu.txt`` names 507 images more than once (1068 extra lines).

    Args:
        lists_dir: The folder of the lists; default the copies shipped with the package
            (:func:`~lacmfer.data.protocol_lists_dir`).
        root: Folder the list paths are relative to; enables the file checks.
        strip_prefix: Prefix removed from each path first, e.g. ``"../datasets"``.
        num_classes: Number of classes (labels must lie in ``[0, num_classes)``).
        decode: Decode existing files (Pillow), not only open them.

    Returns:
        The reports, in the order of :data:`~lacmfer.data.FER_LIST_FILES`.
    """
    from .protocol import FER_LIST_FILES, protocol_lists_dir

    folder = protocol_lists_dir() if lists_dir is None else os.fspath(lists_dir)
    kwargs: dict[str, Any] = {
        "root": root,
        "strip_prefix": strip_prefix,
        "num_classes": num_classes,
        "decode": decode,
    }
    reports: list[ListReport] = []
    for files in FER_LIST_FILES.values():
        if files is None:
            continue
        adapt, test = (os.path.join(folder, f) for f in files)
        if not (os.path.exists(adapt) and os.path.exists(test)):
            continue
        reports.append(check_image_list(adapt, test=test, **kwargs))
        if test != adapt:
            reports.append(check_image_list(test, **kwargs))
    return reports


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lacmfer.data.check",
        description="Check FER image lists (path label per line): format, label range, "
        "duplicates, missing/unreadable files and overlap with a test list. Exit status 1 "
        "when a problem is found.",
    )
    parser.add_argument("lists", nargs="*", metavar="LIST", help="image list file(s)")
    parser.add_argument(
        "--protocol",
        action="store_true",
        help="check the six-dataset protocol's lists shipped with lacmfer (all but AffectNet's), "
        "each against its test list, instead of LIST arguments",
    )
    parser.add_argument(
        "--root", help="folder the list paths are relative to; enables the file checks"
    )
    parser.add_argument(
        "--strip-prefix", help="prefix removed from each path first, e.g. ../datasets"
    )
    parser.add_argument("--test", metavar="LIST", help="test list to look for in the lists")
    parser.add_argument("--num-classes", type=int, default=NUM_CLASSES)
    parser.add_argument(
        "--no-decode", action="store_true", help="only open files, do not decode them"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON report")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit status (0 clean, 1 problems, 2 usage error)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.num_classes < 1:
        parser.error(f"--num-classes must be >= 1, got {args.num_classes}")
    if args.protocol and (args.lists or args.test):
        parser.error("--protocol checks the shipped lists; give no LIST and no --test with it")
    if not args.protocol and not args.lists:
        parser.error("give at least one LIST, or --protocol")
    try:
        if args.protocol:
            reports = check_protocol_lists(
                root=args.root,
                strip_prefix=args.strip_prefix,
                num_classes=args.num_classes,
                decode=not args.no_decode,
            )
        else:
            reports = check_image_lists(
                args.lists,
                root=args.root,
                strip_prefix=args.strip_prefix,
                test=args.test,
                num_classes=args.num_classes,
                decode=not args.no_decode,
            )
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([r.to_dict() for r in reports], indent=2))
    else:
        print("\n\n".join(r.format() for r in reports))
    return 1 if any(r.problems for r in reports) else 0
