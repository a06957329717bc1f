"""The six styles of the synthetic FER data, and random styles that are none of them.

Data (plus name lookup): the class priors of the protocol's lists, the expression cues of each
class, the label-noise confusions, the :class:`SyntheticStyle` dataclass and the six dataset styles.
``random_style`` and ``style_distance`` serve the encoder pretraining of
:func:`~lacmfer.data.synthetic.pretrained_encoder` (faces in styles that are none of the six); they
are not part of the public API.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Optional, Union

import torch

from ..labels import CLASSES, NUM_CLASSES, canonical_dataset

__all__ = [
    "EXPRESSION_CUES",
    "SYNTHETIC_DOMAINS",
    "SyntheticStyle",
    "canonical_domain",
    "synthetic_style",
]


SYNTHETIC_DOMAINS: tuple[str, ...] = (
    "CK+",
    "JAFFE",
    "Oulu-CASIA",
    "AffectNet",
    "RAF-DB",
    "FER-2013",
)
"""The six domains of the protocol, lab-controlled first."""

# The class priors of the six styles: per-domain class counts in RAF order.
_LIST_CLASS_COUNTS: dict[str, tuple[int, ...]] = {
    # Class histograms (RAF order) of the protocol's lists, counted line by line from
    # lacmfer/data/protocol_lists, shipped with the package (tests/data/test_synthetic.py recomputes
    # them).
    "CK+": (249, 75, 177, 207, 84, 135, 123),  # CK.txt
    "JAFFE": (30, 32, 29, 31, 31, 30, 30),  # JAFFE.txt
    "Oulu-CASIA": (417, 417, 417, 417, 417, 423, 480),  # Oulu.txt (duplicate lines counted)
    "RAF-DB": (1610, 352, 874, 5934, 2425, 854, 3157),  # RAF_train.txt
    "FER-2013": (3171, 4097, 436, 7215, 4830, 3995, 4965),  # FER2013_train.txt
    # No AffectNet list ships with the protocol: the 7-class counts of AffectNet's manually
    # annotated training set (Mollahosseini et al., 2017, Table 4), in RAF order.
    "AffectNet": (14090, 6378, 3803, 134415, 25459, 24882, 74874),
}

# Expression cues, one row per class in RAF order. Columns:
_CUE_NAMES = (
    "brow_raise",  # brows up (+) / down (-), face units
    "brow_slant",  # inner ends down (+, anger) / up (-, sadness, fear)
    "eye_open",  # eye-opening multiplier (1 = neutral)
    "mouth_curve",  # corners up (+, smile) / down (-)
    "mouth_open",  # lip separation
    "mouth_width",  # width multiplier
    "nose_wrinkle",  # AU9 strength
    "lip_raise",  # upper-lip raise (AU10)
    "teeth",  # teeth shown in an open mouth
    "forehead",  # horizontal forehead wrinkles (AU1+2)
    "furrow",  # vertical furrow between the brows (AU4)
    "nasolabial",  # nasolabial folds (AU6+12, AU9/10)
)
_NEUTRAL_CUES = (0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
_CLASS_CUES = (
    # raise  slant  eye   curve  open   width  nose  lip   teeth  fhead furrow naso
    (0.13, 0.00, 1.55, 0.00, 0.24, 0.72, 0.0, 0.00, 0.2, 1.0, 0.0, 0.0),  # Surprise
    (0.08, -0.08, 1.40, -0.04, 0.10, 1.22, 0.0, 0.00, 0.6, 0.6, 0.3, 0.0),  # Fear
    (-0.05, 0.05, 0.62, -0.06, 0.03, 0.95, 1.0, 0.09, 0.3, 0.0, 0.6, 0.8),  # Disgust
    (0.01, 0.00, 0.70, 0.17, 0.08, 1.28, 0.0, 0.00, 1.0, 0.0, 0.0, 1.0),  # Happiness
    (0.00, -0.10, 0.78, -0.11, 0.00, 0.92, 0.0, 0.00, 0.0, 0.2, 0.2, 0.0),  # Sadness
    (-0.08, 0.11, 0.88, -0.04, 0.00, 0.82, 0.2, 0.00, 0.0, 0.0, 1.0, 0.0),  # Anger
    _NEUTRAL_CUES,  # Neutral
)
EXPRESSION_CUES: dict[str, dict[str, float]] = {
    name: dict(zip(_CUE_NAMES, row)) for name, row in zip(CLASSES, _CLASS_CUES)
}
"""The full-intensity cue values of each class (read-only documentation of the renderer)."""

# Classes a label is mistaken for (label noise), rows in RAF order, weights over RAF classes.
_CONFUSION = (
    (0, 5, 0, 2, 0, 0, 3),  # Surprise -> Fear, Happiness, Neutral
    (5, 0, 2, 0, 3, 0, 0),  # Fear -> Surprise, Disgust, Sadness
    (0, 1, 0, 0, 3, 4, 2),  # Disgust -> Anger, Sadness, Neutral
    (4, 0, 0, 0, 0, 0, 6),  # Happiness -> Neutral, Surprise
    (0, 2, 3, 0, 0, 0, 5),  # Sadness -> Neutral, Disgust, Fear
    (0, 0, 5, 0, 2, 0, 3),  # Anger -> Disgust, Neutral, Sadness
    (0, 0, 0, 3, 4, 3, 0),  # Neutral -> Sadness, Happiness, Anger
)


@dataclass(frozen=True)
class SyntheticStyle:
    """How one synthetic domain looks. Build variants with :func:`dataclasses.replace`.

    Attributes:
        name: Domain name.
        grey: Render grey images (three equal channels).
        background: ``"plain"`` or ``"clutter"``.
        background_level: Range of the plain background's grey level.
        identities: Size of the fixed subject pool (``None``: a new identity per sample).
        intensity: Range of the per-sample expression intensity (uniform).
        rotation: Maximum in-plane head rotation in degrees.
        scale: Range of the face scale factor.
        translate: Maximum face shift, fraction of the image.
        face_size: Face half-height as a fraction of the image half-height.
        brightness: Range of the global gain.
        contrast: Range of the contrast factor around mid-grey.
        side_light: Maximum strength of a directional lighting gradient.
        resolution: Effective resolution as a fraction of the output size (1 = sharp).
        blur: Range of the Gaussian blur sigma, in pixels at 112 px (scaled with the size).
        noise: Standard deviation of additive pixel noise.
        occlusion: Probability of an occluder (sunglasses bar or hand).
        label_noise: Probability that a label is replaced by a confusable class.
        class_counts: Class counts (RAF order) giving the class prior.
        display_shift: Magnitude of the domain's fixed offset of the expression cues.
        skin: Mean skin colour (RGB) of the domain's identities.
        skin_spread: Spread of the skin tone around ``skin``.
        hair_length: Range of hair length (0 short, 1 shoulder-long).
        tint: Range of the per-channel colour cast (colour domains).
    """

    name: str
    grey: bool
    background: str
    background_level: tuple[float, float]
    identities: Optional[int]
    intensity: tuple[float, float]
    rotation: float
    scale: tuple[float, float]
    translate: float
    face_size: float
    brightness: tuple[float, float]
    contrast: tuple[float, float]
    side_light: float
    resolution: float
    blur: tuple[float, float]
    noise: float
    occlusion: float
    label_noise: float
    class_counts: tuple[int, ...]
    display_shift: float
    skin: tuple[float, float, float]
    skin_spread: float
    hair_length: tuple[float, float]
    tint: float

    def __post_init__(self) -> None:
        if self.background not in ("plain", "clutter"):
            raise ValueError(f"`background` must be 'plain' or 'clutter', got {self.background!r}")
        if len(self.class_counts) != NUM_CLASSES or min(self.class_counts) < 0:
            raise ValueError(
                f"`class_counts` must hold {NUM_CLASSES} non-negative counts, got "
                f"{self.class_counts}"
            )
        if not 0.0 < self.resolution <= 1.0:
            raise ValueError(f"`resolution` must lie in (0, 1], got {self.resolution}")
        if not 0.0 <= self.label_noise < 1.0 or not 0.0 <= self.occlusion <= 1.0:
            raise ValueError(
                f"`label_noise` must lie in [0, 1) and `occlusion` in [0, 1], got "
                f"{self.label_noise} and {self.occlusion}"
            )
        lo, hi = self.intensity
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(
                f"`intensity` must satisfy 0 <= low <= high <= 1, got {self.intensity}"
            )


_STYLES: dict[str, SyntheticStyle] = {
    "CK+": SyntheticStyle(
        name="CK+",
        grey=True,
        background="plain",
        background_level=(0.72, 0.88),
        identities=118,
        intensity=(0.8, 1.0),
        rotation=2.0,
        scale=(0.97, 1.03),
        translate=0.01,
        face_size=0.8,
        brightness=(1.0, 1.1),
        contrast=(1.05, 1.2),
        side_light=0.05,
        resolution=1.0,
        blur=(0.0, 0.3),
        noise=0.01,
        occlusion=0.0,
        label_noise=0.0,
        class_counts=_LIST_CLASS_COUNTS["CK+"],
        display_shift=0.02,
        skin=(0.78, 0.62, 0.52),
        skin_spread=0.12,
        hair_length=(0.0, 0.5),
        tint=0.0,
    ),
    "JAFFE": SyntheticStyle(
        name="JAFFE",
        grey=True,
        background="plain",
        background_level=(0.25, 0.4),
        identities=10,
        intensity=(0.55, 0.9),
        rotation=3.0,
        scale=(0.97, 1.03),
        translate=0.015,
        face_size=0.78,
        brightness=(0.95, 1.05),
        contrast=(0.85, 0.95),
        side_light=0.05,
        resolution=1.0,
        blur=(0.3, 0.6),
        noise=0.012,
        occlusion=0.0,
        label_noise=0.0,
        class_counts=_LIST_CLASS_COUNTS["JAFFE"],
        display_shift=0.03,
        skin=(0.85, 0.70, 0.58),
        skin_spread=0.04,
        hair_length=(0.8, 1.0),
        tint=0.0,
    ),
    "Oulu-CASIA": SyntheticStyle(
        name="Oulu-CASIA",
        grey=True,
        background="plain",
        background_level=(0.1, 0.25),
        identities=80,
        intensity=(0.65, 1.0),
        rotation=4.0,
        scale=(0.95, 1.05),
        translate=0.02,
        face_size=0.82,
        brightness=(0.75, 1.0),
        contrast=(0.9, 1.1),
        side_light=0.4,
        resolution=0.9,
        blur=(0.3, 0.8),
        noise=0.02,
        occlusion=0.0,
        label_noise=0.0,
        class_counts=_LIST_CLASS_COUNTS["Oulu-CASIA"],
        display_shift=0.02,
        skin=(0.8, 0.64, 0.54),
        skin_spread=0.1,
        hair_length=(0.0, 0.6),
        tint=0.0,
    ),
    "AffectNet": SyntheticStyle(
        name="AffectNet",
        grey=False,
        background="clutter",
        background_level=(0.2, 0.8),
        identities=None,
        intensity=(0.6, 1.0),
        rotation=8.0,
        scale=(0.9, 1.08),
        translate=0.03,
        face_size=0.86,
        brightness=(0.7, 1.25),
        contrast=(0.75, 1.3),
        side_light=0.3,
        resolution=1.0,
        blur=(0.0, 0.5),
        noise=0.02,
        occlusion=0.1,
        label_noise=0.12,
        class_counts=_LIST_CLASS_COUNTS["AffectNet"],
        display_shift=0.08,
        skin=(0.72, 0.55, 0.45),
        skin_spread=0.3,
        hair_length=(0.0, 1.0),
        tint=0.25,
    ),
    "RAF-DB": SyntheticStyle(
        name="RAF-DB",
        grey=False,
        background="clutter",
        background_level=(0.3, 0.8),
        identities=None,
        intensity=(0.5, 1.0),
        rotation=8.0,
        scale=(0.95, 1.05),
        translate=0.02,
        face_size=0.92,
        brightness=(0.8, 1.2),
        contrast=(0.85, 1.2),
        side_light=0.2,
        resolution=1.0,
        blur=(0.0, 0.8),
        noise=0.015,
        occlusion=0.15,
        label_noise=0.08,
        class_counts=_LIST_CLASS_COUNTS["RAF-DB"],
        display_shift=0.03,
        skin=(0.75, 0.58, 0.48),
        skin_spread=0.25,
        hair_length=(0.0, 1.0),
        tint=0.08,
    ),
    "FER-2013": SyntheticStyle(
        name="FER-2013",
        grey=True,
        background="clutter",
        background_level=(0.2, 0.7),
        identities=None,
        intensity=(0.6, 1.0),
        rotation=10.0,
        scale=(0.95, 1.12),
        translate=0.04,
        face_size=0.9,
        brightness=(0.7, 1.2),
        contrast=(0.85, 1.2),
        side_light=0.25,
        resolution=0.8,
        blur=(0.0, 0.3),
        noise=0.02,
        occlusion=0.1,
        label_noise=0.10,
        class_counts=_LIST_CLASS_COUNTS["FER-2013"],
        display_shift=0.03,
        skin=(0.74, 0.58, 0.48),
        skin_spread=0.25,
        hair_length=(0.0, 1.0),
        tint=0.0,
    ),
}


def canonical_domain(domain: str) -> str:
    """Canonical name of one of :data:`SYNTHETIC_DOMAINS` (case-insensitive, with aliases).

    Example:
        >>> canonical_domain("ck"), canonical_domain("raf"), canonical_domain("fer2013")
        ('CK+', 'RAF-DB', 'FER-2013')
    """
    return canonical_dataset(domain, SYNTHETIC_DOMAINS, argument="domain")


def synthetic_style(domain: Union[str, SyntheticStyle]) -> SyntheticStyle:
    """The :class:`SyntheticStyle` of a domain name (a style is returned unchanged).

    Example:
        >>> s = synthetic_style("jaffe")
        >>> s.name, s.grey, s.identities
        ('JAFFE', True, 10)
    """
    if isinstance(domain, SyntheticStyle):
        return domain
    return _STYLES[canonical_domain(domain)]


def _domain_seed(name: str) -> int:
    return sum((i + 1) * 131 * ord(c) for i, c in enumerate(name)) % (2**31)


# Ranges random styles are drawn from: wide enough to cover the six benchmark styles and beyond.
_RANDOM_RANGES: dict[str, tuple[float, float]] = {
    "background_level": (0.05, 0.9),
    "intensity": (0.3, 1.0),
    "rotation": (0.0, 15.0),
    "scale": (0.88, 1.12),
    "translate": (0.0, 0.06),
    "face_size": (0.6, 1.0),
    "brightness": (0.6, 1.3),
    "contrast": (0.7, 1.3),
    "side_light": (0.0, 0.5),
    "resolution": (0.35, 1.0),
    "blur": (0.0, 1.0),
    "noise": (0.0, 0.03),
    "occlusion": (0.0, 0.25),
    "display_shift": (0.0, 0.12),
    "skin": (0.4, 0.92),
    "skin_spread": (0.03, 0.3),
    "hair_length": (0.0, 1.0),
    "tint": (0.0, 0.25),
}


def _style_vector(style: SyntheticStyle) -> torch.Tensor:
    """The style's appearance settings as a vector, each scaled to ``[0, 1]`` by its draw range.

    Categorical settings count as 0/1 (grey, cluttered background); the identity pool, label noise
    and class prior are left out (they are not appearance).
    """
    values: list[float] = [float(style.grey), float(style.background == "clutter")]
    for f in fields(style):
        if f.name not in _RANDOM_RANGES:
            continue
        lo, hi = _RANDOM_RANGES[f.name]
        v = getattr(style, f.name)
        for x in v if isinstance(v, tuple) else (v,):
            values.append((float(x) - lo) / (hi - lo))
    return torch.tensor(values, dtype=torch.float64)


def style_distance(a: SyntheticStyle, b: SyntheticStyle) -> float:
    """Root-mean-square difference of two styles' appearance settings, each scaled to ``[0, 1]``.

    0 for styles that look alike; two independent random styles are about 0.4 apart.

    Example:
        >>> style_distance(synthetic_style("ck"), synthetic_style("ck"))
        0.0
    """
    return float((_style_vector(a) - _style_vector(b)).square().mean().sqrt())


def random_style(
    generator: torch.Generator,
    *,
    name: str = "random",
    identities: Optional[int] = None,
    min_distance: float = 0.25,
) -> SyntheticStyle:
    """Draw a random style that is none of the six benchmark styles.

    Every appearance setting (colour, background, lighting, pose, face size, resolution, blur,
    noise, occlusion, expression display, skin and hair) is drawn uniformly from a range that
    spans the six styles of :data:`SYNTHETIC_DOMAINS` and beyond; draws closer than
    ``min_distance`` (:func:`style_distance`) to any of the six are rejected and drawn again. The
    style has no label noise and a uniform class prior. Used to pretrain an encoder on faces that
    share nothing with the benchmark's target styles.

    Args:
        generator: Source of randomness (the style is a function of its state).
        name: The style's name (it also seeds the identity pool and the display offsets, so styles
            with the same name and pool size share their subjects).
        identities: Size of a fixed subject pool, or ``None`` for a new identity per sample.
        min_distance: Smallest allowed :func:`style_distance` to a benchmark style.

    Returns:
        The style.

    Example:
        >>> s = random_style(torch.Generator().manual_seed(0))
        >>> min(style_distance(s, synthetic_style(d)) for d in SYNTHETIC_DOMAINS) >= 0.25
        True
    """
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"`generator` must be a torch.Generator, got {type(generator).__name__}")
    if not 0.0 <= min_distance < 0.5:
        raise ValueError(f"`min_distance` must lie in [0, 0.5), got {min_distance}")
    benchmark = [_STYLES[d] for d in SYNTHETIC_DOMAINS]
    while True:
        it = iter(torch.rand(40, generator=generator, dtype=torch.float64).tolist())

        def draw(key: str, it: Iterator[float] = it) -> float:
            lo, hi = _RANDOM_RANGES[key]
            return lo + (hi - lo) * next(it)

        def pair(key: str, min_width: float = 0.0) -> tuple[float, float]:
            a, b = sorted((draw(key), draw(key)))
            return a, max(b, min(a + min_width, _RANDOM_RANGES[key][1]))

        grey = next(it) < 0.5
        clutter = next(it) < 0.5
        skin_level = draw("skin")
        style = SyntheticStyle(
            name=name,
            grey=grey,
            background="clutter" if clutter else "plain",
            background_level=pair("background_level", 0.1),
            identities=identities,
            intensity=pair("intensity", 0.1),
            rotation=draw("rotation"),
            scale=pair("scale"),
            translate=draw("translate"),
            face_size=draw("face_size"),
            brightness=pair("brightness"),
            contrast=pair("contrast"),
            side_light=draw("side_light"),
            resolution=draw("resolution"),
            blur=pair("blur"),
            noise=draw("noise"),
            occlusion=draw("occlusion"),
            label_noise=0.0,
            class_counts=(1,) * NUM_CLASSES,
            display_shift=draw("display_shift"),
            skin=(skin_level, skin_level * 0.8, skin_level * 0.68),
            skin_spread=draw("skin_spread"),
            hair_length=pair("hair_length"),
            tint=0.0 if grey else draw("tint"),
        )
        if all(style_distance(style, b) >= min_distance for b in benchmark):
            return style
