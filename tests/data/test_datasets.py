"""Image-list, class-folder and FER-2013 CSV datasets on files the tests write."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lacmfer.data import (
    FER2013CSV,
    ImageFolderDataset,
    ImageListDataset,
    native_to_raf,
)

PIL = pytest.importorskip("PIL.Image")


def _png(path: Path, value: int, size: tuple[int, int] = (6, 8), mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((*size, 3), value, dtype=np.uint8)
    arr[0, 0] = (value + 40) % 256
    PIL.fromarray(arr).convert(mode).save(path)


def test_image_list_dataset_as_published(tmp_path: Path) -> None:
    # Layout of the published lists: lists/ next to datasets/, paths start with ../datasets/.
    _png(tmp_path / "datasets" / "X" / "a.png", 10)
    _png(tmp_path / "datasets" / "X" / "b.png", 200, mode="L")
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "x.txt").write_bytes(b"..\\datasets\\X\\a.png 3\r\n\r\n../datasets/X/b.png 6\r\n")
    ds = ImageListDataset(lists / "x.txt", image_size=None)
    assert len(ds) == 2 and ds.labels.tolist() == [3, 6]
    assert ds.keys[0] == os.path.normpath(str(tmp_path / "datasets" / "X" / "a.png"))
    img, label = ds[0]
    assert label == 3 and img.shape == (3, 6, 8)
    assert abs(float(img[0, 1, 1]) - 10 / 255) < 1e-7 and abs(float(img[0, 0, 0]) - 50 / 255) < 1e-7
    grey, _ = ds[1]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    resized = ImageListDataset(lists / "x.txt", image_size=12)
    doubled = ImageListDataset(lists / "x.txt", image_size=12, transform=lambda x: x * 2)
    assert resized[0][0].shape == (3, 12, 12)
    torch.testing.assert_close(doubled[0][0], 2 * resized[0][0])


def test_image_list_dataset_root_and_strip_prefix(tmp_path: Path) -> None:
    _png(tmp_path / "data" / "X" / "a.png", 10)
    (tmp_path / "l.txt").write_text("../datasets/X/a.png 0\n")
    ds = ImageListDataset(tmp_path / "l.txt", tmp_path / "data", strip_prefix="../datasets")
    assert ds.paths == [os.path.normpath(str(tmp_path / "data" / "X" / "a.png"))]
    assert ds[0][0].shape == (3, 112, 112)
    custom = ImageListDataset(
        tmp_path / "l.txt", image_size=4, loader=lambda p: torch.zeros(3, 2, 2)
    )
    assert torch.equal(custom[0][0], torch.zeros(3, 4, 4))


def test_image_list_dataset_rejects_bad_lists(tmp_path: Path) -> None:
    (tmp_path / "l.txt").write_bytes(b"a.png 1\r\nb.png\r\nc.png 12\r\n")
    with pytest.raises(ValueError, match="line 2") as info:
        ImageListDataset(tmp_path / "l.txt")
    assert "line 3: label 12" in str(info.value)
    with pytest.raises(ValueError, match="image_size"):
        (tmp_path / "ok.txt").write_text("a.png 1\n")
        ImageListDataset(tmp_path / "ok.txt", image_size=0)


def test_image_list_dataset_refuses_an_empty_list(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match=r"^`list_file` '.*empty\.txt' lists no image"):
        ImageListDataset(tmp_path / "empty.txt")


def test_image_folder_dataset(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _png(root / "anger" / "1.png", 1)
    _png(root / "Happy" / "2.jpg", 2)
    _png(root / "VL" / "Strong" / "P001" / "Sadness" / "014.jpeg", 3)
    _png(root / "netural" / "sub" / "4.PNG", 4)
    _png(root / "contempt" / "5.png", 5)
    (root / "anger" / "notes.txt").write_text("not an image")
    ds = ImageFolderDataset(root, image_size=8)
    rel = [os.path.relpath(p, root).replace(os.sep, "/") for p in ds.paths]
    assert rel == [
        "Happy/2.jpg",
        "VL/Strong/P001/Sadness/014.jpeg",
        "anger/1.png",
        "netural/sub/4.PNG",
    ]
    assert ds.labels.tolist() == [3, 4, 5, 6]
    assert [os.path.basename(p) for p in ds.skipped] == ["5.png"]
    img, label = ds[2]
    assert img.shape == (3, 8, 8) and label == 5


def test_image_folder_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="root"):
        ImageFolderDataset(tmp_path / "nope")
    _png(tmp_path / "r" / "P001" / "1.png", 1)
    with pytest.raises(ValueError, match="no expression folder"):
        ImageFolderDataset(tmp_path / "r")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no labelled image"):
        ImageFolderDataset(tmp_path / "empty")


@pytest.mark.parametrize("label", [9, 7, -1])
def test_image_folder_dataset_refuses_labels_outside_the_classes(
    tmp_path: Path, label: int
) -> None:
    _png(tmp_path / "r" / "good" / "1.png", 1)
    _png(tmp_path / "r" / "odd" / "2.png", 2)
    labels = {"good": 3, "odd": label}
    with pytest.raises(
        ValueError,
        match=r"^`label_of` gave '.*odd.2\.png' the label "
        + re.escape(f"{label}, outside [0, 7) (num_classes = 7)"),
    ):
        ImageFolderDataset(tmp_path / "r", label_of=labels.__getitem__)
    # The range follows `num_classes`, as for ImageListDataset.
    if label >= 0:
        ds = ImageFolderDataset(tmp_path / "r", label_of=labels.__getitem__, num_classes=10)
        assert ds.labels.tolist() == [3, label]
    with pytest.raises(ValueError, match="num_classes"):
        ImageFolderDataset(tmp_path / "r", label_of=labels.__getitem__, num_classes=0)


def _fer_csv(path: Path, rows: list[tuple[Any, list[int], str]], usage: bool = True) -> None:
    head = "emotion,pixels,Usage" if usage else "emotion,pixels"
    lines = [head]
    for emotion, pixels, split in rows:
        text = " ".join(str(v) for v in pixels)
        lines.append(f"{emotion},{text},{split}" if usage else f"{emotion},{text}")
    path.write_text("\n".join(lines) + "\n")


def test_fer2013_csv(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pix = [rng.integers(0, 256, 2304).tolist() for _ in range(4)]
    rows = [(0, pix[0], "Training"), (5, pix[1], "PublicTest"), (3, pix[2], "PrivateTest")]
    rows.append((6, pix[3], "Training"))
    _fer_csv(tmp_path / "fer.csv", rows)
    train = FER2013CSV(tmp_path / "fer.csv", split="train", image_size=None)
    assert len(train) == 2 and train.rows == [1, 4]
    assert train.labels.tolist() == native_to_raf([0, 6], "FER-2013").tolist() == [5, 6]
    img, label = train[0]
    assert img.shape == (3, 48, 48) and label == 5
    expected = torch.tensor(pix[0], dtype=torch.float32).view(48, 48) / 255  # row-major
    torch.testing.assert_close(img[1], expected, rtol=0, atol=0)
    assert FER2013CSV(tmp_path / "fer.csv", split="val").labels.tolist() == [0]
    assert FER2013CSV(tmp_path / "fer.csv", split="test").labels.tolist() == [3]
    every = FER2013CSV(tmp_path / "fer.csv", split="all", image_size=112)
    assert len(every) == 4 and every[1][0].shape == (3, 112, 112)
    assert len(set(every.keys)) == 4


def test_fer2013_csv_errors(tmp_path: Path) -> None:
    good = [0] * 2304
    _fer_csv(tmp_path / "short.csv", [(0, good, "Training"), (1, [0] * 2300, "Training")])
    with pytest.raises(ValueError, match="row 2: expected 2304 pixels"):
        FER2013CSV(tmp_path / "short.csv")
    _fer_csv(tmp_path / "range.csv", [(0, [*good[:-1], 300], "Training")])
    with pytest.raises(ValueError, match="row 1: pixel values"):
        FER2013CSV(tmp_path / "range.csv")
    _fer_csv(tmp_path / "label.csv", [(9, good, "Training")])
    with pytest.raises(ValueError, match="codes in"):
        FER2013CSV(tmp_path / "label.csv")
    for bad in ("+3", "1_0", "3.0", "x"):
        _fer_csv(tmp_path / "code.csv", [(bad, good, "Training")])
        with pytest.raises(
            ValueError, match=rf"row 1: emotion '{re.escape(bad)}' is not an integer"
        ):
            FER2013CSV(tmp_path / "code.csv")
    _fer_csv(tmp_path / "negative.csv", [(-1, good, "Training")])
    with pytest.raises(ValueError, match="codes in"):
        FER2013CSV(tmp_path / "negative.csv")
    _fer_csv(tmp_path / "usage.csv", [(0, good, "Validation")])
    with pytest.raises(ValueError, match="Usage must be one of"):
        FER2013CSV(tmp_path / "usage.csv", split="all")
    _fer_csv(tmp_path / "nousage.csv", [(0, good, "")], usage=False)
    with pytest.raises(ValueError, match="split` must be 'all'"):
        FER2013CSV(tmp_path / "nousage.csv")
    assert len(FER2013CSV(tmp_path / "nousage.csv", split="all")) == 1
    (tmp_path / "cols.csv").write_text("label,pixels\n0,1 2\n")
    with pytest.raises(ValueError, match="'emotion' column"):
        FER2013CSV(tmp_path / "cols.csv")
    with pytest.raises(ValueError, match="split"):
        FER2013CSV(tmp_path / "nousage.csv", split="dev")
