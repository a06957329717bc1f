#!/usr/bin/env python
"""Why does an adaptation objective help or hurt? Gradient shares and mask statistics along a run.

Trains exactly as ``examples/train_cmfer.py`` does with the same flags (same data, seed, model,
optimiser and objective: the trajectory is the script's), and every ``--every`` steps, on that
step's own batch and before the update, prints one row:

* ``|∇CE|``, ``|∇SID|``, ``|∇CID|``, ``|∇MCC|``, ``|∇MVV|``: the norm of each weighted term's gradient
  with respect to the model's parameters (SID and CID summed over both branches, each with its
  weight in the objective, warm-up factor included);
* ``n_eff s/t``: the effective number of samples that carry the global branch's SID, 1/Σw², of the
  normalised source and target hardness weights (0 when every weight is 0);
* ``conf t``: fraction of target samples whose global-branch confidence reaches the alignment
  threshold δ; ``kept``: fraction kept by multi-view voting;
* ``pl acc``: accuracy of the confident target pseudo-labels (global branch) -- a diagnostic
  that reads the target labels; nothing computed from them reaches a loss or the update.

Usage::

    python examples/adaptation_diagnostics.py --preset benchmark --target AffectNet --every 20
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

HERE = Path(__file__).resolve().parent


def _script() -> Any:
    """Import train_cmfer.py (examples/ is not a package)."""
    if "train_cmfer" in sys.modules:
        return sys.modules["train_cmfer"]
    spec = importlib.util.spec_from_file_location("train_cmfer", HERE / "train_cmfer.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_cmfer"] = module
    spec.loader.exec_module(module)
    return module


def grad_norm(value: Tensor, params: Sequence[Tensor]) -> float:
    """Norm of ``∇value`` over ``params`` (0 for a term without a graph)."""
    if not value.requires_grad:
        return 0.0
    grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
    return float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads if g is not None)))


def effective_size(w: Tensor) -> float:
    """1/Σw² of normalised weights (0 when all are 0)."""
    s = float((w.double() ** 2).sum())
    return 1.0 / s if s > 0 else 0.0


def diagnose(argv: Optional[Sequence[str]] = None) -> list[dict[str, float]]:
    """Run the diagnostics; ``argv`` holds ``--every`` and any train_cmfer flags."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=True)
    p.add_argument("--every", type=int, default=20, help="steps between two rows")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    own, rest = p.parse_known_args(argv)
    if own.threads:
        torch.set_num_threads(own.threads)
    script = _script()
    from cmfer import runtime

    from lacmfer.data import normalize
    from lacmfer.functional import hardness_weights

    cfg = script.config_from_args([*rest, "--no-progress", "--device", "cpu"])
    run = script.build_run(cfg, runtime.DistInfo(), torch.device("cpu"), None)
    objective = run.objective
    params = [q for q in run.model.parameters() if q.requires_grad]
    rows: list[dict[str, float]] = []
    header = (
        f"{'step':>5} {'CE':>6} {'|∇CE|':>7} {'|∇SID|':>7} {'|∇CID|':>7} {'|∇MCC|':>7} "
        f"{'|∇MVV|':>7} {'n_eff s':>7} {'n_eff t':>7} {'conf t':>6} {'kept':>5} {'pl acc':>6}"
    )
    print(f"{cfg.method} → {run.data.target_name}, {cfg.steps} steps, seed {cfg.seed}")
    print(header)
    run.model.train()
    for step in range(cfg.steps + 1):
        batch = run.data.next_batch()
        x_s, x_t = batch.x_s, batch.x_t
        if run.augment is not None:
            x_s = run.augment(x_s, generator=run.aug_gen)
            x_t = run.augment(x_t, generator=run.aug_gen)
        out_s, out_t = run.step_fn(normalize(x_s), normalize(x_t))
        loss, _ = objective(out_s, batch.y_s, batch.d_s, out_t)
        if step % own.every == 0 or step == cfg.steps:
            ramp = float(objective.adaptation_ramp())
            ce = F.cross_entropy(out_s.logits_g, batch.y_s, label_smoothing=cfg.label_smoothing)
            ce = ce + F.cross_entropy(
                out_s.logits_l, batch.y_s, label_smoothing=cfg.label_smoothing
            )
            sid = cid = mcc = mvv = loss.new_zeros(())
            if objective.align is not None:
                for name, o_s, o_t in (
                    ("global", (out_s.feat_g, out_s.logits_g), (out_t.feat_g, out_t.logits_g)),
                    ("local", (out_s.feat_l, out_s.logits_l), (out_t.feat_l, out_t.logits_l)),
                ):
                    terms = objective._alignment(name, *o_s, batch.y_s, *o_t, batch.d_s)
                    sid = sid + terms["sid"]
                    cid = cid + terms["loss"] - terms["sid"]
            if objective.consistency is not None:
                mcc = objective.consistency(out_t.logits_g, out_t.logits_l)
            if objective.refiner is not None:
                mvv = objective.refiner(out_t.logits_g, out_t.logits_l).loss
            w_s, w_t = hardness_weights(
                out_s.logits_g, batch.y_s, out_t.logits_g, threshold=cfg.align_threshold
            )
            prob_t = out_t.logits_g.detach().softmax(1)
            conf = prob_t.amax(1) >= cfg.align_threshold
            correct = (prob_t.argmax(1) == batch.y_t) & conf
            a = cfg.align_weight * ramp
            row = {
                "step": float(step),
                "ce": float(ce.detach()),
                "grad_ce": grad_norm(ce, params),
                "grad_sid": grad_norm(a * sid, params),
                "grad_cid": grad_norm(a * cid, params),
                "grad_mcc": grad_norm(cfg.consistency_weight * ramp * mcc, params),
                "grad_mvv": grad_norm(cfg.voting_weight * ramp * mvv, params),
                "n_eff_s": effective_size(w_s),
                "n_eff_t": effective_size(w_t),
                "conf_t": float(conf.float().mean()),
                "kept": 0.0,
                "pl_acc": float(correct.sum()) / max(1, int(conf.sum())),
            }
            if objective.refiner is not None:
                row["kept"] = float(objective.refiner.kept_fraction)
            rows.append(row)
            print(
                f"{step:>5} {row['ce']:>6.3f} {row['grad_ce']:>7.3f} {row['grad_sid']:>7.3f} "
                f"{row['grad_cid']:>7.3f} {row['grad_mcc']:>7.3f} {row['grad_mvv']:>7.3f} "
                f"{row['n_eff_s']:>7.1f} {row['n_eff_t']:>7.1f} {row['conf_t']:>6.2f} "
                f"{row['kept']:>5.2f} {row['pl_acc']:>6.2f}",
                flush=True,
            )
        if step == cfg.steps:
            break
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        run.scheduler.step()
        objective.step()
    run.data.close()
    return rows


if __name__ == "__main__":
    diagnose()
