#!/usr/bin/env python
r"""Train LA-CMFER for cross-multidomain facial expression recognition (CMFER), end to end.

Labelled source domains, one unlabelled target domain, one model that must work on the target.
The script composes the library: the :class:`~lacmfer.modules.LACMFER` model and the whole
objective :class:`~lacmfer.losses.LACMFERLoss` (``docs/method.rst``), with the paper's recipe as its
defaults: SGD (Nesterov, momentum 0.9, weight decay 1e-4), lr 1e-3 for the encoder and 1e-2 for
branches and heads, inverse decay ``lr·(1 + 10·min(1, t/T))^-0.75`` with ``T = steps // 2`` (the
paper's T = 10 000 for 20 000 steps), 128 source + 128 target images a step, 224×224, augmentation
on the batches. Source and target batches go through the model in separate calls, so BatchNorm
normalises each domain with its own statistics. ``--method`` swaps the objective for a baseline
(source-only, MMD, DANN, CORAL, M3SDA, MCC) with the same model, data and recipe.

Usage::

    python examples/train_cmfer.py                    # synthetic six-domain data, device-sized preset
    python examples/train_cmfer.py --preset smoke     # seconds on a CPU
    python examples/train_cmfer.py --method source-only --target CK+ --out runs/src
    python examples/train_cmfer.py --preset paper --data-root /data/fer/datasets \
        --domains CK+,JAFFE,Oulu-CASIA,RAF-DB,FER-2013 \
        --encoder-weights resnet18-f37072fd.pth --target all --out runs/paper
    torchrun --nproc_per_node=4 examples/train_cmfer.py --preset paper ...   # DDP, same flags

Presets (``examples/configs/<name>.yaml``; ``--config FILE`` and flags override them): ``cpu`` is
the default on a CPU (LACMFER.tiny on small images, a few minutes on 2 cores), ``gpu`` the default
with CUDA, ``paper`` the recipe above, ``smoke`` seconds for tests, ``benchmark`` one run of
``examples/run_synthetic_benchmark.py``. The cpu, gpu and benchmark presets start from the encoder
that ``examples/pretrain_encoder.py`` pretrains offline on a proxy task (built on first use), as the
paper starts from ImageNet weights.

Under ``torchrun`` each rank takes ``--batch-size / world_size`` images of one global stream, the
losses compute their batch statistics over the global batch (``sync_dist``), rank 0 writes the
outputs, and ``--resume`` works the same way (with the same number of ranks).

Outputs in ``--out``: ``metrics.jsonl`` (training losses every ``--log-every`` steps; target
evaluation and the unsupervised validators every ``--eval-every`` steps), ``summary.json`` (config;
``final``: the last step's metrics, THE result; ``selected``: the checkpoint chosen by
``--select-by`` without target labels; ``oracle``: best test accuracy over training, selection on
the test set, not a valid result), ``checkpoints/`` (``last.pt``, periodic ones and
``selected.pt``; ``--resume`` continues exactly, also with a larger ``--steps``), ``confusion.png``
and ``curves.png`` (with matplotlib), ``tb/`` (with TensorBoard). Target labels are used for
evaluation and for logged diagnostics only (pseudo-label accuracy); they never reach a loss, a
validator or the selection.

Run ``python examples/train_cmfer.py --help`` for every option.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from cmfer import runtime
from cmfer.config import TrainConfig, config_from_args
from cmfer.data import CMFERData, TrainBatch, build_data
from cmfer.metrics import classification_metrics, confusion_matrix
from cmfer.report import MetricsLog, Progress, json_safe, plot_confusion, plot_curves, read_jsonl
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from lacmfer.data import CLASSES, FERAugment, normalize
from lacmfer.functional import linear_warmup, mmd2, refine_pseudo_labels
from lacmfer.losses import (
    CORALLoss,
    DomainAdversarialLoss,
    LACMFERLoss,
    MinimumClassConfusionLoss,
    MomentMatchingLoss,
)
from lacmfer.modules import LACMFER, LACMFEROutput
from lacmfer.validation import SourceAccuracy, ValidatorSuite

ORACLE_LABEL = "selection on the test set (best over training; not a valid result)"


# ------------------------------------------------------------------------------------------ model
def encoder_weights(cfg: TrainConfig, info: runtime.DistInfo) -> Optional[str]:
    """The encoder file: the user's, or ``"synthetic"`` = the offline-pretrained one (rank 0
    builds it on first use while the other ranks wait)."""
    if cfg.encoder_weights != "synthetic":
        return cfg.encoder_weights
    from cmfer.pretrain import ensure_encoder

    path = ensure_encoder(progress=info.is_main) if info.is_main else None
    if info.enabled:
        path = runtime.gather_objects(path, info)[0]
    return str(path)


def build_model(cfg: TrainConfig, num_classes: int, weights: Optional[str]) -> LACMFER:
    """The paper's model (``--width full``) or its narrow CPU preset (``--width tiny``)."""
    kwargs: dict[str, Any] = {"share": cfg.share, "encoder_weights": weights}
    if cfg.width == "tiny":
        return LACMFER.tiny(num_classes, **kwargs)
    return LACMFER(num_classes, **kwargs)


