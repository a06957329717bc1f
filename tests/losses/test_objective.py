"""The whole objective, ``lacmfer_loss`` and ``LACMFERLoss``: against the equation of the method page
composed from the loop references, every switch, the schedules, module ≡ function, errors,
gradcheck, compile and autocast."""

from __future__ import annotations

import inspect
import math
import pickle
from collections import namedtuple
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lacmfer.functional import (
    LACMFERTerms,
    dual_level_alignment,
    lacmfer_loss,
    linear_warmup,
    multi_view_clustering_consistency,
    pseudo_label_refinement,
    sigmoid_ramp,
)
from lacmfer.losses import LACMFERLoss
from lacmfer.modules import LACMFER, LACMFEROutput
from tests.reference import (
    _split_by_domain,
    cid_reference,
    hardness_reference,
    mcc_reference,
    mvv_reference,
    refine_reference,
    sid_reference,
    softmax_row,
)

Out = namedtuple("Out", "feat_g logits_g feat_l logits_l")
TOL = {"rtol": 1e-10, "atol": 1e-10}
K = 4


def make_batch(
    seed: int, b_s: int = 10, b_t: int = 9, d: int = 5, scale: float = 3.0
) -> dict[str, Any]:
    """Source/target outputs whose logits follow the labels, so that masks are partly full."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, K, (b_s,), generator=g)
    pseudo = torch.randint(0, K, (b_t,), generator=g)

    def out(y: torch.Tensor, shift: float) -> Out:
        n = y.shape[0]
        one_hot = F.one_hot(y, K).double()
        return Out(
            torch.randn(n, d, generator=g, dtype=torch.float64) + shift,
            scale * one_hot + torch.randn(n, K, generator=g, dtype=torch.float64),
            torch.randn(n, d + 2, generator=g, dtype=torch.float64) - shift,
            scale * one_hot + torch.randn(n, K, generator=g, dtype=torch.float64),
        )

    return {
        "out_s": out(labels, 0.0),
        "labels_s": labels,
        "out_t": out(pseudo, 0.7),
        "domains_s": torch.randint(0, 3, (b_s,), generator=g),
    }


def ce_ls_reference(logits: torch.Tensor, labels: torch.Tensor, eps: float) -> float:
    """Label-smoothed cross-entropy, written out: (1-ε)·(−log p_y) + ε·mean_k(−log p_k)."""
    total = 0.0
    for i in range(logits.shape[0]):
        p = softmax_row(logits[i])
        nll = -math.log(p[int(labels[i])])
        uniform = -sum(math.log(v) for v in p) / len(p)
        total += (1 - eps) * nll + eps * uniform
    return total / logits.shape[0]


def objective_reference(b: dict[str, Any], **kw: Any) -> float:
    """The method page's objective built from the loop transcriptions (paper weights)."""
    out_s, out_t, y = b["out_s"], b["out_t"], b["labels_s"]
    domains = kw.get("domains_s")
    value = ce_ls_reference(out_s.logits_g, y, 0.1) + ce_ls_reference(out_s.logits_l, y, 0.1)
    for f_s, z_s, f_t, z_t in (
        (out_s.feat_g, out_s.logits_g, out_t.feat_g, out_t.logits_g),
        (out_s.feat_l, out_s.logits_l, out_t.feat_l, out_t.logits_l),
    ):
        sid = sid_reference(f_s, z_s, y, f_t, z_t, domains_s=domains)
        cid = cid_reference(f_s, z_s, y, f_t, z_t, domains_s=domains)
        value += 0.4 * float(sid + 0.02 * cid)
    value += 0.5 * float(mcc_reference(out_t.logits_g, out_t.logits_l))
    value += 0.1 * float(mvv_reference(out_t.logits_g, out_t.logits_l))
    return value


# ------------------------------------------------------------------------------ exact values
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_equals_the_equation_from_loop_references(seed: int) -> None:
    b = make_batch(seed)
    got = lacmfer_loss(b["out_s"], b["labels_s"], b["out_t"])
    assert isinstance(got, LACMFERTerms)
    assert math.isclose(float(got.loss), objective_reference(b), rel_tol=1e-10, abs_tol=1e-10)


