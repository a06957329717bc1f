#!/usr/bin/env python
r"""Train LA-CMFER for cross-multidomain facial expression recognition (CMFER), end to end.

Labelled source domains, one unlabelled target domain, one model that must work on the target.
The script composes the library -- the :class:`~lacmfer.modules.LACMFER` model, one
:class:`~lacmfer.losses.DualLevelInterDomainAlignment` per branch,
:class:`~lacmfer.losses.MultiViewClusteringConsistency` and :class:`~lacmfer.losses.PseudoLabelRefiner`
-- with the paper's objective and recipe (SPEC §4) as its defaults:

.. math::

    L = \mathrm{CE}_{ls}(z_G^s, y) + \mathrm{CE}_{ls}(z_L^s, y)
        + 0.4 \sum_{b \in \{G, L\}} (L_{sid}^b + 0.02\, L_{cid}^b) + 0.5\, L_{mcc} + 0.1\, L_{mvv},

SGD (Nesterov, momentum 0.9, weight decay 1e-4), lr 1e-3 for the encoder and 1e-2 for branches and
heads, inverse decay ``lr·(1 + 10·min(1, t/T))^-0.75`` with ``T = steps // 2`` (the paper's
T = 10 000 for 20 000 steps, scaled with ``--steps``), 128 source + 128 target images a step,
224×224, augmentation on the batches. Source and target batches go through the model in separate
calls, so BatchNorm normalises each domain with its own statistics.

Usage::

    python examples/train_cmfer.py                    # synthetic six-domain data, device-sized preset
    python examples/train_cmfer.py --preset smoke     # seconds on a CPU
    python examples/train_cmfer.py --method source-only --target CK+ --out runs/src
    python examples/train_cmfer.py --preset paper --data-root /data/fer/datasets \
        --lists shared/data/fer_lists --domains CK+,JAFFE,Oulu-CASIA,RAF-DB,FER-2013 \
        --encoder-weights resnet18-f37072fd.pth --target all --out runs/paper
    torchrun --nproc_per_node=4 examples/train_cmfer.py --preset paper ...   # DDP, same flags

Presets (``examples/configs/<name>.yaml``; ``--config FILE`` and flags override them): ``cpu`` is
the default on a CPU (LACMFER.tiny, 64×64, a few minutes on 2 cores), ``gpu`` the default with
CUDA (full widths, 112×112, bf16), ``paper`` the recipe above, ``smoke`` seconds for tests,
``benchmark`` one run of ``examples/run_synthetic_benchmark.py``. Without an ImageNet encoder
(``--encoder-weights``) the cpu/gpu/benchmark presets train the encoder at the full lr.

Under ``torchrun`` each rank takes ``--batch-size / world_size`` images of one global stream, the
losses compute their batch statistics over the global batch (``sync_dist``), rank 0 writes the
outputs, and ``--resume`` works the same way.

Outputs in ``--out``: ``metrics.jsonl`` (training losses every ``--log-every`` steps, target
evaluation every ``--eval-every`` steps), ``summary.json`` (config, final-step metrics = THE result,
best-over-training = selection on the test set, wall time, images/s), ``checkpoints/`` (``last.pt``
and periodic ones; ``--resume`` continues exactly), ``confusion.png`` and ``curves.png`` (with
matplotlib), ``tb/`` (with TensorBoard). Target labels are used for evaluation and for logged
diagnostics only (pseudo-label accuracy); they never reach a loss.

Run ``python examples/train_cmfer.py --help`` for every option.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the `cmfer` support package

from cmfer import runtime
from cmfer.config import TrainConfig, config_from_args
from cmfer.data import TARGETS, CMFERData, TrainBatch, build_data  # noqa: F401 (TARGETS: public)
from cmfer.metrics import classification_metrics, confusion_matrix
from cmfer.report import (
    MetricsLog,
    Progress,
    json_safe,
    plot_confusion,
    plot_curves,
    read_jsonl,
)

from lacmfer.data import CLASSES, FERAugment, normalize
from lacmfer.functional import mmd2, refine_pseudo_labels
from lacmfer.losses import (
    DualLevelInterDomainAlignment,
    MultiViewClusteringConsistency,
    PseudoLabelRefiner,
)
from lacmfer.modules import LACMFER, LACMFEROutput

BEST_LABEL = "selection on the test set (best over training; not a valid result)"


# ------------------------------------------------------------------------------------------ model
def build_model(cfg: TrainConfig, num_classes: int) -> LACMFER:
    """The paper's model (``--width full``) or its narrow CPU preset (``--width tiny``)."""
    kwargs: dict[str, Any] = {"share": cfg.share, "encoder_weights": cfg.encoder_weights}
    if cfg.width == "tiny":
        return LACMFER.tiny(num_classes, **kwargs)
    return LACMFER(num_classes, **kwargs)


