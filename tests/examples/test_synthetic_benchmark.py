"""Tests of examples/run_synthetic_benchmark.py: the statistics against hand computations, and a
tiny end-to-end benchmark whose records reproduce from their commands."""

from __future__ import annotations

import json
import math
import shlex
import statistics
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_t_quantile_matches_tables(benchmark_driver: ModuleType) -> None:
    # Student's t, two-sided 95 %: df 1 -> 12.706, 5 -> 2.571, 17 -> 2.110, 100 -> 1.984
    for df, want in ((1, 12.706), (5, 2.571), (17, 2.110), (100, 1.984)):
        assert benchmark_driver.t_quantile(0.975, df) == pytest.approx(want, abs=2e-3)


def test_spearman_against_definition(benchmark_driver: ModuleType) -> None:
    x, y = [1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 1.0, 4.0, 3.0, 5.0]
    # no ties: 1 - 6 Σd² / (n (n² - 1)), d = [1, -1, 1, -1, 0]
    assert benchmark_driver.spearman(x, y) == pytest.approx(1 - 6 * 4 / (5 * 24))
    assert benchmark_driver.spearman(x, [-v for v in x]) == pytest.approx(-1.0)
    assert math.isnan(benchmark_driver.spearman(x, [1.0] * 5))  # a constant side
    # ties get average ranks: Pearson correlation of the rank vectors
    assert benchmark_driver.spearman([1.0, 1.0, 2.0], [1.0, 2.0, 3.0]) == pytest.approx(
        statistics.correlation([0.5, 0.5, 2.0], [0.0, 1.0, 2.0])
    )


def test_tables_are_generated_from_records(benchmark_driver: ModuleType) -> None:
    accs = {  # (method, target, seed) -> final accuracy
        ("source-only", "A", 0): 50.0, ("source-only", "A", 1): 52.0,
        ("source-only", "B", 0): 40.0, ("source-only", "B", 1): 42.0,
        ("lacmfer", "A", 0): 55.0, ("lacmfer", "A", 1): 58.0,
        ("lacmfer", "B", 0): 41.0, ("lacmfer", "B", 1): 47.0,
    }  # fmt: skip
    records = []
    for (method, target, seed), acc in accs.items():
        evals = [{"step": s, "acc": acc - 3 + s, "entropy": float(s)} for s in range(4)]
        records.append({"method": method, "target": target, "seed": seed, "variant": [],
                        "final_acc": acc, "selected_acc": acc - 1, "validator": "snd",
                        "oracle_acc": acc + 1, "evals": evals})  # fmt: skip
    text = benchmark_driver.benchmark_tables(records, ["A", "B"])
    lac = [55.0, 58.0]
    assert f"| A | 51.0 ± 1.4 | {statistics.fmean(lac):.1f} ± {statistics.stdev(lac):.1f} |" in text
    # mean row: mean over targets per seed (lacmfer: 48.0, 52.5), then mean ± std over seeds
    per_seed = [48.0, 52.5]
    assert f"**{statistics.fmean(per_seed):.1f} ± {statistics.stdev(per_seed):.1f}**" in text
    diffs = [5.0, 6.0, 1.0, 5.0]
    half = 3.182 * statistics.stdev(diffs) / 2  # t(0.975, 3) = 3.182
    mean = statistics.fmean(diffs)
    assert (
        f"| LA-CMFER | {mean:+.1f} [{mean - half:+.1f}, {mean + half:+.1f}] (n = 4, better) |"
        in text
    )
    assert "selection on the test set, NOT a valid result" in text
    vtext = benchmark_driver.validator_tables(records)
    # entropy rises with the accuracy in every run: ρ = 1, and it picks the last evaluation
    assert "| entropy | 1.0 ± 0.0 |" in vtext


