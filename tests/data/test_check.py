"""The list checker on files the tests write and on the protocol's real lists."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lacmfer.data import (
    FER_LIST_FILES,
    check_image_list,
    check_images,
    check_protocol_lists,
    protocol_lists_dir,
)
from lacmfer.data.check import main


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().out


def _write_images(root: Path) -> None:
    from PIL import Image

    (root / "imgs").mkdir(parents=True)
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(root / "imgs" / name)
    good = (root / "imgs" / "a.png").read_bytes()
    (root / "imgs" / "corrupt.png").write_bytes(good[:30])  # truncated: opens, does not decode
    (root / "imgs" / "empty.png").write_bytes(b"")


@pytest.fixture
def messy(tmp_path: Path) -> Path:
    pytest.importorskip("PIL.Image")
    _write_images(tmp_path)
    lines = [
        b"imgs\\a.png 0",  # backslashes
        b"imgs/b.png 3",
        b"",
        b"imgs/a.png 0",  # duplicate of line 1
        b"imgs/b.png 4",  # duplicate of line 2 with another label
        b"imgs/missing.png 1",
        b"imgs/corrupt.png 2",
        b"imgs/empty.png 2",
        b"imgs/c.png 7",  # out of range
        b"just-a-path",  # malformed
    ]
    (tmp_path / "train.txt").write_bytes(b"\r\n".join(lines) + b"\r\n")
    (tmp_path / "test.txt").write_bytes(b"imgs/b.png 3\r\nimgs/c.png 5\r\nimgs/x.png 1\r\n")
    return tmp_path


def test_report_on_a_messy_list(messy: Path) -> None:
    r = check_image_list(messy / "train.txt", root=messy, test=messy / "test.txt")
    assert r.entries == 8 and r.total_lines == 10 and r.line_ends["crlf"] == 10
    assert r.backslash_paths == 1
    assert r.malformed == [(10, "expected 2 fields <path> <label>, got 1", "just-a-path")]
    assert r.out_of_range == [(9, 7)]
    assert r.histogram == [2, 1, 2, 1, 1, 0, 0]
    assert (r.duplicate_lines, r.duplicate_images, r.conflicting_duplicates) == (2, 2, 1)
    assert [Path(p).name for _, p in r.missing] == ["missing.png"]
    assert sorted(Path(p).name for _, p, _ in r.unreadable) == ["corrupt.png", "empty.png"]
    assert r.decode_checked and r.files_checked
    assert (r.test_images, r.overlap, r.overlap_label_mismatch) == (3, 2, 2)
    assert len(r.problems) == 6


def test_cli_text_json_and_exit_codes(messy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(
        capsys, str(messy / "train.txt"), "--root", str(messy), "--test", str(messy / "test.txt")
    )
    assert code == 1
    assert "malformed lines: 1" in out and "line 10" in out
    assert "missing files: 1" in out and "unreadable files (decoded): 2" in out
    assert "contains 2 of its 3 images" in out
    code, out = _run(capsys, str(messy / "train.txt"), "--json")
    (rep,) = json.loads(out)
    assert code == 1 and rep["entries"] == 8 and rep["files_checked"] is False
    assert rep["problems"]
    # --no-decode only opens files: the truncated PNG passes, the empty file does not.
    r = check_image_list(messy / "train.txt", root=messy, decode=False)
    assert [Path(p).name for _, p, _ in r.unreadable] == ["empty.png"]
    # A clean list exits 0.
    (messy / "clean.txt").write_text("imgs/a.png 0\nimgs/b.png 6\n")
    code, out = _run(capsys, str(messy / "clean.txt"), "--root", str(messy))
    assert code == 0 and "=> OK" in out
    # Usage errors exit 2.
    code, _ = _run(capsys, str(messy / "nope.txt"))
    assert code == 2


def test_paths_resolve_relative_to_each_list(tmp_path: Path) -> None:
    # Without --root, identities are relative to each list's folder: the same file named from
    # two folders is one image.
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "l.txt").write_text("../data/x.jpg 1\n")
    (tmp_path / "b" / "t.txt").write_text("..\\data\\x.jpg 1\r\n../data/y.jpg 2\r\n")
    r = check_image_list(tmp_path / "a" / "l.txt", test=tmp_path / "b" / "t.txt")
    assert r.overlap == 1 and r.test_images == 2


def test_module_runs_as_a_program(tmp_path: Path) -> None:
    (tmp_path / "l.txt").write_text("a.jpg 1\na.jpg 1\n")
    out = subprocess.run(
        [sys.executable, "-m", "lacmfer.data.check", str(tmp_path / "l.txt")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 1, out.stderr
    assert "duplicate lines: 1" in out.stdout
    assert "Warning" not in out.stderr, out.stderr  # e.g. runpy's "found in sys.modules"


# --- the published lists ---------------------------------------------------------------------


def test_raf_train_contains_all_of_raf_test(
    fer_lists: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _run(
        capsys, str(fer_lists / "RAF_train.txt"), "--test", str(fer_lists / "RAF_test.txt")
    )
    assert code == 1
    assert "contains 3031 of its 3031 images (100.0%), labels differ on 0" in out
    r = check_image_list(fer_lists / "RAF_train.txt", test=fer_lists / "RAF_test.txt")
    assert (r.entries, r.overlap, r.test_images) == (15206, 3031, 3031)
    assert not r.malformed and not r.out_of_range and not r.duplicate_lines


def test_real_lists_other_findings(fer_lists: Path) -> None:
    fer = check_image_list(fer_lists / "FER2013_train.txt", test=fer_lists / "FER2013_test.txt")
    assert fer.problems == [] and fer.entries == 28709
    ck = check_image_list(fer_lists / "CK.txt", test=fer_lists / "CK.txt")
    assert ck.overlap == ck.test_images == 1050  # one list for adaptation and test
    oulu = check_image_list(fer_lists / "Oulu.txt")
    assert (oulu.duplicate_lines, oulu.duplicate_images, oulu.conflicting_duplicates) == (
        1068,
        507,
        0,
    )
    assert oulu.line_ends["lf"] == 2988


# --- the lists shipped with the package ------------------------------------------------------


def test_protocol_lists_are_shipped() -> None:
    folder = protocol_lists_dir()
    names = {p.name for p in folder.iterdir()}
    want = {f for files in FER_LIST_FILES.values() if files is not None for f in files}
    assert want == {"CK.txt", "JAFFE.txt", "Oulu.txt", "RAF_train.txt", "RAF_test.txt"} | {
        "FER2013_train.txt",
        "FER2013_test.txt",
    }
    assert want | {"README.md"} <= names


def test_check_protocol_lists_reports_the_known_flaws() -> None:
    reports = {Path(r.list_file).name + " vs " + str(r.test_list and Path(r.test_list).name): r
               for r in check_protocol_lists()}  # fmt: skip
    assert sorted(reports) == sorted(
        [
            "CK.txt vs CK.txt",
            "JAFFE.txt vs JAFFE.txt",
            "Oulu.txt vs Oulu.txt",
            "RAF_train.txt vs RAF_test.txt",
            "RAF_test.txt vs None",
            "FER2013_train.txt vs FER2013_test.txt",
            "FER2013_test.txt vs None",
        ]
    )
    raf = reports["RAF_train.txt vs RAF_test.txt"]
    assert (raf.overlap, raf.test_images) == (3031, 3031)
    for name, n in (("CK.txt", 1050), ("JAFFE.txt", 213), ("Oulu.txt", 1920)):
        r = reports[f"{name} vs {name}"]
        assert r.overlap == r.test_images == n  # one list for adaptation and test
    oulu = reports["Oulu.txt vs Oulu.txt"]
    assert (oulu.entries, oulu.duplicate_lines, oulu.duplicate_images) == (2988, 1068, 507)
    for name in ("RAF_test.txt vs None", "FER2013_train.txt vs FER2013_test.txt"):
        assert reports[name].problems == []


def test_protocol_flag_runs_as_a_program() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "lacmfer.data.check", "--protocol"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 1  # the published protocol has flaws
    assert out.stderr == ""
    assert "contains 3031 of the 3031 images of the test list RAF_test.txt" in out.stdout
    assert "1068 duplicate line(s) over 507 image(s)" in out.stdout
    assert out.stdout.count("=> ") == 7


def test_protocol_flag_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(capsys, "--protocol", "--json")
    assert code == 1
    assert [Path(r["list_file"]).name for r in json.loads(out)] == [
        "CK.txt",
        "JAFFE.txt",
        "Oulu.txt",
        "RAF_train.txt",
        "RAF_test.txt",
        "FER2013_train.txt",
        "FER2013_test.txt",
    ]


@pytest.mark.parametrize(
    "argv, match",
    [
        ((), "at least one LIST"),
        (("--protocol", "a.txt"), "--protocol"),
        (("--protocol", "--test", "t.txt"), "--protocol"),
    ],
)
def test_protocol_flag_usage_errors(
    argv: tuple[str, ...], match: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    assert info.value.code == 2
    assert match in capsys.readouterr().err


@pytest.mark.parametrize("decode", [False, True])
def test_check_images_names_the_files_a_run_could_not_read(tmp_path: Path, decode: bool) -> None:
    image = pytest.importorskip("PIL.Image")
    good, cut, junk = tmp_path / "good.png", tmp_path / "cut.png", tmp_path / "junk.jpg"
    image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(good)
    image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        cut
    )
    cut.write_bytes(cut.read_bytes()[:120])  # a valid header, the pixels cut short
    junk.write_bytes(b"not an image at all")
    bad = check_images([good, cut, junk, tmp_path / "gone.png"], decode=decode)
    assert (
        bad[str(junk)] == "UnidentifiedImageError"
        and bad[str(tmp_path / "gone.png")] == "FileNotFoundError"
    )
    assert str(good) not in bad
    assert (str(cut) in bad) == decode  # only decoding the pixels finds a truncated file
