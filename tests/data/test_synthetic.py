"""The synthetic multi-domain FER benchmark: determinism, styles, priors, noise, local cues."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lacmfer.data import CLASSES, class_histogram, parse_image_list
from lacmfer.data.synthetic import (
    SYNTHETIC_DOMAINS,
    SyntheticFER,
    canonical_domain,
    render_faces,
    synthetic_style,
)
from lacmfer.data.synthetic._styles import _LIST_CLASS_COUNTS, random_style, style_distance

GREY = {"CK+": True, "JAFFE": True, "Oulu-CASIA": True, "AffectNet": False, "RAF-DB": False}
GREY["FER-2013"] = True


def test_domain_names_and_aliases() -> None:
    assert SYNTHETIC_DOMAINS == ("CK+", "JAFFE", "Oulu-CASIA", "AffectNet", "RAF-DB", "FER-2013")
    for alias, name in [
        ("ck", "CK+"),
        ("RAF", "RAF-DB"),
        ("fer2013", "FER-2013"),
        ("oulu", "Oulu-CASIA"),
        ("Jaffe", "JAFFE"),
        ("AFFECTNET", "AffectNet"),
    ]:
        assert canonical_domain(alias) == name
    with pytest.raises(ValueError, match="`domain` must name one of"):
        canonical_domain("sfew")


@pytest.mark.parametrize("domain", SYNTHETIC_DOMAINS)
def test_dataset_attributes_and_determinism(domain: str) -> None:
    a = SyntheticFER(domain, 40, image_size=24, seed=3)
    b = SyntheticFER(domain.lower(), 40, image_size=24, seed=3)
    c = SyntheticFER(domain, 40, image_size=24, seed=4)
    assert a.images.shape == (40, 3, 24, 24) and a.images.dtype == torch.float32
    assert float(a.images.min()) >= 0.0 and float(a.images.max()) <= 1.0
    assert a.labels.dtype == torch.int64 and a.clean_labels.shape == (40,)
    assert int(a.labels.min()) >= 0 and int(a.labels.max()) < 7
    lo, hi = a.style.intensity
    assert float(a.intensity.min()) >= lo and float(a.intensity.max()) <= hi
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    assert a.domain == domain and a.domain_index == SYNTHETIC_DOMAINS.index(domain)
    grey = bool(
        (a.images[:, 0] == a.images[:, 1]).all() and (a.images[:, 1] == a.images[:, 2]).all()
    )
    assert grey == GREY[domain]
    if a.style.identities is None:
        assert bool((a.identity == -1).all())
    else:
        assert int(a.identity.min()) >= 0 and int(a.identity.max()) < a.style.identities
    image, label = a[5]
    assert torch.equal(image, a.images[5]) and label == int(a.labels[5]) and isinstance(label, int)
    xb, yb = a.get_batch(torch.tensor([1, 7]))
    assert torch.equal(xb, a.images[[1, 7]]) and torch.equal(yb, a.labels[[1, 7]])
    assert len(set(a.keys) | set(c.keys)) == 80


@pytest.mark.parametrize("domain", ["CK+", "RAF-DB"])  # a fixed identity pool and drawn ones
def test_an_empty_dataset_has_the_shapes_of_a_full_one(domain: str) -> None:
    empty, one = SyntheticFER(domain, 0, image_size=24), SyntheticFER(domain, 1, image_size=24)
    assert len(empty) == 0 and empty.keys == []
    for name in ("images", "labels", "clean_labels", "intensity", "identity"):
        a, b = getattr(empty, name), getattr(one, name)
        assert a.shape[1:] == b.shape[1:] and a.shape[0] == 0 and a.dtype == b.dtype, name


def test_priors_follow_the_list_histograms() -> None:
    n = 4000
    for domain in ("RAF-DB", "CK+"):
        ds = SyntheticFER(domain, n, image_size=8, seed=0)
        counts = _LIST_CLASS_COUNTS[domain]
        total = sum(counts)
        hist = class_histogram(ds.clean_labels)
        for k in range(7):
            p = counts[k] / total
            sd = math.sqrt(p * (1 - p) / n)
            assert abs(hist[k] / n - p) < 5 * sd, (domain, CLASSES[k], hist[k] / n, p)


LIST_FILES = {
    "CK+": "CK.txt",
    "JAFFE": "JAFFE.txt",
    "Oulu-CASIA": "Oulu.txt",
    "RAF-DB": "RAF_train.txt",
    "FER-2013": "FER2013_train.txt",
}


@pytest.mark.parametrize("domain", sorted(LIST_FILES))
def test_hard_coded_priors_match_the_real_lists(fer_lists: Path, domain: str) -> None:
    labels = [e.label for e in parse_image_list(fer_lists / LIST_FILES[domain]).entries]
    assert tuple(class_histogram(labels)) == _LIST_CLASS_COUNTS[domain]


def test_label_noise_rates_and_confusions() -> None:
    n = 2000
    for domain in SYNTHETIC_DOMAINS:
        rate = synthetic_style(domain).label_noise
        ds = SyntheticFER(domain, n if rate else 200, image_size=8, seed=1)
        flipped = ds.labels != ds.clean_labels
        if rate == 0:
            assert not bool(flipped.any())
            continue
        assert 0.05 <= rate <= 0.2
        sd = math.sqrt(rate * (1 - rate) / n)
        assert abs(float(flipped.float().mean()) - rate) < 5 * sd, domain
    clean = SyntheticFER("RAF-DB", 50, image_size=8, seed=1, label_noise=0.0)
    assert torch.equal(clean.labels, clean.clean_labels)


def test_zero_intensity_is_neutral_and_cues_grow_with_intensity() -> None:
    def render(labels: list[int], a: float) -> torch.Tensor:
        return render_faces(
            labels,
            intensity=a,
            style="CK+",
            image_size=48,
            generator=torch.Generator().manual_seed(0),
            identity=[0] * len(labels),
        )

    every = list(range(7))
    neutral = [6] * 7
    # At intensity 0 every class renders exactly the neutral face (same draws, same identity).
    assert torch.equal(render(every, 0.0), render(neutral, 0.0))
    base = render(neutral, 1.0)
    dist = [
        float((render(every, a) - base).abs().flatten(1).mean(1)[:6].min()) for a in (0.3, 0.6, 1.0)
    ]
    assert 0 < dist[0] < dist[1] < dist[2]
    # The cues are local: the frame's corners (background) do not depend on the expression.
    faces = render(every, 1.0)
    assert torch.equal(faces[:, :, :4, :4], base[:, :, :4, :4])
    diff = (faces - base).abs().sum(1)  # (7, S, S)
    centre = diff[:, 4:44, 4:44].sum((1, 2))
    assert bool((centre > 0.9 * diff.sum((1, 2)))[:6].all())


def test_each_expression_is_distinct() -> None:
    x = render_faces(
        list(range(7)),
        intensity=1.0,
        style="CK+",
        image_size=48,
        identity=[1] * 7,
        generator=torch.Generator().manual_seed(2),
    )
    flat = x.flatten(1)
    d = torch.cdist(flat, flat)
    off = d[~torch.eye(7, dtype=torch.bool)]
    assert float(off.min()) > 0.05 * float(off.max())


def test_styles_differ_in_appearance() -> None:
    stats = {}
    for d in SYNTHETIC_DOMAINS:
        x = SyntheticFER(d, 64, image_size=32, seed=0).images
        grey = x.mean(1)
        stats[d] = (float(grey.mean()), float(grey.std()))
    assert stats["Oulu-CASIA"][0] < stats["CK+"][0]  # darker lab lighting
    assert synthetic_style("FER-2013").resolution < synthetic_style("RAF-DB").resolution
    assert synthetic_style("JAFFE").identities == 10


def test_render_faces_errors() -> None:
    with pytest.raises(ValueError, match=r"classes in \[0, 7\)"):
        render_faces([7])
    with pytest.raises(ValueError, match="1-D integer"):
        render_faces(torch.tensor([0.0]))
    with pytest.raises(ValueError, match="intensity"):
        render_faces([0, 1], intensity=[0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        render_faces([0], intensity=1.5)
    with pytest.raises(ValueError, match="identity pool"):
        render_faces([0], style="RAF-DB", identity=[0])
    with pytest.raises(ValueError, match="identity"):
        render_faces([0], style="JAFFE", identity=[10])
    with pytest.raises(ValueError, match="image_size"):
        render_faces([0], image_size=4)
    with pytest.raises(ValueError, match="background"):
        dataclasses.replace(synthetic_style("CK+"), background="noise")
    with pytest.raises(ValueError, match="class_counts"):
        dataclasses.replace(synthetic_style("CK+"), class_counts=(1, 2))
    assert render_faces([], image_size=8).shape == (0, 3, 8, 8)


def test_custom_style() -> None:
    colour_ck = dataclasses.replace(synthetic_style("CK+"), name="CK+ colour", grey=False)
    ds = SyntheticFER(colour_ck, 8, image_size=16)
    assert ds.domain == "CK+ colour" and ds.domain_index == -1
    assert not torch.equal(ds.images[:, 0], ds.images[:, 2])


@pytest.mark.slow
def test_a_cross_domain_gap_exists() -> None:
    """A small CNN trained on CK+ beats one trained on the wild domains, tested on CK+."""
    from torch import nn

    torch.manual_seed(0)

    def fit(x: torch.Tensor, y: torch.Tensor) -> nn.Module:
        layers: list[nn.Module] = []
        for c_in, c_out in ((3, 16), (16, 32), (32, 64)):
            layers += [nn.Conv2d(c_in, c_out, 3, 1, 1), nn.BatchNorm2d(c_out), nn.ReLU()]
            layers.append(nn.MaxPool2d(2))
        net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 7))
        opt = torch.optim.Adam(net.parameters(), 3e-3)
        gen = torch.Generator().manual_seed(0)
        for _ in range(100):
            i = torch.randint(len(y), (64,), generator=gen)
            loss = nn.functional.cross_entropy(net((x[i] - 0.5) / 0.25), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
        return net.eval()

    train = SyntheticFER("CK+", 600, image_size=32, seed=0)
    test = SyntheticFER("CK+", 300, image_size=32, seed=1)
    wild = [
        SyntheticFER(d, 200, image_size=32, seed=0) for d in ("AffectNet", "RAF-DB", "FER-2013")
    ]
    a = fit(train.images, train.labels)
    b = fit(torch.cat([w.images for w in wild]), torch.cat([w.labels for w in wild]))
    with torch.no_grad():
        x = (test.images - 0.5) / 0.25
        acc_a = float((a(x).argmax(1) == test.labels).float().mean())
        acc_b = float((b(x).argmax(1) == test.labels).float().mean())
    assert acc_a > acc_b + 0.2, (acc_a, acc_b)


def test_random_styles_are_none_of_the_benchmark_styles() -> None:
    gen = torch.Generator().manual_seed(0)
    styles = [random_style(gen) for _ in range(50)]
    for s in styles:
        assert min(style_distance(s, synthetic_style(d)) for d in SYNTHETIC_DOMAINS) >= 0.25
        assert s.label_noise == 0.0 and len(set(s.class_counts)) == 1 and s.identities is None
        assert s.name == "random"
    assert len(set(styles)) == 50  # all different
    assert {s.grey for s in styles} == {True, False}
    assert {s.background for s in styles} == {"plain", "clutter"}
    again = [random_style(torch.Generator().manual_seed(0)) for _ in range(1)]
    assert again[0] == styles[0]  # a function of the generator's state
    pooled = random_style(torch.Generator().manual_seed(1), name="pool", identities=5)
    assert pooled.name == "pool" and pooled.identities == 5
    x = render_faces([0, 3], style=pooled, identity=[0, 4], image_size=16)
    assert x.shape == (2, 3, 16, 16)
    # with no rejection, some draws land closer to a benchmark style than the default allows
    loose = [random_style(gen, min_distance=0.0) for _ in range(200)]
    near = [min(style_distance(s, synthetic_style(d)) for d in SYNTHETIC_DOMAINS) for s in loose]
    assert min(near) < 0.25
    with pytest.raises(TypeError, match="generator"):
        random_style(0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_distance"):
        random_style(gen, min_distance=0.6)


def test_style_distance() -> None:
    ck, raf = synthetic_style("CK+"), synthetic_style("RAF-DB")
    assert style_distance(ck, ck) == 0.0
    assert style_distance(ck, raf) == style_distance(raf, ck) > 0.1
    for a in SYNTHETIC_DOMAINS:
        for b in SYNTHETIC_DOMAINS:
            if a != b:
                assert style_distance(synthetic_style(a), synthetic_style(b)) > 0.1, (a, b)
    grey_only = dataclasses.replace(ck, grey=False)
    assert 0.0 < style_distance(ck, grey_only) < 0.3


def test_module_layout() -> None:
    """The generator is its own module: lacmfer.data neither imports nor re-exports it."""
    code = (
        "import sys, lacmfer.data as d\n"
        "assert 'lacmfer.data.synthetic' not in sys.modules\n"
        "assert not any('ynthetic' in n or 'style' in n for n in d.__all__), d.__all__\n"
        "import lacmfer.data.synthetic as s\n"
        "assert s.__all__ == sorted(s.__all__, key=lambda n: (not n.isupper(), not n[0].isupper(), n))\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
