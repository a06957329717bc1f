"""Tests of examples/train_cmfer.py: configuration, schedule, metrics, objective, and short runs
(outputs, exact resume, no target-label leakage, ablation switches, --target all)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from lacmfer.functional import (
    coral,
    dual_level_alignment,
    minimum_class_confusion,
    mmd2,
    moment_matching,
    multi_view_clustering_consistency,
    multi_view_pseudo_label_loss,
)

SMOKE = ["--preset", "smoke", "--no-progress", "--no-tensorboard"]


def make_config(script: ModuleType, out: Path, *args: str) -> Any:
    return script.config_from_args([*SMOKE, "--out", str(out), *args])


def weights_hash(out: Path, rank: int = 0) -> str:
    return str(json.loads((out / f"weights_rank{rank}.json").read_text())["weights"])


def records(out: Path, kind: str) -> list[dict[str, Any]]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


# ------------------------------------------------------------------------------ configuration
def test_help_documents_every_option(script: ModuleType) -> None:
    from cmfer.config import build_parser

    text = build_parser().format_help()
    for flag in (
        "--steps",
        "--batch-size",
        "--target",
        "--method",
        "--no-sid",
        "--no-cid",
        "--no-consistency",
        "--no-voting",
        "--consistency",
        "--consistency-on-logits",
        "--device",
        "--amp",
        "--compile",
        "--seed",
        "--out",
        "--resume",
        "--config",
        "--preset",
        "--data-root",
        "--lists",
        "--eval-every",
        "--stop-at",
        "--decay-steps",
    ):
        assert flag in text, flag
    for choice in ("lacmfer", "source-only", "mmd", "dann", "coral", "m3sda", "mcc", "l1", "mse",
                   "kl", "bf16", "fp16", "entropy", "snd", "source-acc"):  # fmt: skip
        assert choice in text, choice


def test_every_field_is_an_option_with_its_default(script: ModuleType) -> None:
    """The command line is generated from the dataclass: every field has a flag whose help shows
    the field's default, booleans show both spellings."""
    from cmfer.config import build_parser

    text = " ".join(build_parser().format_help().split())
    for f in dataclasses.fields(script.TrainConfig):
        if not f.metadata.get("cli", True):
            continue
        flag = "--" + f.name.replace("_", "-")
        assert flag in text, flag
        if f.type in ("bool", bool):
            assert f"--no-{f.name.replace('_', '-')}" in text, f.name
    for shown in ("--no-augment", "--no-nesterov", "--no-plots", "(default: 20000)",
                  "(default: 0.4)", "(default: lacmfer)"):  # fmt: skip
        assert shown in text, shown


def test_defaults_are_the_paper_recipe(script: ModuleType) -> None:
    cfg = script.TrainConfig()
    assert (cfg.steps, cfg.batch_size, cfg.target_batch, cfg.image_size) == (20000, 128, 128, 224)
    assert (cfg.lr, cfg.encoder_lr_scale, cfg.momentum, cfg.weight_decay) == (1e-2, 0.1, 0.9, 1e-4)
    assert cfg.nesterov and cfg.lr_decay_steps == 10000
    assert (cfg.align_weight, cfg.cid_weight, cfg.consistency_weight, cfg.voting_weight) == (
        0.4,
        0.02,
        0.5,
        0.1,
    )
    assert (cfg.label_smoothing, cfg.align_threshold, cfg.pseudo_threshold) == (0.1, 0.4, 0.9)
    paper = script.config_from_args(["--preset", "paper"])
    assert (paper.steps, paper.batch_size, paper.image_size, paper.width) == (
        20000,
        128,
        224,
        "full",
    )
    assert paper.lr_decay_steps == 10000