# -------------------------------------------------------------------------------------- objective
#: Default weights of the baselines' losses, from their papers: DANN 1.0 with its reversal schedule
#: (Ganin et al., JMLR 2016), CORAL 1.0 (Sun & Saenko, ECCV-W 2016), M3SDA 0.5 (Peng et al., ICCV
#: 2019), MCC 1.0 (Jin et al., ECCV 2020); MMD takes LA-CMFER's alignment weight 0.4.
BASELINE_WEIGHTS = {"mmd": 0.4, "dann": 1.0, "coral": 1.0, "m3sda": 0.5, "mcc": 1.0}


class BaselineTerms(NamedTuple):
    """What :class:`BaselineLoss` returns: the total, its parts, and the warm-up factor."""

    loss: Tensor
    ce: Tensor
    align: Tensor
    adaptation_weight: Tensor


class BaselineLoss(nn.Module):
    """Source-only, or a baseline: ``CE_ls(z_G^s) + CE_ls(z_L^s) + w·Σ_b L_b`` with the baseline's
    loss :math:`L_b` on each branch (features, or the target logits for MCC), the same warm-up as
    :class:`~lacmfer.losses.LACMFERLoss`, and the same call form."""

    def __init__(
        self, cfg: TrainConfig, *, feature_dims: tuple[int, int], num_domains: int, sync_dist: bool
    ) -> None:
        super().__init__()
        self.method, self.cfg = cfg.method, cfg
        self.weight = (
            cfg.baseline_weight
            if cfg.baseline_weight is not None
            else BASELINE_WEIGHTS.get(cfg.method, 0.0)
        )
        per_source = num_domains if cfg.per_source else None
        self.per_source = per_source is not None
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.int64))
        losses: list[nn.Module] = []
        if cfg.method == "dann":
            losses = [
                DomainAdversarialLoss(
                    d, num_domains=per_source, max_steps=cfg.schedule_steps, sync_dist=sync_dist
                )
                for d in feature_dims
            ]
        elif cfg.method == "coral":
            losses = [CORALLoss(num_domains=per_source, sync_dist=sync_dist) for _ in feature_dims]
        elif cfg.method == "m3sda":
            losses = [MomentMatchingLoss(num_domains=num_domains, sync_dist=sync_dist)] * 2
        elif cfg.method == "mcc":
            losses = [MinimumClassConfusionLoss(sync_dist=sync_dist)] * 2
        self.branch_losses = nn.ModuleList(losses)

    def _branch(self, b: int, f_s: Tensor, f_t: Tensor, z_t: Tensor, d_s: Tensor) -> Tensor:
        if self.method == "mmd":
            return mmd2(f_s, f_t, kernel_num=self.cfg.kernel_num, kernel_mul=self.cfg.kernel_mul)
        loss_fn = self.branch_losses[b]
        if self.method == "m3sda":
            return loss_fn(f_s, d_s, f_t)
        if self.method == "mcc":
            return loss_fn(z_t)
        return loss_fn(f_s, f_t, d_s if self.per_source else None)

    def forward(
        self, out_s: LACMFEROutput, labels_s: Tensor, out_t: LACMFEROutput, domains_s: Tensor
    ) -> BaselineTerms:
        ls = self.cfg.label_smoothing
        ce = F.cross_entropy(out_s.logits_g, labels_s, label_smoothing=ls)
        ce = ce + F.cross_entropy(out_s.logits_l, labels_s, label_smoothing=ls)
        align = ce.new_zeros(())
        if self.method != "source-only":
            branches = ((out_s.feat_g, out_t.feat_g, out_t.logits_g),
                        (out_s.feat_l, out_t.feat_l, out_t.logits_l))  # fmt: skip
            for b, (f_s, f_t, z_t) in enumerate(branches):
                align = align + self._branch(b, f_s, f_t, z_t, domains_s)
        factor = linear_warmup(
            self.num_steps, delay=self.cfg.adapt_after, duration=self.cfg.adapt_warmup
        ).to(ce.device)
        return BaselineTerms(ce + factor * self.weight * align, ce, align, factor)

    def step(self) -> None:
        with torch.no_grad():
            self.num_steps.add_(1)
        for loss_fn in self.branch_losses:
            if isinstance(loss_fn, DomainAdversarialLoss):
                loss_fn.step()


