"""Tests of examples/train_cmfer.py: the command line, the objective of every flag, and short runs
(outputs, exact resume, safe output folders, pre-flight checks, one-line errors, no target-label
leakage, --target all, --evaluate)."""

from __future__ import annotations

import json
import math
import pickle
import warnings
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lacmfer.functional import (
    coral,
    dual_level_alignment,
    minimum_class_confusion,
    mmd2,
    moment_matching,
    multi_view_clustering_consistency,
    multi_view_pseudo_label_loss,
)
from lacmfer.modules import LACMFEROutput
from lacmfer.utils import read_jsonl

SMOKE = ["--preset", "smoke", "--no-progress", "--no-tensorboard", "--threads", "1"]


def run(script: ModuleType, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``main(SMOKE + argv)``: exit status, stdout, stderr."""
    capsys.readouterr()
    rc = script.main([*SMOKE, *argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def weights(out: Path) -> str:
    return str(json.loads((out / "weights_rank0.json").read_text())["weights"])


def records(out: Path, kind: str) -> list[dict[str, Any]]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def parse(script: ModuleType, *argv: str) -> Any:
    return script.parse_args([*SMOKE, *argv])[0]


# ------------------------------------------------------------------------------ command line
def test_help_shows_each_option_with_one_default(script: ModuleType) -> None:
    text = script.build_parser()[0].format_help()
    for flag in ("--steps", "--batch-size", "--target", "--method", "--no-sid", "--no-cid",
                 "--no-consistency", "--no-voting", "--consistency-from-logits", "--device",
                 "--amp", "--compile", "--seed", "--out", "--resume", "--overwrite", "--evaluate",
                 "--config", "--preset", "--data-root", "--lists", "--skip-unreadable",
                 "--stop-at", "--decay-steps", "--select-by"):  # fmt: skip
        assert flag in text, flag
    for choice in ("lacmfer", "source-only", "mmd", "dann", "coral", "m3sda", "class-confusion",
                   "l1", "mse", "kl", "bf16", "fp16", "entropy", "snd", "source-acc"):  # fmt: skip
        assert choice in text, choice
    assert "(default: None)" not in text
    entries = text.split("\n  -")
    assert not [e for e in entries if e.count("(default:") > 1]
    assert "--consistency-on-logits" not in text  # the old spelling is accepted, not advertised


def test_defaults_are_the_paper_recipe(script: ModuleType, tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    args = script.parse_args(["--config", str(empty)])[0]  # a config file: no preset applies
    assert (args.steps, args.batch_size, args.image_size, args.lr, args.encoder_lr_scale) == (
        20000, 128, 224, 0.01, 0.1)  # fmt: skip
    assert (args.momentum, args.nesterov, args.weight_decay, args.decay_gamma, args.decay_power) == (
        0.9, True, 1e-4, 10.0, 0.75)  # fmt: skip
    assert (args.align_weight, args.cid_weight, args.consistency_weight, args.voting_weight) == (
        0.4, 0.02, 0.5, 0.1)  # fmt: skip
    assert (args.align_threshold, args.pseudo_threshold, args.label_smoothing) == (0.4, 0.9, 0.1)
    assert (args.method, args.consistency, args.width, args.share) == (
        "lacmfer",
        "mcc",
        "full",
        "column",
    )


def test_without_a_preset_the_device_picks_one(script: ModuleType) -> None:
    args = script.parse_args(["--device", "cpu"])[0]
    assert args.preset == "cpu" and args.width == "tiny"


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_precedence_preset_file_command_line(
    script: ModuleType, tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"c{suffix}"
    path.write_text(json.dumps({"steps": 7, "lr": 0.5, "voting": False}))  # JSON is valid YAML
    args = script.parse_args(["--preset", "smoke", "--config", str(path), "--lr", "0.25"])[0]
    assert (args.steps, args.lr, args.voting, args.image_size) == (7, 0.25, False, 32)  # smoke: 32


def test_a_config_file_may_name_its_preset(script: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("preset: smoke\nsteps: 7\n")
    args, _, given = script.parse_args(["--config", str(path)])
    assert (args.preset, args.steps, args.image_size) == ("smoke", 7, 32)  # smoke: 32 pixels
    assert "preset" not in given  # a preset's values never count as given anew on --resume
    args = script.parse_args(["--config", str(path), "--preset", "benchmark"])[0]
    assert (args.preset, args.steps, args.image_size) == ("benchmark", 7, 48)  # the flag wins
    path.write_text("preset: nonsense\n")
    with pytest.raises(script.UsageError, match=r"^--config \S*c\.yaml: setting 'preset' must"):
        script.parse_args(["--config", str(path)])
    preset = tmp_path / "p.yaml"  # a config file cannot name another config file
    path.write_text(f"config: {preset}\n")
    with pytest.raises(script.UsageError, match=r"unknown setting 'config'"):
        script.parse_args(["--config", str(path)])


def test_settings_files_are_checked(script: ModuleType, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("stpes: 3\n")
    with pytest.raises(script.UsageError, match=r"^--config \S*bad\.yaml: unknown setting 'stpes'"):
        script.parse_args(["--config", str(bad)])
    bad.write_text("method: nonsense\n")
    with pytest.raises(script.UsageError, match=r"^--config \S*bad\.yaml: argument --method"):
        script.parse_args(["--config", str(bad)])
    bad.write_text("steps: -3\n")  # a bad value names the file it came from
    with pytest.raises(script.UsageError, match=r"^--config \S*bad\.yaml: argument --steps"):
        script.parse_args(["--config", str(bad)])
    with pytest.raises(script.UsageError, match=r"^--config \S*nothere\.yaml: cannot read it"):
        script.parse_args(["--config", str(tmp_path / "nothere.yaml")])
    # the command line still overrides a good file's value
    bad.write_text("steps: 5\n")
    assert script.parse_args(["--config", str(bad), "--steps", "9"])[0].steps == 9


def test_old_spellings_are_accepted_with_a_deprecation(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script.warn.cache_clear()
    args = parse(script, "--method", "mcc", "--consistency-on-logits")
    assert args.method == "class-confusion" and args.consistency_from_logits
    err = capsys.readouterr().err
    assert "--method mcc is deprecated" in err and "--consistency-on-logits is deprecated" in err
    old = tmp_path / "old.yaml"
    old.write_text("consistency_on_logits: true\n")
    assert script.parse_args(["--preset", "smoke", "--config", str(old)])[0].consistency_from_logits
    assert "'consistency_on_logits' is deprecated" in capsys.readouterr().err


def test_objective_settings_are_the_library_names(script: ModuleType) -> None:
    """One name per concept: every LACMFERLoss keyword the script sets is a flag's name."""
    args = parse(script)
    options = set(vars(args))
    settings = script.objective_settings(args, num_domains=5)
    assert set(settings) - {"num_domains"} <= options


# ----------------------------------------------------------------------------------- objective
class FixedModel(nn.Module):
    """Returns fixed outputs for the source (12) and the target (10) batch."""

    def __init__(self, out_s: LACMFEROutput, out_t: LACMFEROutput) -> None:
        super().__init__()
        self.outs = {12: out_s, 10: out_t}
        self.feature_dims = (6, 6)

    def forward(self, x: torch.Tensor) -> LACMFEROutput:
        return self.outs[x.shape[0]]


def fake_outputs(b: int, seed: int) -> LACMFEROutput:
    g = torch.Generator().manual_seed(seed)
    fg, fl = torch.randn(b, 6, generator=g), torch.randn(b, 6, generator=g)
    zg, zl = 4 * torch.randn(b, 7, generator=g), 4 * torch.randn(b, 7, generator=g)
    zl = zl + 2 * zg  # the views agree often, so the vote keeps some samples
    return LACMFEROutput(fg, fl, zg, zl, (zg + zl) / 2)


def step_module(script: ModuleType, args: Any) -> Any:
    out_s, out_t = fake_outputs(12, 0), fake_outputs(10, 1)
    objective = script.LACMFERLoss(**script.objective_settings(args, num_domains=5))
    baseline = script.baseline_losses(args, (6, 6), 5, False)
    weight = (
        args.baseline_weight
        if args.baseline_weight is not None
        else script.BASELINE_WEIGHTS.get(args.method, 0.0)
    )
    run = SimpleNamespace(
        model=FixedModel(out_s, out_t), objective=objective, baseline=baseline, args=args
    )
    step = script.TrainStep(run, weight)
    return step, out_s, out_t


@pytest.mark.parametrize(
    "flags",
    [[], ["--no-sid"], ["--no-cid"], ["--no-consistency"], ["--no-voting"],
     ["--consistency", "l1"], ["--consistency", "mse"], ["--consistency", "kl"],
     ["--consistency-from-logits"], ["--consistency", "l1", "--consistency-from-logits"],
     ["--method", "mmd"], ["--method", "coral"], ["--method", "coral", "--per-source"],
     ["--method", "m3sda"], ["--method", "class-confusion", "--baseline-weight", "0.3"],
     ["--method", "source-only"]],
)  # fmt: skip
def test_objective_follows_the_flags(script: ModuleType, flags: list[str]) -> None:
    """The loss of one step equals an independent composition from lacmfer.functional."""
    args = parse(script, *flags)
    step, out_s, out_t = step_module(script, args)
    y_s, d_s = torch.arange(12) % 7, torch.arange(12) % 5
    loss, terms, _ = step(torch.zeros(12), y_s, d_s, torch.zeros(10))
    ref = F.cross_entropy(out_s.logits_g, y_s, label_smoothing=0.1) + F.cross_entropy(
        out_s.logits_l, y_s, label_smoothing=0.1
    )
    views = [(out_s.feat_g, out_s.logits_g, out_t.feat_g, out_t.logits_g),
             (out_s.feat_l, out_s.logits_l, out_t.feat_l, out_t.logits_l)]  # fmt: skip
    if args.method == "mmd":
        ref = ref + 0.4 * sum(mmd2(a, c) for a, _, c, _ in views)
    elif args.method == "coral":
        domains = {"domains_s": d_s, "num_domains": 5} if args.per_source else {}
        ref = ref + 1.0 * sum(coral(a, c, **domains) for a, _, c, _ in views)
    elif args.method == "m3sda":
        weight = script.BASELINE_WEIGHTS["m3sda"]
        ref = ref + weight * sum(moment_matching(a, d_s, c, num_domains=5) for a, _, c, _ in views)
    elif args.method == "class-confusion":
        ref = ref + 0.3 * sum(minimum_class_confusion(z) for _, _, _, z in views)
    elif args.method == "lacmfer":
        for f_s, z_s, f_t, z_t in views:
            t = dual_level_alignment(f_s, z_s, y_s, f_t, z_t, return_terms=True)
            ref = ref + 0.4 * ((t.sid if args.sid else 0) + (0.02 * t.cid if args.cid else 0))
        zg, zl = out_t.logits_g, out_t.logits_l
        if args.consistency == "mcc":
            ref = ref + 0.5 * multi_view_clustering_consistency(
                zg, zl, from_logits=args.consistency_from_logits
            )
        elif args.consistency != "none":
            a, b = (zg, zl) if args.consistency_from_logits else (zg.softmax(1), zl.softmax(1))
            per_sample = {
                "l1": lambda i: (a[i] - b[i]).abs().sum(),
                "mse": lambda i: ((a[i] - b[i]) ** 2).sum(),
                "kl": lambda i: 0.5 * (F.kl_div(b[i].log(), a[i], reduction="sum")
                                       + F.kl_div(a[i].log(), b[i], reduction="sum")),
            }[args.consistency]  # fmt: skip
            ref = ref + 0.5 * torch.stack([per_sample(i) for i in range(10)]).mean()
        if args.voting:
            vote = multi_view_pseudo_label_loss(zg, zl, threshold=0.9)
            assert float(vote) > 0
            ref = ref + 0.1 * vote
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(terms.loss, loss)
    if args.method == "source-only":
        assert torch.equal(loss, terms.ce)


def test_dann_trains_a_discriminator_per_branch(script: ModuleType) -> None:
    args = parse(script, "--method", "dann", "--per-source")
    step, *_ = step_module(script, args)
    assert len(step.baseline) == 2
    params = list(step.baseline.parameters())
    assert params and all(p.requires_grad for p in params)
    loss, terms, _ = step(
        torch.zeros(12), torch.arange(12) % 7, torch.arange(12) % 5, torch.zeros(10)
    )
    assert math.isfinite(float(loss.detach())) and float(terms.align.detach()) > 0
    loss.backward()
    assert all(p.grad is not None for p in params)


@pytest.mark.parametrize("method", ["lacmfer", "mmd", "m3sda", "source-only"])
@pytest.mark.parametrize(("after", "warmup"), [(0, 4), (3, 0), (2, 3)])
def test_adaptation_schedule_scales_every_adaptation_term(
    script: ModuleType, method: str, after: int, warmup: int
) -> None:
    """loss = CE + r(t) · (the adaptation terms), r = 0 before --adapt-after, then a linear rise
    over --adapt-warmup steps to 1."""
    y_s, d_s, x_s, x_t = (
        torch.arange(12) % 7,
        torch.arange(12) % 5,
        torch.zeros(12),
        torch.zeros(10),
    )
    full, *_ = step_module(script, parse(script, "--method", method))
    loss, terms, _ = full(x_s, y_s, d_s, x_t)
    adaptation = loss - terms.ce
    assert (method == "source-only") == (float(adaptation) == 0.0)
    args = parse(
        script, "--method", method, "--adapt-after", str(after), "--adapt-warmup", str(warmup)
    )
    scheduled, *_ = step_module(script, args)
    for t in range(9):
        ramp = 0.0 if t < after else 1.0 if warmup == 0 else min(1.0, (t - after) / warmup)
        step_loss, step_terms, _ = scheduled(x_s, y_s, d_s, x_t)
        torch.testing.assert_close(step_loss, terms.ce + ramp * adaptation)
        assert float(step_terms.adaptation_weight) == pytest.approx(ramp)
        scheduled.objective.step()


def test_inverse_decay_and_parameter_groups(script: ModuleType, tmp_path: Path) -> None:
    """lr(t) = lr0 · (1 + 10·min(1, t/T))^-0.75 with T = steps // 2, the encoder at 0.1 × lr."""
    out = tmp_path / "run"
    args = parse(
        script, "--steps", "8", "--out", str(out), "--lr", "0.2", "--encoder-lr-scale", "0.1"
    )
    task, source_val = script.build_task(args, "JAFFE")
    run = script.Run(args, task, source_val, script.Ranks(), torch.device("cpu"), out)
    base = [g["lr"] for g in run.optimizer.param_groups]
    assert min(base) == pytest.approx(0.02) and max(base) == pytest.approx(0.2)
    for t in range(10):
        factor = (1 + 10 * min(1.0, t / 4)) ** -0.75
        for group, lr0 in zip(run.optimizer.param_groups, base):
            assert group["lr"] == pytest.approx(lr0 * factor)
        run.optimizer.step()
        run.scheduler.step()


# ------------------------------------------------------------------------------------- runs
def test_smoke_run_writes_every_output_and_names_the_synthetic_data(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    rc, stdout, _ = run(script, capsys, "--out", str(out), "--select-by", "bnm")
    assert rc == 0
    lines = stdout.strip().splitlines()
    assert "synthetic" in lines[0] and "synthetic data" in lines[-3]
    for name in ("metrics.jsonl", "summary.json", "config.json", "confusion.png", "curves.png",
                 "checkpoints/last.pt", "checkpoints/selected.pt"):  # fmt: skip
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"] == "synthetic" and summary["completed"] and summary["step"] == 20
    assert summary["final"]["acc_fused"] == records(out, "eval")[-1]["acc_fused"]
    assert (
        summary["selected"]["validator"] == "bnm"
        and "without target labels" in summary["selected"]["note"]
    )
    assert "not a valid result" in summary["oracle"]["note"]
    train = records(out, "train")
    assert [r["step"] for r in train] == [5, 10, 15, 20]
    for key in ("loss", "ce", "sid", "cid", "consistency", "voting", "effective_s_g", "effective_t_l",
                "masked_s_g", "kept_fraction", "lr"):  # fmt: skip
        assert key in train[-1], key
    for ckpt in ("last.pt", "selected.pt"):  # no code runs when a checkpoint is read
        assert "model" in torch.load(out / "checkpoints" / ckpt, weights_only=True)


@pytest.mark.parametrize("extra", [[], ["--augment", "--per-source", "--method", "dann"]])
def test_resume_is_exact(script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                         extra: list[str]) -> None:  # fmt: skip
    common = ["--write-weight-hash", "--select-by", "snd", *extra]
    assert run(script, capsys, "--out", str(tmp_path / "a"), *common)[0] == 0
    assert run(script, capsys, "--out", str(tmp_path / "b"), "--stop-at", "7", *common)[0] == 0
    rc, stdout, _ = run(script, capsys, "--out", str(tmp_path / "b"), "--resume", *common)
    assert rc == 0 and "at step 7 of 20" in stdout and "resuming from" in stdout
    assert weights(tmp_path / "a") == weights(tmp_path / "b")
    summary = [json.loads((tmp_path / f / "summary.json").read_text()) for f in "ab"]
    for key in ("final", "selected", "oracle"):
        assert summary[0][key] == summary[1][key]
    assert records(tmp_path / "a", "eval") == records(tmp_path / "b", "eval")


def test_checkpoints_of_earlier_versions_resume_exactly(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before lacmfer.utils, a checkpoint kept each rank's random states as
    # {"torch", "augment"[, "cuda"]}; such a run must still resume bit for bit.
    common = ["--write-weight-hash", "--augment"]
    assert run(script, capsys, "--out", str(tmp_path / "a"), *common)[0] == 0
    assert run(script, capsys, "--out", str(tmp_path / "b"), "--stop-at", "7", *common)[0] == 0
    path = tmp_path / "b" / "checkpoints" / "last.pt"
    ckpt = torch.load(path, weights_only=True)
    ckpt["rng"] = [{"torch": r["torch"], "augment": r["generators"][0]} for r in ckpt["rng"]]
    del ckpt["config"]["dry_run"]  # a flag added since
    torch.save(ckpt, path)
    assert run(script, capsys, "--out", str(tmp_path / "b"), "--resume", *common)[0] == 0
    assert weights(tmp_path / "a") == weights(tmp_path / "b")


def test_a_finished_run_is_left_untouched(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert run(script, capsys, "--out", str(out))[0] == 0
    before = files(out)
    rc, stdout, _ = run(script, capsys, "--out", str(out), "--resume")
    assert (
        rc == 0 and "finished (step 20 of 20)" in stdout and "final-step target accuracy" in stdout
    )
    assert files(out) == before


def test_target_all_resume_keeps_finished_targets(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "all"
    common = ["--out", str(out), "--target", "all", "--domains", "CK+,JAFFE,RAF-DB", "--steps", "4",
              "--eval-every", "4", "--no-plots"]  # fmt: skip
    assert run(script, capsys, *common)[0] == 0
    before = files(out)
    assert (out / "results.md").read_text().count("\n| ") == 4  # 3 targets + the mean
    rc, stdout, _ = run(script, capsys, *common, "--resume")
    assert rc == 0 and stdout.count("nothing to do") == 3
    assert files(out) == before
    # a requeued job whose last target was preempted: the finished ones keep their rows
    (out / "RAF-DB" / "summary.json").unlink()
    rc, stdout, _ = run(script, capsys, *common, "--resume")
    assert rc == 0 and stdout.count("nothing to do") == 2
    assert (out / "results.md").read_text() == before["results.md"].decode()
    assert "nan" not in (out / "summary_all.json").read_text().lower()


def test_an_occupied_out_is_refused_without_touching_it(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert run(script, capsys, "--out", str(out), "--steps", "10")[0] == 0
    before = files(out)
    rc, stdout, err = run(script, capsys, "--out", str(out))
    assert rc == 2 and stdout == "" and err.count("\n") == 1
    assert "--resume" in err and "--overwrite" in err
    assert files(out) == before
    rc, *_ = run(script, capsys, "--out", str(out), "--overwrite", "--ckpt-every", "4")
    assert rc == 0
    assert [r["step"] for r in records(out, "train")] == [
        5,
        10,
        15,
        20,
    ]  # started over, not appended
    kept = sorted(p.name for p in (out / "checkpoints").glob("step_*"))
    assert kept == ["step_0000012.pt", "step_0000016.pt", "step_0000020.pt"]  # none of the old run


def test_overwrite_leaves_nothing_of_the_old_run(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert run(script, capsys, "--out", str(out), "--steps", "4", "--eval-every", "4",
               "--write-weight-hash")[0] == 0  # fmt: skip
    assert run(script, capsys, "--out", str(out), "--steps", "4", "--overwrite")[0] == 0
    assert not (out / "weights_rank0.json").exists()  # the old run's hash, beside the new run
    common = ["--target", "all", "--steps", "2", "--eval-every", "2", "--no-plots"]
    multi = tmp_path / "all"
    assert (
        run(script, capsys, "--out", str(multi), *common, "--domains", "CK+,JAFFE,RAF-DB")[0] == 0
    )
    assert run(script, capsys, "--out", str(multi), *common, "--domains", "CK+,JAFFE",
               "--overwrite")[0] == 0  # fmt: skip
    assert not (multi / "RAF-DB" / "summary.json").exists()  # the old run's third target
    assert (multi / "JAFFE" / "summary.json").exists()


def test_a_run_resumes_on_the_data_it_was_trained_on(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    fake_protocol: tuple[Path, Path],
) -> None:  # fmt: skip
    lists, data = fake_protocol
    synthetic, images = tmp_path / "synthetic", tmp_path / "images"
    assert run(script, capsys, "--out", str(synthetic), "--stop-at", "10")[0] == 0
    before = files(synthetic)
    rc, _, err = run(script, capsys, "--out", str(synthetic), "--resume", "--data-root", str(data),
                     "--lists", str(lists))  # fmt: skip
    assert rc == 2 and "--data-root" in err and "built-in synthetic data" in err
    assert files(synthetic) == before
    argv = real(lists, data, "--target", "CK+", "--steps", "4", "--eval-every", "4")
    assert run(script, capsys, "--out", str(images), *argv, "--stop-at", "2")[0] == 0
    image_flags = {"--data-root", "--lists", "--num-workers"}
    synthetic_again = [a for i, a in enumerate(argv)
                       if a not in image_flags and argv[i - 1] not in image_flags]  # fmt: skip
    # Not given again, the data are the checkpoint's: a plain --resume continues on them.
    rc, stdout, err = run(script, capsys, "--out", str(images), "--resume", *synthetic_again,
                          "--stop-at", "3")  # fmt: skip
    assert rc == 0 and f"on {data}" in stdout, err
    moved = tmp_path / "moved"
    data.rename(moved)  # the data may move: --data-root follows it
    rc, _, err = run(script, capsys, "--out", str(images), "--resume")
    assert rc == 2 and f"--data-root {data}" in err and "no such folder" in err
    argv[argv.index("--data-root") + 1] = str(moved)
    rc, _, err = run(script, capsys, "--out", str(images), "--resume", *argv)
    assert rc == 0, err


def test_resume_of_a_checkpoint_never_writes_over_another_run(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, other = tmp_path / "first", tmp_path / "other"
    assert run(script, capsys, "--out", str(first), "--steps", "4", "--eval-every", "4")[0] == 0
    assert run(script, capsys, "--out", str(other), "--steps", "4", "--eval-every", "4",
               "--seed", "3")[0] == 0  # fmt: skip
    before = files(other)
    ckpt = str(first / "checkpoints" / "last.pt")
    rc, _, err = run(script, capsys, "--out", str(other), "--resume", ckpt, "--steps", "6",
                     "--eval-every", "4")  # fmt: skip
    assert rc == 2 and "holds another run" in err
    assert files(other) == before
    fresh = tmp_path / "fresh"  # into an empty --out: continues the first run there
    rc, stdout, err = run(script, capsys, "--out", str(fresh), "--resume", ckpt, "--steps", "6",
                          "--eval-every", "4")  # fmt: skip
    assert rc == 0 and "at step 4 of 6" in stdout, err
    # it brings the first run's history up to the checkpoint: the log reads as one run
    carried = [(r["kind"], r["step"]) for r in read_jsonl(first / "metrics.jsonl")]
    logged = [(r["kind"], r["step"]) for r in read_jsonl(fresh / "metrics.jsonl")]
    assert logged[: len(carried)] == carried and ("eval", 6) in logged[len(carried) :]


def test_an_interrupted_run_says_how_to_continue(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(script.Run, "train_step", interrupted)
    rc, _, err = run(script, capsys, "--out", str(tmp_path / "run"))
    assert rc == 130 and err.count("\n") == 1 and "--resume" in err and "Traceback" not in err


def test_an_extended_run_resumes_with_the_same_command(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert run(script, capsys, "--out", str(out), "--steps", "10")[0] == 0
    rc, _, err = run(
        script, capsys, "--out", str(out), "--resume", "--steps", "14", "--stop-at", "12"
    )
    assert rc == 0, err
    rc, stdout, err = run(script, capsys, "--out", str(out), "--resume", "--steps", "14")
    assert rc == 0, err
    assert "at step 12 of 14" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completed"] and summary["step"] == 14
    assert summary["config"]["decay_steps"] == 5 and summary["config"]["ramp_steps"] == 10
    assert [r["step"] for r in records(out, "eval")] == [10, 14]
    rc, _, err = run(script, capsys, "--out", str(out), "--resume", "--steps", "14", "--lr", "0.5")
    assert rc == 2 and "--lr 0.01 -> 0.5" in err


def test_a_plain_resume_continues_the_run_with_its_own_settings(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The preset says 20 steps, an evaluation every 10; the run said 30 and 15. --resume alone
    # must finish the run it continues, not the preset's, and equal the uninterrupted run.
    out, ref = tmp_path / "run", tmp_path / "ref"
    own = ["--steps", "30", "--eval-every", "15", "--write-weight-hash"]
    assert run(script, capsys, "--out", str(out), *own, "--stop-at", "25")[0] == 0
    rc, stdout, err = run(script, capsys, "--out", str(out), "--resume")
    assert rc == 0 and "at step 25 of 30" in stdout, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completed"] and summary["step"] == 30
    assert summary["config"]["steps"] == 30 and summary["config"]["eval_every"] == 15
    assert [r["step"] for r in records(out, "eval")] == [15, 30]
    assert run(script, capsys, "--out", str(ref), *own)[0] == 0
    assert weights(out) == weights(ref)
    # --stop-at is checked against the run's own --steps, not the preset's.
    again = tmp_path / "again"
    assert run(script, capsys, "--out", str(again), *own, "--stop-at", "10")[0] == 0
    rc, stdout, err = run(script, capsys, "--out", str(again), "--resume", "--stop-at", "25")
    assert rc == 0 and "stopped at step 25" in stdout, err
    rc, _, err = run(script, capsys, "--out", str(again), "--resume", "--stop-at", "31")
    assert rc == 2 and "--stop-at 31 is beyond --steps 30" in err
    # What may not change is refused when given, as before; a preset given does not count.
    rc, _, err = run(script, capsys, "--out", str(again), "--resume", "--lr", "0.5")
    assert rc == 2 and "--lr 0.01 -> 0.5" in err


def test_a_run_of_one_kind_is_not_continued_in_a_folder_of_the_other(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    single, multi = tmp_path / "single", tmp_path / "multi"
    short = ["--steps", "2", "--eval-every", "2"]
    assert run(script, capsys, "--out", str(single), *short)[0] == 0
    assert run(script, capsys, "--out", str(multi), *short, "--domains", "CK+,JAFFE",
               "--target", "all")[0] == 0  # fmt: skip
    before = {f: files(f) for f in (single, multi)}
    for how in (["--resume"], ["--overwrite"], []):
        rc, _, err = run(script, capsys, "--out", str(single), *short, "--target", "all", *how)
        assert rc == 2 and "holds a run of one target" in err, err
        rc, _, err = run(script, capsys, "--out", str(multi), *short, "--target", "JAFFE", *how)
        assert rc == 2 and "holds a --target all run (CK+, JAFFE)" in err, err
    assert {f: files(f) for f in (single, multi)} == before


def test_dry_run_checks_and_prints_without_writing(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    rc, stdout, err = run(script, capsys, "--out", str(out), "--dry-run", "--steps", "7")
    assert rc == 0, err
    assert stdout.startswith("lacmfer -> JAFFE on the built-in synthetic data; 7 steps of 8 + 8")
    assert json.loads(stdout[stdout.index("{") :])["steps"] == 7
    assert not out.exists()
    rc, _, err = run(script, capsys, "--out", str(out), "--dry-run", "--lr", "-1")
    assert rc == 2 and "--lr" in err
    assert run(script, capsys, "--out", str(out), *["--steps", "2", "--eval-every", "2"])[0] == 0
    before = files(out)
    rc, _, err = run(script, capsys, "--out", str(out), "--dry-run")
    assert rc == 2 and "holds a run" in err  # the refusals of a real start, nothing touched
    assert files(out) == before


def test_the_checkpoint_of_a_step_is_written_before_its_evaluation(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    out = tmp_path / "run"
    calls = []
    evaluate = script.Run.evaluate

    def failing(self: Any) -> Any:
        calls.append(self.step)
        if len(calls) == 1:
            raise OSError("a test image became unreadable")
        return evaluate(self)

    monkeypatch.setattr(script.Run, "evaluate", failing)
    with pytest.raises(OSError):
        script.main([*SMOKE, "--out", str(out), "--write-weight-hash"])
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"] == 10
    assert run(script, capsys, "--out", str(out), "--resume", "--write-weight-hash")[0] == 0
    assert calls[:2] == [10, 10]  # the evaluation of step 10 is done on resume
    assert [r["step"] for r in records(out, "eval")] == [10, 20]
    monkeypatch.setattr(script.Run, "evaluate", evaluate)
    assert run(script, capsys, "--out", str(tmp_path / "ref"), "--write-weight-hash")[0] == 0
    assert weights(out) == weights(tmp_path / "ref")


def test_resume_without_a_checkpoint_says_so(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, stdout, _ = run(script, capsys, "--out", str(tmp_path / "new"), "--resume", "--steps", "2",
                        "--eval-every", "2")  # fmt: skip
    assert rc == 0 and "no checkpoint" in stdout and "starting at step 0" in stdout


def test_target_labels_never_reach_a_loss_a_validator_or_the_selection(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Shuffling the target adaptation labels changes only the logged pseudo-label accuracy."""
    common = ["--write-weight-hash", "--select-by", "entropy", "--steps", "10"]
    assert run(script, capsys, "--out", str(tmp_path / "a"), *common)[0] == 0
    build = script.build_task

    class Shuffled(torch.utils.data.Dataset):
        def __init__(self, ds: Any) -> None:
            self.ds, self.perm = (
                ds,
                torch.randperm(len(ds), generator=torch.Generator().manual_seed(1)),
            )

        def __len__(self) -> int:
            return len(self.ds)

        def __getitem__(self, i: int) -> Any:
            return self.ds[i][0], int(self.ds[int(self.perm[i])][1])

    def shuffled(*a: Any) -> Any:
        task, source_val = build(*a)
        task.target_adapt = Shuffled(task.target_adapt)
        return task, source_val

    monkeypatch.setattr(script, "build_task", shuffled)
    assert run(script, capsys, "--out", str(tmp_path / "b"), *common)[0] == 0
    assert weights(tmp_path / "a") == weights(tmp_path / "b")
    a, b = records(tmp_path / "a", "eval"), records(tmp_path / "b", "eval")
    assert [{k: v for k, v in r.items() if k.startswith("val_") or k == "acc_fused"} for r in a] == [
        {k: v for k, v in r.items() if k.startswith("val_") or k == "acc_fused"} for r in b]  # fmt: skip


@pytest.mark.parametrize(
    "flags",
    [["--method", "source-only"], ["--method", "mmd"], ["--method", "dann"], ["--method", "coral"],
     ["--method", "m3sda"], ["--method", "class-confusion"], ["--no-sid", "--no-cid"],
     ["--consistency", "kl", "--per-source"], ["--cluster-ramp", "dann_sigmoid", "--augment"],
     ["--source-mode", "balanced", "--source-val-fraction", "0.2", "--select-by", "source-acc"]],
)  # fmt: skip
def test_methods_and_switches_train(script: ModuleType, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str], flags: list[str]) -> None:  # fmt: skip
    rc, _, err = run(script, capsys, "--out", str(tmp_path), "--steps", "4", "--eval-every", "4",
                     "--no-plots", *flags)  # fmt: skip
    assert rc == 0, err
    final = json.loads((tmp_path / "summary.json").read_text())["final"]
    assert 0.0 <= final["acc_fused"] <= 1.0
    if "--source-val-fraction" in flags:
        assert final["source_val_loss"] > 0 and 0.0 <= final["val_source-acc"] <= 1.0


def test_evaluate_a_checkpoint(script: ModuleType, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out = tmp_path / "run"
    assert run(script, capsys, "--out", str(out), "--select-by", "bnm")[0] == 0
    before = files(out)
    final = json.loads((out / "summary.json").read_text())["final"]
    capsys.readouterr()
    assert script.main(["--evaluate", str(out / "checkpoints" / "last.pt"), "--threads", "1"]) == 0
    stdout = capsys.readouterr().out
    assert f"target accuracy {100 * final['acc_fused']:.1f}% fused" in stdout
    assert "at step 20" in stdout and "bnm" in stdout and "synthetic data" in stdout
    assert script.main(["--evaluate", str(out / "checkpoints" / "selected.pt")]) == 0
    assert files(out) == before
    capsys.readouterr()  # training settings given with --evaluate are named as ignored
    ckpt = str(out / "checkpoints" / "last.pt")
    assert script.main(["--evaluate", ckpt, "--method", "mmd", "--threads", "1"]) == 0
    assert "ignored: --method" in capsys.readouterr().err


def test_analyse_measures_the_feature_space_before_and_after(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--analyse writes the figures and numbers of lacmfer.analysis at step 0 and at the end,
    keeps step 0's across a resume, and changes nothing in the training itself."""
    common = ["--write-weight-hash", "--steps", "10"]
    assert run(script, capsys, "--out", str(tmp_path / "plain"), *common)[0] == 0
    out = tmp_path / "run"
    assert run(script, capsys, "--out", str(out), *common, "--analyse", "--stop-at", "6")[0] == 0
    step_0 = json.loads((out / "analysis.json").read_text())["step_0"]
    assert run(script, capsys, "--out", str(out), *common, "--analyse", "--resume")[0] == 0
    assert weights(out) == weights(tmp_path / "plain")
    analysis = json.loads((out / "analysis.json").read_text())
    assert analysis["step_0"] == step_0 and "final" in analysis
    numbers = json.loads((out / "summary.json").read_text())["analysis"]
    for when in ("step_0", "final"):
        assert 0.0 <= numbers[when]["proxy_a"][0] <= 2.0 and numbers[when]["separation"] > 0
        assert len(numbers[when]["distances"]) == 6 and "points" not in numbers[when]
    assert numbers["seconds"] > 0
    assert (out / "features.png").stat().st_size > 0 and (out / "distances.png").stat().st_size > 0
    before = files(out)
    capsys.readouterr()
    ckpt = out / "checkpoints" / "last.pt"
    assert script.main(["--evaluate", str(ckpt), "--analyse", "--out", str(tmp_path / "eval")]) == 0
    assert (tmp_path / "eval" / "last_features.png").exists() and files(out) == before
    # a run analysed only from a resume on is analysed at that step, and says so
    late = tmp_path / "late"
    assert run(script, capsys, "--out", str(late), *common, "--stop-at", "6")[0] == 0
    assert run(script, capsys, "--out", str(late), *common, "--analyse", "--resume")[0] == 0
    assert set(json.loads((late / "analysis.json").read_text())) == {"step_6", "final", "seconds"}


# -------------------------------------------------------------------------------- bad inputs
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
        "RAF_test.txt": [f"RAF-DB/images/test_{i:04d}_aligned.jpg" for i in range(12)],
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


@pytest.fixture
def fake_protocol(tmp_path: Path) -> tuple[Path, Path]:
    pytest.importorskip("PIL")
    return _write_fake_protocol(tmp_path / "fer")


def real(lists: Path, data: Path, *extra: str) -> list[str]:
    return ["--data-root", str(data), "--lists", str(lists), "--domains", "CK+,JAFFE,RAF-DB",
            "--steps", "2", "--eval-every", "2", "--image-size", "32", "--num-workers", "0", *extra]  # fmt: skip


def test_real_image_lists_run_the_protocol(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    fake_protocol: tuple[Path, Path],
) -> None:  # fmt: skip
    lists, data = fake_protocol
    rc, stdout, err = run(
        script, capsys, *real(lists, data), "--target", "ck", "--out", str(tmp_path / "ck")
    )
    assert rc == 0, err
    summary = json.loads((tmp_path / "ck" / "summary.json").read_text())
    assert summary["target"] == "CK+" and summary["sources"] == ["JAFFE", "RAF-DB"]
    assert summary["data"] == "real" and "synthetic" not in stdout
    assert "split it into" in " ".join(summary["protocol_notes"])  # CK+: one list, split by subject
    assert summary["final"]["num_test"] < 24
    rc, *_ = run(script, capsys, *real(lists, data), "--target", "CK+", "--no-leakage-free",
                 "--out", str(tmp_path / "pub"), "--num-workers", "2")  # fmt: skip
    published = json.loads((tmp_path / "pub" / "summary.json").read_text())
    assert rc == 0 and published["final"]["num_test"] == 24
    assert "leaks test images" in " ".join(published["protocol_notes"])


def test_skip_unreadable_drops_the_bad_images_and_says_how_many(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    fake_protocol: tuple[Path, Path],
) -> None:  # fmt: skip
    lists, data = fake_protocol
    (data / "JAFFE/images/img_3.png").write_bytes(b"not a png")
    (data / "RAF-DB/images/test_0003_aligned.jpg").unlink()
    rc, stdout, err = run(script, capsys, *real(lists, data), "--target", "RAF-DB", "--skip-unreadable",
                          "--out", str(tmp_path / "run"))  # fmt: skip
    assert rc == 0, err
    assert "without 2 missing or unreadable images" in stdout
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["final"]["num_test"] == 11


def _break(lists: Path, data: Path, tmp_path: Path, case: str) -> list[str]:
    """The command line of one of the mistakes a user makes, after making it."""
    jaffe = lists / "JAFFE.txt"
    lines = jaffe.read_text().splitlines()
    if case == "no --data-root":
        return ["--lists", str(lists), "--target", "CK+"]
    if case == "nonexistent --data-root":
        return real(lists, tmp_path / "nowhere")
    if case == "root missing most images":
        for p in list((data / "RAF-DB").rglob("*"))[2:]:
            if p.is_file():
                p.unlink()
    elif case == "one missing test image":
        (data / "RAF-DB/images/test_0005_aligned.jpg").unlink()
    elif case == "corrupt jpg":
        (data / "RAF-DB/images/test_0002_aligned.jpg").write_bytes(b"\xff\xd8garbage")
    elif case == "list line without a label":
        jaffe.write_text("\n".join([*lines[:3], lines[3].rsplit(" ", 1)[0], *lines[4:]]) + "\n")
    elif case == "CSV list":
        jaffe.write_text("\n".join(line.replace(" ", ",") for line in lines) + "\n")
    elif case == "label 7":
        jaffe.write_text("\n".join([lines[0].rsplit(" ", 1)[0] + " 7", *lines[1:]]) + "\n")
    elif case == "missing list file":
        jaffe.unlink()
    elif case == "misspelled --target":
        return real(lists, data, "--target", "RAFDBX")
    elif case == "--resume to a missing file":
        return ["--resume", str(tmp_path / "nothing.pt")]
    elif case == "--resume to a corrupt file":
        (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04 not a zip")
        return ["--resume", str(tmp_path / "corrupt.pt")]
    elif case == "--resume to a truncated file":
        good = tmp_path / "good.pt"
        torch.save({"config": {}, "step": 1, "model": {"w": torch.zeros(1000)}}, good)
        (tmp_path / "truncated.pt").write_bytes(good.read_bytes()[:300])
        return ["--resume", str(tmp_path / "truncated.pt")]
    elif case == "--steps 0":
        return ["--steps", "0"]
    elif case == "--steps -5":
        return ["--steps", "-5"]
    elif case == "unwritable --out":
        (tmp_path / "a-file").write_text("")
        return ["--out", str(tmp_path / "a-file" / "run")]
    elif case == "malformed YAML --config":
        (tmp_path / "bad.yaml").write_text("steps: [1, 2\n")
        return ["--config", str(tmp_path / "bad.yaml")]
    elif case == "true for a number in --config":
        (tmp_path / "flag.yaml").write_text("steps: true\n")
        return ["--config", str(tmp_path / "flag.yaml")]
    elif case == "a bad device in --config":
        (tmp_path / "device.yaml").write_text("device: gpu\n")
        return ["--preset", "smoke", "--config", str(tmp_path / "device.yaml")]
    elif case == "missing --encoder-weights":
        return ["--encoder-weights", str(tmp_path / "none.pth")]
    elif case == "a word for a switch in --config":
        (tmp_path / "word.yaml").write_text('augment: "no"\n')
        return ["--config", str(tmp_path / "word.yaml")]
    elif case in ONE_FLAG:
        return ONE_FLAG[case]
    elif case == "empty list file":
        jaffe.write_text("")
    elif case == "--lists naming a file":
        return real(lists, data, "--lists", str(jaffe))
    elif case == "--resume to a folder":
        return ["--resume", str(tmp_path)]
    elif case == "image cut short, --check-images full":
        image = data / "JAFFE/images/img_3.png"
        image.write_bytes(image.read_bytes()[:-40])
        return real(lists, data, "--target", "RAF-DB", "--check-images", "full")
    elif case == "missing --affectnet-lists":
        return real(lists, data, "--domains", "CK+,JAFFE,AffectNet", "--affectnet-lists",
                    f"{tmp_path}/a.txt,{tmp_path}/b.txt")  # fmt: skip
    return real(lists, data, "--target", "RAF-DB")


#: Mistakes of one flag: the command line, and what the message must say.
ONE_FLAG = {
    "one domain": ["--domains", "JAFFE"],
    "a domain twice": ["--domains", "CK+,CK+,JAFFE", "--target", "JAFFE"],
    "--target outside --domains": ["--domains", "CK+,RAF-DB", "--target", "JAFFE"],
    "--lr -1": ["--lr", "-1"],
    "--momentum nan": ["--momentum", "nan"],
    "--decay-gamma -20": ["--decay-gamma", "-20"],
    "--batch-size 1": ["--batch-size", "1"],
    "--target-batch-size 1": ["--target-batch-size", "1"],
    "--device foo": ["--device", "foo"],
    "--device mps": ["--device", "mps"],
    "--source-val-fraction 0.999": ["--source-val-fraction", "0.999"],
    "--synthetic-train-size 1": ["--synthetic-train-size", "1"],
}

MISTAKES = {
    "no --data-root": "--lists", "nonexistent --data-root": "--data-root",
    "root missing most images": "missing or do not decode", "one missing test image": "test_0005",
    "corrupt jpg": "test_0002", "list line without a label": "JAFFE.txt", "CSV list": "JAFFE.txt",
    "label 7": "label 7", "missing list file": "JAFFE.txt", "misspelled --target": "--target RAFDBX",
    "--resume to a missing file": "nothing.pt", "--resume to a corrupt file": "corrupt.pt",
    "--resume to a truncated file": "truncated.pt", "--steps 0": "--steps", "--steps -5": "--steps",
    "unwritable --out": "--out", "malformed YAML --config": "bad.yaml",
    "a word for a switch in --config": "'augment' must be true or false",
    "true for a number in --config": "flag.yaml: setting 'steps' takes a value",
    "a bad device in --config": "device.yaml: --device gpu",
    "missing --encoder-weights": "none.pth: no such file",
    "one domain": "--domains JAFFE", "a domain twice": "--domains CK+,CK+,JAFFE",
    "--target outside --domains": "--target JAFFE: not one of --domains CK+,RAF-DB",
    "--lr -1": "--lr must be > 0", "--momentum nan": "--momentum must be >= 0",
    "--decay-gamma -20": "--decay-gamma", "--batch-size 1": "--batch-size",
    "--target-batch-size 1": "--target-batch-size", "--device foo": "--device foo",
    "--device mps": "--device mps", "--source-val-fraction 0.999": "--source-val-fraction 0.999",
    "--synthetic-train-size 1": "--synthetic-train-size", "empty list file": "JAFFE",
    "--lists naming a file": "not a folder", "--resume to a folder": "is a folder",
    "image cut short, --check-images full": "img_3.png",
    "missing --affectnet-lists": "--affectnet-lists",
}  # fmt: skip


@pytest.mark.parametrize("case", list(MISTAKES))
def test_each_mistake_is_one_line_before_any_step(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    fake_protocol: tuple[Path, Path], case: str,
) -> None:  # fmt: skip
    lists, data = fake_protocol
    argv = _break(lists, data, tmp_path, case)
    out = tmp_path / "out"
    rc, stdout, err = run(script, capsys, "--out", str(out), *argv)
    assert rc == 2
    assert err.startswith("train_cmfer.py: error: ") and err.count("\n") == 1, err
    assert MISTAKES[case] in err
    assert "Traceback" not in err and "step 1/" not in stdout
    assert not out.exists()  # nothing written, not even an empty --out


def test_a_checkpoint_with_code_in_it_is_not_run(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checkpoints are read with ``weights_only=True``: a pickle that would run code is refused."""
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> Any:
            return (Path.touch, (marker,))

    with (tmp_path / "evil.pt").open("wb") as f:
        pickle.dump({"config": {}, "step": 1, "model": Payload()}, f)
    rc, _, err = run(
        script, capsys, "--out", str(tmp_path / "o"), "--resume", str(tmp_path / "evil.pt")
    )
    assert rc == 2 and "evil.pt" in err and not marker.exists()


def test_a_corrupt_encoder_file_is_one_line(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "enc.pth").write_bytes(b"garbage")
    rc, _, err = run(
        script, capsys, "--out", str(tmp_path / "o"), "--encoder-weights", str(tmp_path / "enc.pth")
    )
    assert rc == 2 and err.count("\n") == 1 and "--encoder-weights" in err
    assert "weights_only" not in err


def test_progress_lines(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A flushed line per logged step with the losses, images/s and the time left; none with
    --no-progress (SMOKE passes it)."""
    argv = ["--steps", "4", "--log-every", "2", "--eval-every", "4", "--no-plots"]
    rc, stdout, _ = run(script, capsys, "--out", str(tmp_path / "a"), *argv, "--progress")
    assert rc == 0
    lines = [line for line in stdout.splitlines() if "| step " in line]
    assert [line.split("| step ")[1].split(" ")[0] for line in lines] == ["2/4", "4/4"]
    assert all("img/s" in line and "ETA" in line for line in lines)
    rc, stdout, _ = run(script, capsys, "--out", str(tmp_path / "b"), *argv)
    assert rc == 0 and "| step " not in stdout


# --------------------------------------------------------------------------------- devices
@pytest.mark.slow
def test_compile_runs(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = run(script, capsys, "--out", str(tmp_path), "--steps", "2", "--eval-every", "2",
                     "--compile", "--no-plots")  # fmt: skip
    assert rc == 0, err


def test_fp16_on_cpu_runs_without_the_schedulers_warning(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc, _, err = run(script, capsys, "--out", str(tmp_path), "--amp", "fp16", "--no-plots",
                         "--steps", "4", "--eval-every", "4")  # fmt: skip
    assert rc == 0, err
    assert not [
        w for w in caught if "lr_scheduler.step" in str(w.message)
    ]  # a skipped step is meant
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["completed"] and math.isfinite(summary["final"]["acc_fused"])


@pytest.mark.gpu
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_cuda_amp_channels_last(script: ModuleType, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str], amp: str) -> None:  # fmt: skip
    rc, _, err = run(script, capsys, "--out", str(tmp_path), "--device", "cuda", "--amp", amp,
                     "--steps", "4", "--eval-every", "4", "--no-plots")  # fmt: skip
    assert rc == 0, err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["completed"] and math.isfinite(summary["final"]["acc_fused"])


def test_a_nan_validator_score_is_never_selected(script: ModuleType) -> None:
    # NaN > x is False: a first evaluation scoring NaN (a diverged model) used to stay selected
    # whatever came after, and a finite score could never replace it
    scores = iter([math.nan, 0.2, math.nan, 0.5, 0.1])
    logged: list[dict[str, Any]] = []
    run = SimpleNamespace(step=0, oracle=None, selected=None, main=False,
                          args=SimpleNamespace(select_by="snd"),
                          log=SimpleNamespace(write=logged.append))  # fmt: skip

    def evaluate() -> dict[str, Any]:
        run.step += 1
        return {**{k: 0.5 for k in script.SUMMARY_KEYS if k != "step"}, "val_snd": next(scores)}

    run.evaluate = evaluate
    chosen = []
    for _ in range(5):
        script.Run.evaluate_and_log(run)
        chosen.append(run.selected["step"] if run.selected else None)
    assert chosen == [0, 1, 1, 3, 3] and run.selected["score"] == 0.5
