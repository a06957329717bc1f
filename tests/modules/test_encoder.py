"""ResNet18Encoder: torchvision names and shapes, checkpoint loading, output shapes."""

from __future__ import annotations

import logging
import pathlib
import warnings

import pytest
import torch

from lacmfer.modules import LACMFER, EncoderLoadReport, ResNet18Encoder


def _bn(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}.weight": (c,),
        f"{prefix}.bias": (c,),
        f"{prefix}.running_mean": (c,),
        f"{prefix}.running_var": (c,),
        f"{prefix}.num_batches_tracked": (),
    }


def _basic_block(prefix: str, cin: int, cout: int, downsample: bool) -> dict[str, tuple[int, ...]]:
    table = {f"{prefix}.conv1.weight": (cout, cin, 3, 3)}
    table.update(_bn(f"{prefix}.bn1", cout))
    table[f"{prefix}.conv2.weight"] = (cout, cout, 3, 3)
    table.update(_bn(f"{prefix}.bn2", cout))
    if downsample:
        table[f"{prefix}.downsample.0.weight"] = (cout, cin, 1, 1)
        table.update(_bn(f"{prefix}.downsample.1", cout))
    return table


def torchvision_resnet18_table() -> dict[str, tuple[int, ...]]:
    """Every key of torchvision's resnet18 state dict with its shape, from the architecture."""
    table = {"conv1.weight": (64, 3, 7, 7)}
    table.update(_bn("bn1", 64))
    cin = 64
    for layer, cout in zip((1, 2, 3, 4), (64, 128, 256, 512)):
        table.update(_basic_block(f"layer{layer}.0", cin, cout, downsample=cin != cout))
        table.update(_basic_block(f"layer{layer}.1", cout, cout, downsample=False))
        cin = cout
    table["fc.weight"] = (1000, 512)
    table["fc.bias"] = (1000,)
    return table


def fake_checkpoint(*, with_num_batches_tracked: bool = True) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    state = {}
    for key, shape in torchvision_resnet18_table().items():
        if key.endswith("num_batches_tracked"):
            if with_num_batches_tracked:
                state[key] = torch.tensor(7, dtype=torch.int64)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            state[key] = torch.randn(shape, generator=gen)
    return state


ENCODER_PREFIXES = ("conv1.", "bn1.", "layer1.", "layer2.")


def test_table_is_resnet18() -> None:
    table = torchvision_resnet18_table()
    assert len(table) == 122  # torchvision resnet18 has 122 state-dict entries
    n_params = sum(
        torch.Size(s).numel()
        for k, s in table.items()
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    assert n_params == 11_689_512  # the well-known resnet18 parameter count


def test_names_and_shapes_match_torchvision() -> None:
    expected = {
        k: s for k, s in torchvision_resnet18_table().items() if k.startswith(ENCODER_PREFIXES)
    }
    got = {k: tuple(v.shape) for k, v in ResNet18Encoder().state_dict().items()}
    assert got == expected


def test_load_from_file_reports_ignored_keys(tmp_path: pathlib.Path) -> None:
    state = fake_checkpoint()
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    encoder = ResNet18Encoder()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # layer3/layer4/fc are expected: no warning
        report = encoder.load_torchvision_state_dict(path)
    assert isinstance(report, EncoderLoadReport)
    ignored = sorted(k for k in state if k.startswith(("layer3.", "layer4.", "fc.")))
    assert list(report.ignored_keys) == ignored and len(ignored) == 122 - 60
    assert set(report.loaded_keys) == set(encoder.state_dict())
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, state[key]), key
    # the same through the constructor, from a str path
    other = ResNet18Encoder(weights=str(path))
    assert torch.equal(other.layer2[0].downsample[0].weight, state["layer2.0.downsample.0.weight"])


