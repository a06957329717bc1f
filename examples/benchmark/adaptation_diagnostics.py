#!/usr/bin/env python
"""Why does LA-CMFER help or hurt? Gradient shares and mask statistics along a training run.

Reads a run of ``examples/train_cmfer.py`` on the synthetic data that kept periodic checkpoints,
and for each checkpoint recomputes the objective on the batch the run drew for the next step --
the samplers are seeded and the augmentation's generator state is in the checkpoint, so this is
the very batch, and the cross-entropy printed equals the one the run logged at that step. One row
per checkpoint:

* ``|∇CE|``, ``|∇SID|``, ``|∇CID|``, ``|∇MCC|``, ``|∇MVV|``: the norm of each weighted term's gradient
  with respect to the model's parameters (warm-up factor included);
* ``n_eff s/t``: the effective number of source / target samples the global branch's sample-level
  alignment rests on, ``(Σw)²/Σw²`` of its normalised hardness weights (0 when all are 0);
* ``conf t``: the share of target samples whose global-branch confidence reaches the alignment's
  threshold δ; ``kept``: the share the multi-view vote keeps;
* ``conf acc``: accuracy of the global branch's predictions on the confident target samples (the
  ones the alignment weights); ``pl acc``: accuracy of the kept pseudo-labels; ``–`` where there
  are none. Both read the target labels, as a diagnostic: nothing computed from them reaches a
  loss.

Usage::

    python examples/train_cmfer.py --preset benchmark --target Oulu-CASIA --seed 0 \\
        --ckpt-every 25 --keep-checkpoints 100 --out runs/diagnostics/oulu
    python examples/benchmark/adaptation_diagnostics.py runs/diagnostics/oulu
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import torch
from torch.utils.data import ConcatDataset

from lacmfer.data import (
    SIX_DOMAINS,
    FERAugment,
    InfiniteSampler,
    MultiSourceSampler,
    canonical_dataset,
    leave_one_domain_out,
    normalize,
)
from lacmfer.data.synthetic import synthetic_domains
from lacmfer.functional import refine_pseudo_labels
from lacmfer.losses import LACMFERLoss
from lacmfer.modules import LACMFER
from lacmfer.utils import load_checkpoint

#: The settings of LACMFERLoss a run's configuration holds under the same names.
OBJECTIVE = ("label_smoothing", "align_weight", "cid_weight", "consistency_weight",
             "voting_weight", "align_threshold", "pseudo_threshold", "kernel_num", "kernel_mul",
             "sid", "cid", "consistency", "consistency_from_logits", "voting", "cluster_ramp",
             "adapt_after", "adapt_warmup")  # fmt: skip


def grad_norm(value: torch.Tensor, params: Sequence[torch.Tensor]) -> float:
    """Norm of ``∇value`` over ``params`` (0 for a term without a graph)."""
    if not value.requires_grad:
        return 0.0
    grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
    return float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads if g is not None)))


def task_data(cfg: dict[str, Any]) -> tuple[ConcatDataset, Any, int]:
    """The run's sources and target adaptation set, as ``train_cmfer.py`` builds the synthetic task."""
    if cfg["data_root"] is not None or cfg["source_val_fraction"] > 0:
        raise SystemExit(
            "adaptation_diagnostics.py reads runs on the synthetic data, all sources trained on"
        )
    names = tuple(
        canonical_dataset(d, SIX_DOMAINS)
        for d in (cfg["domains"] or ",".join(SIX_DOMAINS)).split(",")
    )
    domains = synthetic_domains(cfg["synthetic_train_size"], cfg["synthetic_test_size"], domains=names,
                                image_size=cfg["image_size"], seed=2 * cfg["split_seed"])  # fmt: skip
    task = leave_one_domain_out(domains, cfg["target"])
    return ConcatDataset(list(task.source_sets)), task.target_adapt, len(task.sources)