def test_per_source_equals_the_equation_from_loop_references() -> None:
    b = make_batch(3)
    got = lacmfer_loss(b["out_s"], b["labels_s"], b["out_t"], b["domains_s"], num_domains=3)
    want = objective_reference(b, domains_s=b["domains_s"])
    assert math.isclose(float(got.loss), want, rel_tol=1e-10, abs_tol=1e-10)


def hand_composed(b: dict[str, Any]) -> torch.Tensor:
    """The objective as the README composed it by hand, from the library's own functions."""
    out_s, y, out_t = b["out_s"], b["labels_s"], b["out_t"]
    return (
        F.cross_entropy(out_s.logits_g, y, label_smoothing=0.1)
        + F.cross_entropy(out_s.logits_l, y, label_smoothing=0.1)
        + 0.4 * dual_level_alignment(out_s.feat_g, out_s.logits_g, y, out_t.feat_g, out_t.logits_g)
        + 0.4 * dual_level_alignment(out_s.feat_l, out_s.logits_l, y, out_t.feat_l, out_t.logits_l)
        + 0.5 * multi_view_clustering_consistency(out_t.logits_g, out_t.logits_l)
        + 0.1 * pseudo_label_refinement(out_t.logits_g, out_t.logits_l).loss
    )


@pytest.mark.parametrize("seed", [0, 4])
def test_default_equals_hand_composed_objective(seed: int) -> None:
    b = make_batch(seed)
    got = LACMFERLoss()(b["out_s"], b["labels_s"], b["out_t"])
    torch.testing.assert_close(got.loss, hand_composed(b), rtol=1e-12, atol=1e-12)


def test_terms_and_diagnostics() -> None:
    b = make_batch(5)
    out_s, out_t, y = b["out_s"], b["out_t"], b["labels_s"]
    got = lacmfer_loss(out_s, y, out_t)
    want_ce = ce_ls_reference(out_s.logits_g, y, 0.1) + ce_ls_reference(out_s.logits_l, y, 0.1)
    assert math.isclose(float(got.ce), want_ce, rel_tol=1e-10)
    sid = sid_reference(out_s.feat_g, out_s.logits_g, y, out_t.feat_g, out_t.logits_g)
    sid = sid + sid_reference(out_s.feat_l, out_s.logits_l, y, out_t.feat_l, out_t.logits_l)
    torch.testing.assert_close(got.sid, sid, **TOL)
    cid = cid_reference(out_s.feat_g, out_s.logits_g, y, out_t.feat_g, out_t.logits_g)
    cid = cid + cid_reference(out_s.feat_l, out_s.logits_l, y, out_t.feat_l, out_t.logits_l)
    torch.testing.assert_close(got.cid, cid, **TOL)
    torch.testing.assert_close(got.align, sid + 0.02 * cid, **TOL)
    _, kept = refine_reference(out_t.logits_g, out_t.logits_l, 0.9)
    assert math.isclose(float(got.kept_fraction), sum(kept) / len(kept))
    for out, masked in ((out_s, got.masked_s), (out_t, got.masked_t)):
        for v, logits in enumerate((out.logits_g, out.logits_l)):
            count = sum(max(softmax_row(logits[i])) >= 0.4 for i in range(logits.shape[0]))
            assert int(masked[v]) == count
    diagnostics = (got.kept_fraction, got.masked_s, got.masked_t, got.adaptation_weight,
                   got.effective_s, got.effective_t)  # fmt: skip
    for diagnostic in diagnostics:
        assert not diagnostic.requires_grad


def effective_reference(weights: list[float]) -> float:
    """Kish's effective sample size of a list of weights, written out (0 for all zeros)."""
    squares = sum(w * w for w in weights)
    return sum(weights) ** 2 / squares if squares > 0 else 0.0


