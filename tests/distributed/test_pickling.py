"""Every loss module (and a validator) pickles with a process group set, and computes the same after.

A process group cannot be pickled; the modules drop it when pickled (the copy uses the world group).
One gloo rank is enough to hold a real group object.
"""

from __future__ import annotations

import copy
import pickle
from collections import namedtuple
from typing import Any, Callable

import pytest
import torch
import torch.distributed as dist
from torch import Tensor, nn

from lacmfer.losses import (
    CORALLoss,
    DomainAdversarialLoss,
    DualLevelInterDomainAlignment,
    GradientReversal,
    LACMFERLoss,
    MinimumClassConfusionLoss,
    MomentMatchingLoss,
    MultiViewClusteringConsistency,
    PseudoLabelRefiner,
)
from lacmfer.validation import SNDScore
from tests.distributed.harness import run_ranks

pytestmark = pytest.mark.distributed

Out = namedtuple("Out", "feat_g logits_g feat_l logits_l")


def _cases(group: Any) -> dict[str, tuple[nn.Module, Callable[[nn.Module], Tensor]]]:
    """name -> (module built with ``process_group=group``, its value on a fixed batch)."""
    g = torch.Generator().manual_seed(0)
    f_s, f_t = torch.randn(12, 6, generator=g), torch.randn(10, 6, generator=g) + 0.5
    z_s, z_t = 3 * torch.randn(12, 4, generator=g), 3 * torch.randn(10, 4, generator=g)
    z_l = 3 * torch.randn(10, 4, generator=g)
    y_s = torch.randint(0, 4, (12,), generator=g)
    d_s = torch.arange(12) % 3
    out_s = Out(f_s, z_s, f_s.flip(1), z_s.flip(1))
    out_t = Out(f_t, z_t, f_t.flip(1), z_l)
    kw = {"sync_dist": True, "process_group": group}
    torch.manual_seed(0)  # DANN's discriminator

    def snd(m: nn.Module) -> Tensor:
        m.reset()  # type: ignore[operator]
        m.update(z_t)  # type: ignore[operator]
        return m.compute()  # type: ignore[operator]

    return {
        "alignment": (
            DualLevelInterDomainAlignment(num_domains=3, cluster_ramp="dann_sigmoid", **kw),
            lambda m: m(f_s, z_s, y_s, f_t, z_t, d_s),
        ),
        "objective": (LACMFERLoss(adapt_warmup=4, **kw), lambda m: m(out_s, y_s, out_t).loss),
        "consistency": (MultiViewClusteringConsistency(**kw), lambda m: m(z_t, z_l)),
        "refiner": (PseudoLabelRefiner(threshold=0.6, **kw), lambda m: m(z_t, z_l).loss),
        "coral": (CORALLoss(num_domains=3, **kw), lambda m: m(f_s, f_t, d_s)),
        "moment_matching": (MomentMatchingLoss(num_domains=3, **kw), lambda m: m(f_s, d_s, f_t)),
        "class_confusion": (MinimumClassConfusionLoss(**kw), lambda m: m(z_t)),
        "dann": (
            DomainAdversarialLoss(6, hidden=8, num_domains=3, **kw),
            lambda m: m(f_s, f_t, d_s),
        ),
        "gradient_reversal": (GradientReversal(coeff_ramp="dann_sigmoid"), lambda m: m(f_s).sum()),
        "snd_validator": (SNDScore(**kw), snd),
    }


def _round_trips(rank: int) -> dict[str, Any]:
    group = dist.new_group([0])
    results: dict[str, Any] = {}
    try:
        pickle.dumps(group)
        results["group_pickles"] = True
    except Exception:
        results["group_pickles"] = False
    for name, (module, value) in _cases(group).items():
        if hasattr(module, "step"):
            module.step(3)  # some state to carry over
        before = value(module).detach()
        clone = pickle.loads(pickle.dumps(module))
        deep = copy.deepcopy(module)
        results[name] = {
            "group_kept": getattr(module, "process_group", group) is group,
            "dropped": getattr(clone, "process_group", None) is None
            and getattr(deep, "process_group", None) is None,
            "repr": repr(clone) == repr(module),
            "state": all(
                torch.equal(v, clone.state_dict()[k]) for k, v in module.state_dict().items()
            ),
            "before": before,
            "after": value(clone).detach(),
            "deep": value(deep).detach(),
        }
    return results


def test_every_loss_module_pickles_with_a_process_group() -> None:
    (results,) = run_ranks(_round_trips, world=1)
    assert results.pop("group_pickles") is False  # the premise: a process group cannot be pickled
    assert len(results) == 10
    for name, r in results.items():
        assert r["group_kept"] and r["dropped"] and r["repr"] and r["state"], (name, r)
        torch.testing.assert_close(r["after"], r["before"], rtol=0, atol=0, msg=name)
        torch.testing.assert_close(r["deep"], r["before"], rtol=0, atol=0, msg=name)
