"""Tests of examples/run_synthetic_benchmark.py: the table maths and a tiny end-to-end run."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from types import ModuleType

import pytest


def test_table_is_mean_and_std_over_seeds(benchmark_driver: ModuleType) -> None:
    rows = []
    accs = {  # (seed, target, method) -> final accuracy
        (0, "A", "lacmfer"): 0.5, (1, "A", "lacmfer"): 0.7,
        (0, "B", "lacmfer"): 0.1, (1, "B", "lacmfer"): 0.3,
        (0, "A", "mmd"): 0.2, (1, "A", "mmd"): 0.2,
        (0, "B", "mmd"): 0.4, (1, "B", "mmd"): 0.6,
    }  # fmt: skip
    for (seed, target, method), acc in accs.items():
        rows.append({"seed": seed, "target": target, "method": method, "acc_fused": acc,
                     "best_acc_fused": acc + 0.1})  # fmt: skip
    table = benchmark_driver.make_table(rows, ["mmd", "lacmfer"], ["A", "B"])
    final, best = table.split("### ")[1:]
    assert "THE result" in final and "selection on the test set" in best
    a_lac = 100 * statistics.fmean([0.5, 0.7]), 100 * statistics.stdev([0.5, 0.7])
    assert f"| A | 20.0 ± 0.0 | {a_lac[0]:.1f} ± {a_lac[1]:.1f} |" in final
    # mean row: mean over targets per seed (seed 0: 0.3, seed 1: 0.5), then mean ± std
    mean_lac = 100 * statistics.fmean([0.3, 0.5]), 100 * statistics.stdev([0.3, 0.5])
    assert f"**{mean_lac[0]:.1f} ± {mean_lac[1]:.1f}**" in final
    assert "| A | 30.0 ± 0.0 |" in best


def test_tiny_benchmark_run_and_restart(benchmark_driver: ModuleType, tmp_path: Path) -> None:
    out, md = tmp_path / "bench", tmp_path / "table.md"
    args = ["--seeds", "0", "--targets", "jaffe", "ck", "--methods", "source-only", "lacmfer",
            "--variant", "no voting=--method lacmfer --no-voting",
            "--preset", "smoke", "--jobs", "1", "--out", str(out), "--results", str(md), "--",
            "--steps", "2", "--synthetic-train-size", "16", "--synthetic-test-size", "16",
            "--no-plots"]  # fmt: skip
    assert benchmark_driver.main(args) == 0
    runs = [json.loads(x) for x in (out / "runs.jsonl").read_text().splitlines()]
    assert sorted((r["target"], r["method"]) for r in runs) == [
        ("CK+", "lacmfer"), ("CK+", "no voting"), ("CK+", "source-only"),
        ("JAFFE", "lacmfer"), ("JAFFE", "no voting"), ("JAFFE", "source-only"),
    ]  # fmt: skip
    for r in runs:
        assert 0 <= r["acc_fused"] <= r["best_acc_fused"] <= 1 and r["steps"] == 2
        folder = r["method"].replace(" ", "_")
        summary = json.loads((out / "seed0" / r["target"].replace("+", "plus") / folder
                              / "summary.json").read_text())  # fmt: skip
        assert summary["final"]["acc_fused"] == pytest.approx(r["acc_fused"])
        assert summary["config"]["voting"] == (r["method"] != "no voting")
    text = md.read_text()
    assert "| JAFFE |" in text and "| CK+ |" in text and "mean of the targets" in text
    assert "| target | source-only | LA-CMFER | no voting |" in text
    # a second start with the same arguments finds every run done and only rewrites the table
    md.unlink()
    assert benchmark_driver.main(args) == 0
    assert len((out / "runs.jsonl").read_text().splitlines()) == 6
    assert md.read_text().split("###", 1)[1] == text.split("###", 1)[1]
