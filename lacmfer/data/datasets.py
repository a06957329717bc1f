r"""Datasets over real FER data: image lists, class folders and FER-2013's CSV.

All three return ``(image, label)`` with ``image`` an RGB float tensor ``(3, S, S)`` in ``[0, 1]``
(grey images repeated on three channels, resized with :func:`~lacmfer.data.image.resize`) and
``label`` an ``int`` in RAF order. They also expose

* ``labels`` -- an ``(N,)`` int64 tensor of all labels (read without decoding any image);
* ``keys`` -- one hashable identity per sample (the resolved file path, or CSV file and row), used
  by :func:`~lacmfer.data.leave_one_domain_out` to find target test images in an adaptation set.

Decoding needs Pillow (``pip install lacmfer[images]``) except for :class:`FER2013CSV`, whose
pixels are text.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .._checks import check_choice, check_optional_positive_int, check_positive_int
from .image import load_image, resize
from .labels import NUM_CLASSES, folder_label, native_to_raf
from .lists import _LABEL, read_image_list, resolve_list_path

__all__ = [
    "FER2013CSV",
    "FER2013_USAGE",
    "IMAGE_EXTENSIONS",
    "ImageFolderDataset",
    "ImageListDataset",
]

PathLike = Union[str, "os.PathLike[str]"]
Transform = Callable[[Tensor], Tensor]

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".tif",
    ".tiff",
    ".webp",
    ".pgm",
    ".ppm",
)
"""File extensions :class:`ImageFolderDataset` treats as images (case-insensitive)."""

FER2013_USAGE: dict[str, str] = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
"""FER-2013 ``Usage`` column -> split name. The protocol's ``FER2013_test.txt`` is PrivateTest."""


def _finish(image: Tensor, image_size: Optional[int], transform: Optional[Transform]) -> Tensor:
    if image_size is not None:
        image = resize(image, image_size)
    return transform(image) if transform is not None else image


class ImageListDataset(Dataset[tuple[Tensor, int]]):
    r"""Images named by a ``path label`` list file (see :mod:`lacmfer.data.lists`).

    The list is read when the dataset is built (malformed lines and out-of-range labels raise with
    their line numbers); images are decoded when indexed.

    Args:
        list_file: The list.
        root: Folder the list's paths are relative to. Default: the list's own folder, as the
            published lists expect (their paths start with ``../datasets/``).
        image_size: Side ``S`` of the returned square images (``None``: keep the file's size).
        strip_prefix: Prefix removed from every path before joining, e.g. ``"../datasets"``
            with ``root`` the folder that holds the dataset folders.
        num_classes: Labels must lie in ``[0, num_classes)``.
        transform: Applied to each ``(3, S, S)`` image after resizing.
        loader: Reads a path into a ``(3, H, W)`` float image (default: :func:`load_image`).

    Shape:
        - ``dataset[i][0]``: ``(3, S, S)`` float32 in ``[0, 1]``.

    Raises:
        ValueError: On malformed lines, labels outside ``[0, num_classes)`` or a list that names
            no image.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "l.txt").write_bytes(b"imgs\\a.png 3\r\nimgs\\b.png 6\r\n")
        >>> ds = ImageListDataset(d / "l.txt")
        >>> len(ds), ds.labels.tolist(), ds.paths[0].endswith("imgs" + os.sep + "a.png")
        (2, [3, 6], True)
    """

    def __init__(
        self,
        list_file: PathLike,
        root: Optional[PathLike] = None,
        *,
        image_size: Optional[int] = 112,
        strip_prefix: Optional[str] = None,
        num_classes: int = NUM_CLASSES,
        transform: Optional[Transform] = None,
        loader: Optional[Callable[[str], Tensor]] = None,
    ) -> None:
        self.list_file = os.fspath(list_file)
        self.root = os.fspath(root) if root is not None else os.path.dirname(self.list_file)
        self.image_size = check_optional_positive_int(image_size, "image_size")
        self.num_classes = num_classes
        pairs = read_image_list(self.list_file, num_classes=num_classes)
        if not pairs:
            raise ValueError(
                f"`list_file` {self.list_file!r} lists no image (the file is empty or blank)"
            )
        self.relpaths: list[str] = [p for p, _ in pairs]
        self.paths: list[str] = [
            resolve_list_path(p, root=self.root or ".", strip_prefix=strip_prefix)
            for p in self.relpaths
        ]
        self.labels: Tensor = torch.tensor([y for _, y in pairs], dtype=torch.int64)
        self.transform = transform
        self.loader: Callable[[str], Tensor] = loader if loader is not None else load_image

    @property
    def keys(self) -> list[str]:
        """Sample identities: the resolved, normalised file paths."""
        return self.paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.loader(self.paths[index])
        return _finish(image, self.image_size, self.transform), int(self.labels[index])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.list_file!r}, root={self.root!r}, n={len(self)}, "
            f"image_size={self.image_size})"
        )


