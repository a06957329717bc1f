"""DANN: gradient reversal and the domain-adversarial loss, functions and modules.

Loop reference of ``tests/reference.py`` (pooled and per-source, edge cases), the reversed gradient and
its schedule, gradients (gradcheck, finite for huge logits), input errors, the modules (signatures,
settings, module ≡ function, pickling and ``state_dict``), compile and autocast.
"""

from __future__ import annotations

import inspect
import io
import math
import pickle
from typing import Optional

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lacmfer.functional import domain_adversarial_loss, gradient_reversal
from lacmfer.losses import DomainAdversarialLoss, GradientReversal
from tests.reference import dann_reference

from .cases import (
    check_keyword_only,
    check_pickle_and_state_dict_round_trip,
    check_signatures_agree,
)

TOL = {"rtol": 1e-10, "atol": 1e-10}


def _logits(seed: int, b: int, outputs: int, scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(b, outputs, generator=g, dtype=torch.float64)


def _cases() -> dict[str, tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], Optional[int]]]:
    per_source = torch.tensor([0, 2, 1, 1, 0, 2, 2, 0, 1])
    return {
        "pooled_random": (_logits(0, 9, 2), _logits(1, 7, 2), None, None),
        "per_source_random": (_logits(2, 9, 4), _logits(3, 7, 4), per_source, 3),
        "per_source_missing_domain": (
            _logits(4, 6, 5),
            _logits(5, 4, 5),
            torch.tensor([0, 3, 3, 0, 1, 0]),  # domain 2 absent
            4,
        ),
        "one_source": (_logits(6, 5, 2), _logits(7, 3, 2), torch.zeros(5, dtype=torch.long), 1),
        "batch_of_two": (_logits(8, 1, 2), _logits(9, 1, 2), None, None),
        "identical_logits": (
            torch.ones(4, 3).double(),
            torch.ones(2, 3).double(),
            per_source[:4] % 2,
            2,
        ),
        "huge_logits": (_logits(10, 6, 2, 1e30), _logits(11, 5, 2, 1e30), None, None),
        "confident_discriminator": (
            torch.tensor([[40.0, -40.0]] * 3).double(),
            torch.tensor([[-40.0, 40.0]] * 2).double(),
            None,
            None,
        ),
    }


CASES = _cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_loss_matches_reference(name: str) -> None:
    zs, zt, domains, num = CASES[name]
    got = domain_adversarial_loss(zs, zt, domains_s=domains, num_domains=num)
    want = dann_reference(zs, zt, domains)
    scale = max(1.0, float(want.abs()))
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10 * scale)


def test_loss_gradients_match_reference() -> None:
    zs, zt, domains, num = CASES["per_source_random"]
    a, b = zs.clone().requires_grad_(), zt.clone().requires_grad_()
    domain_adversarial_loss(a, b, domains_s=domains, num_domains=num).backward()
    ra, rb = zs.clone().requires_grad_(), zt.clone().requires_grad_()
    dann_reference(ra, rb, domains).backward()
    assert a.grad is not None and ra.grad is not None and b.grad is not None and rb.grad is not None
    torch.testing.assert_close(a.grad, ra.grad, **TOL)
    torch.testing.assert_close(b.grad, rb.grad, **TOL)


def test_loss_identities() -> None:
    # A discriminator at chance gives log(N + 1); pooled is the per-source mode with one source.
    for outputs in (2, 3, 6):
        got = domain_adversarial_loss(
            torch.zeros(5, outputs),
            torch.zeros(3, outputs),
            domains_s=torch.zeros(5, dtype=torch.long) if outputs > 2 else None,
            num_domains=outputs - 1 if outputs > 2 else None,
        )
        torch.testing.assert_close(got, torch.tensor(math.log(outputs)))
    zs, zt = _logits(12, 6, 2), _logits(13, 4, 2)
    torch.testing.assert_close(
        domain_adversarial_loss(zs, zt),
        domain_adversarial_loss(zs, zt, domains_s=torch.zeros(6, dtype=torch.long), num_domains=1),
        **TOL,
    )
    # The two-way softmax is the single-logit BCE of d_1 - d_0 (Ganin et al.'s sigmoid head).
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    diff_s, diff_t = zs[:, 1] - zs[:, 0], zt[:, 1] - zt[:, 0]
    want = 0.5 * (bce(diff_s, torch.zeros_like(diff_s)) + bce(diff_t, torch.ones_like(diff_t)))
    torch.testing.assert_close(domain_adversarial_loss(zs, zt), want, **TOL)