@pytest.mark.parametrize("per_source", [False, True])
@pytest.mark.parametrize("scale", [0.5, 3.0, 8.0])
def test_effective_sample_counts_match_the_hardness_weights(per_source: bool, scale: float) -> None:
    b = make_batch(7, b_s=12, b_t=11, scale=scale)
    out_s, y, out_t = b["out_s"], b["labels_s"], b["out_t"]
    domains = b["domains_s"] if per_source else None
    got = lacmfer_loss(out_s, y, out_t, domains, num_domains=3 if per_source else None)
    for v, (z_s, z_t) in enumerate(((out_s.logits_g, out_t.logits_g),
                                    (out_s.logits_l, out_t.logits_l))):  # fmt: skip
        eff_s, eff_t = 0.0, []
        for idx in _split_by_domain(domains, z_s.shape[0]):
            w_s, w_t = hardness_reference(z_s[idx], [int(y[i]) for i in idx], z_t, 0.4)
            eff_s += effective_reference(w_s)
            eff_t.append(effective_reference(w_t))
        assert math.isclose(float(got.effective_s[v]), eff_s, rel_tol=1e-10, abs_tol=1e-12)
        want_t = sum(eff_t) / len(eff_t)
        assert math.isclose(float(got.effective_t[v]), want_t, rel_tol=1e-10, abs_tol=1e-12)
    # an effective count never exceeds the samples that pass the confidence mask
    assert bool((got.effective_s <= got.masked_s.to(got.effective_s.dtype) + 1e-9).all())
    for term in (got.loss, got.ce, got.sid, got.cid, got.consistency, got.voting):
        assert term.requires_grad is False  # inputs carry no graph here


# ------------------------------------------------------------------------------ switches
def test_everything_off_is_source_only_cross_entropy() -> None:
    b = make_batch(6)
    got = lacmfer_loss(
        b["out_s"],
        b["labels_s"],
        b["out_t"],
        sid=False,
        cid=False,
        consistency="none",
        voting=False,
    )
    assert torch.equal(got.loss, got.ce)
    assert float(got.align) == float(got.consistency) == float(got.voting) == 0.0


@pytest.mark.parametrize(
    ("switch", "dropped"),
    [({"sid": False}, "sid"), ({"cid": False}, "cid"), ({"consistency": "none"}, "mcc"),
     ({"voting": False}, "mvv")],
)  # fmt: skip
def test_each_switch_drops_exactly_its_term(switch: dict[str, Any], dropped: str) -> None:
    b = make_batch(7)
    full = lacmfer_loss(b["out_s"], b["labels_s"], b["out_t"])
    got = lacmfer_loss(b["out_s"], b["labels_s"], b["out_t"], **switch)
    removed = {
        "sid": 0.4 * full.sid,
        "cid": 0.4 * 0.02 * full.cid,
        "mcc": 0.5 * full.consistency,
        "mvv": 0.1 * full.voting,
    }[dropped]
    torch.testing.assert_close(got.loss, full.loss - removed, **TOL)


def discrepancy_reference(
    zg: torch.Tensor, zl: torch.Tensor, kind: str, from_logits: bool
) -> float:
    total = 0.0
    for i in range(zg.shape[0]):
        pg, pl = softmax_row(zg[i]), softmax_row(zl[i])
        a = [float(v) for v in zg[i]] if from_logits else pg
        c = [float(v) for v in zl[i]] if from_logits else pl
        if kind == "l1":
            total += sum(abs(x - y) for x, y in zip(a, c))
        elif kind == "mse":
            total += sum((x - y) ** 2 for x, y in zip(a, c))
        else:
            kl_gl = sum(p * (math.log(p) - math.log(q)) for p, q in zip(pg, pl))
            kl_lg = sum(q * (math.log(q) - math.log(p)) for p, q in zip(pg, pl))
            total += (kl_gl + kl_lg) / 2
    return total / zg.shape[0]


@pytest.mark.parametrize(
    ("kind", "from_logits"),
    [("l1", False), ("l1", True), ("mse", False), ("mse", True), ("kl", False)],
)
def test_consistency_alternatives_match_reference(kind: str, from_logits: bool) -> None:
    b = make_batch(8)
    got = lacmfer_loss(
        b["out_s"], b["labels_s"], b["out_t"], consistency=kind, consistency_from_logits=from_logits
    )
    want = discrepancy_reference(b["out_t"].logits_g, b["out_t"].logits_l, kind, from_logits)
    assert math.isclose(float(got.consistency), want, rel_tol=1e-10, abs_tol=1e-12)


