"""The batch augmentation: identities, each operation against a direct reference, determinism."""

from __future__ import annotations

import pytest
import torch

from lacmfer.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentParams,
    FERAugment,
    apply_augment,
    denormalize,
    fer_augment,
    normalize,
    rgb_to_grayscale,
    sample_augment_params,
)

OFF = {
    "brightness": 0.0,
    "contrast": 0.0,
    "saturation": 0.0,
    "hue": 0.0,
    "grayscale_p": 0.0,
    "flip_p": 0.0,
    "degrees": 0.0,
    "translate": 0.0,
    "scale": (1.0, 1.0),
}


def _params(b: int, **kw: object) -> AugmentParams:
    """Identity parameters with some fields overridden."""
    base = {
        "brightness": torch.ones(b),
        "contrast": torch.ones(b),
        "saturation": torch.ones(b),
        "hue": torch.zeros(b),
        "grayscale": torch.zeros(b, dtype=torch.bool),
        "flip": torch.zeros(b, dtype=torch.bool),
        "angle": torch.zeros(b),
        "translate": torch.zeros(b, 2),
        "scale": torch.ones(b),
    }
    base.update(kw)  # type: ignore[arg-type]
    return AugmentParams(**base)  # type: ignore[arg-type]


def test_zero_settings_are_the_identity() -> None:
    x = torch.rand(5, 3, 16, 12)
    y = fer_augment(x, generator=torch.Generator().manual_seed(0), **OFF)  # type: ignore[arg-type]
    assert torch.equal(x, y)


def test_flip_flips_exactly_the_chosen_samples() -> None:
    x = torch.rand(4, 3, 8, 8)
    flip = torch.tensor([True, False, True, False])
    y = apply_augment(x, _params(4, flip=flip))
    for i in range(4):
        assert torch.equal(y[i], x[i].flip(-1) if flip[i] else x[i])
    always = fer_augment(x, generator=torch.Generator().manual_seed(1), **{**OFF, "flip_p": 1.0})  # type: ignore[arg-type]
    assert torch.equal(always, x.flip(-1))


def test_grayscale_makes_channels_equal_with_luma_weights() -> None:
    x = torch.rand(3, 3, 5, 5)
    y = fer_augment(x, generator=torch.Generator(), **{**OFF, "grayscale_p": 1.0})  # type: ignore[arg-type]
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])
    ref = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    torch.testing.assert_close(y[:, 0], ref)
    torch.testing.assert_close(rgb_to_grayscale(x)[:, 0], ref)


def test_colour_jitter_matches_direct_formulas() -> None:
    x = torch.rand(3, 3, 6, 6)
    b = torch.tensor([0.8, 1.0, 1.2])
    y = apply_augment(x, _params(3, brightness=b))
    torch.testing.assert_close(y, (x * b.view(3, 1, 1, 1)).clamp(0, 1))
    c = torch.tensor([0.8, 1.1, 1.2])
    y = apply_augment(x, _params(3, contrast=c))
    for i in range(3):
        m = (0.299 * x[i, 0] + 0.587 * x[i, 1] + 0.114 * x[i, 2]).mean()
        torch.testing.assert_close(y[i], (c[i] * x[i] + (1 - c[i]) * m).clamp(0, 1))
    s = torch.tensor([0.0, 0.9, 1.2])
    y = apply_augment(x, _params(3, saturation=s))
    g = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    torch.testing.assert_close(
        y, (s.view(3, 1, 1, 1) * x + (1 - s.view(3, 1, 1, 1)) * g).clamp(0, 1)
    )
    assert torch.equal(y[0, 0], y[0, 1])  # saturation 0 = grey


def test_hue_shift_reference_and_full_turn() -> None:
    import colorsys

    x = torch.rand(2, 3, 4, 4)
    h = torch.tensor([0.1, -0.25])
    y = apply_augment(x, _params(2, hue=h))
    for i in range(2):
        for r in range(4):
            for c in range(4):
                hh, ss, vv = colorsys.rgb_to_hsv(*x[i, :, r, c].tolist())
                ref = colorsys.hsv_to_rgb((hh + float(h[i])) % 1.0, ss, vv)
                torch.testing.assert_close(y[i, :, r, c], torch.tensor(ref), atol=1e-5, rtol=0)
    # Grey pixels have no hue: any shift keeps them.
    grey = torch.rand(2, 1, 4, 4).expand(2, 3, 4, 4)
    torch.testing.assert_close(apply_augment(grey, _params(2, hue=h)), grey)


def test_rotation_by_90_degrees_is_rot90() -> None:
    x = torch.rand(2, 3, 9, 9)
    y = apply_augment(x, _params(2, angle=torch.tensor([90.0, -90.0])))
    torch.testing.assert_close(y[0], torch.rot90(x[0], 1, (-2, -1)), atol=1e-5, rtol=0)
    torch.testing.assert_close(y[1], torch.rot90(x[1], -1, (-2, -1)), atol=1e-5, rtol=0)


def test_translation_by_whole_pixels_shifts_with_zero_fill() -> None:
    x = torch.rand(1, 3, 10, 8)
    t = torch.tensor([[2 / 8, -1 / 10]])  # 2 px right, 1 px up
    y = apply_augment(x, _params(1, translate=t))
    ref = torch.zeros_like(x)
    ref[..., 0:9, 2:8] = x[..., 1:10, 0:6]
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=0)


