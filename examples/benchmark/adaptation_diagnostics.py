#!/usr/bin/env python
"""Why does an adaptation objective help or hurt? Gradient shares and mask statistics along a run.

Trains exactly as ``examples/train_cmfer.py`` does with the same flags -- it calls that script's
``build_run``, ``forward_loss`` and ``update``, so the data, seed, model, optimiser, autocast, scaler
and objective are the script's and so is the trajectory -- and every ``--every`` steps, on that
step's own batch and before the update, prints one row:

* ``|∇CE|``, ``|∇SID|``, ``|∇CID|``, ``|∇MCC|``, ``|∇MVV|``: the norm of each weighted term's gradient
  with respect to the model's parameters (SID and CID summed over both branches, each with its
  weight in the objective, warm-up factor included; from the terms :class:`lacmfer.losses.LACMFERLoss`
  returns);
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
from typing import Optional, Sequence

import torch
from cmfer import runtime
from torch import Tensor
from train_cmfer import build_run, config_from_args, forward_loss, update

from lacmfer.functional import hardness_weights


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
    """Run the diagnostics; ``argv`` holds ``--every`` and any train_cmfer flags (``--method
    lacmfer``, the default, gives every column; a baseline gives the CE and mask columns)."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--every", type=int, default=20, help="steps between two rows")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    own, rest = p.parse_known_args(argv)
    if own.threads:
        torch.set_num_threads(own.threads)
    cfg = config_from_args([*rest, "--no-progress", "--device", "cpu"])
    run = build_run(cfg, runtime.DistInfo(), torch.device("cpu"), None)
    params = [q for q in run.model.parameters() if q.requires_grad]
    rows: list[dict[str, float]] = []
    print(f"{cfg.method} → {run.data.target_name}, {cfg.steps} steps, seed {cfg.seed}")
    print(
        f"{'step':>5} {'CE':>6} {'|∇CE|':>7} {'|∇SID|':>7} {'|∇CID|':>7} {'|∇MCC|':>7} "
        f"{'|∇MVV|':>7} {'n_eff s':>7} {'n_eff t':>7} {'conf t':>6} {'kept':>5} {'pl acc':>6}"
    )
    run.model.train()
    for step in range(cfg.steps + 1):
        batch = run.data.next_batch()
        terms, out_s, out_t = forward_loss(run, batch)
        if step % own.every == 0 or step == cfg.steps:
            w = terms.adaptation_weight
            zero = terms.ce.new_zeros(())
            sid, cid = getattr(terms, "sid", zero), getattr(terms, "cid", zero)
            consistency, voting = (
                getattr(terms, "consistency", zero),
                getattr(terms, "voting", zero),
            )
            prob_t = out_t.logits_g.detach().float().softmax(1)
            conf = prob_t.amax(1) >= cfg.align_threshold
            correct = (prob_t.argmax(1) == batch.y_t) & conf
            w_s, w_t = hardness_weights(
                out_s.logits_g.float(), batch.y_s, out_t.logits_g.float(),
                threshold=cfg.align_threshold,
            )  # fmt: skip
            row = {
                "step": float(step),
                "ce": float(terms.ce.detach()),
                "grad_ce": grad_norm(terms.ce, params),
                "grad_sid": grad_norm(w * cfg.align_weight * sid, params),
                "grad_cid": grad_norm(w * cfg.align_weight * cfg.cid_weight * cid, params),
                "grad_mcc": grad_norm(w * cfg.consistency_weight * consistency, params),
                "grad_mvv": grad_norm(w * cfg.voting_weight * voting, params),
                "n_eff_s": effective_size(w_s),
                "n_eff_t": effective_size(w_t),
                "conf_t": float(conf.float().mean()),
                "kept": float(getattr(terms, "kept_fraction", zero)),
                "pl_acc": float(correct.sum()) / max(1, int(conf.sum())),
            }
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
        update(run, terms.loss, batch.x_s.shape[0] + batch.x_t.shape[0])
    run.data.close()
    return rows


if __name__ == "__main__":
    diagnose()