def test_mcc_on_logits_matches_reference() -> None:
    b = make_batch(9)
    got = lacmfer_loss(b["out_s"], b["labels_s"], b["out_t"], consistency_from_logits=True)
    want = mcc_reference(b["out_t"].logits_g, b["out_t"].logits_l, from_logits=True)
    torch.testing.assert_close(got.consistency, want, **TOL)


def test_weights_and_adaptation_factor_scale_the_terms() -> None:
    b = make_batch(10)
    base = lacmfer_loss(b["out_s"], b["labels_s"], b["out_t"])
    weights = {"align_weight": 0.7, "consistency_weight": 0.2, "voting_weight": 0.3}
    got = lacmfer_loss(
        b["out_s"], b["labels_s"], b["out_t"], **weights, adaptation_weight=torch.tensor(0.25)
    )
    adaptation = 0.7 * base.align + 0.2 * base.consistency + 0.3 * base.voting
    torch.testing.assert_close(got.loss, base.ce + 0.25 * adaptation, **TOL)
    half = lacmfer_loss(b["out_s"], b["labels_s"], b["out_t"], adaptation_weight=0.5)
    adaptation = 0.4 * base.align + 0.5 * base.consistency + 0.1 * base.voting
    torch.testing.assert_close(half.loss, base.ce + 0.5 * adaptation, **TOL)


# ------------------------------------------------------------------------------ schedules
def test_schedules_match_their_formulas() -> None:
    for t in range(0, 40):
        want = min(max((t - 10) / 20, 0.0), 1.0)
        assert math.isclose(float(linear_warmup(t, delay=10, duration=20)), want, abs_tol=1e-7)
        assert float(linear_warmup(t, delay=10)) == float(t >= 10)
    for p in (0.0, 0.1, 0.5, 1.0, 2.0):
        want = 2 / (1 + math.exp(-10 * min(p, 1.0))) - 1
        assert math.isclose(float(sigmoid_ramp(p)), want, rel_tol=1e-6)
    # A float64 step or progress gives the schedule in float64, exact to the formula.
    for t in range(0, 40):
        w = linear_warmup(torch.tensor(t, dtype=torch.float64), delay=10, duration=30)
        assert w.dtype == torch.float64
        assert math.isclose(float(w), min(max((t - 10) / 30, 0.0), 1.0), rel_tol=1e-15)
        r = sigmoid_ramp(torch.tensor(t / 37, dtype=torch.float64))
        want = 2 / (1 + math.exp(-10 * min(t / 37, 1.0))) - 1
        assert r.dtype == torch.float64 and math.isclose(float(r), want, rel_tol=1e-15)
    assert linear_warmup(torch.tensor(3, dtype=torch.float64), delay=3).dtype == torch.float64
    assert sigmoid_ramp(0.3).dtype == linear_warmup(3).dtype == torch.float32


def test_module_schedules_and_state() -> None:
    loss_fn = LACMFERLoss(adapt_after=3, adapt_warmup=7, cluster_ramp="dann_sigmoid", ramp_steps=7)
    b = make_batch(11)  # float64
    factors, cid_weights = [], []
    for t in range(12):
        terms = loss_fn(b["out_s"], b["labels_s"], b["out_t"])
        factors.append(float(terms.adaptation_weight))
        cid_weights.append(float(loss_fn.current_cid_weight()))
        # Float64 logits get the schedules in float64: the loss equals the formula's weights.
        ramp = 2 / (1 + math.exp(-10 * min(t / 7, 1.0))) - 1
        factor = min(max((t - 3) / 7, 0.0), 1.0)
        want = lacmfer_loss(
            b["out_s"], b["labels_s"], b["out_t"], cid_weight=0.02 * ramp, adaptation_weight=factor
        )
        torch.testing.assert_close(terms.loss, want.loss, rtol=1e-14, atol=1e-15)
        assert math.isclose(float(loss_fn.current_cid_weight(dtype=torch.float64)), 0.02 * ramp)
        assert math.isclose(float(loss_fn.adaptation_weight(dtype=torch.float64)), factor)
        loss_fn.step()
    assert factors == [min(max((t - 3) / 7, 0.0), 1.0) for t in range(12)]
    for t, w in enumerate(cid_weights):  # float32 by default
        assert math.isclose(w, 0.02 * (2 / (1 + math.exp(-10 * min(t / 7, 1.0))) - 1), rel_tol=1e-6)
    adaptation = 0.4 * terms.align + 0.5 * terms.consistency + 0.1 * terms.voting
    torch.testing.assert_close(terms.loss, terms.ce + adaptation, **TOL)  # factor 1 at the end
    fresh = LACMFERLoss(adapt_after=3, adapt_warmup=7, cluster_ramp="dann_sigmoid", ramp_steps=7)
    fresh.load_state_dict(loss_fn.state_dict())
    assert int(fresh.num_steps) == 12
    clone = pickle.loads(pickle.dumps(loss_fn))
    assert int(clone.num_steps) == 12 and clone.adapt_warmup == 7
    assert "adapt_after=3" in repr(loss_fn) and "paper defaults" in repr(LACMFERLoss())