class DomainPair(nn.Module):
    """Runs the model on the source batch and on the target batch in two separate calls.

    Separate calls give each domain its own BatchNorm statistics (SPEC §1). Wrapping both calls in
    one module gives DistributedDataParallel and ``torch.compile`` a single forward per step.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x_s: Tensor, x_t: Tensor) -> tuple[LACMFEROutput, LACMFEROutput]:
        return self.model(x_s), self.model(x_t)


# -------------------------------------------------------------------------------------- objective
def view_discrepancy(logits_g: Tensor, logits_l: Tensor, kind: str, on_logits: bool) -> Tensor:
    """Per-sample L1 / MSE / symmetric-KL discrepancy between the two views (the paper's ablation
    alternatives to MCC), averaged over the batch. On probabilities unless ``on_logits``."""
    a, b = (logits_g, logits_l) if on_logits else (logits_g.softmax(1), logits_l.softmax(1))
    if kind == "l1":
        return (a - b).abs().sum(1).mean()
    if kind == "mse":
        return (a - b).square().sum(1).mean()
    log_a, log_b = logits_g.log_softmax(1), logits_l.log_softmax(1)
    kl_ab = (log_a.exp() * (log_a - log_b)).sum(1)
    kl_ba = (log_b.exp() * (log_b - log_a)).sum(1)
    return ((kl_ab + kl_ba) / 2).mean()


class Objective(nn.Module):
    r"""The training loss of ``--method`` (SPEC §4), holding the loss modules and their state.

    ``forward(out_s, labels_s, domains_s, out_t)`` returns the total loss and a dict of its detached
    parts. It receives no target labels: the target side is unlabelled by construction.
    """

    def __init__(self, cfg: TrainConfig, num_domains: int, *, sync_dist: bool) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_domains = num_domains
        self.align: Optional[nn.ModuleDict] = None
        self.consistency: Optional[nn.Module] = None
        self.refiner: Optional[PseudoLabelRefiner] = None
        # Steps taken, for the warm-up of the adaptation terms (in state_dict: exact resume).
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.long))
        if cfg.method == "lacmfer":
            if cfg.sid or cfg.cid:
                self.align = nn.ModuleDict(
                    {
                        branch: DualLevelInterDomainAlignment(
                            threshold=cfg.align_threshold,
                            kernel_num=cfg.kernel_num,
                            kernel_mul=cfg.kernel_mul,
                            cluster_weight=cfg.cid_weight,
                            cluster_ramp=cfg.cluster_ramp,
                            ramp_steps=cfg.steps,
                            num_domains=num_domains if cfg.per_source else None,
                            sync_dist=sync_dist,
                        )
                        for branch in ("global", "local")
                    }
                )
            if cfg.consistency_enabled and cfg.consistency == "mcc":
                self.consistency = MultiViewClusteringConsistency(
                    from_logits=cfg.consistency_on_logits, sync_dist=sync_dist
                )
            if cfg.voting:
                self.refiner = PseudoLabelRefiner(
                    threshold=cfg.pseudo_threshold, sync_dist=sync_dist
                )

    def _alignment(
        self,
        branch: str,
        feat_s: Tensor,
        logits_s: Tensor,
        labels_s: Tensor,
        feat_t: Tensor,
        logits_t: Tensor,
        domains_s: Tensor,
    ) -> dict[str, Tensor]:
        assert self.align is not None
        module = cast(DualLevelInterDomainAlignment, self.align[branch])
        domains = domains_s if self.cfg.per_source else None
        terms = module(
            feat_s, logits_s, labels_s, feat_t, logits_t, domains_s=domains, return_terms=True
        )
        sid = terms.sid if self.cfg.sid else terms.sid.new_zeros(())
        cid = terms.cid if self.cfg.cid else terms.cid.new_zeros(())
        return {"sid": sid, "cid": cid, "loss": sid + module.current_cluster_weight() * cid}

    def forward(
        self, out_s: LACMFEROutput, labels_s: Tensor, domains_s: Tensor, out_t: LACMFEROutput
    ) -> tuple[Tensor, dict[str, Tensor]]:
        cfg = self.cfg
        ce = F.cross_entropy(out_s.logits_g, labels_s, label_smoothing=cfg.label_smoothing)
        ce = ce + F.cross_entropy(out_s.logits_l, labels_s, label_smoothing=cfg.label_smoothing)
        zero = ce.new_zeros(())
        parts: dict[str, Tensor] = {"ce": ce, "align": zero, "consistency": zero, "voting": zero}
        branches = {
            "global": (out_s.feat_g, out_s.logits_g, out_t.feat_g, out_t.logits_g),
            "local": (out_s.feat_l, out_s.logits_l, out_t.feat_l, out_t.logits_l),
        }
        if cfg.method == "mmd":
            parts["align"] = sum(
                (
                    mmd2(f_s, f_t, kernel_num=cfg.kernel_num, kernel_mul=cfg.kernel_mul)
                    for f_s, _, f_t, _ in branches.values()
                ),
                zero,
            )
        elif self.align is not None:
            sid, cid, align = zero, zero, zero
            for name, (f_s, z_s, f_t, z_t) in branches.items():
                terms = self._alignment(name, f_s, z_s, labels_s, f_t, z_t, domains_s)
                sid, cid, align = sid + terms["sid"], cid + terms["cid"], align + terms["loss"]
            parts.update(align=align, sid=sid, cid=cid)
        if cfg.method == "lacmfer" and cfg.consistency_enabled:
            if self.consistency is not None:
                parts["consistency"] = self.consistency(out_t.logits_g, out_t.logits_l)
            else:
                parts["consistency"] = view_discrepancy(
                    out_t.logits_g, out_t.logits_l, cfg.consistency, cfg.consistency_on_logits
                )
        if self.refiner is not None:
            refined = self.refiner(out_t.logits_g, out_t.logits_l)
            parts["voting"] = refined.loss
        if cfg.adapt_after == 0 and cfg.adapt_warmup == 0:  # the paper: adaptation from step 0
            loss = (
                ce
                + cfg.align_weight * parts["align"]
                + cfg.consistency_weight * parts["consistency"]
                + cfg.voting_weight * parts["voting"]
            )
        else:
            adaptation = (
                cfg.align_weight * parts["align"]
                + cfg.consistency_weight * parts["consistency"]
                + cfg.voting_weight * parts["voting"]
            )
            loss = ce + self.adaptation_ramp() * adaptation
        parts["loss"] = loss
        return loss, {k: v.detach() for k, v in parts.items()}

    def adaptation_ramp(self) -> Tensor:
        """Factor on all adaptation terms at step ``t``: 0 before ``adapt_after``, then rising
        linearly to 1 over ``adapt_warmup`` steps (at once without warm-up)."""
        since = cast(Tensor, self.num_steps).to(torch.float32) - self.cfg.adapt_after
        if self.cfg.adapt_warmup == 0:
            return (since >= 0).to(torch.float32)
        return (since / self.cfg.adapt_warmup).clamp(0.0, 1.0)

    def step(self) -> None:
        """Advance the training progress (the warm-up and the loss modules' CID ramp)."""
        cast(Tensor, self.num_steps).add_(1)
        if self.align is not None:
            for module in self.align.values():
                cast(DualLevelInterDomainAlignment, module).step()


@torch.no_grad()
def pseudo_label_diagnostics(out_t: LACMFEROutput, labels_t: Tensor, threshold: float) -> Tensor:
    """``[kept fraction, accuracy of the kept pseudo-labels]`` of multi-view voting (diagnostic
    only: the one place target labels are read during training; nothing here has a gradient)."""
    labels, mask = refine_pseudo_labels(out_t.logits_g, out_t.logits_l, threshold=threshold)
    kept = mask.float().sum()
    correct = ((labels == labels_t) & mask).float().sum()
    return torch.stack([kept / mask.numel(), correct / kept])  # nan when nothing is kept


# --------------------------------------------------------------------------------- optimisation
def inverse_decay(cfg: TrainConfig) -> Callable[[int], float]:
    """``t -> (1 + γ·min(1, t/T))^-p``, the paper's schedule with horizon ``T = cfg.lr_decay_steps``."""
    horizon, gamma, power = cfg.lr_decay_steps, cfg.decay_gamma, cfg.decay_power

    def factor(t: int) -> float:
        return (1.0 + gamma * min(1.0, t / horizon)) ** (-power)

    return factor


def build_optimizer(
    cfg: TrainConfig, model: LACMFER
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    groups = model.parameter_groups(
        cfg.lr, encoder_lr_scale=cfg.encoder_lr_scale, weight_decay=cfg.weight_decay
    )
    optimizer = torch.optim.SGD(
        groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, inverse_decay(cfg))


# ----------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(
    model: LACMFER, data: CMFERData, cfg: TrainConfig, info: runtime.DistInfo
) -> dict[str, Any]:
    """Global, local and fused accuracy, per-class accuracy, macro-F1 and confusion matrices on the
    target test set. Each rank evaluates its shard; the confusion matrices are summed over ranks."""
    was_training = model.training
    model.eval()
    k = data.num_classes
    confusion = torch.zeros(3, k, k, dtype=torch.int64, device=data.device)
    for x, y in data.test_batches(rank=info.rank, world_size=info.world_size):
        with runtime.autocast(data.device, cfg.amp):
            out = model(normalize(x))
        for v, logits in enumerate((out.logits_g, out.logits_l, out.logits)):
            confusion[v] += confusion_matrix(logits.argmax(1), y, k)
    if info.enabled:
        torch.distributed.all_reduce(confusion)
    model.train(was_training)
    views = {
        v: classification_metrics(confusion[i]) for i, v in enumerate(("global", "local", "fused"))
    }
    fused = views["fused"]
    return {
        "acc_fused": fused["accuracy"],
        "acc_global": views["global"]["accuracy"],
        "acc_local": views["local"]["accuracy"],
        "macro_f1_fused": fused["macro_f1"],
        "macro_f1_global": views["global"]["macro_f1"],
        "macro_f1_local": views["local"]["macro_f1"],
        "per_class_acc_fused": fused["per_class_accuracy"],
        "confusion_fused": fused["confusion"],
        "num_test": fused["num_samples"],
    }


# ------------------------------------------------------------------------------------- training
@dataclass
class Run:
    """Everything one training run holds; :func:`checkpoint_state` saves all of it."""

    cfg: TrainConfig
    info: runtime.DistInfo
    device: torch.device
    data: CMFERData
    model: LACMFER
    step_fn: nn.Module  # DomainPair, wrapped in DDP and/or torch.compile
    objective: Objective
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    augment: Optional[FERAugment]
    aug_gen: torch.Generator
    memory_format: torch.memory_format
    log: MetricsLog
    step: int = 0
    best: Optional[dict[str, Any]] = None
    train_time: float = 0.0  # seconds in training steps (evaluation and checkpoints excluded)
    images: int = 0  # images trained on, all ranks


def build_run(
    cfg: TrainConfig, info: runtime.DistInfo, device: torch.device, data: Optional[CMFERData]
) -> Run:
    if cfg.batch_size % info.world_size or cfg.target_batch % info.world_size:
        raise ValueError(
            f"`batch_size` ({cfg.batch_size}) and the target batch ({cfg.target_batch}) must be "
            f"divisible by the number of ranks ({info.world_size})"
        )
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    channels_last = cfg.channels_last if cfg.channels_last is not None else device.type == "cuda"
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    # The model gets the same seed on every rank (DDP also broadcasts rank 0's weights);
    # augmentation and the global RNGs get per-rank seeds. The samplers are seeded by cfg.seed
    # and give each rank its own part of one global stream.
    runtime.seed_everything(cfg.seed)
    if data is None:
        data = build_data(cfg, device=device, rank=info.rank, world_size=info.world_size)
    model = build_model(cfg, data.num_classes).to(device, memory_format=memory_format)
    objective = Objective(cfg, data.num_domains, sync_dist=info.enabled).to(device)
    optimizer, scheduler = build_optimizer(cfg, model)
    step_fn: nn.Module = DomainPair(model)
    if info.enabled:
        ids = [device.index] if device.type == "cuda" else None
        step_fn = DistributedDataParallel(step_fn, device_ids=ids)
    if cfg.compile:
        step_fn = torch.compile(step_fn)  # type: ignore[assignment]
    aug_gen = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + info.rank + 1)
    runtime.seed_everything(cfg.seed * 1000 + info.rank + 7)
    return Run(
        cfg=cfg,
        info=info,
        device=device,
        data=data,
        model=model,
        step_fn=step_fn,
        objective=objective,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16"),
        augment=FERAugment() if cfg.augment else None,
        aug_gen=aug_gen,
        memory_format=memory_format,
        log=MetricsLog(Path(cfg.out), enabled=info.is_main, tensorboard=cfg.tensorboard),
    )