def test_loss_gradcheck() -> None:
    zs, zt, domains, num = CASES["per_source_random"]
    assert torch.autograd.gradcheck(
        lambda a, b: domain_adversarial_loss(a, b, domains_s=domains, num_domains=num),
        (zs.clone().requires_grad_(), zt.clone().requires_grad_()),
    )


FINITE_LOGIT32 = st.floats(
    -float(np.finfo(np.float32).max) / 4,
    float(np.finfo(np.float32).max) / 4,
    allow_nan=False,
    allow_infinity=False,
    width=32,
)


@given(
    st.integers(1, 5).flatmap(lambda n: arrays(np.float32, (n, 3), elements=FINITE_LOGIT32)),
    st.integers(1, 5).flatmap(lambda n: arrays(np.float32, (n, 3), elements=FINITE_LOGIT32)),
)
def test_finite_for_huge_logits(zs_np: np.ndarray, zt_np: np.ndarray) -> None:
    zs = torch.from_numpy(zs_np).requires_grad_()
    zt = torch.from_numpy(zt_np).requires_grad_()
    domains = torch.arange(zs.shape[0]) % 2
    loss = domain_adversarial_loss(zs, zt, domains_s=domains, num_domains=2)
    loss.backward()
    assert torch.isfinite(loss) and loss.dtype == torch.float32
    assert zs.grad is not None and torch.isfinite(zs.grad).all()
    assert zt.grad is not None and torch.isfinite(zt.grad).all()


# ------------------------------------------------------------------ gradient reversal


@pytest.mark.parametrize(
    "coeff", [1.0, 0.25, 0.0, torch.tensor(0.7), torch.tensor(2.0, dtype=torch.float64)]
)
def test_gradient_reversal_is_identity_forward_negated_backward(coeff: object) -> None:
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    y = gradient_reversal(x, coeff=coeff)  # type: ignore[arg-type]
    assert torch.equal(y, x) and y.dtype == x.dtype
    weight = torch.randn(3, 4, dtype=torch.float64)
    (y * weight).sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, -float(coeff) * weight, **TOL)  # type: ignore[arg-type]


def test_gradient_reversal_tensor_coeff_gets_no_gradient() -> None:
    coeff = torch.tensor(0.5, requires_grad=True)
    x = torch.ones(2, requires_grad=True)
    gradient_reversal(x, coeff=coeff).sum().backward()
    assert coeff.grad is None
    assert x.grad is not None and torch.equal(x.grad, torch.full((2,), -0.5))


def test_gradient_reversal_half_precision() -> None:
    x = torch.ones(4, dtype=torch.bfloat16, requires_grad=True)
    gradient_reversal(x, coeff=0.5).sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.bfloat16
    assert torch.equal(x.grad, torch.full((4,), -0.5, dtype=torch.bfloat16))


def test_gradient_reversal_module_and_schedule() -> None:
    check_signatures_agree(GradientReversal, gradient_reversal)
    layer = GradientReversal(coeff=0.5, coeff_ramp="dann_sigmoid", max_steps=10)
    for step in range(13):
        p = min(step / 10, 1.0)
        want = 0.5 * (2 / (1 + math.exp(-10 * p)) - 1)
        x = torch.ones(3, requires_grad=True)
        layer(x).sum().backward()
        assert x.grad is not None
        torch.testing.assert_close(x.grad, torch.full((3,), -want), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(
            torch.as_tensor(layer.current_coeff()), torch.tensor(want), rtol=1e-6, atol=1e-7
        )
        x64 = torch.ones(3, dtype=torch.float64, requires_grad=True)  # float64: exact schedule
        layer(x64).sum().backward()
        assert x64.grad is not None
        torch.testing.assert_close(x64.grad, torch.full_like(x64, -want), rtol=1e-15, atol=0)
        layer.step()
    assert int(layer.num_steps) == 13 and float(layer.progress) == 1.0
    const = GradientReversal(coeff=0.3)
    const.step(100)
    assert const.current_coeff() == 0.3
    x = torch.ones(2, requires_grad=True)
    const(x).sum().backward()
    assert x.grad is not None and torch.allclose(x.grad, torch.full((2,), -0.3))


# ------------------------------------------------------------------ the module


def _features(seed: int, b_s: int = 10, b_t: int = 8, dim: int = 6) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b_s, dim, generator=g), torch.randn(b_t, dim, generator=g) + 0.5