Objective = Union[LACMFERLoss, BaselineLoss]


def build_objective(
    cfg: TrainConfig, model: LACMFER, num_domains: int, sync_dist: bool
) -> Objective:
    """``LACMFERLoss`` with the config's settings, or the baseline of ``--method``."""
    if cfg.method != "lacmfer":
        return BaselineLoss(
            cfg, feature_dims=model.feature_dims, num_domains=num_domains, sync_dist=sync_dist
        )
    return LACMFERLoss(
        label_smoothing=cfg.label_smoothing, align_weight=cfg.align_weight,
        cid_weight=cfg.cid_weight, consistency_weight=cfg.consistency_weight,
        voting_weight=cfg.voting_weight, align_threshold=cfg.align_threshold,
        pseudo_threshold=cfg.pseudo_threshold, kernel_num=cfg.kernel_num,
        kernel_mul=cfg.kernel_mul, sid=cfg.sid, cid=cfg.cid, consistency=cfg.consistency,
        consistency_from_logits=cfg.consistency_on_logits, voting=cfg.voting,
        num_domains=num_domains if cfg.per_source else None, cluster_ramp=cfg.cluster_ramp,
        ramp_steps=cfg.schedule_steps, adapt_after=cfg.adapt_after,
        adapt_warmup=cfg.adapt_warmup, sync_dist=sync_dist,
    )  # fmt: skip


class TrainStep(nn.Module):
    """Model and objective in one module: the source and the target batch in two separate model
    calls (per-domain BatchNorm), then the loss. One forward per step is what
    DistributedDataParallel (which also syncs a DANN discriminator's gradients) and
    ``torch.compile`` want. No target label enters."""

    def __init__(self, model: LACMFER, objective: Objective) -> None:
        super().__init__()
        self.model, self.objective = model, objective

    def forward(
        self, x_s: Tensor, labels_s: Tensor, domains_s: Tensor, x_t: Tensor
    ) -> tuple[Any, LACMFEROutput, LACMFEROutput]:
        out_s, out_t = self.model(x_s), self.model(x_t)
        return self.objective(out_s, labels_s, out_t, domains_s), out_s, out_t