def training_step(run: Run, batch: TrainBatch) -> tuple[dict[str, Tensor], LACMFEROutput]:
    """One optimiser step on a source and a target batch; returns the detached loss parts."""
    x_s, x_t = batch.x_s, batch.x_t
    if run.augment is not None:
        x_s, x_t = run.augment(x_s, generator=run.aug_gen), run.augment(x_t, generator=run.aug_gen)
    x_s = normalize(x_s).contiguous(memory_format=run.memory_format)
    x_t = normalize(x_t).contiguous(memory_format=run.memory_format)
    with runtime.autocast(run.device, run.cfg.amp):
        out_s, out_t = run.step_fn(x_s, x_t)  # two model calls: per-domain BatchNorm
        loss, parts = run.objective(out_s, batch.y_s, batch.d_s, out_t)  # no target labels
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    run.objective.step()
    run.images += (x_s.shape[0] + x_t.shape[0]) * run.info.world_size
    return parts, out_t


def log_training(
    run: Run, parts: dict[str, Tensor], out_t: LACMFEROutput, labels_t: Tensor
) -> dict[str, Any]:
    """Write the step's losses, the lr and the pseudo-label diagnostics (one host sync)."""
    kept, pl_acc = pseudo_label_diagnostics(out_t, labels_t, run.cfg.pseudo_threshold)
    parts = {**parts, "kept_fraction": kept, "pseudo_label_acc": pl_acc}
    values = torch.stack(list(parts.values())).float().tolist()
    record = {"kind": "train", "step": run.step, **dict(zip(parts, values))}
    record["lr"] = run.optimizer.param_groups[-1]["lr"]
    run.log.write(record)
    return record