@pytest.mark.parametrize("num_domains", [None, 3])
def test_module_equals_function_on_discriminator_logits(num_domains: Optional[int]) -> None:
    torch.manual_seed(0)
    loss_fn = DomainAdversarialLoss(
        6, num_domains=num_domains, hidden=16, coeff_ramp="none", coeff=0.7
    )
    fs, ft = _features(1)
    domains = None if num_domains is None else torch.arange(10) % 3
    a, b = fs.clone().requires_grad_(), ft.clone().requires_grad_()
    got = loss_fn(a, b, domains)
    got.backward()
    # The same discriminator without reversal, in one batched call: same value, gradients x -0.7.
    c, d = fs.clone().requires_grad_(), ft.clone().requires_grad_()
    logits = loss_fn.discriminator(torch.cat([c, d]))
    want = domain_adversarial_loss(
        logits[:10], logits[10:], domains_s=domains, num_domains=num_domains
    )
    want.backward()
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert a.grad is not None and c.grad is not None and b.grad is not None and d.grad is not None
    torch.testing.assert_close(a.grad, -0.7 * c.grad)
    torch.testing.assert_close(b.grad, -0.7 * d.grad)
    # The discriminator itself learns to separate the domains (its gradient is not reversed).
    for p in loss_fn.discriminator.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


def test_module_signature_agrees_with_function() -> None:
    """Every setting of the function is a keyword-only setting of the module, same default.

    The module's inputs are features (it owns the discriminator), the function's are the
    discriminator's logits; both take them as ``(source, target)`` and then ``domains_s``.
    """
    fn_params = inspect.signature(domain_adversarial_loss).parameters
    mod_params = inspect.signature(DomainAdversarialLoss.__init__).parameters
    for name, p in fn_params.items():
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "domains_s":
            assert mod_params[name].kind is inspect.Parameter.KEYWORD_ONLY
            assert mod_params[name].default == p.default, name
    fwd = list(inspect.signature(DomainAdversarialLoss.forward).parameters)
    assert fwd == ["self", "feat_s", "feat_t", "domains_s"]
    assert inspect.signature(DomainAdversarialLoss.forward).parameters["domains_s"].default is None
    assert fn_params["domains_s"].default is None


def test_module_schedule_state_and_round_trips() -> None:
    loss_fn = DomainAdversarialLoss(6, hidden=8, max_steps=10)
    assert loss_fn.current_coeff() is not None and float(loss_fn.current_coeff()) == 0.0
    loss_fn.step(5)
    torch.testing.assert_close(
        torch.as_tensor(loss_fn.current_coeff()), torch.tensor(2 / (1 + math.exp(-5)) - 1)
    )
    assert int(loss_fn.num_steps) == 5 and float(loss_fn.progress) == 0.5
    assert "grl.num_steps" in loss_fn.state_dict()
    clone = pickle.loads(pickle.dumps(loss_fn))
    assert repr(clone) == repr(loss_fn)
    for key, value in loss_fn.state_dict().items():
        assert torch.equal(clone.state_dict()[key], value)
    buffer = io.BytesIO()
    torch.save(loss_fn.state_dict(), buffer)
    buffer.seek(0)
    fresh = DomainAdversarialLoss(6, hidden=8, max_steps=10)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert int(fresh.num_steps) == 5
    fs, ft = _features(2)
    loss_fn.eval()
    fresh.eval()
    torch.testing.assert_close(fresh(fs, ft), loss_fn(fs, ft), rtol=0, atol=0)
    layer = GradientReversal(coeff_ramp="dann_sigmoid")
    layer.step(3)
    assert int(check_pickle_and_state_dict_round_trip(layer).num_steps) == 3


def test_module_process_group_is_not_pickled() -> None:
    loss_fn = DomainAdversarialLoss(4, hidden=4, sync_dist=True, process_group=object())
    assert pickle.loads(pickle.dumps(loss_fn)).process_group is None


def test_module_extra_repr_and_keyword_only() -> None:
    text = repr(DomainAdversarialLoss(6, num_domains=5, hidden=32, coeff=0.5, max_steps=7))
    for part in (
        "in_features=6",
        "num_domains=5",
        "hidden=32",
        "coeff=0.5",
        "'dann_sigmoid'",
        "max_steps=7",
    ):
        assert part in text, text
    assert "Linear(in_features=32, out_features=6" in text  # the (N + 1)-way head
    assert "out_features=2" in repr(DomainAdversarialLoss(6, hidden=8))
    assert repr(GradientReversal()) == "GradientReversal(coeff=1.0, coeff_ramp='none')"
    check_keyword_only(GradientReversal)
    with pytest.raises(TypeError):
        DomainAdversarialLoss(6, 3)  # type: ignore[misc]