def test_variants_are_reported_apart(benchmark_driver: ModuleType) -> None:
    warm, no_sid = benchmark_driver.VARIANTS["warm start"], benchmark_driver.VARIANTS["w/o SID"]
    accs = {("source-only", 0): 50.0, ("source-only", 1): 40.0, ("source-only", 2): 45.0,
            ("lacmfer", 0): 44.0, ("lacmfer", 1): 41.0, ("lacmfer", 2): 42.0}  # fmt: skip
    runs = [(m, s, [], a) for (m, s), a in accs.items()]
    runs += [("lacmfer", s, warm, a) for s, a in ((0, 52.0), (1, 41.0), (2, 48.0))]
    runs += [("lacmfer", s, no_sid, a) for s, a in ((0, 57.0), (1, 43.0), (2, 47.0))]
    records = [{"method": m, "target": "A", "seed": s, "variant": v, "final_acc": a,
                "selected_acc": a, "validator": "snd", "oracle_acc": a, "evals": []}
               for m, s, v, a in runs]  # fmt: skip
    text = benchmark_driver.variant_tables(records, ["A"], ablation_seeds=[0])
    cells = [f"{statistics.fmean(v):.1f} ± {statistics.stdev(v):.1f}"
             for v in ([50, 40, 45], [44, 41, 42], [57, 43, 47], [52, 41, 48])]  # fmt: skip
    assert "| A | " + " | ".join(cells) + " |" in text  # source-only, LA-CMFER, w/o SID, warm
    pd = benchmark_driver.paired_difference
    renamed = [{**r, "method": "x"} for r in records if r["variant"] == warm] + records[:3]
    assert f"| warm start | {pd(renamed, 'x')} |" in text
    # w/o SID was chosen on seed 0: its difference is also given over seeds 1 and 2 alone
    fresh = [r for r in records if r["seed"] != 0]
    fresh = [{**r, "method": "y"} if r["variant"] == no_sid else r for r in fresh]
    assert f"seeds [1, 2] alone: {pd(fresh, 'y')}" in text and "(n = 2," in text
    # the ablation table of the paper's recipe keeps to the ablation seed
    table = benchmark_driver.benchmark_tables(records, ["A"], ablation_seeds=[0])
    assert "seed(s) [0]" in table and "| A | 44.0 | 57.0 |" in table
    assert benchmark_driver.variant_tables(records[:6], ["A"]) == ""


def test_tiny_benchmark_resumes_and_records_reproduce(
    benchmark_driver: ModuleType, tmp_path: Path
) -> None:
    out, records, md, vmd = (
        tmp_path / "bench",
        tmp_path / "runs.jsonl",
        tmp_path / "t.md",
        tmp_path / "v.md",
    )
    args = ["--seeds", "0", "--targets", "jaffe", "--methods", "source-only", "lacmfer",
            "--ablation-seeds", "0", "--preset", "smoke", "--jobs", "2", "--out", str(out),
            "--records", str(records), "--results", str(md), "--validators-results", str(vmd),
            "--figure", str(tmp_path / "v.png"), "--",
            "--steps", "3", "--eval-every", "1", "--synthetic-train-size", "16",
            "--synthetic-test-size", "16", "--no-plots", "--select-by", "entropy"]  # fmt: skip
    assert benchmark_driver.main(args) == 0
    rows = [json.loads(x) for x in records.read_text().splitlines()]
    assert sorted((r["method"], tuple(r["variant"])) for r in rows) == sorted([
        ("lacmfer", ()), ("lacmfer", ("--consistency", "none")), ("lacmfer", ("--no-cid",)),
        ("lacmfer", ("--no-sid",)), ("lacmfer", ("--no-voting",)),
        ("lacmfer", tuple(benchmark_driver.VARIANTS["warm start"])), ("source-only", ()),
    ])  # fmt: skip
    for r in rows:
        assert r["target"] == "JAFFE" and r["validator"] == "entropy" and r["steps"] == 3
        assert 0 <= r["final_acc"] <= r["oracle_acc"] <= 100
        assert [e["step"] for e in r["evals"]] == [1, 2, 3] and "snd" in r["evals"][0]
        assert r["command"].startswith("OMP_NUM_THREADS=1 ")
    text = md.read_text()
    assert "| JAFFE |" in text and "w/o SID" in text and "Paired difference" in text
    assert "Variants beyond the paper's recipe" in text and "| warm start |" in text
    assert "| snd |" in vmd.read_text()
    # a second start finds every run in the records and runs nothing
    assert benchmark_driver.main(args) == 0
    assert len(records.read_text().splitlines()) == 7
    # a record's command alone reproduces its final accuracy (same machine)
    record = next(r for r in rows if r["method"] == "lacmfer" and not r["variant"])
    command = record["command"].replace(str(out), str(tmp_path / "again"))
    argv = shlex.split(command.split(" ", 2)[2])
    argv[0] = sys.executable
    subprocess.run(argv, cwd=ROOT, check=True, capture_output=True, env={"OMP_NUM_THREADS": "1",
                   "PATH": "/usr/bin:/bin"})  # fmt: skip
    again = json.loads(
        (tmp_path / "again" / "seed0" / "JAFFE" / "lacmfer" / "summary.json").read_text()
    )
    assert 100 * again["final"]["acc_fused"] == pytest.approx(record["final_acc"], abs=1e-9)