@torch.no_grad()
def pseudo_label_diagnostics(out_t: LACMFEROutput, labels_t: Tensor, threshold: float) -> Tensor:
    """``[kept fraction, accuracy of the kept pseudo-labels]`` of multi-view voting (diagnostic
    only: the one place target labels are read during training; nothing here has a gradient)."""
    labels, mask = refine_pseudo_labels(out_t.logits_g, out_t.logits_l, threshold=threshold)
    kept = mask.float().sum()
    correct = ((labels == labels_t) & mask).float().sum()
    return torch.stack([kept / mask.numel(), correct / kept])  # nan when nothing is kept


# --------------------------------------------------------------------------------- optimisation
def inverse_decay(cfg: TrainConfig) -> Any:
    """``t -> (1 + γ·min(1, t/T))^-p``, the paper's schedule with horizon ``T = cfg.lr_decay_steps``."""
    horizon, gamma, power = cfg.lr_decay_steps, cfg.decay_gamma, cfg.decay_power

    def factor(t: int) -> float:
        return (1.0 + gamma * min(1.0, t / horizon)) ** (-power)

    return factor


def build_optimizer(
    cfg: TrainConfig, model: LACMFER, objective: nn.Module
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """SGD over the model's groups (encoder at ``lr × encoder_lr_scale``) and, for DANN, the
    discriminators at ``lr``; the inverse decay scales every group."""
    groups = model.parameter_groups(
        cfg.lr, encoder_lr_scale=cfg.encoder_lr_scale, weight_decay=cfg.weight_decay
    )
    extra = [p for p in objective.parameters() if p.requires_grad]
    if extra:
        groups.append({"params": extra, "lr": cfg.lr, "weight_decay": cfg.weight_decay})
    nesterov = cfg.nesterov and cfg.momentum > 0
    optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=nesterov)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, inverse_decay(cfg))


# ------------------------------------------------------------------------------------------- run
@dataclass
class Run:
    """Everything one training run holds; :func:`checkpoint_state` saves all of it."""

    cfg: TrainConfig
    info: runtime.DistInfo
    device: torch.device
    data: CMFERData
    model: LACMFER
    objective: Objective
    step_fn: nn.Module  # TrainStep, wrapped in DDP and/or torch.compile
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    augment: Optional[FERAugment]
    aug_gen: torch.Generator
    memory_format: torch.memory_format
    log: MetricsLog
    step: int = 0
    oracle: Optional[dict[str, Any]] = None  # best test accuracy so far (test-set selection)
    selected: Optional[dict[str, Any]] = None  # the evaluation --select-by prefers so far
    train_time: float = 0.0  # seconds in training steps (evaluation and checkpoints excluded)
    images: int = 0  # images trained on, all ranks


RUN_COUNTERS = ("step", "oracle", "selected", "train_time", "images")


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
    weights = encoder_weights(cfg, info)
    # The model gets the same seed on every rank (DDP also broadcasts rank 0's weights);
    # augmentation and the global RNGs get per-rank seeds. The samplers are seeded by cfg.seed
    # and give each rank its own part of one global stream.
    runtime.seed_everything(cfg.seed)
    if data is None:
        data = build_data(cfg, device=device, rank=info.rank, world_size=info.world_size)
    model = build_model(cfg, data.num_classes, weights).to(device, memory_format=memory_format)
    objective = build_objective(cfg, model, data.num_domains, sync_dist=info.enabled).to(device)
    optimizer, scheduler = build_optimizer(cfg, model, objective)
    step_fn: nn.Module = TrainStep(model, objective)
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
        objective=objective,
        step_fn=step_fn,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16"),
        augment=FERAugment() if cfg.augment else None,
        aug_gen=aug_gen,
        memory_format=memory_format,
        log=MetricsLog(Path(cfg.out), enabled=info.is_main, tensorboard=cfg.tensorboard),
    )