def test_module_mixed_batch_batchnorm() -> None:
    """One batched call: train-mode BN normalises source and target with shared statistics."""
    torch.manual_seed(0)
    loss_fn = DomainAdversarialLoss(6, hidden=8)
    fs, ft = _features(3)
    loss_fn(fs, ft)
    bn = loss_fn.discriminator[1]
    assert isinstance(bn, torch.nn.BatchNorm1d)
    first = loss_fn.discriminator[0]
    with torch.no_grad():
        h = first(torch.cat([fs, ft]))
    torch.testing.assert_close(bn.running_mean, 0.1 * h.mean(0))


@pytest.mark.parametrize("kind", ["zero", "identical", "large"])
def test_module_finite_for_degenerate_features(kind: str) -> None:
    torch.manual_seed(0)
    loss_fn = DomainAdversarialLoss(6, num_domains=2, hidden=16)
    loss_fn.step(50)
    fs, ft = _features(7)
    if kind == "zero":
        fs, ft = torch.zeros_like(fs), torch.zeros_like(ft)
    elif kind == "identical":
        fs, ft = fs[:1].expand_as(fs).clone(), fs[:1].expand_as(ft).clone()
    else:
        fs, ft = 1e6 * fs, 1e6 * ft
    a, b = fs.requires_grad_(), ft.requires_grad_()
    loss = loss_fn(a, b, torch.arange(10) % 2)
    loss.backward()
    assert torch.isfinite(loss)
    assert a.grad is not None and torch.isfinite(a.grad).all()
    assert b.grad is not None and torch.isfinite(b.grad).all()


# ------------------------------------------------------------------ errors


def test_loss_input_errors() -> None:
    zs, zt = torch.randn(5, 2), torch.randn(4, 2)
    with pytest.raises(ValueError, match=r"`domain_logits_s`.*2 dimensions.*\(5\)"):
        domain_adversarial_loss(torch.randn(5), zt)
    with pytest.raises(TypeError, match=r"`domain_logits_t`.*floating"):
        domain_adversarial_loss(zs, torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"`domain_logits_s` must have 2 columns.*\(5, 3\)"):
        domain_adversarial_loss(torch.randn(5, 3), torch.randn(4, 3))
    with pytest.raises(
        ValueError, match=r"`domain_logits_s`.*\(5, 2\).*`domain_logits_t`.*\(4, 3\)"
    ):
        domain_adversarial_loss(zs, torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"`domain_logits_t`.*at least one"):
        domain_adversarial_loss(zs, torch.randn(0, 2))
    domains = torch.tensor([0, 1, 2, 0, 1])
    with pytest.raises(ValueError, match=r"`num_domains` must be given with `domains_s`"):
        domain_adversarial_loss(torch.randn(5, 4), torch.randn(4, 4), domains_s=domains)
    with pytest.raises(ValueError, match=r"`domains_s` is required with `num_domains`"):
        domain_adversarial_loss(torch.randn(5, 4), torch.randn(4, 4), num_domains=3)
    with pytest.raises(ValueError, match=r"`domain_logits_s` must have 4 columns.*num_domains = 3"):
        domain_adversarial_loss(zs, zt, domains_s=domains, num_domains=3)
    with pytest.raises(ValueError, match=r"`domains_s` must hold values in \[0, 2\).*\[0, 2\]"):
        domain_adversarial_loss(
            torch.randn(5, 3), torch.randn(4, 3), domains_s=domains, num_domains=2
        )
    with pytest.raises(TypeError, match=r"`domains_s`.*integer"):
        domain_adversarial_loss(
            torch.randn(5, 4), torch.randn(4, 4), domains_s=domains.float(), num_domains=3
        )
    with pytest.raises(ValueError, match=r"Batch sizes.*`domain_logits_s`.*`domains_s`"):
        domain_adversarial_loss(
            torch.randn(5, 4), torch.randn(4, 4), domains_s=domains[:3], num_domains=3
        )


def test_gradient_reversal_errors() -> None:
    x = torch.randn(3)
    with pytest.raises(TypeError, match=r"`x`.*floating"):
        gradient_reversal(torch.arange(3))
    with pytest.raises(ValueError, match=r"`coeff` must be >= 0.0, got -1.0"):
        gradient_reversal(x, coeff=-1.0)
    with pytest.raises(ValueError, match=r"`coeff` must be finite"):
        gradient_reversal(x, coeff=float("nan"))
    with pytest.raises(TypeError, match=r"`coeff`.*real number"):
        gradient_reversal(x, coeff="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`coeff` must be a 0-dim tensor.*\(2\)"):
        gradient_reversal(x, coeff=torch.ones(2))
    with pytest.raises(TypeError, match=r"`coeff`.*floating-point tensor.*torch.int64"):
        gradient_reversal(x, coeff=torch.tensor(1))