def test_no_argument_preset_follows_the_device(script: ModuleType) -> None:
    cfg = script.config_from_args([])
    assert cfg.preset == ("gpu" if torch.cuda.is_available() else "cpu")
    assert script.config_from_args(["--device", "cpu"]).preset == "cpu"


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_precedence_preset_file_cli(script: ModuleType, tmp_path: Path, suffix: str) -> None:
    values = {"steps": 7, "batch-size": 4, "lr": 0.5}
    path = tmp_path / f"c{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(values))
    else:
        path.write_text("".join(f"{k}: {v}\n" for k, v in values.items()))
    cfg = script.config_from_args(["--preset", "smoke", "--config", str(path), "--lr", "0.25"])
    assert (cfg.steps, cfg.batch_size, cfg.lr) == (7, 4, 0.25)  # file over preset, CLI over file
    assert cfg.image_size == 32  # from the preset
    only_file = script.config_from_args(["--config", str(path)])
    assert only_file.image_size == 224  # a file without --preset starts from the defaults


def test_bad_settings_raise(script: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="image_size"):
        script.config_from_args([*SMOKE, "--image-size", "40"])
    with pytest.raises(ValueError, match="stop_at"):
        script.config_from_args([*SMOKE, "--stop-at", "99"])
    with pytest.raises(ValueError, match="consistency_on_logits"):
        script.config_from_args([*SMOKE, "--consistency", "kl", "--consistency-on-logits"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("stepz: 3\n")
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['stepz'\]"):
        script.config_from_args(["--config", str(bad)])
    with pytest.raises(SystemExit):
        script.config_from_args(["--method", "bogus"])
    with pytest.raises(ValueError, match="`select_by` 'source-acc' needs held-out source images"):
        script.config_from_args([*SMOKE, "--select-by", "source-acc"])
    with pytest.raises(ValueError, match="divisible by the number of ranks"):
        cfg = make_config(script, tmp_path, "--batch-size", "3")
        script.train(cfg, info=script.runtime.DistInfo(0, 2), device=torch.device("cpu"))


# ------------------------------------------------------------------------------------ schedule
@pytest.mark.parametrize("steps", [20000, 600, 7])
def test_inverse_decay_schedule(script: ModuleType, steps: int) -> None:
    cfg = script.TrainConfig(steps=steps)
    factor = script.inverse_decay(cfg)
    horizon = max(1, steps // 2)
    for t in (0, 1, horizon // 3, horizon, steps):
        assert factor(t) == pytest.approx((1 + 10 * min(1.0, t / horizon)) ** -0.75, rel=1e-12)
    assert factor(steps) == pytest.approx(11**-0.75)  # the paper's final factor at any length


def test_optimizer_groups_and_lrs_follow_the_schedule(script: ModuleType) -> None:
    cfg = script.TrainConfig(steps=8, width="tiny")
    model = script.build_model(cfg, 7, None)
    optimizer, scheduler = script.build_optimizer(cfg, model, torch.nn.Module())
    assert isinstance(optimizer, torch.optim.SGD)
    assert all(
        g["nesterov"] and g["momentum"] == 0.9 and g["weight_decay"] == 1e-4
        for g in optimizer.param_groups
    )
    lrs = []
    for _ in range(8):
        lrs.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    for t, (enc, rest) in enumerate(lrs):
        f = (1 + 10 * min(1.0, t / 4)) ** -0.75
        assert enc == pytest.approx(1e-3 * f) and rest == pytest.approx(1e-2 * f)


# ------------------------------------------------------------------------------------- metrics
def test_confusion_and_metrics_match_loops() -> None:
    from cmfer.metrics import classification_metrics, confusion_matrix

    g = torch.Generator().manual_seed(0)
    k = 5
    labels = torch.randint(0, k - 1, (200,), generator=g)  # class 4 never occurs in the labels
    preds = torch.randint(0, k, (200,), generator=g)
    preds[:3] = 4
    cm = confusion_matrix(preds, labels, k)
    ref = torch.zeros(k, k, dtype=torch.int64)
    for y, p in zip(labels.tolist(), preds.tolist()):
        ref[y, p] += 1
    assert torch.equal(cm, ref)
    m = classification_metrics(cm)
    assert m["accuracy"] == pytest.approx(sum(int(y == p) for y, p in zip(labels, preds)) / 200)
    f1s = []
    for c in range(k):
        tp = sum(int(y == c and p == c) for y, p in zip(labels, preds))
        fp = sum(int(y != c and p == c) for y, p in zip(labels, preds))
        fn = sum(int(y == c and p != c) for y, p in zip(labels, preds))
        support = tp + fn
        if c < k - 1:
            assert m["per_class_accuracy"][c] == pytest.approx(tp / support)
        f1s.append(2 * tp / (2 * tp + fp + fn))
    assert math.isnan(m["per_class_accuracy"][k - 1])  # absent class: undefined, not 0
    assert m["macro_f1"] == pytest.approx(sum(f1s) / k)  # class 4 is predicted: it counts
    assert m["confusion"] == ref.tolist() and m["num_samples"] == 200
    with pytest.raises(ValueError, match="same length"):
        confusion_matrix(preds[:3], labels, k)


# ----------------------------------------------------------------------------------- objective
def fake_outputs(script: ModuleType, b: int, d: int, k: int, seed: int, scale: float) -> Any:
    g = torch.Generator().manual_seed(seed)
    fg, fl = torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)
    zg, zl = scale * torch.randn(b, k, generator=g), scale * torch.randn(b, k, generator=g)
    zl = zl + 2 * zg  # make the views agree often, so voting keeps some samples
    return script.LACMFEROutput(fg, fl, zg, zl, (zg + zl) / 2)


def objective_for(script: ModuleType, cfg: Any) -> Any:
    model = SimpleNamespace(feature_dims=(6, 6))  # what build_objective reads of the model
    return script.build_objective(cfg, model, num_domains=5, sync_dist=False)


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--no-sid"],
        ["--no-cid"],
        ["--no-consistency"],
        ["--no-voting"],
        ["--consistency", "l1"],
        ["--consistency", "mse"],
        ["--consistency", "kl"],
        ["--consistency-on-logits"],
        ["--consistency", "l1", "--consistency-on-logits"],
        ["--method", "mmd"],
        ["--method", "coral"],
        ["--method", "coral", "--per-source"],
        ["--method", "m3sda"],
        ["--method", "mcc", "--baseline-weight", "0.3"],
        ["--method", "source-only"],
    ],
)
def test_objective_follows_the_flags(script: ModuleType, args: list[str], tmp_path: Path) -> None:
    """The objective of the flags equals an independent composition from lacmfer.functional."""
    cfg = make_config(script, tmp_path, *args)
    objective = objective_for(script, cfg)
    out_s = fake_outputs(script, 12, 6, 7, 0, 4.0)
    out_t = fake_outputs(script, 10, 6, 7, 1, 4.0)
    y_s = torch.arange(12) % 7
    d_s = torch.arange(12) % 5
    terms = objective(out_s, y_s, out_t, d_s)

    ce = F.cross_entropy(out_s.logits_g, y_s, label_smoothing=0.1) + F.cross_entropy(
        out_s.logits_l, y_s, label_smoothing=0.1
    )
    ref = ce
    views = [
        (out_s.feat_g, out_s.logits_g, out_t.feat_g, out_t.logits_g),
        (out_s.feat_l, out_s.logits_l, out_t.feat_l, out_t.logits_l),
    ]
    method = cfg.method
    if method == "mmd":
        ref = ref + 0.4 * sum(mmd2(a, c) for a, _, c, _ in views)
    elif method == "coral":
        domains = {"domains_s": d_s, "num_domains": 5} if cfg.per_source else {}
        ref = ref + 1.0 * sum(coral(a, c, **domains) for a, _, c, _ in views)
    elif method == "m3sda":
        ref = ref + 0.5 * sum(moment_matching(a, d_s, c, num_domains=5) for a, _, c, _ in views)
    elif method == "mcc":
        ref = ref + 0.3 * sum(minimum_class_confusion(z) for _, _, _, z in views)
    elif method == "lacmfer":
        align = 0.0
        for f_s, z_s, f_t, z_t in views:
            t = dual_level_alignment(f_s, z_s, y_s, f_t, z_t, return_terms=True)
            align = align + (t.sid if cfg.sid else 0) + (0.02 * t.cid if cfg.cid else 0)
        ref = ref + 0.4 * align
        zg, zl = out_t.logits_g, out_t.logits_l
        if cfg.consistency != "none":
            if cfg.consistency == "mcc":
                cons = multi_view_clustering_consistency(
                    zg, zl, from_logits=cfg.consistency_on_logits
                )
            else:
                a, b = (zg, zl) if cfg.consistency_on_logits else (zg.softmax(1), zl.softmax(1))
                if cfg.consistency == "l1":
                    cons = torch.stack([(a[i] - b[i]).abs().sum() for i in range(len(a))]).mean()
                elif cfg.consistency == "mse":
                    cons = torch.stack([((a[i] - b[i]) ** 2).sum() for i in range(len(a))]).mean()
                else:
                    kl = [
                        0.5
                        * (
                            F.kl_div(b[i].log(), a[i], reduction="sum")
                            + F.kl_div(a[i].log(), b[i], reduction="sum")
                        )
                        for i in range(len(a))
                    ]
                    cons = torch.stack(kl).mean()
            assert float(cons) > 0
            ref = ref + 0.5 * cons
        if cfg.voting:
            vote = multi_view_pseudo_label_loss(zg, zl, threshold=0.9)
            assert float(vote) > 0
            ref = ref + 0.1 * vote
    torch.testing.assert_close(terms.loss, ref, rtol=1e-6, atol=1e-6)
    if method == "source-only":
        assert float(terms.align) == 0 and torch.equal(terms.loss, terms.ce)


def test_dann_objective_trains_a_discriminator_per_branch(
    script: ModuleType, tmp_path: Path
) -> None:
    cfg = make_config(script, tmp_path, "--method", "dann", "--per-source")
    objective = objective_for(script, cfg)
    assert len(objective.branch_losses) == 2 and objective.per_source
    params = list(objective.parameters())
    assert params and all(p.requires_grad for p in params)
    out_s = fake_outputs(script, 12, 6, 7, 0, 4.0)
    out_t = fake_outputs(script, 10, 6, 7, 1, 4.0)
    terms = objective(out_s, torch.arange(12) % 7, out_t, torch.arange(12) % 5)
    assert math.isfinite(float(terms.loss.detach())) and float(terms.align.detach()) > 0
    objective.step()
    assert all(int(m.num_steps) == 1 for m in objective.branch_losses)


@pytest.mark.parametrize("method", ["lacmfer", "mmd", "m3sda", "source-only"])
@pytest.mark.parametrize(("after", "warmup"), [(0, 4), (3, 0), (2, 3)])
def test_adaptation_schedule_scales_every_adaptation_term(
    script: ModuleType, method: str, after: int, warmup: int, tmp_path: Path
) -> None:
    """loss = CE + r(t) · (the adaptation terms of the full objective), with r = 0 for t < after,
    then (t - after) / warmup up to 1 (1 at once when warmup = 0)."""
    out_s = fake_outputs(script, 12, 6, 7, 0, 4.0)
    out_t = fake_outputs(script, 10, 6, 7, 1, 4.0)
    y_s, d_s = torch.arange(12) % 7, torch.arange(12) % 5
    full = objective_for(script, make_config(script, tmp_path, "--method", method))
    terms = full(out_s, y_s, out_t, d_s)
    adaptation = terms.loss - terms.ce
    assert (method == "source-only") == (float(adaptation) == 0.0)
    args = ["--method", method, "--adapt-after", str(after), "--adapt-warmup", str(warmup)]
    scheduled = objective_for(script, make_config(script, tmp_path, *args))
    for t in range(9):
        if t < after:
            ramp = 0.0
        elif warmup == 0:
            ramp = 1.0
        else:
            ramp = min(1.0, (t - after) / warmup)
        step_terms = scheduled(out_s, y_s, out_t, d_s)
        torch.testing.assert_close(step_terms.loss, terms.ce + ramp * adaptation)
        assert float(step_terms.adaptation_weight) == pytest.approx(ramp)
        assert torch.equal(step_terms.ce, terms.ce)  # the parts are logged unscaled
        assert torch.equal(step_terms.align, terms.align)
        scheduled.step()
    assert int(scheduled.state_dict()["num_steps"]) == 9  # resumed runs continue the schedule


# ---------------------------------------------------------------------------------------- runs
def test_smoke_run_writes_every_output(script: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert (
        script.main(
            [
                *SMOKE,
                "--out",
                str(out),
                "--steps",
                "4",
                "--eval-every",
                "2",
                "--log-every",
                "1",
                "--ckpt-every",
                "2",
                "--keep-checkpoints",
                "1",
                "--plots",
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    train, evals = records(out, "train"), records(out, "eval")
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert [r["step"] for r in evals] == [2, 4]
    for r in train:
        for key in ("loss", "ce", "align", "sid", "cid", "consistency", "voting", "lr"):
            assert math.isfinite(r[key]), key
        assert 0 <= r["kept_fraction"] <= 1
    assert summary["completed"] and summary["step"] == 4
    final = summary["final"]
    assert final["step"] == 4 and final["acc_fused"] == evals[-1]["acc_fused"]  # THE result
    assert final["num_test"] == 64 and len(final["per_class_acc_fused"]) == 7
    cm = torch.tensor(final["confusion_fused"])
    assert cm.shape == (7, 7) and int(cm.sum()) == 64
    assert final["acc_fused"] == pytest.approx(int(cm.trace()) / 64)
    oracle = summary["oracle"]
    assert "selection on the test set" in oracle["note"]
    assert oracle["acc_fused"] == max(r["acc_fused"] for r in evals)
    assert summary["selected"]["validator"] == "final" and summary["selected"]["step"] == 4
    for r in evals:  # every validator, at every evaluation
        for name in ("agreement", "bnm", "entropy", "im", "snd"):
            assert math.isfinite(r[f"val_{name}"]), name
    assert summary["wall_time_s"] > 0 and summary["images_per_s"] > 0
    assert summary["config"]["steps"] == 4
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["last.pt", "step_0000004.pt"]  # keep-checkpoints 1
    pytest.importorskip("matplotlib")
    assert (out / "confusion.png").stat().st_size > 0 and (out / "curves.png").stat().st_size > 0


def _train_records(out: Path) -> list[dict[str, Any]]:
    return records(out, "train")


@pytest.mark.parametrize(
    "extra", [[], ["--adapt-after", "2", "--adapt-warmup", "3"]], ids=["paper", "schedule"]
)
def test_resume_is_exact(script: ModuleType, tmp_path: Path, extra: list[str]) -> None:
    common = [
        *extra,
        "--steps",
        "6",
        "--log-every",
        "1",
        "--eval-every",
        "3",
        "--ckpt-every",
        "100",
        "--write-weight-hash",
    ]
    full, split = tmp_path / "full", tmp_path / "split"
    script.train(make_config(script, full, *common))
    stopped = script.train(make_config(script, split, *common, "--stop-at", "4"))
    assert not stopped["completed"] and stopped["final"] is None
    assert [r["step"] for r in _train_records(split)] == [1, 2, 3, 4]
    # an interrupted run may have logged past its checkpoint: those lines are dropped on resume
    with (split / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"kind": "train", "step": 5, "loss": -1.0}) + "\n")
    script.train(make_config(script, split, *common, "--resume"))
    assert _train_records(split) == _train_records(full)  # every logged value of every step
    assert records(split, "eval") == records(full, "eval")
    assert weights_hash(split) == weights_hash(full)
    with pytest.raises(ValueError, match=r"other settings \(lr: 0.01 -> 0.5\)"):
        script.train(make_config(script, split, *common, "--resume", "--lr", "0.5"))
    with pytest.raises(ValueError, match=r"other settings.*seed: 0 -> 3"):
        script.train(make_config(script, split, *common, "--resume", "--seed", "3"))


def test_resume_with_more_steps_extends_the_run(script: ModuleType, tmp_path: Path) -> None:
    """A finished run resumed with a larger --steps reaches the new last step, keeping the lr
    horizon it was trained with; its steps equal those of a run stopped at the same point."""
    common = ["--log-every", "1", "--eval-every", "3", "--ckpt-every", "100"]
    short = tmp_path / "short"
    first = script.train(make_config(script, short, *common, "--steps", "3"))
    assert first["completed"] and first["step"] == 3
    extended = script.train(make_config(script, short, *common, "--steps", "6", "--resume"))
    assert extended["completed"] and extended["step"] == 6 and extended["final"]["step"] == 6
    assert [r["step"] for r in _train_records(short)] == [1, 2, 3, 4, 5, 6]
    assert extended["config"]["decay_steps"] == 1  # the 3-step run's horizon: 3 // 2
    # the same schedule from the start: a 6-step run with that horizon, steps identical
    same = tmp_path / "same"
    script.train(make_config(script, same, *common, "--steps", "6", "--decay-steps", "1",
                             "--ramp-steps", "3"))  # fmt: skip
    assert _train_records(short) == _train_records(same)
    with pytest.raises(ValueError, match="cannot go back"):
        script.train(make_config(script, short, *common, "--steps", "2", "--resume"))


def _wrap_as_files(task: Any) -> Any:
    """The same data without the ``images`` tensor, so CMFERData takes its DataLoader path."""

    class FileLike(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __init__(self, ds: Any) -> None:
            self.ds, self.labels = ds, ds.labels

        def __len__(self) -> int:
            return len(self.ds)

        def __getitem__(self, i: int) -> Any:
            return self.ds[i]

    return dataclasses.replace(
        task,
        source_sets=tuple(FileLike(d) for d in task.source_sets),
        target_adapt=FileLike(task.target_adapt),
        target_test=FileLike(task.target_test),
    )


def test_resume_is_exact_with_loader_workers(script: ModuleType, tmp_path: Path) -> None:
    """DataLoader back end with prefetching workers: the checkpoint holds the consumed position."""
    from cmfer.data import CMFERData, synthetic_task

    def data(cfg: Any) -> Any:
        task = synthetic_task(cfg.target, train_size=64, test_size=64, image_size=32, seed=0)
        return CMFERData(
            _wrap_as_files(task),
            device=torch.device("cpu"),
            batch_size=8,
            target_batch_size=8,
            eval_batch_size=64,
            num_workers=2,
        )

    common = ["--steps", "5", "--log-every", "1", "--eval-every", "5", "--num-workers", "2"]
    full, split = tmp_path / "full", tmp_path / "split"
    cfg = make_config(script, full, *common)
    d = data(cfg)
    assert not d.tensors
    script.train(cfg, data=d)
    cfg = make_config(script, split, *common, "--stop-at", "2")
    script.train(cfg, data=data(cfg))
    cfg = make_config(script, split, *common, "--resume")
    script.train(cfg, data=data(cfg))
    assert _train_records(split) == _train_records(full)
    assert records(split, "eval") == records(full, "eval")


@pytest.mark.parametrize("method", ["lacmfer", "dann"])
def test_target_labels_never_reach_a_loss_a_validator_or_the_selection(
    script: ModuleType, tmp_path: Path, method: str
) -> None:
    """Permuting, or replacing, the target adaptation labels leaves every loss, weight, validator
    score and the selected checkpoint bit-identical; only the pseudo-label-accuracy diagnostic may
    change. Changing *source* labels does change them (the comparison can fail)."""
    from cmfer.data import build_data

    args = ["--steps", "4", "--log-every", "1", "--eval-every", "2", "--write-weight-hash",
            "--method", method, "--select-by", "entropy"]  # fmt: skip

    def run(name: str, edit: Any) -> tuple[Any, ...]:
        cfg = make_config(script, tmp_path / name, *args)
        data = build_data(cfg, device=torch.device("cpu"))
        edit(data)
        summary = script.train(cfg, data=data)
        out = tmp_path / name
        rows = [
            {k: v for k, v in r.items() if k != "pseudo_label_acc"} for r in records(out, "train")
        ]
        scores = [
            {k: v for k, v in r.items() if k.startswith("val_")} for r in records(out, "eval")
        ]
        assert all(len(s) == 5 for s in scores)
        return rows, weights_hash(out), scores, summary["selected"]

    base = run("base", lambda d: None)
    g = torch.Generator().manual_seed(1)

    def permute(d: Any) -> None:
        d.y_tgt = d.y_tgt[torch.randperm(len(d.y_tgt), generator=g)]

    def replace(d: Any) -> None:
        d.y_tgt = torch.randint(0, 7, d.y_tgt.shape, generator=g)

    def source(d: Any) -> None:
        d.y_src = (d.y_src + 1) % 7

    assert run("permuted", permute) == base
    assert run("replaced", replace) == base
    assert run("source", source) != base


@pytest.mark.parametrize(
    "args",
    [
        ["--method", "source-only"],
        ["--method", "mmd"],
        ["--method", "dann"],
        ["--method", "coral", "--per-source"],
        ["--method", "m3sda"],
        ["--method", "mcc"],
        ["--method", "lacmfer", "--select-by", "snd"],
        ["--method", "source-only", "--source-val-fraction", "0.25", "--select-by", "source-acc"],
        ["--no-sid", "--no-voting"],
        ["--consistency", "kl", "--per-source", "--cluster-ramp", "dann_sigmoid"],
        ["--source-mode", "balanced", "--no-augment", "--amp", "bf16"],
    ],
)
def test_methods_and_switches_train(script: ModuleType, tmp_path: Path, args: list[str]) -> None:
    summary = script.train(make_config(script, tmp_path, "--steps", "2", "--log-every", "1", *args))
    rows = records(tmp_path, "train")
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert summary["final"] is not None and 0 <= summary["final"]["acc_fused"] <= 1
    if "source-only" in args:
        assert all(r["align"] == 0 and r["loss"] == r["ce"] for r in rows)
    if "--select-by" in args:
        validator = args[args.index("--select-by") + 1]
        assert summary["selected"]["validator"] == validator
        evals = records(tmp_path, "eval")
        best = max(evals, key=lambda r: r[f"val_{validator}"])
        assert summary["selected"]["step"] == best["step"]
        assert (tmp_path / "checkpoints" / "selected.pt").exists()


def test_target_all_runs_each_target(script: ModuleType, tmp_path: Path) -> None:
    from cmfer.data import TARGETS

    summaries = script.run_targets(
        make_config(
            script,
            tmp_path,
            "--target",
            "all",
            "--steps",
            "1",
            "--synthetic-train-size",
            "16",
            "--synthetic-test-size",
            "16",
            "--no-plots",
        )
    )
    assert [s["target"] for s in summaries] == list(TARGETS)
    for s in summaries:
        assert s["target"] not in s["sources"] and len(s["sources"]) == 5
    assert all((tmp_path / t / "summary.json").exists() for t in TARGETS)  # <out>/<target>/
    table = (tmp_path / "results.md").read_text()
    assert all(t in table for t in TARGETS) and "mean" in table


@pytest.mark.slow
def test_compile_runs(script: ModuleType, tmp_path: Path) -> None:
    summary = script.train(make_config(script, tmp_path, "--steps", "2", "--compile"))
    assert summary["final"] is not None


@pytest.mark.gpu
def test_cuda_bf16_channels_last(script: ModuleType, tmp_path: Path) -> None:
    summary = script.train(
        make_config(script, tmp_path, "--steps", "3", "--device", "cuda", "--amp", "bf16")
    )
    assert summary["final"] is not None


@pytest.mark.gpu
def test_cuda_fp16_grad_scaler(script: ModuleType, tmp_path: Path) -> None:
    summary = script.train(
        make_config(
            script,
            tmp_path,
            "--steps",
            "3",
            "--device",
            "cuda",
            "--amp",
            "fp16",
            "--log-every",
            "1",
        )
    )
    assert summary["final"] is not None


def _write_fake_protocol(root: Path) -> tuple[Path, Path]:
    """Image files and list files laid out like the published protocol (paths ../datasets/...)."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    lists, data = root / "lists", root / "datasets"
    lists.mkdir(parents=True)
    layout = {
        "CK.txt": [f"CK+/anger/S{s:03d}_001_0000000{i}.png" for s in range(1, 7) for i in range(4)],
        "JAFFE.txt": [f"JAFFE/images/img_{i}.png" for i in range(24)],
        "RAF_train.txt": [f"RAF-DB/images/train_{i:05d}_aligned.png" for i in range(24)],
        "RAF_test.txt": [f"RAF-DB/images/test_{i:04d}_aligned.png" for i in range(12)],
    }
    for list_name, paths in layout.items():
        lines = []
        for i, rel in enumerate(paths):
            path = data / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = (torch.rand(40, 40, 3, generator=g) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(path)
            lines.append(f"../datasets/{rel} {i % 7}")
        (lists / list_name).write_text("\r\n".join(lines) + "\r\n")  # CRLF, as published
    return lists, data


def test_real_image_lists_run_the_protocol(script: ModuleType, tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    lists, data = _write_fake_protocol(tmp_path / "fer")
    common = ["--data-root", str(data), "--lists", str(lists), "--domains", "CK+,JAFFE,RAF-DB",
              "--steps", "2", "--image-size", "32", "--num-workers", "0"]  # fmt: skip
    summary = script.train(make_config(script, tmp_path / "ck", *common, "--target", "ck"))
    assert summary["target"] == "CK+" and summary["sources"] == ["JAFFE", "RAF-DB"]
    notes = " ".join(summary["protocol_notes"])
    assert "split it into" in notes  # CK+ adapts and tests on one list: split by subject
    assert summary["final"]["num_test"] < 24
    published = script.train(
        make_config(script, tmp_path / "pub", *common, "--target", "CK+", "--no-leakage-free")
    )
    assert published["final"]["num_test"] == 24
    assert "leaks test images" in " ".join(published["protocol_notes"])
    with pytest.raises(ValueError, match="AffectNet's image lists are not distributed"):
        script.train(make_config(script, tmp_path, "--data-root", str(data), "--lists", str(lists)))


def test_progress_lines_when_not_on_a_terminal(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Redirected (not a terminal, the default --progress): a flushed line per logged step with
    the losses, images/s and the time left; the closing lines say what to compare."""
    argv = ["--preset", "smoke", "--no-tensorboard", "--no-plots", "--out", str(tmp_path),
            "--steps", "4", "--log-every", "2", "--eval-every", "4"]  # fmt: skip
    assert script.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    lines = [line for line in out if "| step " in line]
    assert [line.split("| step ")[1].split(" ")[0] for line in lines] == ["2/4", "4/4"]
    for line in lines:
        assert "loss " in line and "img/s" in line and "ETA " in line
    assert any("final-step target accuracy" in line for line in out)
    assert any("compare with source-only" in line for line in out)
