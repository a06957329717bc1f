"""Decoding to RGB float tensors (Pillow optional) and torch resizing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lacmfer.data import decode_image, load_image, resize, to_rgb

PIL = pytest.importorskip("PIL.Image")


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    img = PIL.fromarray(array) if mode is None else PIL.fromarray(array).convert(mode)
    img.save(path)


def test_rgb_png_roundtrip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    _save(tmp_path / "a.png", arr)
    x = load_image(tmp_path / "a.png")
    assert x.shape == (3, 5, 7) and x.dtype == torch.float32
    expected = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(x, expected, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "LA"])
def test_modes_become_rgb(tmp_path: Path, mode: str) -> None:
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    ext = "jpg" if mode == "CMYK" else "png"
    if mode == "LA":
        ext = "png"
    _save(tmp_path / f"a.{ext}", arr, mode)
    x = load_image(tmp_path / f"a.{ext}")
    assert x.shape == (3, 4, 6)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    if mode in ("L", "LA"):
        assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
        grey = np.asarray(PIL.fromarray(arr).convert("L"), dtype=np.float32) / 255
        torch.testing.assert_close(x[0], torch.from_numpy(grey), rtol=0, atol=0)


def test_sixteen_bit_grey(tmp_path: Path) -> None:
    arr = np.array([[0, 32768], [65535, 1000]], dtype=np.uint16)
    PIL.fromarray(arr).save(tmp_path / "g.png")
    x = load_image(tmp_path / "g.png")
    assert x.shape == (3, 2, 2)
    torch.testing.assert_close(x[0], torch.from_numpy(arr.astype(np.float32) / 65535))


def test_big_endian_sixteen_bit_grey(tmp_path: Path) -> None:
    arr = np.array([[0, 1000], [65535, 300]], dtype=np.uint16)
    img = PIL.frombytes("I;16B", (2, 2), arr.astype(">u2").tobytes())
    img.save(tmp_path / "g.tif")
    with PIL.open(tmp_path / "g.tif") as back:
        assert back.mode == "I;16B"  # Pillow keeps the byte order of the file
    x = load_image(tmp_path / "g.tif")
    torch.testing.assert_close(x[0], torch.from_numpy(arr.astype(np.float32) / 65535))
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])


def test_thirty_two_bit_integer_grey_within_sixteen_bits(tmp_path: Path) -> None:
    arr = np.array([[0, 30000], [65535, 1]], dtype=np.int32)
    PIL.fromarray(arr).save(tmp_path / "i.tif")
    x = load_image(tmp_path / "i.tif")
    torch.testing.assert_close(x[0], torch.from_numpy(arr.astype(np.float32) / 65535))


@pytest.mark.parametrize(
    "array, mode",
    [
        (np.array([[0.0, 0.5], [1.0, 0.25]], dtype=np.float32), "'F'"),
        (np.array([[0, 70000], [1000, 5]], dtype=np.int32), r"'I'.*\[0, 70000\]"),
        (np.array([[-5, 0], [100, 200]], dtype=np.int32), r"'I'.*\[-5, 200\]"),
    ],
    ids=["float", "int32-above-16-bit", "int32-negative"],
)
def test_images_without_a_known_range_are_refused(
    tmp_path: Path, array: np.ndarray, mode: str
) -> None:
    PIL.fromarray(array).save(tmp_path / "x.tif")
    with pytest.raises(ValueError, match=rf"x\.tif.*mode {mode}.*convert the image to 8 or 16 bit"):
        load_image(tmp_path / "x.tif")
    with pytest.raises(
        ValueError, match=rf"`data` .*mode {mode}.*convert the image to 8 or 16 bit"
    ):
        decode_image((tmp_path / "x.tif").read_bytes())


def test_decode_bytes_and_corrupt_files(tmp_path: Path) -> None:
    _save(tmp_path / "a.png", np.full((3, 3, 3), 200, dtype=np.uint8))
    data = (tmp_path / "a.png").read_bytes()
    torch.testing.assert_close(decode_image(data), torch.full((3, 3, 3), 200 / 255))
    with pytest.raises(ValueError, match="cannot decode image data"):
        decode_image(b"not an image")
    (tmp_path / "bad.jpg").write_bytes(data[:20])
    with pytest.raises(ValueError, match=r"bad\.jpg"):
        load_image(tmp_path / "bad.jpg")
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.png")


def test_package_imports_without_pillow() -> None:
    code = (
        "import sys; sys.modules['PIL'] = None\n"
        "import lacmfer.data as d\n"
        "import lacmfer.data.synthetic as s\n"
        "ds = s.SyntheticFER('ck', 2, image_size=16)\n"
        "try:\n"
        "    d.load_image('x.png')\n"
        "except ImportError as err:\n"
        "    assert 'pip install lacmfer[images]' in str(err), err\n"
        "    print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# --- resize / to_rgb ---------------------------------------------------------------------------


def test_resize_shapes_identity_and_constants() -> None:
    x = torch.rand(2, 3, 48, 48)
    assert resize(x, 48) is x
    y = resize(x, (112, 96))
    assert y.shape == (2, 3, 112, 96)
    assert resize(x[0], 24).shape == (3, 24, 24)
    const = torch.full((3, 10, 10), 0.3)
    torch.testing.assert_close(resize(const, 7), torch.full((3, 7, 7), 0.3))
    torch.testing.assert_close(resize(const, 31), torch.full((3, 31, 31), 0.3))


def test_resize_antialias_and_range() -> None:
    # A 1-pixel checkerboard shrunk by 3: antialiasing averages it to ~0.5; plain bilinear
    # sampling hits pixel centres and returns the 0/1 pattern (aliasing).
    board = ((torch.arange(60).view(-1, 1) + torch.arange(60).view(1, -1)) % 2).float()
    board = board.expand(3, 60, 60)
    small = resize(board, 20)
    torch.testing.assert_close(small, torch.full_like(small, 0.5), atol=0.02, rtol=0)
    aliased = resize(board, 20, antialias=False)
    assert float((aliased - 0.5).abs().min()) > 0.4
    x = torch.rand(1, 3, 20, 20)
    for size in (7, 53):
        y = resize(x, size)
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_resize_errors() -> None:
    with pytest.raises(ValueError, match=r"\(C, H, W\) or \(B, C, H, W\)"):
        resize(torch.rand(4, 4), 2)
    with pytest.raises(TypeError, match="floating-point"):
        resize(torch.zeros(3, 4, 4, dtype=torch.uint8), 2)
    with pytest.raises(TypeError, match="size"):
        resize(torch.rand(3, 4, 4), 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        resize(torch.rand(3, 4, 4), 0)


def test_to_rgb() -> None:
    g = torch.rand(2, 1, 4, 4)
    rgb = to_rgb(g)
    assert rgb.shape == (2, 3, 4, 4) and torch.equal(rgb[:, 0], rgb[:, 2])
    x = torch.rand(3, 4, 4)
    assert to_rgb(x) is x
    with pytest.raises(ValueError, match="C in"):
        to_rgb(torch.rand(2, 4, 4))