def diagnose(folder: Path) -> list[dict[str, float]]:
    """One row per ``step_*.pt`` checkpoint of the run in ``folder`` (LA-CMFER or source-only)."""
    paths = sorted((folder / "checkpoints").glob("step_*.pt"))
    if not paths:
        raise SystemExit(
            f"{folder}: no step_*.pt checkpoints (train with --ckpt-every/--keep-checkpoints)"
        )
    cfg = load_checkpoint(paths[0], required=("config",))["config"]
    if cfg["method"] not in ("lacmfer", "source-only"):
        raise SystemExit(f"{folder}: a {cfg['method']} run; the diagnostics read LA-CMFER's terms")
    sources, target, num_sources = task_data(cfg)
    sizes = [len(d) for d in sources.datasets]
    on = cfg["method"] == "lacmfer"
    settings = {k: cfg[k] for k in OBJECTIVE}
    settings.update(
        {k: settings[k] and on for k in ("sid", "cid", "voting", "consistency_from_logits")}
    )
    settings.update(consistency=cfg["consistency"] if on else "none",
                    num_domains=num_sources if cfg["per_source"] else None,
                    ramp_steps=cfg["ramp_steps"] or cfg["steps"])  # fmt: skip
    rows = []
    print(f"{cfg['method']} -> {cfg['target']}, seed {cfg['seed']}, {cfg['steps']} steps")
    print(f"{'step':>5} {'CE':>6} {'|∇CE|':>7} {'|∇SID|':>7} {'|∇CID|':>7} {'|∇MCC|':>7} "
          f"{'|∇MVV|':>7} {'n_eff s':>7} {'n_eff t':>7} {'conf t':>6} {'kept':>5} {'conf acc':>8} "
          f"{'pl acc':>6}")  # fmt: skip
    for path in paths:
        ckpt = load_checkpoint(path, required=("step", "model", "objective", "rng"))
        step = int(ckpt["step"])
        if step >= cfg["steps"]:  # the last step: no next batch
            continue
        model = (LACMFER.tiny if cfg["width"] == "tiny" else LACMFER)(7, share=cfg["share"])
        model.load_state_dict(ckpt["model"])
        loss_fn = LACMFERLoss(**settings)
        loss_fn.load_state_dict(ckpt["objective"])
        source = MultiSourceSampler(
            sizes, cfg["batch_size"], mode=cfg["source_mode"], seed=cfg["seed"]
        )
        tgt = InfiniteSampler(
            len(target), cfg["target_batch_size"] or cfg["batch_size"], seed=cfg["seed"]
        )
        for _ in range(step):  # replay the draws of the steps taken
            source.sample(), tgt.sample()
        batch = source.sample()
        x_s = torch.stack([sources[i][0] for i in batch.indices.tolist()])
        y_s = torch.tensor([sources[i][1] for i in batch.indices.tolist()])
        idx = tgt.sample().tolist()
        x_t, y_t = (
            torch.stack([target[i][0] for i in idx]),
            torch.tensor([target[i][1] for i in idx]),
        )
        if cfg["augment"]:
            gen = torch.Generator().manual_seed(0)
            rng = ckpt["rng"][0]  # the augmentation's generator (older runs: "augment")
            gen.set_state(rng["generators"][0] if "generators" in rng else rng["augment"])
            x_s, x_t = FERAugment()(x_s, generator=gen), FERAugment()(x_t, generator=gen)
        model.train()
        out_s, out_t = model(normalize(x_s)), model(normalize(x_t))
        terms = loss_fn(out_s, y_s, out_t, batch.domains)
        params = [p for p in model.parameters() if p.requires_grad]
        w, c = terms.adaptation_weight, cfg
        labels, kept = refine_pseudo_labels(out_t.logits_g.detach(), out_t.logits_l.detach(),
                                            threshold=c["pseudo_threshold"])  # fmt: skip
        probs_t = out_t.logits_g.detach().softmax(1)
        confident = probs_t.amax(1) >= c["align_threshold"]  # the alignment's target mask
        row = {
            "step": float(step + 1),
            "ce": float(terms.ce.detach()),
            "grad_ce": grad_norm(terms.ce, params),
            "grad_sid": grad_norm(w * c["align_weight"] * terms.sid, params),
            "grad_cid": grad_norm(w * c["align_weight"] * c["cid_weight"] * terms.cid, params),
            "grad_mcc": grad_norm(w * c["consistency_weight"] * terms.consistency, params),
            "grad_mvv": grad_norm(w * c["voting_weight"] * terms.voting, params),
            "n_eff_s": float(terms.effective_s[0]),
            "n_eff_t": float(terms.effective_t[0]),
            "conf_t": float(terms.masked_t[0]) / len(idx),
            "kept": float(terms.kept_fraction),
            "conf_acc": share_right(out_t.logits_g.detach().argmax(1), y_t, confident),
            "pl_acc": share_right(labels, y_t, kept),
        }
        rows.append(row)
        print(f"{step + 1:>5} {row['ce']:>6.3f} {row['grad_ce']:>7.3f} {row['grad_sid']:>7.3f} "
              f"{row['grad_cid']:>7.3f} {row['grad_mcc']:>7.3f} {row['grad_mvv']:>7.3f} "
              f"{row['n_eff_s']:>7.1f} {row['n_eff_t']:>7.1f} {row['conf_t']:>6.2f} "
              f"{row['kept']:>5.2f} {share(row['conf_acc']):>8} {share(row['pl_acc']):>6}",
              flush=True)  # fmt: skip
    return rows


def share_right(labels: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor) -> float:
    """The share of the masked samples whose label is right; NaN when the mask is empty."""
    n = int(mask.sum())
    return float(((labels == truth) & mask).sum()) / n if n else math.nan


def share(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.2f}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("run", type=Path, help="the --out folder of a train_cmfer.py run")
    p.add_argument("--threads", type=int, help="torch threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    diagnose(args.run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
