"""Tests of examples/benchmark/run_benchmark.py: the statistics against hand computations, the
tables generated from records, the budget rule, and tiny end-to-end studies whose records
reproduce from their commands."""

from __future__ import annotations

import json
import math
import shlex
import statistics
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_t_quantile_matches_tables(benchmark_driver: ModuleType) -> None:
    # Student's t, two-sided 95 %: df 1 -> 12.706, 5 -> 2.571, 17 -> 2.110, 100 -> 1.984
    for df, want in ((1, 12.706), (5, 2.571), (17, 2.110), (100, 1.984)):
        assert benchmark_driver.t_quantile(0.975, df) == pytest.approx(want, abs=2e-3)


def test_mean_std_shows_no_spread_for_one_run(benchmark_driver: ModuleType) -> None:
    assert benchmark_driver.mean_std([80.0, 82.0, 87.0]) == "83.0 ± 3.6"  # sample std: sqrt(13)
    assert benchmark_driver.mean_std([93.8]) == "93.8 (1 run)"  # not "± 0.0"
    assert benchmark_driver.mean_std([]) == "–"


def test_spearman_against_definition(benchmark_driver: ModuleType) -> None:
    x, y = [1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 1.0, 4.0, 3.0, 5.0]
    assert benchmark_driver.spearman(x, y) == pytest.approx(1 - 6 * 4 / (5 * 24))
    assert benchmark_driver.spearman(x, [-v for v in x]) == pytest.approx(-1.0)
    assert math.isnan(benchmark_driver.spearman(x, [1.0] * 5))  # a constant side
    assert benchmark_driver.spearman([1.0, 1.0, 2.0], [1.0, 2.0, 3.0]) == pytest.approx(
        statistics.correlation([0.5, 0.5, 2.0], [0.0, 1.0, 2.0])
    )


def record(
    method: str, target: str, seed: int, acc: float, variant: Any = (), **extra: Any
) -> dict[str, Any]:
    evals = [{"step": s, "acc": acc - 3 + s, "entropy": float(s)} for s in range(4)]
    return {"method": method, "target": target, "seed": seed, "variant": list(variant),
            "final_acc": acc, "selected_acc": acc - 1, "validator": "snd", "oracle_acc": acc + 1,
            "evals": evals, "steps": 250, "batch": 32, **extra}  # fmt: skip


def test_tables_are_generated_from_records(benchmark_driver: ModuleType) -> None:
    accs = {("source-only", "A", 0): 50.0, ("source-only", "A", 1): 52.0,
            ("source-only", "B", 0): 40.0, ("source-only", "B", 1): 42.0,
            ("lacmfer", "A", 0): 55.0, ("lacmfer", "A", 1): 58.0,
            ("lacmfer", "B", 0): 41.0, ("lacmfer", "B", 1): 47.0}  # fmt: skip
    records = [record(m, t, s, a) for (m, t, s), a in accs.items()]
    text = "\n".join(benchmark_driver.main_tables(records, ["A", "B"], "title"))
    lac = [55.0, 58.0]
    assert f"| A | 51.0 ± 1.4 | {statistics.fmean(lac):.1f} ± {statistics.stdev(lac):.1f} |" in text
    per_seed = [48.0, 52.5]  # mean over targets per seed, then mean ± std over seeds
    assert f"**{statistics.fmean(per_seed):.1f} ± {statistics.stdev(per_seed):.1f}**" in text
    diffs = [5.0, 6.0, 1.0, 5.0]
    half = 3.182 * statistics.stdev(diffs) / 2  # t(0.975, 3) = 3.182
    mean = statistics.fmean(diffs)
    assert (
        f"| LA-CMFER | {mean:+.1f} [{mean - half:+.1f}, {mean + half:+.1f}] (n = 4, better) |"
        in text
    )
    assert "selection on the test set, NOT a valid result" in text
    assert "| entropy | 1.0 ± 0.0 |" in benchmark_driver.validator_tables(records)