def _affine_reference(
    img: torch.Tensor, angle: float, tx: float, ty: float, s: float
) -> torch.Tensor:
    """Loop transcription: inverse-map each output pixel centre, bilinear, zeros outside."""
    import math

    _, h, w = img.shape
    out = torch.zeros_like(img)
    a = math.radians(angle)
    cx, cy = w / 2, h / 2
    for r in range(h):
        for c in range(w):
            # centred output coordinates (y down), minus the translation in pixels
            px, py = c + 0.5 - cx - tx * w, r + 0.5 - cy - ty * h
            # undo a counter-clockwise (on screen) rotation and the scale
            qx = (math.cos(a) * px - math.sin(a) * py) / s
            qy = (math.sin(a) * px + math.cos(a) * py) / s
            x, y = qx + cx - 0.5, qy + cy - 0.5  # input pixel-index coordinates
            x0, y0 = math.floor(x), math.floor(y)
            for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                    if 0 <= yy < h and 0 <= xx < w:
                        out[:, r, c] += wy * wx * img[:, yy, xx]
    return out


def test_affine_matches_a_loop_reference() -> None:
    x = torch.rand(3, 3, 7, 9, dtype=torch.float64)
    angle = torch.tensor([12.0, -7.5, 0.0])
    trans = torch.tensor([[0.05, -0.03], [0.0, 0.02], [-0.04, 0.0]])
    scale = torch.tensor([0.9, 1.05, 2.0])
    y = apply_augment(x, _params(3, angle=angle, translate=trans, scale=scale))
    for i in range(3):
        ref = _affine_reference(
            x[i], float(angle[i]), float(trans[i, 0]), float(trans[i, 1]), float(scale[i])
        )
        torch.testing.assert_close(y[i], ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_range_shape_dtype_and_determinism(dtype: torch.dtype) -> None:
    x = torch.rand(16, 3, 20, 24, dtype=dtype)
    a = fer_augment(x, generator=torch.Generator().manual_seed(3), hue=0.1)
    b = fer_augment(x, generator=torch.Generator().manual_seed(3), hue=0.1)
    c = fer_augment(x, generator=torch.Generator().manual_seed(4), hue=0.1)
    assert a.shape == x.shape and a.dtype == dtype and a.device == x.device
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_parameters_are_per_sample_and_within_ranges() -> None:
    p = sample_augment_params(4000, generator=torch.Generator().manual_seed(0))
    assert float(p.brightness.min()) >= 0.8 and float(p.brightness.max()) <= 1.2
    assert float(p.angle.abs().max()) <= 15.0 and float(p.translate.abs().max()) <= 0.05
    assert float(p.scale.min()) >= 0.9 and float(p.scale.max()) <= 1.05
    # Probabilities: binomial tolerance (5 standard deviations).
    for mask, prob in ((p.grayscale, 0.2), (p.flip, 0.5)):
        sd = (prob * (1 - prob) / 4000) ** 0.5
        assert abs(float(mask.float().mean()) - prob) < 5 * sd
    assert len(set(p.angle.tolist())) > 3990  # one draw per sample
    # The stream does not depend on the settings: same seed, other magnitudes, same uniforms.
    q = sample_augment_params(4000, degrees=30.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(q.angle, 2 * p.angle)


def test_module_equals_function_and_repr() -> None:
    x = torch.rand(4, 3, 8, 8)
    aug = FERAugment(hue=0.05)
    y = aug(x, generator=torch.Generator().manual_seed(0))
    z = fer_augment(x, hue=0.05, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y, z)
    assert "degrees=15.0" in repr(aug) and "scale=(0.9, 1.05)" in repr(aug)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.gpu
def test_runs_on_the_batch_device() -> None:
    x = torch.rand(8, 3, 16, 16, device="cuda")
    y = fer_augment(x, generator=torch.Generator(device="cuda").manual_seed(0))
    assert y.device == x.device
    z = fer_augment(x, generator=torch.Generator().manual_seed(0))
    w = fer_augment(x.cpu(), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(z.cpu(), w, atol=1e-5, rtol=0)


def test_errors() -> None:
    with pytest.raises(ValueError, match=r"3 channels \(B, 3, H, W\)"):
        fer_augment(torch.rand(2, 1, 4, 4))
    with pytest.raises(ValueError, match="4 dimensions"):
        fer_augment(torch.rand(3, 4, 4))
    with pytest.raises(TypeError, match="floating-point"):
        fer_augment(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="hue"):
        FERAugment(hue=0.6)
    with pytest.raises(ValueError, match="flip_p"):
        FERAugment(flip_p=1.5)
    with pytest.raises(ValueError, match="brightness"):
        FERAugment(brightness=-0.1)
    with pytest.raises(ValueError, match="low <= high"):
        FERAugment(scale=(1.1, 0.9))
    with pytest.raises(TypeError, match="pair"):
        FERAugment(scale=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must hold 2 samples"):
        apply_augment(torch.rand(2, 3, 4, 4), _params(3))


def test_normalize_roundtrip_and_reference() -> None:
    x = torch.rand(2, 3, 4, 4)
    y = normalize(x)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(y, (x - mean) / std)
    torch.testing.assert_close(denormalize(y), x)
    torch.testing.assert_close(normalize(x[0]), y[0])
    with pytest.raises(ValueError, match="C = len"):
        normalize(torch.rand(1, 4, 2, 2))
    with pytest.raises(ValueError, match="std"):
        normalize(torch.rand(3, 2, 2), std=(1.0, 0.0, 1.0))
