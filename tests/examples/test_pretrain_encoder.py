"""The offline encoder pretraining of ``examples/cmfer/pretrain.py`` (a few steps at a tiny size)."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import pytest
import torch
from cmfer import pretrain
from cmfer.pretrain import PretrainConfig, default_cache_dir, encoder_path, ensure_encoder

from lacmfer.data import SYNTHETIC_DOMAINS, style_distance, synthetic_style
from lacmfer.modules import LACMFER, ResNet18Encoder

TINY = PretrainConfig(
    steps=3,
    image_size=32,
    batch_size=8,
    styles_per_batch=2,
    identities=6,
    eval_images=8,
)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("enc") / "a.pth"
    pretrain.pretrain_encoder(out, TINY, progress=False, command="test")
    return out


def test_writes_a_torchvision_state_dict_and_a_sidecar(built: Path) -> None:
    state = torch.load(built, map_location="cpu", weights_only=True)
    assert set(state) == set(ResNet18Encoder().state_dict())
    assert "conv1.weight" in state and "layer2.1.bn2.running_var" in state
    assert not any(k.startswith(("layer3.", "layer4.", "fc.")) for k in state)
    record = json.loads(built.with_suffix(".json").read_text())
    for key in ("seed", "steps", "proxy_task", "identity_accuracy_heldout_styles", "wall_time_s"):
        assert key in record
    assert record["command"] == "test" and record["steps"] == 3 and record["seed"] == 0
    assert record["sha256"] == _sha(built)
    assert "expression" in record["proxy_task"] and "unused" in record["proxy_task"]


def test_loads_like_an_imagenet_file(built: Path) -> None:
    state = torch.load(built, map_location="cpu", weights_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encoder = ResNet18Encoder()
        report = encoder.load_torchvision_state_dict(built)
        model = LACMFER.tiny(7, encoder_weights=str(built))
    assert report.ignored_keys == () and set(report.loaded_keys) == set(state)
    for k, v in model.encoder.state_dict().items():
        assert torch.equal(v, state[k]), k
    # An ImageNet-style file also holds layer3/layer4/fc: those are ignored, ours loads the same.
    extra = dict(
        state, **{"fc.weight": torch.zeros(1000, 512), "layer3.0.conv1.weight": torch.zeros(1)}
    )
    assert ResNet18Encoder().load_torchvision_state_dict(extra).loaded_keys == report.loaded_keys


def test_deterministic_for_a_seed(built: Path, tmp_path: Path) -> None:
    again = tmp_path / "b.pth"
    pretrain.pretrain_encoder(again, TINY, progress=False, command="test")
    assert _sha(again) == _sha(built)
    other = tmp_path / "c.pth"
    pretrain.pretrain_encoder(other, PretrainConfig(**{**TINY.__dict__, "seed": 1}), progress=False)
    assert _sha(other) != _sha(built)


def test_batches_use_random_styles_only() -> None:
    gen = torch.Generator().manual_seed(0)
    x, subject = pretrain.render_identity_batch(TINY, gen)
    assert x.shape == (8, 3, 32, 32) and subject.shape == (8,)
    assert int(subject.min()) >= 0 and int(subject.max()) < TINY.identities
    style = pretrain.random_style(gen, name=pretrain.POOL_NAME, identities=6)
    assert min(style_distance(style, synthetic_style(d)) for d in SYNTHETIC_DOMAINS) >= 0.25
    mask = pretrain.block_mask(TINY, 4, gen)
    assert mask.shape == (4, 1, 32, 32) and set(mask.unique().tolist()) <= {0.0, 1.0}
    assert bool((mask[..., :8, :8] == mask[..., :1, :1]).all())  # whole 8-px blocks


def test_ensure_encoder_builds_once_then_reuses_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = ensure_encoder(tmp_path, config=TINY, progress=True)
    assert path == encoder_path(tmp_path, TINY) and path.is_file()
    assert path.with_suffix(".json").is_file()
    assert "pretrain" in capsys.readouterr().err
    stamp = path.stat().st_mtime_ns

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached encoder should be reused")

    monkeypatch.setattr(pretrain, "pretrain_encoder", fail)
    assert ensure_encoder(tmp_path, config=TINY) == path
    assert path.stat().st_mtime_ns == stamp
    assert not list(tmp_path.glob("*.tmp*"))


def test_cache_dir_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LACMFER_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("LACMFER_CACHE")
    assert default_cache_dir() == tmp_path / "x" / "lacmfer"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "lacmfer"
    assert encoder_path(tmp_path, TINY) != encoder_path(tmp_path, PretrainConfig())


def test_config_checks() -> None:
    with pytest.raises(ValueError, match="multiple"):
        PretrainConfig(batch_size=7)
    with pytest.raises(ValueError, match="image_size"):
        PretrainConfig(image_size=36)
