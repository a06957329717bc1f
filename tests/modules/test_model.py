"""LACMFER: shapes, fusion, gradients to every parameter, parameter groups, BN modes, errors."""

from __future__ import annotations

import copy
from typing import Callable

import pytest
import torch
from torch import nn

from lacmfer.modules import LACMFER, LACMFEROutput, LocalPatchBranch

from .mechanics import check_pickle_and_deepcopy, compare_outputs, compile_matches_eager, snapshot

# Tiny configuration with CBAM's k = 7 keeps these tests fast; the default model is tested too.
TINY = {"spatial_kernel_size": 7}


@pytest.fixture(scope="module")
def paper_model() -> LACMFER:
    torch.manual_seed(0)
    return LACMFER().eval()


@pytest.mark.parametrize("size,map_size", [(224, 28), (112, 14)])
def test_paper_model_shapes(paper_model: LACMFER, size: int, map_size: int) -> None:
    maps: list[torch.Size] = []
    handle = paper_model.encoder.register_forward_hook(lambda m, i, o: maps.append(o.shape))
    try:
        with torch.no_grad():
            out = paper_model(torch.randn(2, 3, size, size))
    finally:
        handle.remove()
    assert maps == [torch.Size((2, 128, map_size, map_size))]
    assert isinstance(out, LACMFEROutput)
    assert out.feat_g.shape == (2, 1024) and out.feat_l.shape == (2, 1024)
    assert out.logits_g.shape == out.logits_l.shape == out.logits.shape == (2, 7)
    assert paper_model.feature_dims == (1024, 1024)
    assert paper_model.head_g.in_features == paper_model.head_l.in_features == 1024
    assert paper_model.local_branch.share == "column"
    assert paper_model.global_branch.spatial_kernel_size == 49


def test_fused_logits_and_views() -> None:
    model = LACMFER.tiny(num_classes=5, **TINY).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
        assert torch.equal(out.logits, (out.logits_g + out.logits_l) / 2)
        torch.testing.assert_close(out.logits_g, model.head_g(out.feat_g))
        torch.testing.assert_close(out.logits_l, model.head_l(out.feat_l))
        torch.testing.assert_close(model.predict(x), out.logits)
        torch.testing.assert_close(model.predict(x, view="fused"), out.logits)
        torch.testing.assert_close(model.predict(x, view="global"), out.logits_g)
        torch.testing.assert_close(model.predict(x, view="local"), out.logits_l)
    for fusion, field in (("global", "logits_g"), ("local", "logits_l")):
        other = LACMFER.tiny(num_classes=5, fusion=fusion, **TINY).eval()
        other.load_state_dict(model.state_dict())
        with torch.no_grad():
            o = other(x)
            assert torch.equal(o.logits, getattr(o, field))
            torch.testing.assert_close(other.predict(x), getattr(out, field))
            torch.testing.assert_close(other.predict(x, view="fused"), out.logits)


def _assert_every_parameter_trains(model: nn.Module) -> None:
    model.train()
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    (out.logits_g.sum() + out.logits_l.sum()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient: built but unused"
        assert torch.count_nonzero(p.grad) > 0, f"{name} has an all-zero gradient"


@pytest.mark.parametrize("share", ["column", "none", "all"])
def test_every_parameter_gets_a_gradient_tiny(share: str) -> None:
    _assert_every_parameter_trains(LACMFER.tiny(share=share, **TINY))


def test_every_parameter_gets_a_gradient_paper_model() -> None:
    model = LACMFER()
    _assert_every_parameter_trains(model)
    # and exactly the expected sub-networks exist: 2 column sub-networks, 9 global blocks
    assert len(model.local_branch.subnets) == 2
    assert sum(len(stage) for stage in model.global_branch.stages) == 9


def test_feature_dims_follow_settings() -> None:
    model = LACMFER(
        3,
        grid=(1, 3),
        global_channels=(16, 48),
        global_blocks=(1, 1),
        local_channels=16,
        local_blocks=1,
        share="none",
        **TINY,
    )
    assert model.feature_dims == (48, 3 * 16)
    assert len(model.local_branch.subnets) == 3
    out = model(torch.randn(2, 3, 96, 96))  # 12x12 map, three 12x4 patches
    assert out.feat_g.shape == (2, 48) and out.feat_l.shape == (2, 48)
    assert model.head_g.weight.shape == (3, 48) and model.head_l.weight.shape == (3, 48)
    tiny = LACMFER.tiny(**TINY)
    assert tiny.feature_dims == (256, 256)
    assert tiny.global_branch.channels == (64, 256) and tiny.global_branch.blocks == (1, 1)
    assert tiny.local_branch.out_channels == 64 and tiny.local_branch.blocks == 1
    assert LACMFER.tiny(local_channels=32, **TINY).feature_dims == (256, 128)  # overrides win


def test_parameter_groups() -> None:
    model = LACMFER.tiny(**TINY)
    groups = model.parameter_groups(1e-2)
    assert [g["name"] for g in groups] == ["encoder", "branches"]
    assert groups[0]["lr"] == pytest.approx(1e-3) and groups[1]["lr"] == pytest.approx(1e-2)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters()}
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.encoder.parameters()}
    groups = model.parameter_groups(0.5, encoder_lr_scale=0.2, weight_decay=1e-4)
    assert groups[0]["lr"] == pytest.approx(0.1) and all(g["weight_decay"] == 1e-4 for g in groups)
    opt = torch.optim.SGD(groups, lr=0.5, momentum=0.9, nesterov=True)
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(0.1), pytest.approx(0.5)]
    with pytest.raises(ValueError, match=r"`lr` must be > 0\.0, got -1\.0"):
        model.parameter_groups(-1.0)
    with pytest.raises(ValueError, match=r"`encoder_lr_scale` must be > 0\.0"):
        model.parameter_groups(1.0, encoder_lr_scale=0)
    with pytest.raises(ValueError, match=r"`weight_decay` must be >= 0\.0"):
        model.parameter_groups(1.0, weight_decay=-1e-4)


