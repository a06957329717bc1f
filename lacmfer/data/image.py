"""Decoding images to RGB float tensors and resizing them with torch.

Decoding needs Pillow, the optional ``images`` extra (``pip install lacmfer[images]``); it is
imported inside the functions that decode, so :mod:`lacmfer.data` imports without it. Resizing is
pure torch (:func:`torch.nn.functional.interpolate`, bilinear with antialiasing).
"""

from __future__ import annotations

import io
import os
from types import ModuleType
from typing import Any, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_float

__all__ = ["decode_image", "load_image", "require_pillow", "resize", "to_rgb"]


def require_pillow() -> ModuleType:
    """Import and return ``PIL.Image``, or raise an ``ImportError`` that says how to install it.

    Raises:
        ImportError: If Pillow is not installed.
    """
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "decoding image files needs Pillow, the optional 'images' extra: "
            "pip install lacmfer[images]"
        ) from err
    return Image


def _pil_to_tensor(img: Any) -> Tensor:
    import numpy as np

    if img.mode == "F":
        # Pillow's RGB conversion truncates float pixels to 0..255: [0, 1] data turns black.
        raise ValueError(
            "mode 'F' (32-bit floating-point pixels) has no fixed range to scale to [0, 1]; "
            "convert the image to 8 or 16 bit first"
        )
    if img.mode.startswith("I;16") or img.mode == "I":
        # 16-bit grey (some CK+ / Oulu NIR frames, big- or little-endian) and 32-bit integer grey
        # holding 16-bit values: scaled here, as Pillow's RGB conversion would clip them to 255.
        arr16 = np.asarray(img, dtype=np.float32)
        if arr16.size and (arr16.min() < 0 or arr16.max() > 65535):
            raise ValueError(
                f"mode {img.mode!r} (32-bit integer pixels) with values in "
                f"[{int(arr16.min())}, {int(arr16.max())}], outside the 16-bit range "
                "[0, 65535]; convert the image to 8 or 16 bit first"
            )
        scale = 65535.0 if arr16.max() > 255 else 255.0
        grey = torch.from_numpy(arr16 / scale).clamp_(0.0, 1.0)
        return grey.unsqueeze(0).expand(3, -1, -1).contiguous()
    rgb = img.convert("RGB")
    arr = np.asarray(rgb, dtype=np.uint8).copy()
    return torch.from_numpy(arr).permute(2, 0, 1).to(torch.float32).div_(255.0)


def decode_image(data: bytes) -> Tensor:
    """Decode encoded image bytes (JPEG, PNG, TIFF, ...) to an RGB float tensor.

    Grey, palette, CMYK and RGBA images are converted to RGB (grey is repeated on three channels,
    alpha is dropped). 16-bit grey is scaled from ``[0, 65535]`` (``[0, 255]`` when no value
    exceeds 255), as is 32-bit integer grey whose values fit in 16 bits. Floating-point images
    (Pillow mode ``"F"``) and 32-bit integer ones with values outside ``[0, 65535]`` are refused:
    their range is not known, so convert them to 8 or 16 bit first.

    Args:
        data: The encoded file content.

    Shape:
        - output: ``(3, H, W)``, float32 in ``[0, 1]``.

    Returns:
        The image.

    Raises:
        ImportError: If Pillow is not installed.
        ValueError: If the bytes are not a decodable image, or hold floating-point or 32-bit
            pixels outside the 16-bit range (the message names the mode).
    """
    Image = require_pillow()
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return _pil_to_tensor(img)
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"cannot decode image data `data` ({len(data)} bytes): {err}") from err


def load_image(path: Union[str, os.PathLike[str]]) -> Tensor:
    """Read and decode an image file to an RGB float tensor (see :func:`decode_image`).

    Args:
        path: The image file.

    Shape:
        - output: ``(3, H, W)``, float32 in ``[0, 1]``.

    Returns:
        The image.

    Raises:
        ImportError: If Pillow is not installed.
        FileNotFoundError: If the file does not exist.
        ValueError: If the file is not a decodable image, or holds floating-point or 32-bit
            pixels outside the 16-bit range (the message names the file and the mode).
    """
    Image = require_pillow()
    try:
        with Image.open(path) as img:
            img.load()
            return _pil_to_tensor(img)
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"cannot decode image file {os.fspath(path)!r}: {err}") from err


def to_rgb(images: Tensor) -> Tensor:
    """Repeat a one-channel image or batch on three channels (three-channel input is returned).

    Shape:
        - images: ``(1, H, W)``, ``(3, H, W)``, ``(B, 1, H, W)`` or ``(B, 3, H, W)``.
        - output: same with 3 channels.

    Example:
        >>> to_rgb(torch.zeros(1, 4, 5)).shape
        torch.Size([3, 4, 5])
    """
    check_float(images, "images")
    if images.ndim not in (3, 4) or images.shape[-3] not in (1, 3):
        raise ValueError(
            "`images` must have shape (C, H, W) or (B, C, H, W) with C in {1, 3}, got "
            f"{tuple(images.shape)}"
        )
    if images.shape[-3] == 3:
        return images
    reps = [1] * images.ndim
    reps[-3] = 3
    return images.repeat(*reps)


def resize(images: Tensor, size: Union[int, tuple[int, int]], *, antialias: bool = True) -> Tensor:
    """Resize an image or a batch to ``size`` with bilinear interpolation (antialiased).

    Args:
        images: Float image(s).
        size: Output side (square) or ``(H_out, W_out)``.
        antialias: Antialias when shrinking (as PIL does).

    Shape:
        - images: ``(C, H, W)`` or ``(B, C, H, W)``.
        - output: ``(C, H_out, W_out)`` or ``(B, C, H_out, W_out)``.

    Returns:
        The resized image(s). Bilinear weights are non-negative, so values stay within the
        input's range (``[0, 1]`` images stay in ``[0, 1]``).

    Raises:
        TypeError: If ``images`` is not floating point or ``size`` is not an int / pair of ints.
        ValueError: If ``images`` is not 3-D or 4-D or ``size`` is not positive.

    Example:
        >>> resize(torch.rand(2, 3, 48, 48), 112).shape
        torch.Size([2, 3, 112, 112])
    """
    check_float(images, "images")
    if images.ndim not in (3, 4):
        raise ValueError(
            f"`images` must have shape (C, H, W) or (B, C, H, W), got {tuple(images.shape)}"
        )
    hw = (size, size) if isinstance(size, int) and not isinstance(size, bool) else size
    if (
        not isinstance(hw, (tuple, list))
        or len(hw) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in hw)
    ):
        raise TypeError(f"`size` must be an int or a pair of ints, got {size!r}")
    if min(hw) < 1:
        raise ValueError(f"`size` must be positive, got {size!r}")
    target = (int(hw[0]), int(hw[1]))
    if tuple(images.shape[-2:]) == target:
        return images
    batch = images if images.ndim == 4 else images.unsqueeze(0)
    out = F.interpolate(
        batch, size=target, mode="bilinear", align_corners=False, antialias=antialias
    )
    return out if images.ndim == 4 else out.squeeze(0)
