"""The encoder pretrained on synthetic faces (``lacmfer.data.synthetic``), at a tiny size."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from lacmfer.data.synthetic import (
    SYNTHETIC_DOMAINS,
    PretrainConfig,
    _pretrain,
    pretrain_encoder,
    pretrained_encoder,
    synthetic_style,
)
from lacmfer.data.synthetic._styles import random_style, style_distance
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
    pretrain_encoder(out, TINY, progress=False, command="test")
    return out


def test_writes_a_torchvision_state_dict_and_a_sidecar(built: Path) -> None:
    state = torch.load(built, map_location="cpu", weights_only=True)
    assert set(state) == set(ResNet18Encoder().state_dict())
    assert not any(k.startswith(("layer3.", "layer4.", "fc.")) for k in state)
    record = json.loads(built.with_suffix(".json").read_text())
    for key in ("seed", "steps", "proxy_task", "identity_accuracy_heldout_styles", "wall_time_s"):
        assert key in record
    assert record["command"] == "test" and record["steps"] == 3 and record["seed"] == 0
    assert record["sha256"] == _sha(built)
    assert "expression" in record["proxy_task"] and "unused" in record["proxy_task"]
    assert not list(built.parent.glob("*.tmp*"))


def test_loads_like_an_imagenet_file(built: Path) -> None:
    state = torch.load(built, map_location="cpu", weights_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = ResNet18Encoder().load_torchvision_state_dict(built)
        model = LACMFER.tiny(7, encoder_weights=str(built))
    assert report.ignored_keys == () and set(report.loaded_keys) == set(state)
    for k, v in model.encoder.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_deterministic_for_a_seed(built: Path, tmp_path: Path) -> None:
    again = tmp_path / "b.pth"
    pretrain_encoder(again, TINY, progress=False, command="test")
    assert _sha(again) == _sha(built)
    other = tmp_path / "c.pth"
    pretrain_encoder(other, PretrainConfig(**{**TINY.__dict__, "seed": 1}), progress=False)
    assert _sha(other) != _sha(built)


def test_progress_lines_go_to_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pretrain_encoder(tmp_path / "p.pth", TINY, progress=True, command="test")
    out, err = capsys.readouterr()
    assert "step 3/3" in out and err == ""


def test_batches_use_random_styles_only() -> None:
    gen = torch.Generator().manual_seed(0)
    x, subject = _pretrain._identity_batch(TINY, gen)
    assert x.shape == (8, 3, 32, 32) and subject.shape == (8,)
    assert int(subject.min()) >= 0 and int(subject.max()) < TINY.identities
    style = random_style(gen, name=_pretrain._POOL_NAME, identities=6)
    assert min(style_distance(style, synthetic_style(d)) for d in SYNTHETIC_DOMAINS) >= 0.25
    mask = _pretrain._block_mask(TINY, 4, gen)
    assert mask.shape == (4, 1, 32, 32) and set(mask.unique().tolist()) <= {0.0, 1.0}
    assert bool((mask[..., :8, :8] == mask[..., :1, :1]).all())  # whole 8-px blocks


def test_pretrained_encoder_builds_once_then_reads_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[dict[str, Any]] = []

    def fake(out: Path, config: PretrainConfig, **kwargs: Any) -> dict[str, Any]:
        calls.append({"config": config, "threads": torch.get_num_threads(), **kwargs})
        Path(out).write_bytes(b"weights")
        return {}

    monkeypatch.setattr(_pretrain, "pretrain_encoder", fake)
    threads = torch.get_num_threads()
    path = pretrained_encoder(image_size=32, cache_dir=tmp_path)
    assert path.parent == tmp_path and path.name.startswith("resnet18_synthetic_identity_32px")
    assert path.name.endswith(f"_{PretrainConfig(image_size=32).tag()}.pth")
    assert len(calls) == 1 and calls[0]["config"] == PretrainConfig(image_size=32)
    assert calls[0]["threads"] == 2 and torch.get_num_threads() == threads
    assert "ImageNet" in capsys.readouterr().out
    assert pretrained_encoder(image_size=32, cache_dir=tmp_path) == path
    assert len(calls) == 1 and capsys.readouterr().out == ""


def test_cache_dir_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LACMFER_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert _pretrain._cache_dir() == tmp_path / "a"
    monkeypatch.delenv("LACMFER_CACHE")
    assert _pretrain._cache_dir() == tmp_path / "x" / "lacmfer"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert _pretrain._cache_dir() == Path.home() / ".cache" / "lacmfer"


def test_the_default_settings_keep_their_cache_name() -> None:
    # The tag names the cached file: a changed default would silently build a new encoder.
    assert _pretrain._encoder_path("d", PretrainConfig()).name == (
        "resnet18_synthetic_identity_48px_seed0_1df3d4e2.pth"
    )


def test_config_checks() -> None:
    with pytest.raises(ValueError, match="multiple"):
        PretrainConfig(batch_size=7)
    with pytest.raises(ValueError, match="image_size"):
        PretrainConfig(image_size=36)


def test_concurrent_callers_build_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A caller that finds another holding the build lock waits, then reads what that one built.
    calls: list[Path] = []

    def fake(out: Path, config: PretrainConfig, **kwargs: Any) -> dict[str, Any]:
        calls.append(out)
        Path(out).write_bytes(b"weights")
        return {}

    monkeypatch.setattr(_pretrain, "pretrain_encoder", fake)
    path = _pretrain._encoder_path(tmp_path, PretrainConfig(image_size=32))
    result: list[Path] = []
    with _pretrain._exclusive(path.with_name(path.name + ".lock"), lambda: None):
        waiter = threading.Thread(
            target=lambda: result.append(pretrained_encoder(image_size=32, cache_dir=tmp_path))
        )
        waiter.start()
        deadline = time.monotonic() + 30.0
        while "waiting for another process" not in capsys.readouterr().out:
            assert waiter.is_alive() and time.monotonic() < deadline, "the caller did not wait"
            time.sleep(0.01)
        assert waiter.is_alive() and not result  # blocked while the lock is held
        path.write_bytes(b"built by the holder")
    waiter.join(timeout=30.0)
    assert result == [path] and calls == []  # it did not build a second time
    assert path.read_bytes() == b"built by the holder"
    # Lock free and nothing cached: the next caller builds.
    path.unlink()
    assert pretrained_encoder(image_size=32, cache_dir=tmp_path, progress=False) == path
    assert calls == [path]


def test_pretrain_encoder_writes_the_sidecar_before_the_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A reader that sees the weights file must also find its record.
    seen: list[bool] = []
    real = os.replace

    def replace(src: Any, dst: Any) -> None:
        if str(dst).endswith(".pth"):
            seen.append((tmp_path / "enc.json").is_file())
        real(src, dst)

    monkeypatch.setattr(_pretrain.os, "replace", replace)
    pretrain_encoder(tmp_path / "enc.pth", TINY, progress=False)
    assert seen == [True]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enc.json", "enc.pth"]