def _buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.named_buffers()}


def test_train_and_eval_modes_differ_as_batch_norm_does() -> None:
    model = LACMFER.tiny(**TINY)
    x = torch.randn(4, 3, 64, 64)
    before = _buffers(model)
    model.eval()
    with torch.no_grad():
        eval_all = model(x).logits
        eval_one = model(x[:1]).logits
    # eval: per-sample computation, running statistics untouched
    torch.testing.assert_close(eval_all[:1], eval_one, rtol=1e-4, atol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in model.named_buffers())
    model.train()
    with torch.no_grad():
        train_all = model(x).logits
        train_two = model(x[:2]).logits
    # train: batch statistics, so a sample's output depends on its batch; running stats move
    assert not torch.allclose(train_all[:2], train_two, atol=1e-3)
    assert not torch.allclose(train_all, eval_all, atol=1e-3)
    assert not torch.equal(before["encoder.bn1.running_mean"], model.encoder.bn1.running_mean)
    assert int(model.encoder.bn1.num_batches_tracked) == 2


def test_separate_domain_calls_use_each_domains_batch_statistics() -> None:
    """The documented usage: source and target in separate calls differ from one mixed batch."""
    model = LACMFER.tiny(**TINY).train()
    x_s = torch.randn(3, 3, 64, 64)
    x_t = torch.rand(3, 3, 64, 64) * 3  # another "domain"
    with torch.no_grad():
        separate = model(x_s).feat_g
        mixed = model(torch.cat([x_s, x_t])).feat_g[:3]
    assert not torch.allclose(separate, mixed, atol=1e-3)
    assert "SEPARATE" in (LACMFER.__doc__ or "").upper()


def test_model_errors() -> None:
    model = LACMFER.tiny(**TINY)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\), got shape \(2, 1, 64, 64\)"):
        model(torch.randn(2, 1, 64, 64))
    # 72x72 -> 9x9 encoder map: the message names the caller's images, not the inner map
    odd = r"`x` with shape \(1, 3, 72, 72\) gives an encoder map of 9×9, .* 2×2 patch grid"
    with pytest.raises(ValueError, match=odd):
        model.eval()(torch.randn(1, 3, 72, 72))
    for view in ("fused", "local"):
        with pytest.raises(ValueError, match=odd):
            model.predict(torch.randn(1, 3, 72, 72), view=view)
    assert model.predict(torch.randn(1, 3, 72, 72), view="global").shape == (1, 7)
    assert model(torch.randn(1, 3, 80, 48)).logits.shape == (1, 7)  # multiples of 16 work
    with pytest.raises(
        ValueError, match="`view` must be one of 'fused', 'global', 'local'; got 'mean'"
    ):
        model.predict(torch.randn(1, 3, 64, 64), view="mean")
    with pytest.raises(
        ValueError, match="`fusion` must be one of 'mean', 'global', 'local'; got 'max'"
    ):
        LACMFER(fusion="max")
    with pytest.raises(ValueError, match="`num_classes` must be an int >= 1, got 0"):
        LACMFER(0)
    with pytest.raises(ValueError, match="`share` must be one of"):
        LACMFER.tiny(share="row")
    with pytest.raises(ValueError, match="`spatial_kernel_size` must be odd"):
        LACMFER.tiny(spatial_kernel_size=8)
    with pytest.raises(ValueError, match="`channels` and `blocks` must have the same length"):
        LACMFER.tiny(global_blocks=(1,))