# -------------------------------------------------------------------------------------- training
def forward_loss(run: Run, batch: TrainBatch) -> tuple[Any, LACMFEROutput, LACMFEROutput]:
    """Augment, normalise, and compute the objective's terms on one step's batches (no update);
    returns the terms and the model's source and target outputs. The target labels ``batch.y_t``
    are not passed on."""
    x_s, x_t = batch.x_s, batch.x_t
    if run.augment is not None:
        x_s, x_t = run.augment(x_s, generator=run.aug_gen), run.augment(x_t, generator=run.aug_gen)
    x_s = normalize(x_s).contiguous(memory_format=run.memory_format)
    x_t = normalize(x_t).contiguous(memory_format=run.memory_format)
    with runtime.autocast(run.device, run.cfg.amp):
        return run.step_fn(x_s, batch.y_s, batch.d_s, x_t)


def update(run: Run, loss: Tensor, images: int) -> None:
    """One optimiser step on ``loss``, then advance the lr schedule and the objective's schedules."""
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    run.objective.step()
    run.images += images * run.info.world_size


def training_step(run: Run, batch: TrainBatch) -> tuple[Any, LACMFEROutput]:
    """:func:`forward_loss` then :func:`update`; returns the step's terms and target outputs."""
    terms, _, out_t = forward_loss(run, batch)
    update(run, terms.loss, batch.x_s.shape[0] + batch.x_t.shape[0])
    return terms, out_t


def loggable(terms: Any) -> dict[str, Tensor]:
    """The scalar fields of a terms tuple, detached; ``(2,)`` per-branch counts become two fields."""
    out: dict[str, Tensor] = {}
    for name, value in terms._asdict().items():
        value = value.detach().float()
        if value.numel() == 2:
            out[f"{name}_g"], out[f"{name}_l"] = value[0], value[1]
        else:
            out[name] = value.reshape(())
    return out


def log_training(run: Run, terms: Any, out_t: LACMFEROutput, labels_t: Tensor) -> dict[str, Any]:
    """Write the step's losses, the lr and the pseudo-label diagnostics (one host sync)."""
    kept, pl_acc = pseudo_label_diagnostics(out_t, labels_t, run.cfg.pseudo_threshold)
    parts = {**loggable(terms), "kept_fraction": kept, "pseudo_label_acc": pl_acc}
    values = torch.stack(list(parts.values())).float().tolist()
    record = {"kind": "train", "step": run.step, **dict(zip(parts, values))}
    record["lr"] = run.optimizer.param_groups[-1]["lr"]
    run.log.write(record)
    return record


# ------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def evaluate(run: Run) -> dict[str, Any]:
    """Target test metrics (global, local and fused accuracy, per-class accuracy, macro-F1,
    confusion matrices) and every unsupervised validator: on the target *adaptation* set (images
    only, no labels) and, with ``--source-val-fraction``, source accuracy on held-out sources.
    Each rank evaluates its shard; statistics are combined over ranks."""
    model, data, cfg, info = run.model, run.data, run.cfg, run.info
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
    validators = ValidatorSuite(sync_dist=info.enabled, max_samples=2048, seed=cfg.split_seed)
    for x in data.adaptation_images(rank=info.rank, world_size=info.world_size):
        with runtime.autocast(data.device, cfg.amp):
            out = model(normalize(x))
        validators.update(out.logits.float(), out.logits_g.float(), out.logits_l.float())
    scores = {f"val_{name}": float(value) for name, value in validators.compute().items()}
    if data.source_val_set is not None:
        source_acc = SourceAccuracy(sync_dist=info.enabled)
        for x, y in data.source_val_batches(rank=info.rank, world_size=info.world_size):
            with runtime.autocast(data.device, cfg.amp):
                source_acc.update(model(normalize(x)).logits.float(), y)
        scores["val_source-acc"] = float(source_acc.compute())
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
        **scores,
    }


SUMMARY_KEYS = ("step", "acc_fused", "acc_global", "acc_local", "macro_f1_fused")