def test_variants_and_ablations_are_reported_apart(benchmark_driver: ModuleType) -> None:
    warm, no_sid = benchmark_driver.VARIANTS["warm start"], benchmark_driver.VARIANTS["w/o SID"]
    accs = {("source-only", 0): 50.0, ("source-only", 1): 40.0, ("source-only", 2): 45.0,
            ("lacmfer", 0): 44.0, ("lacmfer", 1): 41.0, ("lacmfer", 2): 42.0}  # fmt: skip
    records = [record(m, "A", s, a) for (m, s), a in accs.items()]
    records += [record("lacmfer", "A", s, a, warm) for s, a in ((0, 52.0), (1, 41.0), (2, 48.0))]
    records += [record("lacmfer", "A", s, a, no_sid) for s, a in ((0, 57.0), (1, 43.0), (2, 47.0))]
    text = benchmark_driver.short_tables(records, ["A"], ablation_seeds=[0])
    cells = [f"{statistics.fmean(v):.1f} ± {statistics.stdev(v):.1f}"
             for v in ([50, 40, 45], [44, 41, 42], [57, 43, 47], [52, 41, 48])]  # fmt: skip
    assert "| A | " + " | ".join(cells) + " |" in text  # source-only, LA-CMFER, w/o SID, warm
    pd = benchmark_driver.paired_difference
    renamed = [{**r, "method": "x"} for r in records if r["variant"] == warm] + records[:3]
    assert f"| warm start | {pd(renamed, 'x')} |" in text
    fresh = [r for r in records if r["seed"] != 0]  # w/o SID was chosen on seed 0
    fresh = [{**r, "method": "y"} if r["variant"] == no_sid else r for r in fresh]
    assert f"seeds [1, 2] alone: {pd(fresh, 'y')}" in text and "(n = 2," in text
    assert "seed(s) [0]" in text and "| A | 44.0 | 57.0 |" in text  # the ablation table


def test_the_budget_rule_picks_the_first_budget_that_stops_improving(
    benchmark_driver: ModuleType,
) -> None:
    flags = list(benchmark_driver.RULE_FLAGS)
    losses = {250: 1.0, 500: 0.8, 1000: 0.7, 2000: 0.69, 4000: 0.60}  # 1000 -> 2000: -1.4 %
    records = [{**record("source-only", t, 0, 50.0, flags, steps=b),
                "evals": [{"step": b, "acc": 50.0, "source-acc": 0.8, "source_val_loss": loss}]}
               for b, loss in losses.items() for t in ("A", "B")]  # fmt: skip
    text, chosen = benchmark_driver.rule_tables(records, ["A", "B"])
    assert chosen == 1000 and "Chosen: **1000 steps**" in text
    _, chosen = benchmark_driver.rule_tables([r for r in records if r["steps"] != 2000], ["A", "B"])
    assert chosen is None  # the budget after 1000 is missing: not decided yet


def test_the_curve_reports_differences_and_why(benchmark_driver: ModuleType) -> None:
    train = {"ce": 1.5, "effective_s_g": 7.0, "effective_t_g": 3.0}
    rows = []
    for steps, gain in ((250, -5.0), (1000, 2.0)):
        for seed in (0, 1, 2):
            rows.append(record("source-only", "CK+", seed, 50.0 + seed, steps=steps, train=train))
            rows.append(
                record(
                    "lacmfer",
                    "CK+",
                    seed,
                    50.0 + seed + gain + 0.1 * seed,
                    steps=steps,
                    train=train,
                )
            )
    text, points = benchmark_driver.curve_tables(rows)
    assert "| 32 | 1000 | LA-CMFER | " in text and "| 1.50 | 7.0 / 3.0 | 3 |" in text
    by_steps = {p["steps"]: p for p in points if p["method"] == "LA-CMFER"}
    assert by_steps[250]["mean"] == pytest.approx(-5.0 + 0.1) and by_steps[1000][
        "mean"
    ] == pytest.approx(2.1)
    assert by_steps[1000]["lo"] < 2.1 < by_steps[1000]["hi"]
    # per target: the mean ± std over the seeds of each method (source-only: 50, 51, 52)
    assert "| 32 | 1000 | CK+ | 53.1 ± 1.1 | – | 51.0 ± 1.0 | – |" in text
    # SID's own effect: LA-CMFER against its ablation, paired over the (target, seed) pairs
    for seed in (0, 1, 2):
        rows.append(record("lacmfer", "CK+", seed, 50.0 + seed, ["--no-sid"], steps=1000))
    text, _ = benchmark_driver.curve_tables(rows)
    row = next(x for x in text.splitlines() if x.startswith("| 32 | 1000 | LA-CMFER |"))
    assert row.split(" | ")[6].startswith("+2.1 [")  # the "vs w/o SID" column