def test_paper_defaults_use_the_exact_sum() -> None:
    # Without a warm-up the factor is the float 1.0: the total is ce + the weighted terms, no product.
    b = make_batch(12)
    terms = LACMFERLoss()(b["out_s"], b["labels_s"], b["out_t"])
    adaptation = 0.4 * terms.align + 0.5 * terms.consistency + 0.1 * terms.voting
    assert torch.equal(terms.loss, terms.ce + adaptation)


# ------------------------------------------------------------------------------ module ≡ function
@pytest.mark.parametrize(
    "settings",
    [{}, {"num_domains": 3}, {"consistency": "kl", "voting": False, "align_threshold": 0.3},
     {"sid": False, "label_smoothing": 0.0, "pseudo_threshold": 0.5, "kernel_num": 3}],
)  # fmt: skip
def test_module_equals_function(settings: dict[str, Any]) -> None:
    b = make_batch(13)
    domains = b["domains_s"] if "num_domains" in settings else None
    got = LACMFERLoss(**settings)(b["out_s"], b["labels_s"], b["out_t"], domains)
    want = lacmfer_loss(b["out_s"], b["labels_s"], b["out_t"], domains, **settings)
    for a, w in zip(got, want):
        torch.testing.assert_close(a, w, rtol=0, atol=0)


def test_signatures_agree() -> None:
    fn = inspect.signature(lacmfer_loss).parameters
    forward = inspect.signature(LACMFERLoss.forward).parameters
    assert list(forward)[1:] == [n for n, p in fn.items() if p.kind != p.KEYWORD_ONLY]
    init = inspect.signature(LACMFERLoss.__init__).parameters
    schedule_only = {"adaptation_weight"}
    for name, p in fn.items():
        if p.kind == p.KEYWORD_ONLY and name not in schedule_only:
            assert name in init, name
            assert init[name].default == p.default, name