def evaluate_and_log(run: Run) -> dict[str, Any]:
    """Evaluate, log, and update the oracle and the ``--select-by`` choice. The choice reads the
    validator's score only (no target label); rank 0 saves its weights as ``selected.pt``."""
    runtime.broadcast_buffers(run.model, run.info)
    record = {"kind": "eval", "step": run.step, **evaluate(run)}
    run.log.write(record)
    if run.oracle is None or record["acc_fused"] > run.oracle["acc_fused"]:
        run.oracle = {k: record[k] for k in SUMMARY_KEYS}
    validator = run.cfg.select_by
    if validator != "final":
        score = record[f"val_{validator}"]
        if run.selected is None or score > run.selected["score"]:
            run.selected = {**{k: record[k] for k in SUMMARY_KEYS}, "score": score}
            if run.info.is_main:
                folder = Path(run.cfg.out) / "checkpoints"
                runtime.save_atomic({"model": run.model.state_dict()}, folder / "selected.pt")
    return record


# ----------------------------------------------------------------------------------- checkpoints
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


# Settings that may change between a run and its resumption: they change neither the model, nor the
# data, nor any step already taken.
RESUME_MUTABLE = {
    "resume", "stop_at", "out", "device", "progress", "tensorboard", "plots", "num_workers",
    "eval_every", "log_every", "ckpt_every", "keep_checkpoints", "write_weight_hash", "preset",
    "data_root", "lists", "compile", "steps", "threads",
}  # fmt: skip


def reconcile_resume(cfg: TrainConfig, saved: dict[str, Any], step: int) -> TrainConfig:
    """The config to resume with. A larger ``steps`` extends the run: the lr decay and ramp
    horizons stay the ones the run was trained with, so the steps already taken stay valid. Any
    other change that would alter what already happened raises, naming the settings."""
    if cfg.steps < step:
        raise ValueError(
            f"--resume: the checkpoint is at step {step}; `steps` ({cfg.steps}) cannot go back"
        )
    if cfg.steps != saved["steps"]:
        old = TrainConfig(**saved)
        pinned = {}
        if cfg.decay_steps is None:
            pinned["decay_steps"] = old.lr_decay_steps
        if cfg.ramp_steps is None:
            pinned["ramp_steps"] = old.schedule_steps
        cfg = cfg.replace(**pinned)
        saved = {**saved, **{k: v for k, v in pinned.items() if saved[k] is None}}
    current = cfg.to_dict()
    changed = sorted(k for k in current if k not in RESUME_MUTABLE and saved.get(k) != current[k])
    if changed:
        diff = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
        raise ValueError(f"--resume: the checkpoint was trained with other settings ({diff})")
    return cfg