def test_one_image_too_small_to_train_on_is_named() -> None:
    # 32x32 -> a 4x4 encoder map -> 1x1 after the global branch's two stride-2 stages: BatchNorm
    # cannot train on one value per channel, which torch reports without naming the images
    model = LACMFER.tiny(**TINY)
    with pytest.raises(ValueError, match=r"`x` with shape \(1, 3, 32, 32\) in training mode.*"
                       r"batch of 2 or more"):  # fmt: skip
        model(torch.randn(1, 3, 32, 32))
    assert model(torch.randn(2, 3, 32, 32)).logits.shape == (2, 7)  # two images train
    assert model(torch.randn(1, 3, 48, 48)).logits.shape == (1, 7)  # a 2x2 map trains
    assert model.eval()(torch.randn(1, 3, 32, 32)).logits.shape == (1, 7)  # evaluation works


def test_repr_shows_settings() -> None:
    text = repr(LACMFER.tiny(**TINY))
    assert "num_classes=7, fusion='mean'" in text and "share='column'" in text
    assert isinstance(LACMFER.tiny(**TINY).local_branch, LocalPatchBranch)


# ------------------------------------------------------------------------------ mechanics


@pytest.mark.parametrize("training", [False, True])
def test_channels_last_gives_the_same_output(
    training: bool, randomise_bn: Callable[[nn.Module], None]
) -> None:
    model = LACMFER.tiny(**TINY).train(training)
    randomise_bn(model)
    x = torch.randn(3, 3, 64, 64)
    state = snapshot(model)
    with torch.no_grad():
        expected = model(x)
        expected_state = snapshot(model)
        model.load_state_dict(state)
        model = model.to(memory_format=torch.channels_last)
        assert model.encoder.conv1.weight.is_contiguous(memory_format=torch.channels_last)
        out = model(x.to(memory_format=torch.channels_last))
    compare_outputs(out, expected, rtol=1e-4, atol=1e-4)
    # the running statistics moved the same way
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, expected_state[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.parametrize("training", [False, True])
def test_bf16_autocast_on_cpu(training: bool) -> None:
    model = LACMFER.tiny(**TINY).train(training)
    x = torch.randn(4, 3, 64, 64)
    state = snapshot(model)
    expected = model(x)
    model.load_state_dict(state)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    for name, got, ref in zip(expected._fields, out, expected):
        assert got.dtype == torch.bfloat16 and torch.isfinite(got).all(), name
        rel = (got.float() - ref).abs().max() / ref.abs().max()
        assert rel < 0.1, f"{name}: relative error {float(rel):.3g}"
    (out.logits_g.float().sum() + out.logits_l.float().sum()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_state_dict_round_trip() -> None:
    model = LACMFER.tiny(**TINY)
    model.train()(torch.randn(4, 3, 64, 64))  # non-trivial running statistics
    torch.manual_seed(123)
    other = LACMFER.tiny(**TINY)
    other.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    other.eval()
    with torch.no_grad():
        compare_outputs(other(x), model(x), rtol=0, atol=0)
    assert list(other.state_dict()) == list(model.state_dict())
    assert all(
        torch.equal(a, b) for a, b in zip(other.state_dict().values(), model.state_dict().values())
    )


def test_pickle_and_deepcopy() -> None:
    check_pickle_and_deepcopy(lambda: LACMFER.tiny(**TINY), (2, 3, 32, 32))


@pytest.mark.parametrize("training", [True, False])
def test_compile_tiny_model_traces_fullgraph(training: bool) -> None:
    """Dynamo + AOTAutograd (no C++ build): one graph, same outputs, buffers and gradients."""
    torch._dynamo.reset()
    model = LACMFER.tiny(**TINY).train(training)
    compile_matches_eager(model, torch.randn(2, 3, 32, 32), "aot_eager")


@pytest.mark.slow
@pytest.mark.parametrize("training", [True, False])
def test_compile_tiny_model_inductor(training: bool) -> None:
    torch._dynamo.reset()
    model = LACMFER.tiny(**TINY).train(training)
    compile_matches_eager(model, torch.randn(4, 3, 64, 64), "inductor")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    model = LACMFER.tiny(**TINY).train()
    gpu = copy.deepcopy(model).cuda()
    x = torch.randn(4, 3, 64, 64)
    expected = model(x)
    out = gpu(x.cuda())
    compare_outputs(tuple(t.cpu() for t in out), expected, rtol=1e-3, atol=1e-3)
    for k, v in gpu.state_dict().items():
        torch.testing.assert_close(v.cpu(), model.state_dict()[k], rtol=1e-3, atol=1e-4, msg=k)