def evaluate_and_log(run: Run) -> dict[str, Any]:
    runtime.broadcast_buffers(run.model, run.info)
    record = {"kind": "eval", "step": run.step, **evaluate(run.model, run.data, run.cfg, run.info)}
    run.log.write(record)
    if run.best is None or record["acc_fused"] > run.best["acc_fused"]:
        keys = ("step", "acc_fused", "acc_global", "acc_local", "macro_f1_fused")
        run.best = {k: record[k] for k in keys}
    return record


RUN_COUNTERS = ("step", "best", "train_time", "images")


def checkpoint_state(run: Run) -> dict[str, Any]:
    """Everything a bit-exact resume needs. Per-rank parts (RNG, samplers) are gathered to rank 0."""
    runtime.broadcast_buffers(run.model, run.info)
    rank_state = {
        "rng": runtime.capture_rng(),
        "augment_rng": run.aug_gen.get_state(),
        "data": run.data.state_dict(),
    }
    return {
        "config": run.cfg.to_dict(),
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "objective": run.objective.state_dict(),
        "ranks": runtime.gather_objects(rank_state, run.info),
        "world_size": run.info.world_size,
        **{k: getattr(run, k) for k in RUN_COUNTERS},
    }


def save_checkpoint(run: Run) -> None:
    """Rank 0 writes ``last.pt`` and, every ``ckpt_every`` steps, a copy ``step_<n>.pt``; only the
    newest ``keep_checkpoints`` periodic copies are kept."""
    state = checkpoint_state(run)  # a collective under DDP: every rank takes part
    if not run.info.is_main:
        return
    cfg, folder = run.cfg, Path(run.cfg.out) / "checkpoints"
    runtime.save_atomic(state, folder / "last.pt")
    if run.step % cfg.ckpt_every == 0 and cfg.keep_checkpoints > 0:
        shutil.copyfile(folder / "last.pt", folder / f"step_{run.step:07d}.pt")
        for old in sorted(folder.glob("step_*.pt"))[: -cfg.keep_checkpoints]:
            old.unlink()