def load_checkpoint(run: Run, ckpt: dict[str, Any]) -> None:
    if ckpt["world_size"] != run.info.world_size:
        raise ValueError(
            f"--resume: the checkpoint has {ckpt['world_size']} ranks, this run has "
            f"{run.info.world_size}; resume with the same number of ranks"
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


def find_checkpoint(cfg: TrainConfig) -> Optional[Path]:
    if cfg.resume is None:
        return None
    if cfg.resume == "auto":
        path = Path(cfg.out) / "checkpoints" / "last.pt"
        return path if path.exists() else None  # nothing yet: start fresh (idempotent requeue)
    path = Path(cfg.resume)
    if not path.exists():
        raise ValueError(f"--resume: checkpoint {path} does not exist")
    return path


# ------------------------------------------------------------------------------------------ train
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
    ckpt_path = find_checkpoint(cfg)
    ckpt = None
    if ckpt_path is not None:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        cfg = reconcile_resume(cfg, ckpt["config"], ckpt["step"])
    run = build_run(cfg, info, device, data)
    if ckpt is not None:
        load_checkpoint(run, ckpt)
        del ckpt
    if info.is_main:
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        (Path(cfg.out) / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")

    stop = cfg.stop_at or cfg.steps
    progress = Progress(
        stop,
        run.step,
        enabled=cfg.progress if info.is_main else False,  # None: when stderr is a terminal
        desc=f"{cfg.method} → {run.data.target_name}",
        images_per_step=cfg.batch_size + cfg.target_batch,
        quiet=not info.is_main,
    )
    last_eval: Optional[dict[str, Any]] = None
    record: Optional[dict[str, Any]] = None  # this rank's last logged losses
    run.model.train()
    try:
        while run.step < stop:
            tick = time.perf_counter()
            batch = run.data.next_batch()  # raw [0, 1] images on the device
            terms, out_t = training_step(run, batch)
            run.step += 1
            if run.step % cfg.log_every == 0 or run.step == stop:
                record = log_training(run, terms, out_t, batch.y_t)
                shown = ("loss", "ce", "align") if cfg.method != "lacmfer" else ("loss", "ce",
                         "align", "consistency", "voting")  # fmt: skip
                progress.log(run.step, {k: record[k] for k in shown})
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
    """``final`` (the result), ``selected`` (by ``--select-by``, no target labels) and ``oracle``
    (selection on the test set), each labelled."""
    cfg = run.cfg
    completed = run.step == cfg.steps
    final = None
    if completed and last_eval is not None:
        final = {k: v for k, v in last_eval.items() if k != "kind"}
    selected = None
    if final is not None:
        if cfg.select_by == "final":
            selected = {k: final[k] for k in SUMMARY_KEYS}
        elif run.selected is not None:
            selected = dict(run.selected)
    if selected is not None:
        selected["validator"] = cfg.select_by
        selected["note"] = "chosen without target labels"
    oracle = None if run.oracle is None else {**run.oracle, "note": ORACLE_LABEL}
    return {
        "target": run.data.target_name,
        "sources": list(run.data.source_names),
        "method": cfg.method,
        "completed": completed,
        "step": run.step,
        "final": final,
        "selected": selected,
        "oracle": oracle,
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


# ------------------------------------------------------------------------------------------- main
def format_result(summary: dict[str, Any]) -> str:
    final, selected, oracle = summary["final"], summary["selected"], summary["oracle"]
    if final is None:
        return f"{summary['target']}: stopped at step {summary['step']} (resume with --resume)"
    lines = [
        f"{summary['target']} ({summary['method']}): final-step target accuracy "
        f"{100 * final['acc_fused']:.1f}% fused (global {100 * final['acc_global']:.1f}%, local "
        f"{100 * final['acc_local']:.1f}%, macro-F1 {final['macro_f1_fused']:.3f}) -- the result; "
        f"{summary['wall_time_s']:.0f} s, {summary['images_per_s']:.0f} images/s",
    ]
    if selected is not None and selected["validator"] != "final":
        lines.append(
            f"  selected by {selected['validator']} (no target labels): step {selected['step']}, "
            f"{100 * selected['acc_fused']:.1f}%"
        )
    lines.append(
        f"  best over training {100 * oracle['acc_fused']:.1f}% at step {oracle['step']} "
        "[selection on the test set: not a result]"
    )
    if summary["method"] != "source-only":
        lines.append(
            "  compare with source-only on the same target: --method source-only with the same "
            "flags, or examples/results/synthetic_benchmark.md for the benchmark preset"
        )
    return "\n".join(lines)


def run_targets(cfg: TrainConfig) -> list[dict[str, Any]]:
    """Train ``cfg.target`` or, for ``--target all``, each target in turn (``<out>/<target>/``)."""
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    info, device = runtime.setup_distributed(cfg.device)
    try:
        summaries = []
        for target in cfg.targets:
            if cfg.target == "all":
                sub = cfg.replace(target=target, out=str(Path(cfg.out) / target))
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
                f"| {s['target']} | {s['final']['acc_fused']:.4f} | {s['oracle']['acc_fused']:.4f} |"
            )
    lines.append(f"| **mean** | **{mean:.4f}** | |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    overall = {"mean_final_acc_fused": mean, "targets": [s["target"] for s in summaries]}
    (out / "summary_all.json").write_text(json.dumps(overall, indent=2) + "\n")
    print("\n".join(lines), flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    run_targets(config_from_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