TINY = ["--preset", "smoke", "--jobs", "2", "--", "--synthetic-train-size", "16",
        "--synthetic-test-size", "16", "--no-plots", "--select-by", "entropy"]  # fmt: skip


def paths(tmp_path: Path) -> list[str]:
    return ["--runs", str(tmp_path / "runs"), "--records", str(tmp_path / "runs.jsonl"),
            "--results", str(tmp_path / "results"), "--figure", str(tmp_path / "curve.png")]  # fmt: skip


def test_tiny_short_study_resumes_and_records_reproduce(
    benchmark_driver: ModuleType, tmp_path: Path
) -> None:
    args = ["short", "--seeds", "0", "--targets", "jaffe", "--methods", "source-only", "lacmfer",
            *paths(tmp_path), *TINY, "--steps", "3", "--eval-every", "1"]  # fmt: skip
    assert benchmark_driver.main(args) == 0
    rows = [json.loads(x) for x in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert sorted((r["method"], tuple(r["variant"])) for r in rows) == sorted([
        ("lacmfer", ()), ("lacmfer", ("--consistency", "none")), ("lacmfer", ("--no-cid",)),
        ("lacmfer", ("--no-sid",)), ("lacmfer", ("--no-voting",)),
        ("lacmfer", tuple(benchmark_driver.VARIANTS["warm start"])), ("source-only", ()),
    ])  # fmt: skip
    for r in rows:
        assert r["target"] == "JAFFE" and r["validator"] == "entropy"
        assert 0 <= r["final_acc"] <= r["oracle_acc"] <= 100
        assert [e["step"] for e in r["evals"]] == [1, 2, 3] and "snd" in r["evals"][0]
        assert r["command"].startswith("OMP_NUM_THREADS=1 ") and r["train"]["ce"] > 0
    text = (tmp_path / "results" / "synthetic_benchmark.md").read_text()
    assert (
        "| JAFFE |" in text and "w/o SID" in text and "Variants beyond the paper's recipe" in text
    )
    assert "| snd |" in (tmp_path / "results" / "validators.md").read_text()
    assert benchmark_driver.main(args) == 0  # a second start finds every run in the records
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 7
    one = next(r for r in rows if r["method"] == "lacmfer" and not r["variant"])
    again = tmp_path / "again"
    argv = shlex.split(one["command"].split(" ", 2)[2].replace(str(tmp_path / "runs"), str(again)))
    argv[0] = sys.executable
    subprocess.run(
        argv,
        cwd=ROOT,
        check=True,
        capture_output=True,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    summary = json.loads(next(again.rglob("summary.json")).read_text())
    assert 100 * summary["final"]["acc_fused"] == pytest.approx(one["final_acc"], abs=1e-9)


def test_an_interrupted_run_resumes_to_the_record_of_one_uninterrupted_run(
    benchmark_driver: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rule = ["rule", "--curve-targets", "jaffe", "--budgets", "8"]
    assert benchmark_driver.main([*rule, *paths(tmp_path / "whole"), *TINY]) == 0
    (whole,) = [json.loads(x) for x in (tmp_path / "whole" / "runs.jsonl").read_text().splitlines()]
    # the same run stopped after step 5, as an interruption after that step's checkpoint leaves it
    cut_runs = str(tmp_path / "cut" / "runs")
    argv = shlex.split(
        whole["command"].split(" ", 2)[2].replace(str(tmp_path / "whole" / "runs"), cut_runs)
    )
    argv[0] = sys.executable
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    subprocess.run([*argv, "--stop-at", "5"], cwd=ROOT, check=True, capture_output=True, env=env)
    first = json.loads(next((tmp_path / "cut").rglob("summary.json")).read_text())["train_time_s"]
    calls: list[list[str]] = []
    real_run = subprocess.run

    def spy(args: list[str], **kwargs: Any) -> Any:
        if "--dry-run" not in args:  # the check of the settings before the runs start
            calls.append(list(args))
        return real_run(args, **kwargs)

    monkeypatch.setattr(benchmark_driver.subprocess, "run", spy)
    assert benchmark_driver.main([*rule, *paths(tmp_path / "cut"), *TINY]) == 0
    (cut,) = [json.loads(x) for x in (tmp_path / "cut" / "runs.jsonl").read_text().splitlines()]
    (call,) = calls
    assert call[-3:] == ["--ckpt-every", "1", "--resume"]  # 8 steps: a checkpoint every step
    assert cut["resumed"] is True and "resumed" not in whole
    assert cut["command"] == whole["command"].replace(str(tmp_path / "whole" / "runs"), cut_runs)
    for key in ("final_acc", "selected_acc", "oracle_acc", "evals", "train"):
        assert cut[key] == whole[key], key
    # the training time counts both processes; the driver's wall time only the resumed one
    assert first > 0 and cut["train_s"] >= round(first, 1)
    text = (tmp_path / "cut" / "results" / "budget_rule.md").read_text()
    assert "1 resumed after an interruption" in text
    assert f"training steps {cut['train_s'] / 3600:.1f} h (resumes included)" in text


def test_a_failed_run_stops_no_other_and_is_not_recorded(
    benchmark_driver: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    real_execute = benchmark_driver.execute

    def execute(j: dict[str, Any]) -> dict[str, Any]:
        if j["steps"] == 4:
            raise RuntimeError(f"run failed: {j['command']}")
        return real_execute(j)

    monkeypatch.setattr(benchmark_driver, "execute", execute)
    argv = ["rule", "--curve-targets", "jaffe", "--budgets", "2", "4", "8", *paths(tmp_path), *TINY]
    assert benchmark_driver.main(argv) == 1
    rows = [json.loads(x) for x in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert sorted(r["steps"] for r in rows) == [2, 8]  # the run after the failed one is recorded
    err = capsys.readouterr().err
    assert "run failed" in err and "1 run(s) failed" in err
    assert "Still to run: 1 of 3 runs" in (tmp_path / "results" / "budget_rule.md").read_text()


@pytest.mark.parametrize(
    ("argv", "says"),
    [(["curve", "--jobs", "0"], "--jobs"), (["curve", "--batches", "1"], "--batches"),
     (["curve", "--budgets", "-5"], "--budgets"), (["curve", "--device", "tpu"], "--device"),
     (["curve", "--seeds", "x"], "--seeds"), (["nonsense"], "study")],
)  # fmt: skip
def test_a_mistake_is_one_line_naming_the_option(
    benchmark_driver: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    argv: list[str], says: str,
) -> None:  # fmt: skip
    with pytest.raises(SystemExit) as stop:
        benchmark_driver.main([*argv, *paths(tmp_path)])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and says in err, err
    assert not (tmp_path / "runs.jsonl").exists()


@pytest.mark.parametrize(
    ("change", "says"),
    [("records folder", "--records"), ("preset", "--preset nosuch"),
     ("bad extra flag", "unrecognized arguments: --bogus"),
     ("bad extra value", "--lr must be > 0"), ("no trained budget", "--results")],
)  # fmt: skip
def test_a_mistake_in_what_the_runs_get_stops_before_any_run(
    benchmark_driver: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    change: str, says: str,
) -> None:  # fmt: skip
    argv = ["rule", "--curve-targets", "jaffe", "--budgets", "2", *paths(tmp_path), *TINY]
    if change == "records folder":
        (tmp_path / "folder").mkdir()
        argv[argv.index("--records") + 1] = str(tmp_path / "folder")
    elif change == "preset":
        argv[argv.index("--preset") + 1] = "nosuch"
    elif change == "bad extra flag":
        argv += ["--bogus"]
    elif change == "bad extra value":
        argv += ["--lr", "-1"]
    else:
        argv[0] = "trained"
    with pytest.raises(SystemExit) as stop:
        benchmark_driver.main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and says in err, err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "runs.jsonl").exists()


def test_the_figure_follows_results(
    benchmark_driver: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # --results elsewhere and no --figure: the figure goes there too, never into the docs.
    drawn: list[Path] = []
    monkeypatch.setattr(benchmark_driver, "curve_figure", lambda points, path: drawn.append(path))
    argv = ["curve", *paths(tmp_path), "--tables-only"]
    del argv[argv.index("--figure") : argv.index("--figure") + 2]
    assert benchmark_driver.main(argv) == 0
    assert drawn == [tmp_path / "results" / "budget_curve.png"]


def test_an_unwritable_records_file_is_refused_before_any_run(
    benchmark_driver: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a-file").write_text("")
    argv = ["rule", "--curve-targets", "jaffe", "--budgets", "2", *paths(tmp_path), *TINY]
    argv[argv.index("--records") + 1] = str(tmp_path / "a-file" / "runs.jsonl")
    with pytest.raises(SystemExit) as stop:
        benchmark_driver.main(argv)
    assert stop.value.code == 2 and "--records" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_tiny_rule_and_curve_studies(benchmark_driver: ModuleType, tmp_path: Path) -> None:
    rule = ["rule", "--curve-targets", "jaffe", "--budgets", "2", "4", "8", *paths(tmp_path), *TINY]
    assert benchmark_driver.main(rule) == 0
    rows = [json.loads(x) for x in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert sorted(r["steps"] for r in rows) == [2, 4, 8]
    assert all("source_val_loss" in r["evals"][-1] for r in rows)
    assert "--source-val-fraction 0.1" in rows[0]["command"] and "--steps" in rows[0]["command"]
    assert "budget rule" in (tmp_path / "results" / "budget_rule.md").read_text()
    curve = ["curve", "--seeds", "0", "--curve-targets", "jaffe", "--batches", "8", "--budgets", "2",
             *paths(tmp_path), *TINY]  # fmt: skip
    (tmp_path / "results" / "curve_notes.md").write_text("## Reading the curve\n")
    assert benchmark_driver.main(curve) == 0
    text = (tmp_path / "results" / "budget_curve.md").read_text()
    assert "| 8 | 2 | LA-CMFER w/o SID |" in text and "| 8 | 2 | MMD |" in text
    assert text.index("| 8 | 2 | MMD |") < text.index("## Reading the curve")  # notes after tables
    assert "Still to run" not in text
    more = ["curve", "--tables-only", *curve[1 : curve.index("--budgets") + 2], "4"]
    more += curve[curve.index("--budgets") + 2 :]
    assert benchmark_driver.main(more) == 0  # a partial table says so
    text = (tmp_path / "results" / "budget_curve.md").read_text()
    assert "**Still to run: 4 of 8 runs** (4 at 4 steps of 8 + 8)" in text


def test_several_studies_share_one_pool_and_a_shared_run_runs_once(
    benchmark_driver: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "trained_budget.json").write_text('{"budget": 2}')
    ran: list[str] = []
    real_execute = benchmark_driver.execute

    def execute(j: dict[str, Any]) -> dict[str, Any]:
        ran.append(j["command"])
        return real_execute(j)

    monkeypatch.setattr(benchmark_driver, "execute", execute)
    # the curve at 2 steps of 32 + 32 and the trained table at budget 2 share three runs
    argv = ["curve", "trained", "--seeds", "0", "--curve-targets", "jaffe", "--targets", "jaffe",
            "--methods", "source-only", "lacmfer", "mmd", "coral", "--batches", "32", "--budgets",
            "2", *paths(tmp_path), *TINY]  # fmt: skip
    assert benchmark_driver.main(argv) == 0
    # curve: source-only, LA-CMFER, its ablation, MMD; trained: those three + CORAL
    assert len(ran) == len(set(ran)) == 5
    rows = [json.loads(x) for x in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert sorted(r["command"] for r in rows) == sorted(ran)
    curve = (tmp_path / "results" / "budget_curve.md").read_text()
    trained = (tmp_path / "results" / "trained_benchmark.md").read_text()
    assert "Still to run" not in curve and "Still to run" not in trained
    # each table names the command of its own study, which rewrites it
    assert "Generated by `python examples/benchmark/run_benchmark.py curve --seeds" in curve
    assert "Generated by `python examples/benchmark/run_benchmark.py trained --seeds" in trained
    assert "| target | source-only | MMD | CORAL | LA-CMFER |" in trained
    assert benchmark_driver.main(argv) == 0 and len(ran) == 5  # a second start runs nothing


def test_the_trained_table_waits_for_the_rule(
    benchmark_driver: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        benchmark_driver.main(["rule", "trained", *paths(tmp_path)])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and "run rule first" in err


def test_runs_pair_only_within_one_kind_of_machine(benchmark_driver: ModuleType) -> None:
    a = {"cpu": "A", "cpu_capability": "AVX512", "encoder_sha256": "1"}
    b = {"cpu": "B", "cpu_capability": "AVX2", "encoder_sha256": "2"}

    def rec(method: str, seed: int, acc: float, env: Any = None) -> dict[str, Any]:
        r = {"target": "CK+", "seed": seed, "method": method, "final_acc": acc}
        return {**r, "environment": env} if env is not None else r

    rows = [rec("source-only", 0, 80.0), rec("lacmfer", 0, 83.0),  # before environments: one kind
            rec("source-only", 1, 70.0, a), rec("lacmfer", 1, 75.0, a),
            rec("source-only", 2, 60.0, a), rec("lacmfer", 2, 90.0, b)]  # fmt: skip
    assert benchmark_driver.differences(rows, "lacmfer") == [3.0, 5.0]  # seed 2 mixes two kinds


def test_a_group_no_one_kind_has_complete_is_made_whole_here(
    benchmark_driver: ModuleType,
) -> None:
    d = benchmark_driver
    here = {"cpu": "Here", "cpu_capability": "AVX2"}
    there = {"cpu": "There", "cpu_capability": "AVX512"}
    jobs = [d.job(m, t, s) for s in (0, 1, 2) for t in ("CK+", "JAFFE") for m in ("mmd", "coral")]
    by = {(j["method"], j["target"], j["seed"]): j for j in jobs}

    def rec(method: str, target: str, seed: int, env: Any) -> dict[str, Any]:
        return {"command": by[(method, target, seed)]["command"], "method": method,
                "target": target, "seed": seed, **({"environment": env} if env else {})}  # fmt: skip

    records = [
        rec("mmd", "CK+", 0, there), rec("coral", "CK+", 0, there),  # whole there: kept
        rec("mmd", "JAFFE", 0, None), rec("coral", "JAFFE", 0, None),  # whole, unrecorded kind
        rec("mmd", "CK+", 1, there),  # coral missing: the group is made here, mmd again
        rec("mmd", "JAFFE", 1, here), rec("coral", "JAFFE", 1, there),  # split between two kinds
        rec("mmd", "CK+", 2, here),  # begun here: only coral is missing
    ]  # fmt: skip
    kind = ("Here", "AVX2", None)
    todo = {(j["method"], j["target"], j["seed"]) for j in d.still_to_run(jobs, records, kind)}
    assert todo == {("mmd", "CK+", 1), ("coral", "CK+", 1), ("coral", "JAFFE", 1),
                    ("coral", "CK+", 2), ("mmd", "JAFFE", 2), ("coral", "JAFFE", 2)}  # fmt: skip
    # made there, every group is complete but two
    todo = d.still_to_run(jobs, records, ("There", "AVX512", None))
    assert {(j["method"], j["target"], j["seed"]) for j in todo} == {
        ("coral", "CK+", 1), ("mmd", "JAFFE", 1), ("mmd", "CK+", 2), ("coral", "CK+", 2),
        ("mmd", "JAFFE", 2), ("coral", "JAFFE", 2),
    }  # fmt: skip
    # the tables count a run once: from the kind holding most of its group (a tie: the later)
    records += [rec("coral", "CK+", 1, here), rec("mmd", "CK+", 1, here),
                rec("mmd", "CK+", 0, here)]  # fmt: skip
    rows = d.counted(jobs, records)
    kinds = {(r["method"], r["target"], r["seed"]): d.kind(r)[0] for r in rows}
    assert len(kinds) == len(rows) == 9
    assert kinds[("mmd", "CK+", 0)] == kinds[("coral", "CK+", 0)] == "There"  # 2 against 1
    assert kinds[("mmd", "CK+", 1)] == kinds[("coral", "CK+", 1)] == "Here"  # 2 against 1
    assert kinds[("mmd", "JAFFE", 1)] == "Here" and kinds[("coral", "JAFFE", 1)] == "There"
    assert [r for r in records if r in rows] == rows  # in file order


def test_runs_made_on_another_kind_of_machine_are_made_again_and_kept_beside(
    benchmark_driver: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    curve = ["curve", "--seeds", "0", "--curve-targets", "jaffe", "--batches", "8", "--budgets", "2",
             *paths(tmp_path), *TINY]  # fmt: skip
    assert benchmark_driver.main(curve) == 0
    records = tmp_path / "runs.jsonl"
    mine = [json.loads(x) for x in records.read_text().splitlines()]
    assert len(mine) == 4 and {benchmark_driver.kind(r) for r in mine} == {
        benchmark_driver.this_machine("cpu")
    }
    # as if made on another kind of machine, MMD not yet; source-only's folder came from there
    there = {"cpu": "Elsewhere CPU", "cpu_capability": "AVX512", "encoder_sha256": "x"}
    theirs = [{**r, "environment": there} for r in mine if r["method"] != "mmd"]
    records.write_text("".join(json.dumps(r) + "\n" for r in theirs))
    folder = tmp_path / "runs" / "b8_s2" / "seed0" / "JAFFE"
    summary = json.loads((folder / "source-only" / "summary.json").read_text())
    (folder / "source-only" / "summary.json").write_text(
        json.dumps({**summary, "environment": there})
    )
    ran: list[list[str]] = []
    real_run = benchmark_driver.subprocess.run

    def spy(args: list[str], **kwargs: Any) -> Any:
        if "--dry-run" not in args:
            ran.append(list(args))
        return real_run(args, **kwargs)

    monkeypatch.setattr(benchmark_driver.subprocess, "run", spy)
    assert benchmark_driver.main(curve) == 0
    assert len(ran) == 4  # MMD, and the three others again, so that the group pairs
    # source-only's folder, made elsewhere, is set aside and the run made anew; the other folders
    # hold finished runs made here, which their records are read from
    (fresh,) = [c for c in ran if "--resume" not in c]
    assert fresh[fresh.index("--out") + 1] == str(folder / "source-only")
    aside = folder / "source-only.from-Elsewhere-CPU-AVX512"
    assert json.loads((aside / "summary.json").read_text())["environment"] == there  # kept
    rows = [json.loads(x) for x in records.read_text().splitlines()]
    assert len(rows) == 3 + 4 and rows[:3] == theirs
    text = (tmp_path / "results" / "budget_curve.md").read_text()
    assert "Runs: 4," in text and "Not counted: 3 record(s)" in text and "Still to run" not in text
    assert "(n = " not in text  # one seed: no interval, but every run counted once
    assert benchmark_driver.main(curve) == 0 and len(ran) == 4  # a third start runs nothing


def test_records_drawn_at_random_are_rerun_and_compared(
    benchmark_driver: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    curve = ["curve", "--seeds", "0", "--curve-targets", "jaffe", "--batches", "8", "--budgets", "2",
             *paths(tmp_path), *TINY]  # fmt: skip
    assert benchmark_driver.main(curve) == 0
    records = [json.loads(x) for x in (tmp_path / "runs.jsonl").read_text().splitlines()]
    capsys.readouterr()
    argv = [*curve[: -len(TINY)], "--reproduce", "2", "--draw", "3", *TINY]  # the same runs
    assert benchmark_driver.main(argv) == 0
    out = capsys.readouterr().out
    assert "reproduce: 2 of the 4 records made here, drawn with random.Random(3)" in out
    done = [json.loads(x) for x in (tmp_path / "results" / "reproductions.jsonl").read_text()
            .splitlines()]  # fmt: skip
    assert len(done) == 2 and len({d["record"] for d in done}) == 2
    by_command = {r["command"]: r for r in records}
    for d in done:
        r = by_command[d["record"]]
        again = d["rerun"]
        assert "/reproduce/" in again["command"] and again["evals"] == r["evals"]
        assert again["final_acc"] == r["final_acc"] == d["recorded"]
        assert f"| {r['final_acc']:.1f} | {again['final_acc']:.1f} | 0 |" in out
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 4  # no record is added
    # only records made on this kind of machine can repeat
    theirs = [
        {**r, "environment": {"cpu": "Elsewhere", "cpu_capability": "AVX512"}} for r in records
    ]
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in theirs))
    with pytest.raises(SystemExit) as stop:
        benchmark_driver.main([*curve[: -len(TINY)], "--reproduce", "1", *TINY])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1
    assert "--reproduce 1: the studies hold 0 record(s) made on this kind of machine" in err