def test_load_report_is_kept_and_logged_through_the_model(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``LACMFER(encoder_weights=...)`` does not drop the report: it is kept and logged."""
    state = fake_checkpoint()
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    assert ResNet18Encoder().load_report is None
    with caplog.at_level(logging.INFO, logger="lacmfer.modules._encoder"):
        model = LACMFER.tiny(spatial_kernel_size=3, encoder_weights=path)
    report = model.encoder.load_report
    assert isinstance(report, EncoderLoadReport)
    assert len(report.ignored_keys) == 122 - 60 and len(report.loaded_keys) == 60
    messages = [r.getMessage() for r in caplog.records if r.name == "lacmfer.modules._encoder"]
    assert messages == [
        "ResNet18Encoder loaded 60 checkpoint key(s) and ignored 62 (fc.*, layer3.*, layer4.*)"
    ]
    # A direct call updates the report too.
    encoder = ResNet18Encoder()
    partial = {k: v for k, v in state.items() if not k.startswith(("layer3.", "layer4.", "fc."))}
    assert encoder.load_torchvision_state_dict(partial) is encoder.load_report
    assert encoder.load_report.ignored_keys == ()


def test_load_pre_041_checkpoint_without_num_batches_tracked() -> None:
    state = fake_checkpoint(with_num_batches_tracked=False)
    encoder = ResNet18Encoder()
    encoder.bn1.num_batches_tracked.fill_(5)
    report = encoder.load_torchvision_state_dict(state)
    assert torch.equal(encoder.bn1.running_var, state["bn1.running_var"])
    assert int(encoder.bn1.num_batches_tracked) == 0
    assert "bn1.num_batches_tracked" not in report.loaded_keys


def test_loaded_encoder_computes_with_loaded_weights() -> None:
    state = fake_checkpoint()
    a = ResNet18Encoder(weights=state).eval()
    b = ResNet18Encoder().eval()
    x = torch.randn(1, 3, 32, 32)
    assert not torch.allclose(a(x), b(x))
    b.load_state_dict({k: v for k, v in state.items() if k.startswith(ENCODER_PREFIXES)})
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_load_errors(tmp_path: pathlib.Path) -> None:
    encoder = ResNet18Encoder()
    state = fake_checkpoint()
    del state["layer1.1.conv2.weight"]
    with pytest.raises(ValueError, match=r"missing 1 key.*'layer1.1.conv2.weight'"):
        encoder.load_torchvision_state_dict(state)
    state = fake_checkpoint()
    state["conv1.weight"] = torch.randn(64, 1, 7, 7)
    with pytest.raises(
        ValueError,
        match=r"wrong shape.*conv1.weight: expected \(64, 3, 7, 7\), got \(64, 1, 7, 7\)",
    ):
        encoder.load_torchvision_state_dict(state)
    prefixed = {f"module.{k}": v for k, v in fake_checkpoint().items()}
    with pytest.raises(ValueError, match=r"missing 50 key.*behind the prefix 'module\.'"):
        encoder.load_torchvision_state_dict(prefixed)
    # a whole model's state dict names the encoder's prefix, and the hint's recipe loads it
    whole = LACMFER.tiny().state_dict()
    with pytest.raises(ValueError, match=r"behind the prefix 'encoder\.'"):
        encoder.load_torchvision_state_dict(whole)
    report = encoder.load_torchvision_state_dict(
        {k.removeprefix("encoder."): v for k, v in whole.items()}, warn=False
    )
    assert len(report.loaded_keys) == len(encoder.state_dict())
    partly = {**prefixed, "conv1.weight": fake_checkpoint()["conv1.weight"]}
    del partly["module.bn1.bias"]  # not every missing key behind one prefix: no hint
    with pytest.raises(ValueError, match=r"missing 49 key") as err:
        encoder.load_torchvision_state_dict(partly)
    assert "prefix" not in str(err.value)
    wrapped = {"epoch": 3, "state_dict": fake_checkpoint()}
    with pytest.raises(TypeError, match=r"holds a state dict under 'state_dict'"):
        encoder.load_torchvision_state_dict(wrapped)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a state dict"):
        encoder.load_torchvision_state_dict([1, 2])  # type: ignore[arg-type]
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(
        TypeError, match=r"the content of '.*list.pth' \(`state_dict_or_path`\) must"
    ):
        encoder.load_torchvision_state_dict(path)
    with pytest.raises(TypeError, match="must map str keys to tensors"):
        encoder.load_torchvision_state_dict({"conv1.weight": 1.0})  # type: ignore[dict-item]


def test_load_errors_name_the_callers_argument(tmp_path: pathlib.Path) -> None:
    state = fake_checkpoint()
    del state["layer1.1.conv2.weight"]
    with pytest.raises(ValueError, match=r"`weights` is missing 1 key"):
        ResNet18Encoder(weights=state)
    with pytest.raises(ValueError, match=r"`encoder_weights` is missing 1 key"):
        LACMFER.tiny(encoder_weights=state)
    with pytest.raises(ValueError, match=r"`state_dict_or_path` is missing 1 key"):
        ResNet18Encoder().load_torchvision_state_dict(state)
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(TypeError, match=r"list.pth' \(`encoder_weights`\) must be a state dict"):
        LACMFER.tiny(encoder_weights=path)
    (tmp_path / "garbage.pth").write_bytes(b"garbage")
    with pytest.raises(
        ValueError, match=r"`weights`: '.*garbage.pth' is not a readable checkpoint"
    ):
        ResNet18Encoder(weights=tmp_path / "garbage.pth")
    torch.save({"conv1.weight": torch.zeros(1), "args": pathlib.PurePosixPath("x")}, path)
    with pytest.raises(
        ValueError,
        match=r"readable checkpoint \(UnpicklingError: Unsupported global: .*PurePosixPath",
    ):
        LACMFER.tiny(encoder_weights=path)
    with pytest.raises(FileNotFoundError, match=r"`encoder_weights`: no file '.*nothing.pth'"):
        LACMFER.tiny(encoder_weights=tmp_path / "nothing.pth")


def test_unexpected_extra_keys_warn() -> None:
    state = fake_checkpoint()
    state["classifier.weight"] = torch.zeros(3)
    with pytest.warns(UserWarning, match=r"ignored 1 checkpoint key.*classifier.weight"):
        report = ResNet18Encoder().load_torchvision_state_dict(state)
    assert "classifier.weight" in report.ignored_keys
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ResNet18Encoder().load_torchvision_state_dict(state, warn=False)


@pytest.mark.parametrize("size,out", [(224, 28), (112, 14), (64, 8), (32, 4)])
def test_output_shapes(size: int, out: int) -> None:
    encoder = ResNet18Encoder().eval()
    with torch.no_grad():
        assert encoder(torch.randn(1, 3, size, size)).shape == (1, 128, out, out)


def test_forward_errors() -> None:
    encoder = ResNet18Encoder()
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\), got shape \(2, 1, 32, 32\)"):
        encoder(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"got shape \(3, 32, 32\)"):
        encoder(torch.randn(3, 32, 32))
    with pytest.raises(TypeError, match=r"`x` must be a floating-point tensor.*torch.uint8"):
        encoder(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(TypeError, match=r"`x` must be a floating-point tensor"):
        LACMFER.tiny()(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))


def test_no_torchvision_import() -> None:
    import lacmfer.modules

    root = pathlib.Path(lacmfer.modules.__file__).parent
    for source in root.glob("*.py"):
        assert "import torchvision" not in source.read_text()
        assert "from torchvision" not in source.read_text()