# ------------------------------------------------------------------------------ errors
def test_errors_name_the_argument() -> None:
    b = make_batch(14)
    out_s, y, out_t = b["out_s"], b["labels_s"], b["out_t"]
    with pytest.raises(TypeError, match=r"`out_s` must have the attributes.*lacks feat_l"):
        lacmfer_loss(namedtuple("O", "feat_g logits_g logits_l")(*out_s[:2], out_s[3]), y, out_t)
    with pytest.raises(TypeError, match=r"`out_t.logits_l` must be a floating-point"):
        lacmfer_loss(out_s, y, out_t._replace(logits_l=out_t.logits_l.long()))
    with pytest.raises(ValueError, match=r"`labels_s` and `out_s.logits_g`.*\(9\)"):
        lacmfer_loss(out_s, y[:9], out_t)
    with pytest.raises(TypeError, match="`labels_s` must be an integer tensor"):
        lacmfer_loss(out_s, y.double(), out_t)
    with pytest.raises(ValueError, match=r"`labels_s` must hold class indices in \[0, 4\)"):
        lacmfer_loss(out_s, y + K, out_t)
    with pytest.raises(ValueError, match="`domains_s` is required"):
        lacmfer_loss(out_s, y, out_t, num_domains=2)
    with pytest.raises(ValueError, match="`consistency` must be one of"):
        lacmfer_loss(out_s, y, out_t, consistency="cos")
    with pytest.raises(ValueError, match="`consistency_from_logits` applies"):
        LACMFERLoss(consistency="kl", consistency_from_logits=True)
    with pytest.raises(ValueError, match="`align_weight` must be >= 0"):
        LACMFERLoss(align_weight=-1)
    with pytest.raises(ValueError, match="`label_smoothing` must lie in"):
        lacmfer_loss(out_s, y, out_t, label_smoothing=1.5)
    with pytest.raises(ValueError, match="`pseudo_threshold` must lie in"):
        LACMFERLoss(pseudo_threshold=0.0)
    with pytest.raises(TypeError, match="`voting` must be a bool"):
        LACMFERLoss(voting=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`adapt_after` must be an int >= 0"):
        LACMFERLoss(adapt_after=-1)
    # shapes are named as the caller passed them: the fields of `out_s` / `out_t`
    with pytest.raises(ValueError, match=r"`out_s.logits_l` and `out_s.logits_g` must match"):
        lacmfer_loss(out_s._replace(logits_l=out_s.logits_l[:9]), y, out_t)
    with pytest.raises(ValueError, match=r"Class counts.*`out_t.logits_l` and `out_t.logits_g`"):
        lacmfer_loss(out_s, y, out_t._replace(logits_l=out_t.logits_l[:, :3]))
    with pytest.raises(ValueError, match=r"Feature sizes.*`out_s.feat_l` and `out_t.feat_l`"):
        lacmfer_loss(out_s, y, out_t._replace(feat_l=out_t.feat_l[:, :3]))
    with pytest.raises(ValueError, match=r"Class counts.*`out_s.logits_g` and `out_t.logits_g`"):
        lacmfer_loss(
            out_s, y, out_t._replace(logits_g=out_t.logits_g[:, :3], logits_l=out_t.logits_l[:, :3])
        )


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_any_integer_dtype_of_labels_and_domains_gives_the_int64_result(dtype: torch.dtype) -> None:
    b = make_batch(18)
    want = lacmfer_loss(b["out_s"], b["labels_s"], b["out_t"], b["domains_s"], num_domains=3)
    got = lacmfer_loss(
        b["out_s"], b["labels_s"].to(dtype), b["out_t"], b["domains_s"].to(dtype), num_domains=3
    )
    for name, value in want._asdict().items():
        torch.testing.assert_close(getattr(got, name), value, rtol=0, atol=0, msg=name)


BAD_SETTINGS = [
    {"label_smoothing": 1.5},
    {"align_weight": -1.0},
    {"cid_weight": float("nan")},
    {"voting_weight": "0.1"},
    {"align_threshold": 0.0},
    {"pseudo_threshold": 1.2},
    {"kernel_num": 0},
    {"kernel_mul": -2.0},
    {"sid": 1},
    {"voting": None},
    {"consistency": "cos"},
    {"consistency": "kl", "consistency_from_logits": True},
    {"num_domains": 0},
    {"cid_weight": torch.tensor([0.02, 0.5])},  # a schedule's value is a 0-dim tensor
    {"validate_args": "yes"},
]


@pytest.mark.parametrize("bad", BAD_SETTINGS, ids=lambda d: ",".join(d))
def test_module_and_function_reject_a_setting_alike(bad: dict[str, Any]) -> None:
    # One rule, one helper: the module fails at construction with the function's own error.
    b = make_batch(17)
    with pytest.raises((TypeError, ValueError)) as from_function:
        lacmfer_loss(b["out_s"], b["labels_s"], b["out_t"], b.get("domains_s"), **bad)
    with pytest.raises(from_function.type) as from_module:
        LACMFERLoss(**bad)
    assert str(from_module.value) == str(from_function.value)


def test_a_non_scalar_weight_is_named_with_its_shape() -> None:
    b = make_batch(17)
    with pytest.raises(ValueError, match=r"`adaptation_weight` .* 0-dim tensor, .* shape \(2\)"):
        lacmfer_loss(b["out_s"], b["labels_s"], b["out_t"], adaptation_weight=torch.ones(2))


def test_numpy_numbers_count_as_the_python_numbers_they_hold() -> None:
    b = make_batch(17)  # 3 source domains
    args = (b["out_s"], b["labels_s"], b["out_t"], b["domains_s"])
    as_numpy = {
        "num_domains": np.int64(3),
        "kernel_num": np.int32(5),
        "cid_weight": np.float32(0.5),
    }
    as_python = {"num_domains": 3, "kernel_num": 5, "cid_weight": 0.5}
    want = lacmfer_loss(*args, **as_python).loss
    torch.testing.assert_close(lacmfer_loss(*args, **as_numpy).loss, want)
    module, reference = LACMFERLoss(**as_numpy), LACMFERLoss(**as_python)
    module.step(np.int64(2)), reference.step(2)
    assert module.num_domains == 3 and type(module.num_domains) is int
    torch.testing.assert_close(module(*args).loss, reference(*args).loss)
    with pytest.raises(TypeError, match="`num_domains` must be an int, got bool"):
        LACMFERLoss(num_domains=True)


# ------------------------------------------------------------------------------ mechanics
def small_batch(requires_grad: bool) -> tuple[Out, torch.Tensor, Out]:
    b = make_batch(15, b_s=5, b_t=4, d=3)
    leaves = [t.clone().requires_grad_(requires_grad) for t in (*b["out_s"], *b["out_t"])]
    return Out(*leaves[:4]), b["labels_s"], Out(*leaves[4:])


def test_gradcheck_without_the_detached_bandwidth_terms() -> None:
    # SID/CID detach their bandwidth and weights by definition, so finite differences cannot match
    # them (their gradients are checked against the loop references in test_alignment.py).
    out_s, y, out_t = small_batch(True)

    def fn(*leaves: torch.Tensor) -> torch.Tensor:
        return lacmfer_loss(Out(*leaves[:4]), y, Out(*leaves[4:]), sid=False, cid=False).loss

    assert torch.autograd.gradcheck(fn, (*out_s, *out_t))


def test_gradients_reach_every_input_and_are_finite() -> None:
    out_s, y, out_t = small_batch(True)
    terms = lacmfer_loss(out_s, y, out_t)
    grads = torch.autograd.grad(terms.loss, [*out_s, *out_t])
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads[4:])  # the target side learns too