class ImageFolderDataset(Dataset[tuple[Tensor, int]]):
    """Images sorted into expression folders (CK+, Oulu-CASIA, SFEW, JAFFE sorted by class, ...).

    Every image file under ``root`` (searched recursively, sorted by path) gets the class of the
    *innermost* folder between ``root`` and the file whose name is an expression name
    (:func:`~lacmfer.data.folder_label`, case-insensitive: ``anger``/``Angry``, ``happy``/
    ``Happiness``, ...), so ``CK+/anger/x.png``, ``Oulu_CASIA/VL/Strong/P001/Anger/014.jpeg`` and
    ``SFEW/Train/Angry/x.png`` all work. Images under a contempt folder (no RAF class) are skipped
    and listed in ``skipped``.

    Args:
        root: The top folder.
        image_size: Side ``S`` of the returned images (``None``: keep the file's size).
        extensions: File extensions to include (case-insensitive).
        label_of: Maps a folder name to a RAF label in ``[0, num_classes)``, ``None`` (skip) or
            raises ``ValueError`` (not an expression folder); default
            :func:`~lacmfer.data.folder_label`.
        num_classes: Labels must lie in ``[0, num_classes)``.
        transform: Applied to each ``(3, S, S)`` image.
        loader: Reads a path into a ``(3, H, W)`` float image (default: :func:`load_image`).

    Raises:
        FileNotFoundError: If ``root`` is not a folder.
        ValueError: If no image was found, some image has no expression folder above it, or
            ``label_of`` gives an image a label outside ``[0, num_classes)`` (the message names
            the file and the label).
    """

    def __init__(
        self,
        root: PathLike,
        *,
        image_size: Optional[int] = 112,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        label_of: Callable[[str], Optional[int]] = folder_label,
        num_classes: int = NUM_CLASSES,
        transform: Optional[Transform] = None,
        loader: Optional[Callable[[str], Tensor]] = None,
    ) -> None:
        self.root = os.fspath(root)
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"`root` must be a folder, got {self.root!r}")
        self.image_size = check_optional_positive_int(image_size, "image_size")
        self.num_classes = check_positive_int(num_classes, "num_classes")
        exts = tuple(e.lower() for e in extensions)
        paths: list[str] = []
        labels: list[int] = []
        self.skipped: list[str] = []
        unlabelled: list[str] = []
        # folder name -> (whether it is an expression folder, its label or None to skip)
        cache: dict[str, tuple[bool, Optional[int]]] = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            rel_parts = Path(os.path.relpath(dirpath, self.root)).parts
            label: Optional[int] = None
            found = False
            for part in reversed(rel_parts):
                if part not in cache:
                    try:
                        cache[part] = (True, label_of(part))
                    except ValueError:
                        cache[part] = (False, None)
                found, label = cache[part]
                if found:
                    break
            for name in sorted(filenames):
                if not name.lower().endswith(exts):
                    continue
                full = os.path.join(dirpath, name)
                if not found:
                    unlabelled.append(full)
                elif label is None:
                    self.skipped.append(full)
                elif not 0 <= label < self.num_classes:
                    raise ValueError(
                        f"`label_of` gave {full!r} the label {label!r}, outside "
                        f"[0, {self.num_classes}) (num_classes = {self.num_classes})"
                    )
                else:
                    paths.append(full)
                    labels.append(label)
        if unlabelled:
            raise ValueError(
                f"{len(unlabelled)} image(s) under `root` {self.root!r} have no expression folder "
                f"above them, e.g. {unlabelled[:3]}"
            )
        if not paths:
            raise ValueError(f"no labelled image with extension {exts} under `root` {self.root!r}")
        self.paths: list[str] = paths
        self.labels: Tensor = torch.tensor(labels, dtype=torch.int64)
        self.transform = transform
        self.loader: Callable[[str], Tensor] = loader if loader is not None else load_image

    @property
    def keys(self) -> list[str]:
        """Sample identities: the normalised file paths."""
        return [os.path.normpath(p) for p in self.paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.loader(self.paths[index])
        return _finish(image, self.image_size, self.transform), int(self.labels[index])


class FER2013CSV(Dataset[tuple[Tensor, int]]):
    """FER-2013 from Kaggle's ``fer2013.csv`` (columns ``emotion``, ``pixels``, ``Usage``).

    ``pixels`` holds 2304 space-separated grey values (48×48, row-major). Labels are mapped from
    FER-2013's native order to RAF order (:func:`~lacmfer.data.native_to_raf`). ``Usage`` selects
    the split: ``Training`` -> ``"train"`` (28 709 rows), ``PublicTest`` -> ``"val"`` (3589),
    ``PrivateTest`` -> ``"test"`` (3589, the protocol's FER-2013 test list). A CSV without a
    ``Usage`` column (Kaggle's ``train.csv``/``test.csv``) is read with ``split="all"``.

    Args:
        csv_file: The CSV file.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        image_size: Side ``S`` of the returned images (``None``: 48).
        transform: Applied to each ``(3, S, S)`` image.

    Attributes:
        pixels: ``(N, 48, 48)`` uint8 tensor.
        labels: ``(N,)`` int64 labels in RAF order.
        rows: 1-based CSV data-row numbers of the samples.

    Raises:
        ValueError: On missing columns, a row whose pixel count is not 2304, pixel values outside
            0..255, unknown labels or ``Usage`` values; the message gives the row number.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "fer.csv"
        >>> px = " ".join(["128"] * 2304)
        >>> _ = p.write_text(f"emotion,pixels,Usage\\n0,{px},Training\\n3,{px},PrivateTest\\n")
        >>> ds = FER2013CSV(p, split="all", image_size=64)
        >>> ds.labels.tolist(), ds[0][0].shape
        ([5, 3], torch.Size([3, 64, 64]))
    """

    SIDE = 48

    def __init__(
        self,
        csv_file: PathLike,
        *,
        split: str = "train",
        image_size: Optional[int] = 112,
        transform: Optional[Transform] = None,
    ) -> None:
        check_choice(split, "split", ("train", "val", "test", "all"))
        self.csv_file = os.fspath(csv_file)
        self.split = split
        self.image_size = check_optional_positive_int(image_size, "image_size")
        self.transform = transform
        with open(self.csv_file, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            try:
                header = [h.strip().lower() for h in next(reader)]
            except StopIteration:
                raise ValueError(f"`csv_file` {self.csv_file!r} is empty") from None
            rows = list(reader)
        for column in ("emotion", "pixels"):
            if column not in header:
                raise ValueError(
                    f"`csv_file` {self.csv_file!r} needs an {column!r} column, got {header}"
                )
        i_emotion, i_pixels = header.index("emotion"), header.index("pixels")
        i_usage = header.index("usage") if "usage" in header else None
        if i_usage is None and split != "all":
            raise ValueError(
                f"`csv_file` {self.csv_file!r} has no 'Usage' column, so `split` must be 'all', "
                f"got {split!r}"
            )
        keep_rows: list[int] = []
        codes: list[int] = []
        texts: list[str] = []
        for number, row in enumerate(rows, start=1):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) <= max(i_emotion, i_pixels, i_usage or 0):
                raise ValueError(f"`csv_file` row {number} has {len(row)} columns: {row[:2]}")
            if i_usage is not None:
                usage = row[i_usage].strip()
                if usage not in FER2013_USAGE:
                    raise ValueError(
                        f"`csv_file` row {number}: Usage must be one of {list(FER2013_USAGE)}, "
                        f"got {usage!r}"
                    )
                if split != "all" and FER2013_USAGE[usage] != split:
                    continue
            emotion = row[i_emotion].strip()
            if _LABEL.fullmatch(emotion) is None:  # int() would take '+3', '1_0', ' ٣'
                raise ValueError(f"`csv_file` row {number}: emotion {emotion!r} is not an integer")
            codes.append(int(emotion))
            text = row[i_pixels].strip()
            count = len(text.split())
            if count != self.SIDE * self.SIDE:
                raise ValueError(
                    f"`csv_file` row {number}: expected {self.SIDE * self.SIDE} pixels "
                    f"(48x48), got {count}"
                )
            texts.append(text)
            keep_rows.append(number)
        values = (
            np.array(" ".join(texts).split(), dtype=np.int64)
            if texts
            else np.zeros(0, dtype=np.int64)
        )
        if values.size and (values.min() < 0 or values.max() > 255):
            flat = int(np.flatnonzero((values < 0) | (values > 255))[0])
            raise ValueError(
                f"`csv_file` row {keep_rows[flat // (self.SIDE * self.SIDE)]}: pixel values "
                "must lie in 0..255"
            )
        self.pixels: Tensor = torch.from_numpy(values.astype(np.uint8)).view(
            -1, self.SIDE, self.SIDE
        )
        try:
            self.labels: Tensor = native_to_raf(torch.tensor(codes, dtype=torch.int64), "FER-2013")
        except ValueError as err:
            raise ValueError(f"`csv_file` {self.csv_file!r}: {err}") from None
        self.rows: list[int] = keep_rows

    @property
    def keys(self) -> list[str]:
        """Sample identities: ``"<csv file>#<row>"``."""
        return [f"{os.path.normpath(self.csv_file)}#{r}" for r in self.rows]

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        grey = self.pixels[index].to(torch.float32).div(255.0)
        image = grey.unsqueeze(0).expand(3, -1, -1).contiguous()
        return _finish(image, self.image_size, self.transform), int(self.labels[index])