@pytest.mark.parametrize(
    "settings, exc, match",
    [
        ({"in_features": 0}, ValueError, "`in_features`"),
        ({"in_features": 4, "hidden": 0}, ValueError, "`hidden`"),
        ({"in_features": 4, "num_domains": 0}, ValueError, "`num_domains`"),
        ({"in_features": 4, "coeff": -0.5}, ValueError, "`coeff`"),
        (
            {"in_features": 4, "coeff_ramp": "linear"},
            ValueError,
            r"`coeff_ramp`.*'none', 'dann_sigmoid'.*'linear'",
        ),
        ({"in_features": 4, "max_steps": 0}, ValueError, "`max_steps`"),
        ({"in_features": 4.0}, TypeError, "`in_features`"),
    ],
)
def test_module_settings_validated_at_construction(settings: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        DomainAdversarialLoss(**settings)


def test_module_input_errors() -> None:
    fs, ft = _features(4)
    with pytest.raises(ValueError, match=r"in_features = 5.*\(10, 6\).*\(8, 6\)"):
        DomainAdversarialLoss(5, hidden=4)(fs, ft)
    with pytest.raises(ValueError, match=r"Feature sizes.*`feat_s`.*`feat_t`"):
        DomainAdversarialLoss(6, hidden=4)(fs, ft[:, :5])
    with pytest.raises(ValueError, match=r"`domains_s` is required.*num_domains=2"):
        DomainAdversarialLoss(6, num_domains=2, hidden=4)(fs, ft)
    with pytest.raises(ValueError, match=r"`domains_s` was given to a pooled discriminator"):
        DomainAdversarialLoss(6, hidden=4)(fs, ft, torch.zeros(10, dtype=torch.long))
    with pytest.raises(TypeError, match=r"`feat_t`.*floating"):
        DomainAdversarialLoss(6, hidden=4)(fs, ft.long())


# ------------------------------------------------------------------ compile and autocast


def test_compiled_function_equals_eager() -> None:
    torch._dynamo.reset()
    zs, zt = _logits(20, 8, 4).float(), _logits(21, 6, 4).float()
    domains = torch.arange(8) % 3
    fn = torch.compile(domain_adversarial_loss, fullgraph=True)
    torch.testing.assert_close(
        fn(zs, zt, domains_s=domains, num_domains=3),
        domain_adversarial_loss(zs, zt, domains_s=domains, num_domains=3),
    )
    rev = torch.compile(gradient_reversal, fullgraph=True)
    for coeff in (torch.tensor(0.5), 0.5, 0.25):  # a float, then a new float: a symbolic one
        x = torch.randn(4, 3, requires_grad=True)
        y = rev(x, coeff=coeff)
        (y * 2).sum().backward()
        assert torch.equal(y, x)
        assert x.grad is not None and torch.equal(x.grad, torch.full((4, 3), -2 * float(coeff)))


def test_compiled_module_equals_eager() -> None:
    torch._dynamo.reset()
    torch.manual_seed(0)
    loss_fn = DomainAdversarialLoss(6, num_domains=2, hidden=16, max_steps=10)
    loss_fn.step(4)
    fs, ft = _features(5)
    domains = torch.arange(10) % 2
    a, b = fs.clone().requires_grad_(), ft.clone().requires_grad_()
    got = torch.compile(loss_fn, fullgraph=True)(a, b, domains)
    got.backward()
    c, d = fs.clone().requires_grad_(), ft.clone().requires_grad_()
    want = loss_fn(c, d, domains)
    want.backward()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert a.grad is not None and c.grad is not None
    torch.testing.assert_close(a.grad, c.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_cpu_matches_fp32(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    loss_fn = DomainAdversarialLoss(6, num_domains=2, hidden=16, coeff_ramp="none")
    fs, ft = _features(6)
    domains = torch.arange(10) % 2
    loss_fn.eval()  # fixed BN statistics: both runs see the same normalisation
    want = loss_fn(fs, ft, domains)
    with torch.autocast("cpu", dtype=dtype):
        got = loss_fn(fs, ft, domains)
        got_fn = domain_adversarial_loss(
            torch.randn(10, 3).to(dtype),
            torch.randn(8, 3).to(dtype),
            domains_s=domains,
            num_domains=2,
        )
    assert got.dtype == torch.float32 and got_fn.dtype == torch.float32
    assert torch.isfinite(got) and torch.isfinite(got_fn)
    torch.testing.assert_close(got, want, rtol=5e-2, atol=5e-2)