# Settings that may change between an interrupted run and its resumption.
RESUME_MUTABLE = {
    "resume", "stop_at", "out", "device", "progress", "tensorboard", "plots", "num_workers",
    "eval_every", "log_every", "ckpt_every", "keep_checkpoints", "write_weight_hash", "preset",
    "data_root", "lists", "compile",
}  # fmt: skip


def load_checkpoint(run: Run, path: Path) -> None:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    current = run.cfg.to_dict()
    changed = sorted(
        k for k in current if k not in RESUME_MUTABLE and ckpt["config"].get(k) != current[k]
    )
    if changed:
        diff = ", ".join(f"{k}: {ckpt['config'].get(k)!r} -> {current[k]!r}" for k in changed)
        raise ValueError(f"--resume: the checkpoint was trained with other settings ({diff})")
    if ckpt["world_size"] != run.info.world_size:
        raise ValueError(
            f"--resume: the checkpoint has {ckpt['world_size']} ranks, this run "
            f"{run.info.world_size}"
        )
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    run.scaler.load_state_dict(ckpt["scaler"])
    run.objective.load_state_dict(ckpt["objective"])
    for key in RUN_COUNTERS:
        setattr(run, key, ckpt[key])
    mine = ckpt["ranks"][run.info.rank]
    run.data.load_state_dict(mine["data"])
    run.aug_gen.set_state(mine["augment_rng"])
    runtime.restore_rng(mine["rng"])  # last: nothing after this may draw random numbers
    run.log.truncate_after(run.step)  # steps logged after the checkpoint are redone


