"""The face renderer of the synthetic FER data: smooth shape functions on a coordinate grid."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._checks import check_positive_int
from ..labels import CLASSES, NUM_CLASSES
from ._styles import _CLASS_CUES, _CUE_NAMES, SyntheticStyle, _domain_seed, synthetic_style

__all__ = ["render_faces"]


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


# Identity parameters, one column each.
_ID_NAMES = (
    "face_w",
    "face_h",
    "jaw",
    "eye_x",
    "eye_y",
    "eye_w",
    "eye_h",
    "brow_gap",
    "brow_len",
    "brow_thick",
    "nose_y",
    "mouth_y",
    "mouth_w",
    "lip_thick",
    "skin_r",
    "skin_g",
    "skin_b",
    "hair_dark",
    "hair_line",
    "hair_len",
    "rest_curve",
    "rest_slant",
    "iris",
)
_ID = {name: i for i, name in enumerate(_ID_NAMES)}


def _draw_identities(n: int, style: SyntheticStyle, gen: torch.Generator) -> Tensor:
    """``(n, len(_ID_NAMES))`` identity parameters."""
    u = torch.rand(n, len(_ID_NAMES), generator=gen)
    z = torch.randn(n, 4, generator=gen)

    def rng(col: str, lo: float, hi: float) -> Tensor:
        return lo + (hi - lo) * u[:, _ID[col]]

    tone = z[:, 0] * style.skin_spread * 0.5
    skin = torch.tensor(style.skin).unsqueeze(0) * (1.0 + tone.unsqueeze(1))
    skin = skin + 0.02 * z[:, 1:4]
    cols = {
        "face_w": rng("face_w", 0.72, 0.86),
        "face_h": rng("face_h", 0.93, 1.05),
        "jaw": rng("jaw", 0.1, 0.35),
        "eye_x": rng("eye_x", 0.33, 0.41),
        "eye_y": rng("eye_y", -0.2, -0.1),
        "eye_w": rng("eye_w", 0.14, 0.18),
        "eye_h": rng("eye_h", 0.075, 0.1),
        "brow_gap": rng("brow_gap", 0.15, 0.21),
        "brow_len": rng("brow_len", 0.15, 0.2),
        "brow_thick": rng("brow_thick", 0.045, 0.06),
        "nose_y": rng("nose_y", 0.2, 0.28),
        "mouth_y": rng("mouth_y", 0.47, 0.56),
        "mouth_w": rng("mouth_w", 0.25, 0.32),
        "lip_thick": rng("lip_thick", 0.035, 0.05),
        "skin_r": skin[:, 0].clamp(0.15, 0.98),
        "skin_g": skin[:, 1].clamp(0.1, 0.95),
        "skin_b": skin[:, 2].clamp(0.08, 0.95),
        "hair_dark": rng("hair_dark", 0.05, 0.55),
        "hair_line": rng("hair_line", -0.62, -0.45),
        "hair_len": rng("hair_len", *style.hair_length),
        "rest_curve": (u[:, _ID["rest_curve"]] - 0.5) * 0.06,
        "rest_slant": (u[:, _ID["rest_slant"]] - 0.5) * 0.05,
        "iris": rng("iris", 0.3, 0.55),
    }
    return torch.stack([cols[name] for name in _ID_NAMES], 1)


def _display_offsets(style: SyntheticStyle) -> Tensor:
    """The domain's fixed ``(K, cues)`` offset of the expression cues.

    The neutral row (half as large) shifts the domain's resting face, from which every
    expression of the domain starts.
    """
    gen = torch.Generator().manual_seed(_domain_seed(style.name) + 17)
    scale = torch.tensor([1.0, 1.0, 4.0, 1.0, 1.0, 3.0, 6.0, 1.0, 6.0, 6.0, 6.0, 6.0])
    off = torch.randn(NUM_CLASSES, len(_CUE_NAMES), generator=gen) * style.display_shift * scale
    off[CLASSES.index("Neutral")] *= 0.5
    return off


def _check_labels(labels: Tensor) -> Tensor:
    if not isinstance(labels, Tensor):
        labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.ndim != 1:
        raise ValueError(
            f"`labels` must be a 1-D integer tensor (N,), got dtype {labels.dtype} and shape "
            f"{tuple(labels.shape)}"
        )
    labels = labels.to(torch.int64).cpu()
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= NUM_CLASSES):
        raise ValueError(
            f"`labels` must hold classes in [0, {NUM_CLASSES}), got values in "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )
    return labels


class _Params:
    """Everything random about a batch of faces, drawn up front (CPU)."""

    def __init__(
        self,
        labels: Tensor,
        intensity: Tensor,
        style: SyntheticStyle,
        gen: torch.Generator,
        identity_params: Tensor,
    ) -> None:
        n = labels.shape[0]
        self.n = n
        self.ident = identity_params
        cues = torch.tensor(_CLASS_CUES) + _display_offsets(style)
        rest = cues[CLASSES.index("Neutral")]  # the domain's resting face
        a = intensity.unsqueeze(1)
        self.cues = rest + a * (cues[labels] - rest)
        self.cues = self.cues + 0.01 * torch.randn(n, len(_CUE_NAMES), generator=gen)
        self.cues[:, _CUE_NAMES.index("mouth_curve")] += self.ident[:, _ID["rest_curve"]]
        self.cues[:, _CUE_NAMES.index("brow_slant")] += self.ident[:, _ID["rest_slant"]]
        u = torch.rand(n, 24, generator=gen)
        self.angle = (2 * u[:, 0] - 1) * style.rotation
        self.scale = style.scale[0] + (style.scale[1] - style.scale[0]) * u[:, 1]
        self.shift = (2 * u[:, 2:4] - 1) * style.translate
        self.brightness = (
            style.brightness[0] + (style.brightness[1] - style.brightness[0]) * u[:, 4]
        )
        self.contrast = style.contrast[0] + (style.contrast[1] - style.contrast[0]) * u[:, 5]
        theta = 2 * math.pi * u[:, 6]
        self.light = torch.stack((torch.cos(theta), torch.sin(theta)), 1) * (
            style.side_light * u[:, 7:8]
        )
        # Blur strength as a blend weight between sharp and blurred with sigma = blur[1].
        lo_b = style.blur[0] / style.blur[1] if style.blur[1] > 0 else 0.0
        self.blur_amount = lo_b + (1.0 - lo_b) * u[:, 8]
        occluded = u[:, 9] < style.occlusion
        self.glasses = (occluded & (u[:, 10] < 0.5)).float()
        self.hand = (occluded & (u[:, 10] >= 0.5)).float()
        self.hand_pos = torch.stack((2 * u[:, 11] - 1, 0.2 + 0.5 * u[:, 12]), 1)
        self.bg_level = (
            style.background_level[0]
            + (style.background_level[1] - style.background_level[0]) * u[:, 13]
        )
        self.gaze = (u[:, 14:16] - 0.5) * 0.06
        self.tint = 1.0 + (2 * torch.rand(n, 3, generator=gen) - 1) * style.tint
        self.hair_rgb = torch.rand(n, 3, generator=gen)
        self.bg_rgb = torch.rand(n, 3, generator=gen)
        self.blob_xy = 2 * torch.rand(n, 2, 5, generator=gen) - 1
        self.blob_r = 0.15 + 0.5 * torch.rand(n, 2, 5, generator=gen)
        self.blob_rgb = torch.rand(n, 5, 3, generator=gen)
        self.stripe = torch.rand(n, 4, generator=gen)


def _ink(x: Tensor, width: Union[Tensor, float]) -> Tensor:
    """A band profile ``exp(-(x / width)^2)``."""
    return torch.exp(-((x / width) ** 2))


_LUMA = (0.299, 0.587, 0.114)


def _paint(rgb: Tensor, channels: int) -> Tensor:
    """``(n, 3)`` colours as ``(n, C, 1, 1)``: RGB, or their luma for grey rendering."""
    if channels == 1:
        rgb = (rgb * torch.tensor(_LUMA, dtype=rgb.dtype)).sum(1, keepdim=True)
    return rgb.view(rgb.shape[0], channels, 1, 1)


def _band(
    lo: Tensor, hi: Tensor, fh: Tensor, half_width: Tensor, fw: Tensor, size: int
) -> tuple[slice, slice]:
    """Pixel rows/columns covering face-unit rows ``[lo, hi]`` and ``|x| <= half_width``."""
    top = float((0.04 + lo * fh).min())
    bottom = float((0.04 + hi * fh).max())
    side = float((half_width * fw).max())
    r0 = max(0, math.floor((top + 1.0) * size / 2.0) - 1)
    r1 = min(size, math.ceil((bottom + 1.0) * size / 2.0) + 1)
    c0 = max(0, math.floor((1.0 - side) * size / 2.0) - 1)
    c1 = min(size, math.ceil((1.0 + side) * size / 2.0) + 1)
    return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))


def _render_chunk(p: _Params, sl: slice, size: int, style: SyntheticStyle) -> Tensor:
    """Render samples ``sl`` of ``p`` at ``size`` px (before pose, degradation and noise).

    Head, hair and background cover the frame; the local features are evaluated only on two
    bands of rows and columns (eyes/brows/forehead and nose/mouth) that hold them for every
    sample of the chunk, which keeps the cost low without a per-sample loop.
    """
    ident = p.ident[sl]
    cue = p.cues[sl]
    n = ident.shape[0]
    ch = 1 if style.grey else 3
    axis = (torch.arange(size, dtype=torch.float32) + 0.5) * (2.0 / size) - 1.0

    def col(t: Tensor) -> Tensor:
        return t.reshape(n, 1, 1)

    def idc(name: str) -> Tensor:
        return col(ident[:, _ID[name]])

    def cuec(name: str) -> Tensor:
        return col(cue[:, _CUE_NAMES.index(name)])

    fh = style.face_size * idc("face_h")
    fw = style.face_size * idc("face_w") * idc("face_h")
    e = 0.9 * (2.0 / size) / fh  # soft edge (about one pixel) in face units

    def grid(rows: slice, cols: slice) -> tuple[Tensor, Tensor]:
        xf = axis[cols].view(1, 1, -1) / fw  # (n, 1, w) face units
        yf = (axis[rows].view(1, -1, 1) - 0.04) / fh  # (n, h, 1)
        return xf, yf

    # --- head, hair, skin (whole frame; in-place ops keep the memory traffic low) -----------
    xf, yf = grid(slice(0, size), slice(0, size))
    jaw = 1.0 - idc("jaw") * yf.clamp_min(0.0)
    r2 = (xf / jaw).square_().add_(yf.square())
    face = torch.sigmoid((1.0 - r2).div_(2 * e))
    r2h = (xf / 1.12).square() + ((yf + 0.06) / 1.1).square()
    hair_bottom = -0.1 + 1.1 * idc("hair_len")
    hair_back = torch.sigmoid_((1.0 - r2h).div_(2 * e)).mul_(
        torch.sigmoid((hair_bottom - yf) / (4 * e))
    )
    hair_edge = idc("hair_line") + 0.04 * torch.cos(7 * xf)
    fringe = torch.sigmoid_((hair_edge - yf).div_(2 * e)).mul_(face)
    light = p.light[sl]
    shade = r2.clamp_(0.0, 1.0).mul_(-0.18).add_(col(light[:, 0]) * xf + 1.0)
    shade.add_(col(light[:, 1]) * yf)

    skin = _paint(ident[:, _ID["skin_r"] : _ID["skin_b"] + 1], ch)
    hair_rgb = _paint(p.hair_rgb[sl], ch) * 0.35 * idc("hair_dark").unsqueeze(1) + 0.03
    img = _background(p, sl, size, style, ch)
    hair_a = (1.0 - face).mul_(hair_back).add_(fringe).clamp_(0.0, 1.0).unsqueeze(1)
    img = torch.lerp(img, hair_rgb.expand_as(img), hair_a)
    fa_full = (1.0 - fringe).mul_(face).unsqueeze(1)
    img = torch.lerp(img, skin * shade.unsqueeze(1), fa_full)

    # --- upper band: brows, eyes, forehead, furrow, nose bridge, wrinkle, glasses ------------
    ex, ey = idc("eye_x"), idc("eye_y")
    ew = idc("eye_w")
    eh = idc("eye_h") * cuec("eye_open").clamp_min(0.15)
    base = ey - idc("brow_gap") - cuec("brow_raise")
    ny = idc("nose_y")
    rows, cols = _band(base - 0.34, ny + 0.02, fh, torch.full_like(fh, 0.84), fw, size)
    xf, yf = grid(rows, cols)
    ax = xf.abs()
    fa = fa_full[:, :, rows, cols]
    dx = (ax - ex) / ew
    dy = (yf - ey) / eh
    re2 = dx**2 + dy**2
    eye_white = torch.sigmoid((1.0 - re2) / (3 * e / eh.clamp_min(0.02)))
    lid = _ink(re2 - 1.0, 0.35) * torch.sigmoid((ey + 0.3 * eh - yf) / e)
    gaze = p.gaze[sl]
    iris_r = idc("iris") * ew
    ri2 = ((ax - ex - col(gaze[:, 0])) ** 2 + (yf - ey - col(gaze[:, 1])) ** 2) / iris_r**2
    iris = torch.sigmoid((1.0 - ri2) / 0.3) * eye_white
    bl = idc("brow_len")
    t = (ax - (ex + 0.02)) / bl  # -1 inner end, +1 outer end (|x| mirrors the two brows)
    brow_y = base - cuec("brow_slant") * t - 0.05 * (1.0 - t**2)
    brows = _ink(yf - brow_y, idc("brow_thick")) * torch.sigmoid((1.0 - t.abs()) / 0.08)
    forehead = (
        (_ink(yf - (base - 0.14), 0.012) + _ink(yf - (base - 0.22), 0.012))
        * torch.sigmoid((0.38 - ax) / 0.05)
        * cuec("forehead").clamp_min(0.0)
    )
    furrow = _ink(ax - 0.05, 0.018) * (_ink(yf - (base + 0.02), 0.07) * cuec("furrow").clamp_min(0))
    bridge = _ink(ax - 0.06, 0.02) * (_ink(yf - (ny - 0.17), 0.12) * 0.25)
    wrinkle = _ink(xf, 0.1) * (
        (_ink(yf - (ey + 0.1), 0.01) + _ink(yf - (ey + 0.15), 0.01))
        * cuec("nose_wrinkle").clamp_min(0.0)
    )
    part = img[:, :, rows, cols]
    part = torch.lerp(
        part, torch.full_like(part, 0.92), (1.0 - iris).mul_(eye_white).unsqueeze(1) * fa
    )
    dark = brows + 0.9 * iris + 0.8 * lid + bridge + 0.5 * forehead + 0.6 * furrow + 0.55 * wrinkle
    part = part * (1.0 - 0.85 * dark.clamp(0.0, 1.0).unsqueeze(1) * fa)
    if bool(p.glasses[sl].any()):
        glasses = torch.sigmoid((0.13 - (yf - ey).abs()) / e) * torch.sigmoid((0.78 - ax) / e)
        part = torch.lerp(
            part, torch.full_like(part, 0.06), (glasses * col(p.glasses[sl])).unsqueeze(1)
        )
    img[:, :, rows, cols] = part

    # --- lower band: nostrils, nasolabial folds, mouth, lips, teeth --------------------------
    my = idc("mouth_y")
    mw = idc("mouth_w") * cuec("mouth_width").clamp_min(0.3)
    curve = cuec("mouth_curve")
    opening = cuec("mouth_open").clamp_min(0.0) + 0.01
    lt = idc("lip_thick")
    bottom = my + curve.clamp_min(0.0) * 0 + 1.2 * opening + 2.5 * lt + 0.06
    rows, cols = _band(ny - 0.1, bottom, fh, mw + 0.2, fw, size)
    xf, yf = grid(rows, cols)
    ax = xf.abs()
    fa = fa_full[:, :, rows, cols]
    nostrils = _ink(ax - 0.085, 0.035) * _ink(yf - ny, 0.022)
    fold_x = 0.15 + (mw + 0.04 - 0.15) * ((yf - ny) / (my - ny)).clamp(0.0, 1.2)
    folds = _ink(ax - fold_x, 0.02) * (
        torch.sigmoid((yf - ny) / 0.03)
        * torch.sigmoid((my - curve * 0.6 - yf) / 0.03)
        * cuec("nasolabial").clamp_min(0.0)
    )
    tm = xf / mw  # (n, 1, w)
    bell = (1.0 - tm**2).clamp_min(0.0)
    m_win = torch.sigmoid((1.0 - tm.abs()) / 0.06)
    y_mid = my - curve * tm**2
    root = bell.sqrt()
    y_up = y_mid - opening * root - cuec("lip_raise") * (tm.clamp(0.0, 1.0) * bell)
    y_lo = y_mid + 1.2 * opening * root
    cavity = torch.sigmoid((yf - y_up) / e) * torch.sigmoid((y_lo - yf) / e) * m_win
    lips = (_ink(yf - (y_up - 0.6 * lt), 0.7 * lt) + _ink(yf - (y_lo + 0.8 * lt), 0.9 * lt)) * (
        m_win * (0.3 + 0.7 * bell)
    )
    teeth = cavity * torch.sigmoid((y_up + 0.45 * (y_lo - y_up) - yf) / e) * cuec("teeth")
    part = img[:, :, rows, cols]
    dark = (0.55 * nostrils + 0.5 * folds).clamp(0.0, 1.0).unsqueeze(1) * fa
    part = part * (1.0 - 0.85 * dark)
    lip_rgb = skin * (_paint(torch.tensor([[0.72, 0.42, 0.42]]), ch) / _paint(torch.ones(1, 3), ch))
    lip_a = (1.0 - cavity).mul_(lips).clamp_(0.0, 1.0).unsqueeze(1) * fa
    part = torch.lerp(part, lip_rgb.expand_as(part), lip_a)
    part = torch.lerp(part, torch.full_like(part, 0.08), cavity.unsqueeze(1) * fa)
    part = torch.lerp(part, torch.full_like(part, 0.9), teeth.clamp_(0.0, 1.0).unsqueeze(1) * fa)
    img[:, :, rows, cols] = part

    # --- a hand in front of the lower face (moves with the head) -----------------------------
    if bool(p.hand[sl].any()):
        hp = p.hand_pos[sl]
        rows, cols = _band(
            torch.full_like(fh, -0.3),
            torch.full_like(fh, 1.2),
            fh,
            torch.full_like(fh, 1.0),
            fw,
            size,
        )
        xf, yf = grid(rows, cols)
        hand = torch.sigmoid(
            (1.0 - ((xf - col(hp[:, 0]) * 0.5) / 0.32) ** 2 - ((yf - col(hp[:, 1])) / 0.42) ** 2)
            / (2 * e)
        ) * col(p.hand[sl])
        part = img[:, :, rows, cols]
        img[:, :, rows, cols] = torch.lerp(part, (skin * 1.08).expand_as(part), hand.unsqueeze(1))
    return img


def _background(p: _Params, sl: slice, size: int, style: SyntheticStyle, ch: int) -> Tensor:
    n = sl.stop - sl.start
    level = p.bg_level[sl].view(n, 1, 1, 1)
    axis = (torch.arange(size, dtype=torch.float32) + 0.5) * (2.0 / size) - 1.0
    if style.background == "plain":
        grad = 0.06 * axis.view(1, 1, size, 1)
        return (level + grad).expand(n, ch, size, size).contiguous()
    xy = p.blob_xy[sl]
    r = p.blob_r[sl]
    gx = torch.exp(-(((axis.view(1, 1, size) - xy[:, 0, :, None]) / r[:, 0, :, None]) ** 2))
    gy = torch.exp(-(((axis.view(1, 1, size) - xy[:, 1, :, None]) / r[:, 1, :, None]) ** 2))
    blob_rgb = p.blob_rgb[sl] - 0.5  # (n, 5, 3)
    if ch == 1:
        blob_rgb = (blob_rgb * torch.tensor(_LUMA)).sum(-1, keepdim=True)
    blobs = torch.einsum("nky,nkx,nkc->ncyx", gy, gx, blob_rgb)
    st = p.stripe[sl]
    freq = 3.0 + 10.0 * st[:, 0]
    ang = math.pi * st[:, 1]
    phase = (
        torch.cos(ang).view(n, 1, 1) * axis.view(1, 1, size)
        + torch.sin(ang).view(n, 1, 1) * axis.view(1, size, 1)
    ) * freq.view(n, 1, 1) + 6.28 * st[:, 2].view(n, 1, 1)
    stripes = (0.12 * st[:, 3]).view(n, 1, 1) * torch.sin(phase)
    base = level * (0.6 + 0.8 * _paint(p.bg_rgb[sl], ch))
    return (base + 0.6 * blobs + stripes.unsqueeze(1)).clamp(0.0, 1.0)


def _blur(img: Tensor, amount: Tensor, sigma: float) -> Tensor:
    """Blur each sample by blending it with one Gaussian-blurred copy (``amount`` in ``[0, 1]``).

    One depthwise convolution with a shared kernel serves the whole batch; the per-sample blend
    gives a continuum of blur strengths between none and ``sigma`` pixels.
    """
    n, _, h, w = img.shape
    if sigma < 0.05:
        return img
    radius = max(1, math.ceil(3 * sigma))
    k = torch.arange(-radius, radius + 1, dtype=img.dtype)
    kern = torch.exp(-0.5 * (k / sigma) ** 2)
    kern = kern / kern.sum()
    weights = kern.tolist()
    # Separable filter as a weighted sum of shifted views (faster on CPU than a 1-channel conv).
    x = F.pad(img, (radius, radius, 0, 0), mode="replicate")
    rows = x[..., 0:w] * weights[0]
    for i in range(1, 2 * radius + 1):
        rows.add_(x[..., i : i + w], alpha=weights[i])
    x = F.pad(rows, (0, 0, radius, radius), mode="replicate")
    out = x[..., 0:h, :] * weights[0]
    for i in range(1, 2 * radius + 1):
        out.add_(x[..., i : i + h, :], alpha=weights[i])
    return torch.lerp(img, out, amount.view(n, 1, 1, 1).to(img.dtype))


def _finish_chunk(
    img: Tensor, p: _Params, sl: slice, size: int, style: SyntheticStyle, gen: torch.Generator
) -> Tensor:
    n, ch = img.shape[:2]
    axis = (torch.arange(size, dtype=torch.float32) + 0.5) * (2.0 / size) - 1.0
    # Head pose: rotate / scale / shift the rendered image about its centre.
    if style.rotation > 0 or style.translate > 0 or style.scale != (1.0, 1.0):
        rad = p.angle[sl] * (math.pi / 180.0)
        inv = 1.0 / p.scale[sl]
        cos, sin = torch.cos(rad) * inv, torch.sin(rad) * inv
        shift = p.shift[sl] * 2.0
        theta = torch.stack(
            (
                torch.stack((cos, -sin, -(cos * shift[:, 0] - sin * shift[:, 1])), 1),
                torch.stack((sin, cos, -(sin * shift[:, 0] + cos * shift[:, 1])), 1),
            ),
            1,
        )
        gx = (
            theta[:, 0, 0].view(n, 1, 1) * axis.view(1, 1, size)
            + theta[:, 0, 1].view(n, 1, 1) * axis.view(1, size, 1)
            + theta[:, 0, 2].view(n, 1, 1)
        )
        gy = (
            theta[:, 1, 0].view(n, 1, 1) * axis.view(1, 1, size)
            + theta[:, 1, 1].view(n, 1, 1) * axis.view(1, size, 1)
            + theta[:, 1, 2].view(n, 1, 1)
        )
        grid = torch.stack((gx, gy), -1)  # = F.affine_grid(theta, ..., align_corners=False)
        img = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if not style.grey:
        img = img * p.tint[sl].view(n, 3, 1, 1)
    # Lighting: gain, contrast about mid-grey, directional gradient over the whole frame.
    light = p.light[sl]
    gain = p.brightness[sl].view(n, 1, 1, 1) * p.contrast[sl].view(n, 1, 1, 1)
    grad = 1.0 + 0.5 * (
        light[:, 0].view(n, 1, 1, 1) * axis.view(1, 1, 1, size)
        + light[:, 1].view(n, 1, 1, 1) * axis.view(1, 1, size, 1)
    )
    offset = 0.5 * (1.0 - p.contrast[sl]).view(n, 1, 1, 1)
    img = torch.addcmul(offset, img, gain * grad)
    # Resolution: drop detail to the domain's effective resolution, then blur.
    if style.resolution < 1.0:
        low = max(8, round(style.resolution * size))
        img = F.interpolate(img, size=(low, low), mode="bilinear", antialias=True)
        img = F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False)
    img = _blur(img, p.blur_amount[sl], style.blur[1] * size / 112.0)
    if style.noise > 0:
        # Uniform noise with standard deviation `noise` (cheaper to draw than Gaussian).
        u = torch.rand(n, 1, size, size, generator=gen)
        img = img.add_(u.sub_(0.5).mul_(style.noise * math.sqrt(12.0)))
    img = img.clamp_(0.0, 1.0)
    return img.expand(n, 3, size, size) if ch == 1 else img


_CHUNK = 64


def _render(
    labels: Tensor,
    intensity: Tensor,
    style: SyntheticStyle,
    size: int,
    gen: torch.Generator,
    identity_params: Tensor,
) -> Tensor:
    p = _Params(labels, intensity, style, gen, identity_params)
    out = torch.empty(p.n, 3, size, size, dtype=torch.float32)
    for start in range(0, p.n, _CHUNK):  # chunks bound the memory; fixed size keeps results fixed
        sl = slice(start, min(p.n, start + _CHUNK))
        img = _render_chunk(p, sl, size, style)
        out[sl] = _finish_chunk(img, p, sl, size, style, gen)
    return out


def _identity_pool(style: SyntheticStyle) -> Tensor:
    if style.identities is None:
        raise ValueError(f"style {style.name!r} has no identity pool")
    gen = torch.Generator().manual_seed(_domain_seed(style.name))
    return _draw_identities(style.identities, style, gen)


def render_faces(
    labels: Union[Tensor, Sequence[int]],
    *,
    intensity: Optional[Union[Tensor, Sequence[float], float]] = None,
    style: Union[str, SyntheticStyle] = "RAF-DB",
    image_size: int = 112,
    generator: Optional[torch.Generator] = None,
    identity: Optional[Union[Tensor, Sequence[int]]] = None,
) -> Tensor:
    """Render a batch of synthetic faces showing given expressions in a domain's style.

    Args:
        labels: Expressions to show (RAF order).
        intensity: Per-sample intensity in ``[0, 1]`` (a float applies to all; default: drawn
            from the style's range).
        style: A domain name or a :class:`SyntheticStyle`.
        image_size: Side ``S`` in pixels.
        generator: Source of randomness (default: a generator seeded with 0).
        identity: Subject ids from the style's pool (lab styles; default: drawn at random).
            In-the-wild styles draw a new identity per sample and reject this argument.

    Shape:
        - labels: ``(N,)``.
        - output: ``(N, 3, S, S)`` float32 in ``[0, 1]``.

    Returns:
        The images.

    Raises:
        ValueError: On labels outside ``[0, 7)``, intensities outside ``[0, 1]``, ids outside
            the pool, or ``identity`` for a style without a pool.

    Example:
        >>> x = render_faces([3, 0], style="ck", image_size=32,
        ...                  generator=torch.Generator().manual_seed(0))
        >>> x.shape, x.dtype, bool(x.min() >= 0) and bool(x.max() <= 1)
        (torch.Size([2, 3, 32, 32]), torch.float32, True)
    """
    st = synthetic_style(style)
    size = check_positive_int(image_size, "image_size", minimum=8)
    lab = labels if isinstance(labels, Tensor) else torch.as_tensor(labels)
    lab = _check_labels(lab.to(torch.int64) if lab.numel() == 0 else lab)
    n = lab.shape[0]
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    if intensity is None:
        inten = _uniform(n, st.intensity[0], st.intensity[1], gen)
    else:
        inten = torch.as_tensor(intensity, dtype=torch.float32).cpu()
        inten = inten.expand(n).clone() if inten.ndim == 0 else inten
        if inten.shape != (n,):
            raise ValueError(
                f"`intensity` must be a float or have shape ({n},) like `labels`, got "
                f"{tuple(inten.shape)}"
            )
        if n and (float(inten.min()) < 0.0 or float(inten.max()) > 1.0):
            raise ValueError("`intensity` must lie in [0, 1]")
    if st.identities is None:
        if identity is not None:
            raise ValueError(f"`identity` needs a style with an identity pool; {st.name} has none")
        ident = _draw_identities(n, st, gen)
    else:
        pool = _identity_pool(st)
        if identity is None:
            ids = torch.randint(st.identities, (n,), generator=gen)
        else:
            ids = torch.as_tensor(identity, dtype=torch.int64).cpu()
            if ids.shape != (n,) or (n and (int(ids.min()) < 0 or int(ids.max()) >= len(pool))):
                raise ValueError(
                    f"`identity` must have shape ({n},) with ids in [0, {len(pool)}), got shape "
                    f"{tuple(ids.shape)}"
                )
        ident = pool[ids]
    return _render(lab, inten, st, size, gen, ident)