def test_extreme_inputs_give_finite_values_and_gradients() -> None:
    out_s, y, out_t = small_batch(False)
    big = [(t * 1e4).requires_grad_(True) for t in (*out_s, *out_t)]
    terms = lacmfer_loss(Out(*big[:4]), y, Out(*big[4:]), consistency_from_logits=True)
    grads = torch.autograd.grad(terms.loss, big)
    assert torch.isfinite(terms.loss) and all(torch.isfinite(g).all() for g in grads)


def test_compile_equals_eager() -> None:
    b = make_batch(16)
    loss_fn = LACMFERLoss(adapt_after=2, adapt_warmup=2)
    loss_fn.step(3)
    compiled = torch.compile(loss_fn, fullgraph=True)
    got = compiled(b["out_s"], b["labels_s"], b["out_t"])
    want = loss_fn(b["out_s"], b["labels_s"], b["out_t"])
    torch.testing.assert_close(got.loss, want.loss, rtol=1e-6, atol=1e-8)


def test_with_the_model_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    model = LACMFER.tiny(num_classes=7)
    x_s, x_t = torch.rand(6, 3, 32, 32), torch.rand(5, 3, 32, 32)
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_s, out_t = model(x_s), model(x_t)
        assert isinstance(out_s, LACMFEROutput)
        terms = LACMFERLoss()(out_s, y, out_t)
    assert terms.loss.dtype == torch.float32 and torch.isfinite(terms.loss)
    assert terms.ce.dtype == torch.float32
    terms.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_half_precision_outputs_give_float32_terms_computed_in_float32(half: torch.dtype) -> None:
    b = make_batch(19)
    out_s, out_t = (Out(*(t.to(half) for t in b[k])) for k in ("out_s", "out_t"))
    source_only = {"sid": False, "cid": False, "consistency": "none", "voting": False}
    for settings in ({}, source_only):
        got = lacmfer_loss(out_s, b["labels_s"], out_t, **settings)
        want = lacmfer_loss(
            Out(*(t.float() for t in out_s)), b["labels_s"], Out(*(t.float() for t in out_t)),
            **settings,
        )  # fmt: skip
        for name in ("loss", "ce", "effective_s", "effective_t"):
            value = getattr(got, name)
            assert value.dtype == torch.float32, name
            torch.testing.assert_close(value, getattr(want, name), msg=name)