def resolve_resume(cfg: TrainConfig) -> Optional[Path]:
    if cfg.resume is None:
        return None
    if cfg.resume == "auto":
        path = Path(cfg.out) / "checkpoints" / "last.pt"
        return path if path.exists() else None  # nothing yet: start fresh (idempotent requeue)
    path = Path(cfg.resume)
    if not path.exists():
        raise ValueError(f"--resume: checkpoint {path} does not exist")
    return path


def train(
    cfg: TrainConfig,
    *,
    info: Optional[runtime.DistInfo] = None,
    device: Optional[torch.device] = None,
    data: Optional[CMFERData] = None,
) -> dict[str, Any]:
    """Train one target; returns the summary (also written to ``<out>/summary.json`` by rank 0).

    ``data`` may be passed in (tests, the benchmark driver); by default it is built from ``cfg``.
    """
    wall_start = time.perf_counter()
    if info is None or device is None:
        info, device = runtime.DistInfo(), runtime.resolve_device(cfg.device)
    run = build_run(cfg, info, device, data)
    resume_from = resolve_resume(cfg)
    if resume_from is not None:
        load_checkpoint(run, resume_from)
    if info.is_main:
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        (Path(cfg.out) / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")

    stop = cfg.stop_at or cfg.steps
    show = cfg.progress if info.is_main else False  # None: when stderr is a terminal
    desc = f"{cfg.method} → {run.data.target_name}"
    progress = Progress(stop, run.step, enabled=show, desc=desc)
    last_eval: Optional[dict[str, Any]] = None
    record: Optional[dict[str, Any]] = None  # this rank's last logged losses
    run.model.train()
    try:
        while run.step < stop:
            tick = time.perf_counter()
            batch = run.data.next_batch()  # raw [0, 1] images on the device
            parts, out_t = training_step(run, batch)
            run.step += 1
            if run.step % cfg.log_every == 0 or run.step == stop:
                record = log_training(run, parts, out_t, batch.y_t)
                progress.update(0, {k: record[k] for k in ("loss", "ce", "align")})
            run.train_time += time.perf_counter() - tick
            progress.update(1)
            if run.step % cfg.eval_every == 0 or run.step == cfg.steps:
                last_eval = evaluate_and_log(run)
            if run.step % cfg.ckpt_every == 0 or run.step == stop:
                save_checkpoint(run)
    finally:
        progress.close()
        run.data.close()

    if cfg.write_weight_hash:  # DDP checks: ranks must agree on the weights, not on their data
        runtime.broadcast_buffers(run.model, info)
        check = {"weights": runtime.state_hash(run.model.state_dict()), "last_train": record}
        (Path(cfg.out) / f"weights_rank{info.rank}.json").write_text(json.dumps(check) + "\n")
    summary = make_summary(run, last_eval, time.perf_counter() - wall_start)
    if info.is_main:
        write_outputs(run, summary)
    run.log.close()
    return summary


def make_summary(run: Run, last_eval: Optional[dict[str, Any]], wall_time: float) -> dict[str, Any]:
    cfg = run.cfg
    completed = run.step == cfg.steps
    final = None
    if completed and last_eval is not None:
        final = {k: v for k, v in last_eval.items() if k != "kind"}
    best = None if run.best is None else {**run.best, "note": BEST_LABEL}
    return {
        "target": run.data.target_name,
        "sources": list(run.data.source_names),
        "method": cfg.method,
        "completed": completed,
        "step": run.step,
        "final": final,
        "best_over_training": best,
        "wall_time_s": wall_time,
        "train_time_s": run.train_time,
        "images_per_s": run.images / run.train_time if run.train_time > 0 else None,
        "protocol_notes": list(run.data.notes),
        "notes": list(run.log.notes),
        "config": cfg.to_dict(),
    }


def write_outputs(run: Run, summary: dict[str, Any]) -> None:
    cfg, out = run.cfg, Path(run.cfg.out)
    final = summary["final"]
    if cfg.plots and final is not None:
        title = f"{cfg.method} → {run.data.target_name}, step {summary['step']}"
        cm_title = f"{title}, fused acc {final['acc_fused']:.3f}"
        ok = plot_confusion(final["confusion_fused"], CLASSES, out / "confusion.png", cm_title)
        ok = ok and plot_curves(read_jsonl(out / "metrics.jsonl"), out / "curves.png", title)
        if not ok:
            summary["notes"].append("matplotlib not installed: plots skipped")
    (out / "summary.json").write_text(json.dumps(json_safe(summary), indent=2) + "\n")


# ----------------------------------------------------------------------------------------- main
def format_result(summary: dict[str, Any]) -> str:
    final, best = summary["final"], summary["best_over_training"]
    if final is None:
        return f"{summary['target']}: stopped at step {summary['step']} (resume with --resume)"
    return (
        f"{summary['target']}: final-step acc fused {final['acc_fused']:.4f} "
        f"(global {final['acc_global']:.4f}, local {final['acc_local']:.4f}, "
        f"macro-F1 {final['macro_f1_fused']:.4f}); best over training {best['acc_fused']:.4f} "
        f"at step {best['step']} [selection on the test set]; {summary['wall_time_s']:.0f} s, "
        f"{summary['images_per_s']:.0f} images/s"
    )


def run(cfg: TrainConfig) -> list[dict[str, Any]]:
    """Train ``cfg.target`` or, for ``--target all``, each of the six targets in turn."""
    info, device = runtime.setup_distributed(cfg.device)
    try:
        summaries = []
        for target in cfg.targets:
            if cfg.target == "all":
                folder = Path(cfg.out) / target.replace("+", "plus")
                sub = cfg.replace(target=target, out=str(folder))
            else:
                sub = cfg.replace(target=target)  # canonical name (aliases such as "raf")
            summary = train(sub, info=info, device=device)
            if info.is_main:
                print(format_result(summary), flush=True)
            summaries.append(summary)
        if cfg.target == "all" and info.is_main:
            write_overall(Path(cfg.out), summaries)
        return summaries
    finally:
        runtime.cleanup_distributed()


def write_overall(out: Path, summaries: Sequence[dict[str, Any]]) -> None:
    finals = [s["final"]["acc_fused"] for s in summaries if s["final"] is not None]
    mean = sum(finals) / len(finals) if finals else math.nan
    lines = [
        "| target | final acc (fused) | best over training (selection on the test set) |",
        "|---|---|---|",
    ]
    for s in summaries:
        if s["final"] is not None:
            lines.append(
                f"| {s['target']} | {s['final']['acc_fused']:.4f} | "
                f"{s['best_over_training']['acc_fused']:.4f} |"
            )
    lines.append(f"| **mean** | **{mean:.4f}** | |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "summary_all.json").write_text(
        json.dumps(
            {"mean_final_acc_fused": mean, "targets": [s["target"] for s in summaries]}, indent=2
        )
        + "\n"
    )
    print("\n".join(lines), flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    run(config_from_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
