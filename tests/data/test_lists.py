"""Reading image lists exactly as published: line ends, separators, blanks, malformed lines."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from lacmfer.data import (
    class_histogram,
    normalize_list_path,
    parse_image_list,
    read_image_list,
    resolve_list_path,
)


def _is_label(text: str) -> bool:
    """An optional minus sign, then one or more of the ASCII digits 0-9."""
    digits = text[1:] if text.startswith("-") else text
    return digits != "" and all(ch in "0123456789" for ch in digits)


def _reference_parse(data: bytes) -> tuple[list[tuple[int, str, int]], list[int]]:
    """Naive transcription: split on any line end, two fields, ASCII integer label."""
    text = data.decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")
    good, bad = [], []
    for number, line in enumerate(text.split("\n"), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) == 2 and _is_label(fields[1]):
            good.append((number, fields[0].replace("\\", "/"), int(fields[1])))
        else:
            bad.append(number)
    return good, bad


@pytest.mark.parametrize("end", [b"\r\n", b"\n", b"\r"])
@pytest.mark.parametrize("final_newline", [True, False])
def test_line_ends_and_reference(tmp_path: Path, end: bytes, final_newline: bool) -> None:
    lines = [
        b"..\\datasets\\AffectNet\\0\\a.jpg 6",
        b"",
        b"  imgs/b.png   3  ",
        b"imgs/c.png",
        b"imgs/d.png 2 extra",
        b"imgs/e.png x",
        b"imgs/f.png -1",
        b"   ",
        b"imgs/g.png 9",
    ]
    data = b"\xef\xbb\xbf" + end.join(lines) + (end if final_newline else b"")
    path = tmp_path / "list.txt"
    path.write_bytes(data)
    lst = parse_image_list(path)
    good, bad = _reference_parse(data)
    assert [(e.line, e.path, e.label) for e in lst.entries] == good
    assert [m.line for m in lst.malformed] == bad == [4, 5, 6]
    assert lst.total_lines == 9
    key = {b"\r\n": "crlf", b"\n": "lf", b"\r": "cr"}[end]
    assert lst.line_ends[key] == 9 - (0 if final_newline else 1)
    assert lst.entries[0].raw_path == "..\\datasets\\AffectNet\\0\\a.jpg"


def test_read_image_list_reports_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(b"a.jpg 1\r\nb.jpg\r\nc.jpg 7\r\nd.jpg 3.0\r\n")
    with pytest.raises(ValueError, match="line 2: expected 2 fields") as info:
        read_image_list(path)
    message = str(info.value)
    assert "line 3: label 7 outside [0, 7)" in message
    assert "line 4: label '3.0' is not an integer" in message
    good = tmp_path / "good.txt"
    good.write_bytes(b"x\\a.jpg 1\r\n\r\ny/b.jpg 6")
    assert read_image_list(good) == [("x/a.jpg", 1), ("y/b.jpg", 6)]


# Labels Python's int() reads but an image list must not hold: digit-group underscores, a plus
# sign, surrounding signs, non-ASCII digits (Arabic-Indic three, full-width one).
@pytest.mark.parametrize("label", ["1_0", "+3", "--1", "-", "3-", "\u0663", "\uff11", "0_0"])
def test_labels_are_ascii_integers_only(tmp_path: Path, label: str) -> None:
    lst = parse_image_list("l.txt", text=f"a.jpg 1\nb.jpg {label}\nc.jpg 2\n")
    assert [(e.line, e.label) for e in lst.entries] == [(1, 1), (3, 2)]
    assert [(m.line, m.text, m.reason) for m in lst.malformed] == [
        (2, f"b.jpg {label}", f"label {label!r} is not an integer")
    ]
    path = tmp_path / "list.txt"
    path.write_text(f"a.jpg 1\nb.jpg {label}\n", encoding="utf-8")
    with pytest.raises(ValueError) as info:
        read_image_list(path)
    message = str(info.value)
    assert repr(str(path)) in message
    assert f"line 2: label {label!r} is not an integer: {f'b.jpg {label}'!r}" in message


def test_negative_labels_parse_and_are_out_of_range(tmp_path: Path) -> None:
    lst = parse_image_list("l.txt", text="a.jpg -1\nb.jpg -0\nc.jpg 007\n")
    assert [e.label for e in lst.entries] == [-1, 0, 7] and not lst.malformed
    path = tmp_path / "neg.txt"
    path.write_text("a.jpg -1\nb.jpg 0\n")
    with pytest.raises(ValueError, match=r"line 1: label -1 outside \[0, 7\)"):
        read_image_list(path)


def test_read_image_list_num_classes(tmp_path: Path) -> None:
    path = tmp_path / "l.txt"
    path.write_text("a.jpg 7\n")
    with pytest.raises(ValueError, match="outside"):
        read_image_list(path)
    assert read_image_list(path, num_classes=8) == [("a.jpg", 7)]
    with pytest.raises(ValueError, match="num_classes"):
        read_image_list(path, num_classes=0)


def test_non_utf8_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "latin.txt"
    path.write_bytes(b"caf\xe9.jpg 1\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        parse_image_list(path)
    with pytest.raises(FileNotFoundError):
        parse_image_list(tmp_path / "nope.txt")


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("..\\datasets\\CK+\\anger\\x.png", "../datasets/CK+/anger/x.png"),
        ("a//b/./c.jpg", "a/b/c.jpg"),
        ("a/b/../c.jpg", "a/c.jpg"),
        ("../../x.jpg", "../../x.jpg"),
    ],
)
def test_normalize_list_path(raw: str, norm: str) -> None:
    assert normalize_list_path(raw) == norm


def test_resolve_list_path() -> None:
    root = os.path.join(os.sep, "data", "lists")
    got = resolve_list_path("..\\datasets\\RAF-DB\\x.jpg", root=root)
    assert got == os.path.normpath(os.path.join(os.sep, "data", "datasets", "RAF-DB", "x.jpg"))
    got = resolve_list_path("../datasets/RAF-DB/x.jpg", root="/d", strip_prefix="../datasets/")
    assert got == os.path.normpath("/d/RAF-DB/x.jpg")
    assert resolve_list_path("a/b.jpg") == os.path.normpath("a/b.jpg")


def test_class_histogram_reference() -> None:
    labels = [0, 6, 6, 3, -1, 7, 3, 3]
    ref = [sum(1 for y in labels if y == k) for k in range(7)]
    assert class_histogram(labels) == ref
    assert class_histogram([], 3) == [0, 0, 0]


@pytest.mark.parametrize(
    "labels",
    [
        [0, 6, 6, 3, -1, 7, 3, 3],
        (0, 6, 6, 3, -1, 7, 3, 3),
        iter([0, 6, 6, 3, -1, 7, 3, 3]),
        [np.int64(0), np.int32(6), 6, np.uint8(3), -1, 7, 3, 3],
        np.array([0, 6, 6, 3, -1, 7, 3, 3], dtype=np.int16),
        torch.tensor([0, 6, 6, 3, -1, 7, 3, 3], dtype=torch.int32),
        torch.tensor([[0, 6, 6, 3], [-1, 7, 3, 3]]),
        [torch.tensor(0), torch.tensor(6), 6, 3, -1, 7, 3, 3],
    ],
    ids=["list", "tuple", "iterator", "numpy-ints", "ndarray", "int32", "2d", "0d-tensors"],
)
def test_class_histogram_accepts_integers(labels: object) -> None:
    assert class_histogram(labels) == [1, 0, 0, 3, 0, 0, 2]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "labels",
    [
        torch.tensor([0.5, 3.7]),
        torch.tensor([0.0, 3.0], dtype=torch.float64),
        torch.tensor([True, False]),
        torch.tensor([1 + 0j]),
        [0.5, 3.7],
        [0, 3.0],
        [True, 3],
        np.array([0.5, 3.7]),
        np.array([True, False]),
        [torch.tensor(1.5)],
        [torch.tensor(True)],
        [torch.tensor([1, 2])],
    ],
    ids=[
        "float32",
        "float64",
        "bool",
        "complex",
        "floats",
        "int-and-float",
        "bool-item",
        "float-ndarray",
        "bool-ndarray",
        "float-0d",
        "bool-0d",
        "1d-item",
    ],
)
def test_class_histogram_rejects_non_integer_labels(labels: object) -> None:
    with pytest.raises(TypeError, match="`labels` must"):
        class_histogram(labels)  # type: ignore[arg-type]


# --- the published lists ---------------------------------------------------------------------

README_LINES = {
    "CK.txt": 1050,
    "JAFFE.txt": 213,
    "Oulu.txt": 2988,
    "RAF_train.txt": 15206,
    "RAF_test.txt": 3031,
    "FER2013_train.txt": 28709,
    "FER2013_test.txt": 3589,
}


@pytest.mark.parametrize("name", sorted(README_LINES))
def test_real_lists_parse_completely(fer_lists: Path, name: str) -> None:
    data = (fer_lists / name).read_bytes()
    lst = parse_image_list(fer_lists / name)
    assert len(lst.entries) == README_LINES[name]
    assert not lst.malformed
    assert all(0 <= e.label < 7 for e in lst.entries)
    # CRLF everywhere but Oulu.txt (README): every line end the parser counted is of that kind.
    if name == "Oulu.txt":
        assert lst.line_ends["crlf"] == 0 and lst.line_ends["lf"] > 0
    else:
        assert lst.line_ends["lf"] == 0 and lst.line_ends["crlf"] == data.count(b"\r\n") > 0
    good, bad = _reference_parse(data)
    assert not bad and len(good) == README_LINES[name]
