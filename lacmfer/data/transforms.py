r"""The paper's training augmentation on image batches, in torch, and ImageNet normalisation.

LA-CMFER trains with colour jitter 0.2 (brightness, contrast, saturation), random greyscale
(p = 0.2), horizontal flip (p = 0.5) and a random affine map (rotation ±15°, translation 0.05 of
the image size, scale 0.9–1.05) (``docs/method.rst``, "The objective and the training recipe").
Here they run on a whole batch ``(B, 3, H, W)`` at once, on the batch's device, with parameters
drawn **per sample** from a :class:`torch.Generator`:

* the parameters are drawn by :func:`sample_augment_params` (one ``torch.rand`` call of fixed
  layout, so a seeded generator gives the same parameters whatever the settings) and applied by
  :func:`apply_augment`; :func:`fer_augment` does both and :class:`FERAugment` holds the settings;
* colour jitter follows torchvision's definitions -- brightness multiplies, contrast blends with
  the mean grey level of the image, saturation blends with the grey image, hue rotates the HSV hue
  -- each factor uniform in ``[max(0, 1 - m), 1 + m]`` (hue shift uniform in ``[-h, h]``), applied
  in the fixed order brightness, contrast, saturation, hue (torchvision shuffles the order);
* greyscale uses the ITU-R 601 luma weights (0.299, 0.587, 0.114) on all three channels;
* the affine map rotates about the image centre (positive angles counter-clockwise as displayed),
  scales and translates, sampled with :func:`torch.nn.functional.grid_sample` (bilinear, zeros
  outside -- torchvision's fill 0); translations are not rounded to whole pixels.

An operation whose magnitude is zero is skipped, so all-zero settings return the input unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_float, check_probability, check_real

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AugmentParams",
    "FERAugment",
    "apply_augment",
    "denormalize",
    "fer_augment",
    "normalize",
    "rgb_to_grayscale",
    "sample_augment_params",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
"""ImageNet channel means (RGB)."""
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
"""ImageNet channel standard deviations (RGB)."""

_LUMA = (0.299, 0.587, 0.114)


def _check_image_batch(images: Any, name: str = "images") -> None:
    """A float ``(B, 3, H, W)`` batch of images."""
    check_float(images, name, ndim=4, axes="(B, 3, H, W)")
    if images.shape[1] != 3:
        raise ValueError(
            f"`{name}` must have 3 channels (B, 3, H, W), got shape {tuple(images.shape)}"
        )


def _check_augment_settings(
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
    grayscale_p: float,
    flip_p: float,
    degrees: float,
    translate: float,
    scale: Union[Sequence[float], Any],
) -> tuple[float, float]:
    """The settings of the training augmentation; returns the scale range ``(low, high)``."""
    for value, name in (
        (brightness, "brightness"),
        (contrast, "contrast"),
        (saturation, "saturation"),
        (degrees, "degrees"),
    ):
        check_real(value, name, minimum=0.0)
    check_real(hue, "hue", minimum=0.0)
    if hue > 0.5:
        raise ValueError(f"`hue` must lie in [0, 0.5], got {hue}")
    check_probability(grayscale_p, "grayscale_p", low_inclusive=True)
    check_probability(flip_p, "flip_p", low_inclusive=True)
    check_probability(translate, "translate", low_inclusive=True)
    if not isinstance(scale, Sequence) or len(scale) != 2:
        raise TypeError(f"`scale` must be a pair (low, high), got {scale!r}")
    lo = check_real(scale[0], "scale[0]", minimum=0.0, exclusive_minimum=True)
    hi = check_real(scale[1], "scale[1]", minimum=0.0, exclusive_minimum=True)
    if lo > hi:
        raise ValueError(f"`scale` must satisfy low <= high, got {tuple(scale)}")
    return lo, hi


class AugmentParams(NamedTuple):
    """Per-sample augmentation parameters (all tensors of length ``B`` unless noted).

    Attributes:
        brightness: Brightness factors.
        contrast: Contrast factors.
        saturation: Saturation factors.
        hue: Hue shifts in turns (``[-0.5, 0.5]``).
        grayscale: Whether each sample is turned grey (bool).
        flip: Whether each sample is flipped left-right (bool).
        angle: Rotation in degrees, counter-clockwise.
        translate: ``(B, 2)`` translation ``(x, y)`` as fractions of the width and height.
        scale: Scale factors.
    """

    brightness: Tensor
    contrast: Tensor
    saturation: Tensor
    hue: Tensor
    grayscale: Tensor
    flip: Tensor
    angle: Tensor
    translate: Tensor
    scale: Tensor


def sample_augment_params(
    batch_size: int,
    *,
    brightness: float = 0.2,
    contrast: float = 0.2,
    saturation: float = 0.2,
    hue: float = 0.0,
    grayscale_p: float = 0.2,
    flip_p: float = 0.5,
    degrees: float = 15.0,
    translate: float = 0.05,
    scale: Sequence[float] = (0.9, 1.05),
    generator: Optional[torch.Generator] = None,
    device: Optional[torch.device] = None,
) -> AugmentParams:
    """Draw per-sample augmentation parameters.

    One ``torch.rand((batch_size, 11))`` call on the generator's device supplies every parameter,
    so the stream of a seeded generator does not depend on the settings.

    Args:
        batch_size: ``B``.
        brightness: Brightness jitter ``m``: factor uniform in ``[max(0, 1 - m), 1 + m]``.
        contrast: Contrast jitter, as ``brightness``.
        saturation: Saturation jitter, as ``brightness``.
        hue: Hue jitter ``h`` in ``[0, 0.5]``: shift uniform in ``[-h, h]`` turns.
        grayscale_p: Probability of turning a sample grey.
        flip_p: Probability of a horizontal flip.
        degrees: Rotation uniform in ``[-degrees, degrees]``.
        translate: Translation uniform in ``[-translate, translate]`` of width / height.
        scale: Scale uniform in ``[scale[0], scale[1]]``.
        generator: Random generator (default: the global one).
        device: Device of the returned tensors (default: the generator's).

    Returns:
        An :class:`AugmentParams`.

    Raises:
        TypeError: If a setting has the wrong type.
        ValueError: If a setting is out of range.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
        raise ValueError(f"`batch_size` must be an int >= 0, got {batch_size!r}")
    lo_s, hi_s = _check_augment_settings(
        brightness, contrast, saturation, hue, grayscale_p, flip_p, degrees, translate, scale
    )
    gen_device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand((batch_size, 11), generator=generator, device=gen_device, dtype=torch.float64)
    if device is not None:
        u = u.to(device)

    def factor(col: Tensor, m: float) -> Tensor:
        low = max(0.0, 1.0 - m)
        return (low + (1.0 + m - low) * col).to(torch.float32)

    return AugmentParams(
        brightness=factor(u[:, 0], brightness),
        contrast=factor(u[:, 1], contrast),
        saturation=factor(u[:, 2], saturation),
        hue=((2.0 * u[:, 3] - 1.0) * hue).to(torch.float32),
        grayscale=u[:, 4] < grayscale_p,
        flip=u[:, 5] < flip_p,
        angle=((2.0 * u[:, 6] - 1.0) * degrees).to(torch.float32),
        translate=((2.0 * u[:, 7:9] - 1.0) * translate).to(torch.float32),
        scale=(lo_s + (hi_s - lo_s) * u[:, 9]).to(torch.float32),
    )


def rgb_to_grayscale(images: Tensor) -> Tensor:
    """ITU-R 601 luma ``0.299 R + 0.587 G + 0.114 B``, kept on one channel.

    Shape:
        - images: ``(B, 3, H, W)``.
        - output: ``(B, 1, H, W)``.

    Example:
        >>> rgb_to_grayscale(torch.ones(1, 3, 2, 2)).flatten().tolist()
        [1.0, 1.0, 1.0, 1.0]
    """
    _check_image_batch(images)
    r, g, b = images.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def _rgb_to_hsv(img: Tensor) -> Tensor:
    r, g, b = img.unbind(1)
    maxc, _ = img.max(1)
    minc, _ = img.min(1)
    delta = maxc - minc
    v = maxc
    s = torch.where(maxc > 0, delta / maxc.clamp_min(1e-12), torch.zeros_like(maxc))
    d = delta.clamp_min(1e-12)
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    return torch.stack((h, s, v), 1)


def _hsv_to_rgb(img: Tensor) -> Tensor:
    h, s, v = img.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p = v * (1.0 - s)
    q = v * (1.0 - s * f)
    t = v * (1.0 - s * (1.0 - f))
    choices = torch.stack(
        (
            torch.stack((v, t, p), 1),
            torch.stack((q, v, p), 1),
            torch.stack((p, v, t), 1),
            torch.stack((p, q, v), 1),
            torch.stack((t, p, v), 1),
            torch.stack((v, p, q), 1),
        ),
        0,
    )  # (6, B, 3, H, W)
    index = i.unsqueeze(0).unsqueeze(2).expand(1, -1, 3, -1, -1)
    return choices.gather(0, index).squeeze(0)


def _affine_theta(params: AugmentParams, height: int, width: int, dtype: torch.dtype) -> Tensor:
    """Inverse affine maps (output -> input) in ``affine_grid``'s normalised coordinates."""
    rad = params.angle.to(torch.float64) * (math.pi / 180.0)
    cos, sin = torch.cos(rad), torch.sin(rad)
    inv_s = 1.0 / params.scale.to(torch.float64)
    # Forward map on centred pixel coordinates (y down), counter-clockwise on screen:
    # p_out = s * [[cos, sin], [-sin, cos]] p_in + t; its inverse rotates back and divides by s.
    a = torch.stack((torch.stack((cos, -sin), -1), torch.stack((sin, cos), -1)), -2)
    a = a * inv_s[:, None, None]
    half = torch.tensor([width / 2.0, height / 2.0], dtype=torch.float64, device=rad.device)
    # Normalised <-> centred pixels: p_pix = D p_norm with D = diag(W/2, H/2).
    a_norm = a * half[None, None, :] / half[None, :, None]
    t_pix = params.translate.to(torch.float64) * torch.stack(
        (half.new_tensor(float(width)), half.new_tensor(float(height)))
    )
    t_norm = -(a @ t_pix.unsqueeze(-1)).squeeze(-1) / half
    return torch.cat((a_norm, t_norm.unsqueeze(-1)), -1).to(dtype)


def apply_augment(images: Tensor, params: AugmentParams) -> Tensor:
    """Apply given per-sample parameters to a batch (see the module notes for the definitions).

    Args:
        images: RGB batch in ``[0, 1]``.
        params: From :func:`sample_augment_params` (any device; moved to the batch's).

    Shape:
        - images: ``(B, 3, H, W)``.
        - output: ``(B, 3, H, W)``, in ``[0, 1]``.

    Returns:
        The augmented batch (a new tensor unless every operation is an identity).

    Raises:
        TypeError: If ``images`` is not floating point.
        ValueError: If ``images`` is not ``(B, 3, H, W)`` or ``params`` has another batch size.
    """
    _check_image_batch(images)
    batch, _, height, width = images.shape
    if params.brightness.shape != (batch,):
        raise ValueError(
            f"`params` must hold {batch} samples like `images` {tuple(images.shape)}, got "
            f"{tuple(params.brightness.shape)}"
        )
    dev, dt = images.device, images.dtype
    p = AugmentParams(*(t.to(dev) for t in params))
    x = images

    def col(v: Tensor) -> Tensor:
        return v.to(dt).view(batch, 1, 1, 1)

    if bool((p.brightness != 1).any()):
        x = (x * col(p.brightness)).clamp(0.0, 1.0)
    if bool((p.contrast != 1).any()):
        mean = rgb_to_grayscale(x).mean((1, 2, 3), keepdim=True)
        c = col(p.contrast)
        x = (c * x + (1.0 - c) * mean).clamp(0.0, 1.0)
    if bool((p.saturation != 1).any()):
        s = col(p.saturation)
        x = (s * x + (1.0 - s) * rgb_to_grayscale(x)).clamp(0.0, 1.0)
    if bool((p.hue != 0).any()):
        hsv = _rgb_to_hsv(x)
        hue = (hsv[:, :1] + col(p.hue)) % 1.0
        x = _hsv_to_rgb(torch.cat((hue, hsv[:, 1:]), 1)).clamp(0.0, 1.0)
    if bool(p.grayscale.any()):
        x = torch.where(p.grayscale.view(batch, 1, 1, 1), rgb_to_grayscale(x).expand_as(x), x)
    if bool(p.flip.any()):
        x = torch.where(p.flip.view(batch, 1, 1, 1), x.flip(-1), x)
    identity = (p.angle == 0) & (p.scale == 1) & (p.translate == 0).all(-1)
    if not bool(identity.all()):
        theta = _affine_theta(p, height, width, dt if dt != torch.float16 else torch.float32)
        grid = F.affine_grid(theta, [batch, 3, height, width], align_corners=False)
        warped = F.grid_sample(
            x.to(grid.dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=False
        ).to(dt)
        x = torch.where(identity.view(batch, 1, 1, 1), x, warped)
    return x


def fer_augment(
    images: Tensor,
    *,
    brightness: float = 0.2,
    contrast: float = 0.2,
    saturation: float = 0.2,
    hue: float = 0.0,
    grayscale_p: float = 0.2,
    flip_p: float = 0.5,
    degrees: float = 15.0,
    translate: float = 0.05,
    scale: Sequence[float] = (0.9, 1.05),
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """The paper's training augmentation on a batch, with per-sample random parameters.

    Equivalent to ``apply_augment(images, sample_augment_params(B, ..., generator=generator))``.

    Args:
        images: RGB batch in ``[0, 1]`` on any device.
        brightness: See :func:`sample_augment_params`.
        contrast: See :func:`sample_augment_params`.
        saturation: See :func:`sample_augment_params`.
        hue: See :func:`sample_augment_params` (0 in the paper's recipe).
        grayscale_p: See :func:`sample_augment_params`.
        flip_p: See :func:`sample_augment_params`.
        degrees: See :func:`sample_augment_params`.
        translate: See :func:`sample_augment_params`.
        scale: See :func:`sample_augment_params`.
        generator: Source of randomness; a seeded one makes the output reproducible.

    Shape:
        - images: ``(B, 3, H, W)``.
        - output: ``(B, 3, H, W)``, same device and dtype, in ``[0, 1]``.

    Returns:
        The augmented batch.

    Raises:
        TypeError: If ``images`` is not floating point or a setting has the wrong type.
        ValueError: If ``images`` is not ``(B, 3, H, W)`` or a setting is out of range.

    Example:
        >>> x = torch.rand(4, 3, 32, 32)
        >>> y = fer_augment(x, generator=torch.Generator().manual_seed(0))
        >>> y.shape, bool(y.min() >= 0) and bool(y.max() <= 1)
        (torch.Size([4, 3, 32, 32]), True)
    """
    _check_image_batch(images)
    params = sample_augment_params(
        images.shape[0],
        brightness=brightness,
        contrast=contrast,
        saturation=saturation,
        hue=hue,
        grayscale_p=grayscale_p,
        flip_p=flip_p,
        degrees=degrees,
        translate=translate,
        scale=scale,
        generator=generator,
    )
    return apply_augment(images, params)


class FERAugment(nn.Module):
    """The paper's training augmentation as a module (settings held, maths in :func:`fer_augment`).

    It augments whenever called (also in ``eval()`` mode): build the test pipeline without it.

    Args:
        brightness: Brightness jitter (0.2).
        contrast: Contrast jitter (0.2).
        saturation: Saturation jitter (0.2).
        hue: Hue jitter (0; the paper's recipe has none).
        grayscale_p: Greyscale probability (0.2).
        flip_p: Horizontal flip probability (0.5).
        degrees: Maximum rotation (15).
        translate: Maximum translation fraction (0.05).
        scale: Scale range (0.9, 1.05).

    Shape:
        - images: ``(B, 3, H, W)`` in ``[0, 1]``.
        - output: ``(B, 3, H, W)``.

    Example:
        >>> aug = FERAugment()
        >>> aug(torch.rand(2, 3, 16, 16), generator=torch.Generator().manual_seed(0)).shape
        torch.Size([2, 3, 16, 16])
    """

    def __init__(
        self,
        *,
        brightness: float = 0.2,
        contrast: float = 0.2,
        saturation: float = 0.2,
        hue: float = 0.0,
        grayscale_p: float = 0.2,
        flip_p: float = 0.5,
        degrees: float = 15.0,
        translate: float = 0.05,
        scale: Sequence[float] = (0.9, 1.05),
    ) -> None:
        super().__init__()
        lo, hi = _check_augment_settings(
            brightness, contrast, saturation, hue, grayscale_p, flip_p, degrees, translate, scale
        )
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.saturation = float(saturation)
        self.hue = float(hue)
        self.grayscale_p = float(grayscale_p)
        self.flip_p = float(flip_p)
        self.degrees = float(degrees)
        self.translate = float(translate)
        self.scale = (lo, hi)

    def forward(self, images: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """Augment ``images`` (see :func:`fer_augment`)."""
        return fer_augment(
            images,
            brightness=self.brightness,
            contrast=self.contrast,
            saturation=self.saturation,
            hue=self.hue,
            grayscale_p=self.grayscale_p,
            flip_p=self.flip_p,
            degrees=self.degrees,
            translate=self.translate,
            scale=self.scale,
            generator=generator,
        )

    def extra_repr(self) -> str:
        return (
            f"brightness={self.brightness}, contrast={self.contrast}, "
            f"saturation={self.saturation}, hue={self.hue}, grayscale_p={self.grayscale_p}, "
            f"flip_p={self.flip_p}, degrees={self.degrees}, translate={self.translate}, "
            f"scale={self.scale}"
        )


def _stats(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> tuple[Tensor, Tensor]:
    check_float(images, "images")
    if images.ndim not in (3, 4) or images.shape[-3] != len(mean) or len(mean) != len(std):
        raise ValueError(
            f"`images` must have shape (C, H, W) or (B, C, H, W) with C = len(mean) = "
            f"{len(mean)} (len(std) = {len(std)}), got {tuple(images.shape)}"
        )
    if any(s <= 0 for s in std):
        raise ValueError(f"`std` must be positive, got {tuple(std)}")
    m = torch.tensor(mean, dtype=images.dtype, device=images.device).view(-1, 1, 1)
    s = torch.tensor(std, dtype=images.dtype, device=images.device).view(-1, 1, 1)
    return m, s


def normalize(
    images: Tensor,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Tensor:
    """Channel-wise ``(x - mean) / std`` (ImageNet statistics by default).

    Shape:
        - images: ``(C, H, W)`` or ``(B, C, H, W)``.
        - output: same.

    Example:
        >>> normalize(torch.full((3, 1, 1), 0.485)).flatten()[0].item()
        0.0
    """
    m, s = _stats(images, mean, std)
    return (images - m) / s


def denormalize(
    images: Tensor,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Tensor:
    """Inverse of :func:`normalize`: ``x * std + mean``.

    Shape:
        - images: ``(C, H, W)`` or ``(B, C, H, W)``.
        - output: same.
    """
    m, s = _stats(images, mean, std)
    return images * s + m
