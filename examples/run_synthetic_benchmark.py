#!/usr/bin/env python
"""Does adaptation help? LA-CMFER against source-only and the baselines, on the synthetic benchmark.

Every (method, target, seed) is one run of ``examples/train_cmfer.py --preset benchmark`` with the
same budget and recipe, started as its own process with pinned threads, so that its **command line
alone reproduces it** from a fresh clone. Each finished run appends one JSON record to
``--records`` (default ``examples/results/benchmark_runs.jsonl``):

* ``target``, ``seed``, ``method``, ``variant`` (extra flags: the ablations and the variants);
* ``final_acc``: fused-view target test accuracy at the last step (%), THE result;
* ``selected_acc`` and ``validator``: the checkpoint the preset's unsupervised validator prefers
  (no target labels used);
* ``oracle_acc``: best test accuracy over training -- selection on the test set, not a result;
* ``evals``: every evaluation (step, test accuracy, every validator's score), for the validator
  study; ``wall_s``; ``command``: the exact command of the run.

The driver resumes: runs already in the records (same command) are not run again, so an
interrupted benchmark continues where it stopped. The tables are generated from the records alone:

* ``--results`` (``examples/results/synthetic_benchmark.md``): final-step accuracy mean ± std over
  seeds per target and overall; the paired difference of each method to source-only over the
  (target, seed) pairs with a 95 % t-interval; the ablations; selected and oracle, labelled;
* the variants beyond the paper's recipe (:data:`VARIANTS`, on ``--variant-seeds``), apart from
  it: final accuracy and paired differences to source-only and to LA-CMFER;
* ``--validators-results`` (``examples/results/validators.md``): for each validator, the Spearman
  rank correlation of its score with the target accuracy over the evaluations of a run (mean ± std
  over runs), and the mean accuracy of the evaluation it selects against final and oracle; with
  matplotlib, a figure (``--figure``).

Usage::

    python examples/run_synthetic_benchmark.py                 # every method × 6 targets × 3 seeds,
                                                               # the ablations and the variants
    python examples/run_synthetic_benchmark.py --tables-only   # rewrite the tables from the records
    python examples/run_synthetic_benchmark.py --methods source-only lacmfer --seeds 0 \\
        --targets JAFFE --ablation-seeds --variant-seeds -- --steps 50  # after --: to every run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Optional

from cmfer.config import METHODS, SELECT_BY, config_from_args
from cmfer.data import TARGETS

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LABELS = {"source-only": "source-only", "mmd": "MMD", "dann": "DANN", "coral": "CORAL",
          "m3sda": "M3SDA", "mcc": "MCC", "lacmfer": "LA-CMFER"}  # fmt: skip
ORDER = ("source-only", "mmd", "dann", "coral", "m3sda", "mcc", "lacmfer")
#: The ablations of the paper (LA-CMFER without one component), run on ``--ablation-seeds``.
ABLATIONS = {
    "w/o SID": ["--no-sid"],
    "w/o CID": ["--no-cid"],
    "w/o consistency": ["--consistency", "none"],
    "w/o voting": ["--no-voting"],
}
#: Variants beyond the paper's recipe, run on ``--variant-seeds`` and reported apart from it:
#:
#: * ``w/o SID``: the ablation that did best on the ablation seed, rerun on the other seeds so that
#:   it is also judged on seeds that played no part in choosing it;
#: * ``warm start``: 100 source-only steps (40 % of the budget), then every adaptation term ramps
#:   in linearly over 50 steps -- a model that knows the sources before it aligns, as the paper's
#:   ImageNet encoder and 20 000 steps give it; fixed before any run of it.
VARIANTS = {
    "w/o SID": ABLATIONS["w/o SID"],
    "warm start": ["--adapt-after", "100", "--adapt-warmup", "50"],
}
VALIDATORS = tuple(v for v in SELECT_BY if v != "final")


# ------------------------------------------------------------------------------------------ runs
def command_of(method: str, target: str, seed: int, variant: Sequence[str], preset: str,
               extra: Sequence[str], out: Path) -> str:  # fmt: skip
    """The shell command of one run, from the repository root of a fresh clone."""
    args = ["python", "examples/train_cmfer.py", "--preset", preset, *extra, "--method", method,
            *variant, "--target", target, "--seed", str(seed), "--threads", "1", "--device", "cpu",
            "--no-progress", "--out", str(out)]  # fmt: skip
    return "OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 " + shlex.join(args)


def run_folder(out: Path, method: str, variant: Sequence[str], target: str, seed: int) -> Path:
    name = method + "".join(f"_{v.strip('-')}" for v in variant)
    return out / f"seed{seed}" / target / name


def execute(job: dict[str, Any]) -> dict[str, Any]:
    """Run one job's command and turn its outputs into a record."""
    start = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    args = shlex.split(job["command"].split(" ", 2)[2])  # drop the two env assignments
    args[0] = sys.executable  # "python" of the recorded command: this interpreter
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"run failed: {job['command']}\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}"
        )
    folder = ROOT / job["folder"]
    summary = json.loads((folder / "summary.json").read_text())
    evals = []
    for line in (folder / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["kind"] == "eval":
            entry = {"step": r["step"], "acc": 100 * r["acc_fused"]}
            entry.update({k[4:]: r[k] for k in r if k.startswith("val_")})
            evals.append(entry)
    final, selected, oracle = summary["final"], summary["selected"], summary["oracle"]
    return {
        "target": summary["target"],
        "seed": job["seed"],
        "method": job["method"],
        "variant": job["variant"],
        "final_acc": 100 * final["acc_fused"],
        "selected_acc": 100 * selected["acc_fused"],
        "validator": selected["validator"],
        "oracle_acc": 100 * oracle["acc_fused"],
        "oracle_note": oracle["note"],
        "steps": summary["step"],
        "evals": evals,
        "wall_s": round(time.perf_counter() - start, 1),
        "command": job["command"],
    }


def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------- tables
def mean_std(values: Sequence[float]) -> str:
    if not values:
        return "–"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.1f} ± {std:.1f}"


def t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t distribution (bisection on its CDF, Simpson integration)."""

    def pdf(x: float) -> float:
        c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
        return math.exp(c - (df + 1) / 2 * math.log1p(x * x / df))

    def cdf(x: float, n: int = 2000) -> float:  # 0.5 + integral from 0 to x
        h = x / n
        s = pdf(0.0) + pdf(x) + sum((4 if i % 2 else 2) * pdf(i * h) for i in range(1, n))
        return 0.5 + s * h / 3

    lo, hi = 0.0, 100.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


def paired_difference(rows: list[dict[str, Any]], method: str, base: str = "source-only") -> str:
    """Mean of acc(method) − acc(base) over the (target, seed) pairs both have, ± the half-width
    of a 95 % t-interval, and the number of pairs."""
    by_key = {(r["target"], r["seed"]): r["final_acc"] for r in rows if r["method"] == base}
    diffs = [r["final_acc"] - by_key[(r["target"], r["seed"])]
             for r in rows if r["method"] == method and (r["target"], r["seed"]) in by_key]  # fmt: skip
    if len(diffs) < 2:
        return "–"
    half = t_quantile(0.975, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    mean = statistics.fmean(diffs)
    verdict = "better" if mean - half > 0 else "worse" if mean + half < 0 else "no clear difference"
    return f"{mean:+.1f} [{mean - half:+.1f}, {mean + half:+.1f}] (n = {len(diffs)}, {verdict})"


def method_table(rows: list[dict[str, Any]], key: str, methods: Sequence[str],
                 targets: Sequence[str]) -> list[str]:  # fmt: skip
    """Mean ± std over seeds per target; the mean row averages the targets per seed first."""
    out = ["| target | " + " | ".join(LABELS.get(m, m) for m in methods) + " |",
           "|---|" + "---:|" * len(methods)]  # fmt: skip
    for t in targets:
        cells = [mean_std([r[key] for r in rows if r["target"] == t and r["method"] == m])
                 for m in methods]  # fmt: skip
        out.append(f"| {t} | " + " | ".join(cells) + " |")
    cells = []
    for m in methods:
        per_seed = []
        for s in sorted({r["seed"] for r in rows}):
            vals = [r[key] for r in rows if r["seed"] == s and r["method"] == m]
            if len(vals) == len(targets):
                per_seed.append(statistics.fmean(vals))
        cells.append(f"**{mean_std(per_seed)}**")
    out.append("| **mean of the targets** | " + " | ".join(cells) + " |")
    return out


def benchmark_tables(records: list[dict[str, Any]], targets: Sequence[str],
                     ablation_seeds: Optional[Sequence[int]] = None) -> str:  # fmt: skip
    """The tables of the paper's recipe and its ablations (on ``ablation_seeds``; default: every
    seed with an ablation record)."""
    main = [r for r in records if not r["variant"]]
    methods = [m for m in ORDER if any(r["method"] == m for r in main)]
    lines = ["### Final-step target accuracy (%), fused view: THE result", ""]
    lines += method_table(main, "final_acc", methods, targets)
    lines += ["", "### Paired difference to source-only (final step, percentage points)", "",
              "Mean over the (target, seed) pairs, [95 % t-interval]; 'better'/'worse' only when "
              "the interval excludes 0.", "", "| method | difference to source-only |",
              "|---|---|"]  # fmt: skip
    for m in methods:
        if m != "source-only":
            lines.append(f"| {LABELS[m]} | {paired_difference(main, m)} |")
    validator = next((r["validator"] for r in main if r["validator"] != "final"), "final")
    lines += ["", f"### Checkpoint selected by `{validator}` (no target labels) (%)", ""]
    lines += method_table(main, "selected_acc", methods, targets)
    lines += ["", "### Best over training (%): selection on the test set, NOT a valid result", ""]
    lines += method_table(main, "oracle_acc", methods, targets)
    ablations = [
        r for r in records if r["method"] == "lacmfer" and r["variant"] in ABLATIONS.values()
    ]
    if ablation_seeds is not None:
        ablations = [r for r in ablations if r["seed"] in ablation_seeds]
    if ablations:
        seeds = sorted({r["seed"] for r in ablations})
        full = [r for r in main if r["method"] == "lacmfer" and r["seed"] in seeds]
        names = ["LA-CMFER", *[n for n, flags in ABLATIONS.items()
                               if any(r["variant"] == flags for r in ablations)]]  # fmt: skip
        lines += ["", f"### Ablations of LA-CMFER (final step, %, seed(s) {seeds})", "",
                  "| target | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]  # fmt: skip
        columns = {n: full if n == "LA-CMFER" else
                   [r for r in ablations if r["variant"] == ABLATIONS[n]] for n in names}  # fmt: skip
        complete = [t for t in targets if all(any(r["target"] == t for r in c)
                                              for c in columns.values())]  # fmt: skip
        for t in [*targets, "mean"]:
            keep = complete if t == "mean" else [t]
            cells = []
            for n in names:
                vals = [r["final_acc"] for r in columns[n] if r["target"] in keep]
                cells.append(f"{statistics.fmean(vals):.1f}" if vals else "–")
            label = f"**mean of the {len(complete)} complete target(s)**" if t == "mean" else t
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def variant_tables(records: list[dict[str, Any]], targets: Sequence[str],
                   ablation_seeds: Sequence[int] = ()) -> str:  # fmt: skip
    """The variants of :data:`VARIANTS` beside source-only and the paper's recipe, on the seeds the
    variants ran: final accuracy per target and the paired differences. A variant that is one of
    the ablations was chosen after seeing ``ablation_seeds``, so its difference to source-only is
    also given over the other seeds alone."""
    named = {"source-only": [r for r in records if r["method"] == "source-only" and not r["variant"]],
             "LA-CMFER": [r for r in records if r["method"] == "lacmfer" and not r["variant"]]}  # fmt: skip
    for name, flags in VARIANTS.items():
        runs = [r for r in records if r["method"] == "lacmfer" and r["variant"] == flags]
        if runs:
            named[name] = runs
    variants = list(named)[2:]
    if not variants:
        return ""
    seeds = sorted({r["seed"] for n in variants for r in named[n]})
    rows = [{**r, "method": n} for n, runs in named.items() for r in runs if r["seed"] in seeds]
    lines = ["", f"### Variants beyond the paper's recipe (final step, %, seeds {seeds})", "",
             "Reported apart from the paper's recipe; what each changes is in the notes.", ""]  # fmt: skip
    lines += method_table(rows, "final_acc", list(named), targets)
    lines += [
        "",
        "| variant | difference to source-only | difference to LA-CMFER |",
        "|---|---|---|",
    ]
    for n in variants:
        cells = [paired_difference(rows, n, "source-only"), paired_difference(rows, n, "LA-CMFER")]
        if VARIANTS[n] in ABLATIONS.values() and ablation_seeds:
            fresh = [r for r in rows if r["seed"] not in ablation_seeds]
            kept = sorted({r["seed"] for r in fresh if r["method"] == n})
            cells[0] += f"; seeds {kept} alone: {paired_difference(fresh, n, 'source-only')}"
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); nan when a side is constant."""

    def ranks(v: Sequence[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        out = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out

    rx, ry = ranks(x), ranks(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan


def validator_tables(records: list[dict[str, Any]]) -> str:
    runs = [r for r in records if not r["variant"] and len(r["evals"]) >= 3]
    lines = ["| validator | Spearman ρ(score, target acc) per run | selected acc (%) | "
             "final acc (%) | oracle acc (%) | runs |", "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    final = statistics.fmean(r["final_acc"] for r in runs) if runs else math.nan
    oracle = statistics.fmean(max(e["acc"] for e in r["evals"]) for r in runs) if runs else math.nan
    for v in VALIDATORS:
        rhos, picked = [], []
        for r in runs:
            if not all(v in e for e in r["evals"]):
                continue
            scores, accs = [e[v] for e in r["evals"]], [e["acc"] for e in r["evals"]]
            rho = spearman(scores, accs)
            if math.isfinite(rho):
                rhos.append(rho)
            picked.append(accs[max(range(len(scores)), key=lambda i: scores[i])])
        if picked:
            lines.append(f"| {v} | {mean_std(rhos).replace(' ± ', ' ± ')} | "
                         f"{statistics.fmean(picked):.1f} | {final:.1f} | {oracle:.1f} | "
                         f"{len(picked)} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def validator_figure(records: list[dict[str, Any]], path: Path) -> bool:
    """Score vs target accuracy over the evaluations, one panel per validator (scores standardised
    within each run, so runs share an axis)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    runs = [r for r in records if not r["variant"] and len(r["evals"]) >= 3]
    present = [v for v in VALIDATORS if any(v in e for r in runs for e in r["evals"])]
    if not present:
        return False
    fig, axes = plt.subplots(1, len(present), figsize=(3.2 * len(present), 3.2), sharey=True)
    panels = list(getattr(axes, "flat", [axes]))
    for ax, v in zip(panels, present):
        for r in runs:
            scores = [e[v] for e in r["evals"] if v in e]
            if len(scores) < 3:
                continue
            mu, sd = statistics.fmean(scores), statistics.pstdev(scores) or 1.0
            accs = [e["acc"] - r["final_acc"] for e in r["evals"] if v in e]
            ax.scatter([(s - mu) / sd for s in scores], accs, s=6, alpha=0.4)
        ax.set_title(v)
        ax.set_xlabel("score (standardised per run)")
    panels[0].set_ylabel("target acc − final acc (points)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ------------------------------------------------------------------------------------------ main
def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    argv_all = list(argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--targets", nargs="+", default=list(TARGETS), help="default: the six domains")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(ORDER))
    p.add_argument("--ablation-seeds", type=int, nargs="*", default=[0],
                   help="seeds of the LA-CMFER ablations (none: skip them)")  # fmt: skip
    p.add_argument("--variant-seeds", type=int, nargs="*", default=None,
                   help="seeds of the variants beyond the paper's recipe (default: --seeds; none: "
                   "skip them)")  # fmt: skip
    p.add_argument("--preset", default="benchmark", help="train_cmfer preset of every run")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    p.add_argument("--out", default="runs/synthetic_benchmark", help="folder of the run outputs")
    p.add_argument("--records", default=str(HERE / "results" / "benchmark_runs.jsonl"))
    p.add_argument("--results", default=str(HERE / "results" / "synthetic_benchmark.md"))
    p.add_argument("--validators-results", default=str(HERE / "results" / "validators.md"))
    p.add_argument("--figure", default=str(ROOT / "docs" / "_static" / "validators.png"))
    p.add_argument("--notes", default=None, help="a markdown file appended to --results (analysis)")
    p.add_argument("--tables-only", action="store_true", help="no runs: rewrite the tables")
    p.add_argument("--max-runs", type=int, default=None, help="stop after this many new runs")
    args = p.parse_args(argv)
    targets = [t if t in TARGETS else _canonical(t) for t in args.targets]
    if args.variant_seeds is None:
        args.variant_seeds = list(args.seeds)
    out = Path(args.out)
    records_path = Path(args.records)
    records = read_records(records_path)
    done = {r["command"] for r in records}

    def job(method: str, target: str, seed: int, variant: Sequence[str]) -> dict[str, Any]:
        folder = run_folder(out, method, variant, target, seed)
        command = command_of(method, target, seed, variant, args.preset, extra, folder)
        return {"method": method, "target": target, "seed": seed, "variant": list(variant),
                "folder": str(folder), "command": command}  # fmt: skip

    jobs = []  # seed by seed, each seed's ablations right after its main runs
    for s in dict.fromkeys([*args.seeds, *args.ablation_seeds]):
        if s in args.seeds:
            jobs += [job(m, t, s, []) for t in targets for m in args.methods]
        if s in args.ablation_seeds and "lacmfer" in args.methods:
            jobs += [job("lacmfer", t, s, flags) for t in targets for flags in ABLATIONS.values()]
    if "lacmfer" in args.methods:  # the variants once the paper's recipe has run
        for s in args.variant_seeds:
            jobs += [job("lacmfer", t, s, flags) for t in targets for flags in VARIANTS.values()
                     if not (s in args.ablation_seeds and flags in ABLATIONS.values())]  # fmt: skip
    todo = [] if args.tables_only else [j for j in jobs if j["command"] not in done]
    if args.max_runs is not None:
        todo = todo[: args.max_runs]
    print(f"{len(jobs) - len(todo)} of {len(jobs)} runs in the records; {len(todo)} to run, "
          f"{args.jobs} at a time", flush=True)  # fmt: skip
    start = time.perf_counter()
    cfg = config_from_args(["--preset", args.preset, *extra, "--device", "cpu"])
    if todo and cfg.encoder_weights == "synthetic":
        # the pretrained encoder is built once (or found in the cache) before the runs share it
        subprocess.run([sys.executable, "-c", "from cmfer.pretrain import ensure_encoder; "
                        "ensure_encoder()"], cwd=HERE, check=True)  # fmt: skip
    if todo:
        records_path.parent.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(execute, j) for j in todo]
            for future in as_completed(futures):
                r = future.result()
                with records_path.open("a") as f:
                    f.write(json.dumps(r) + "\n")
                records.append(r)
                label = LABELS[r["method"]] + (" " + " ".join(r["variant"]) if r["variant"] else "")
                print(f"seed {r['seed']} {r['target']:<10} {label:<24} final {r['final_acc']:5.1f} "
                      f"({r['wall_s']:.0f} s)", flush=True)  # fmt: skip
    elapsed = time.perf_counter() - start
    commands = {j["command"] for j in jobs}
    rows = [r for r in records if r["command"] in commands]
    invocation = shlex.join(["python", "examples/run_synthetic_benchmark.py", *argv_all])
    write_tables(rows, targets, args, extra, elapsed, len(todo), invocation)
    return 0


def _shown(path: str) -> str:
    """A path as a reader of the repository sees it (relative to its root when inside it)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return path


def _canonical(name: str) -> str:
    from lacmfer.data import canonical_dataset

    return canonical_dataset(name, TARGETS)


def write_tables(rows: list[dict[str, Any]], targets: Sequence[str], args: argparse.Namespace,
                 extra: Sequence[str], elapsed: float, new: int, invocation: str) -> None:  # fmt: skip
    cfg = config_from_args(["--preset", args.preset, *extra, "--device", "cpu"])
    wall = sum(r["wall_s"] for r in rows)
    header = [
        "# Synthetic six-domain benchmark: LA-CMFER, source-only and the baselines",
        "",
        f"Generated by `{invocation.strip()}` from the records in `{_shown(args.records)}` (one line per "
        "run, each with the exact command that reproduces it).  ",
        f"Per run: `--preset {args.preset}` {shlex.join(extra)} -- {cfg.steps} steps, "
        f"{cfg.batch_size}+{cfg.target_batch} images a step, {cfg.image_size}×{cfg.image_size}, "
        f"width `{cfg.width}`, encoder `{cfg.encoder_weights}`, lr {cfg.lr} (encoder × "
        f"{cfg.encoder_lr_scale}), {cfg.synthetic_train_size} images per domain, "
        f"{cfg.synthetic_test_size} target test images (a separate draw); the paper's loss weights; "
        "the same recipe and budget for every method.  ",
        f"Runs: {len(rows)} in the tables; their summed wall time {wall / 60:.0f} min "
        f"({new} new in this invocation, {elapsed / 60:.1f} min); machine: "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, one thread a run.",
        "",
    ]
    text = "\n".join(header) + "\n" + benchmark_tables(rows, targets, args.ablation_seeds)
    text += variant_tables(rows, targets, args.ablation_seeds)
    if args.notes:
        text += "\n" + Path(args.notes).read_text()
    if args.results:
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        Path(args.results).write_text(text)
    print(text)
    vtext = "\n".join([
        "# Unsupervised validators on the synthetic benchmark",
        "",
        f"Generated by `{invocation.strip()}` from `{_shown(args.records)}`: every evaluation of every "
        f"main run (every {cfg.eval_every} steps), scores computed on the unlabelled target "
        "adaptation set. Spearman ρ between a validator's score and the target test accuracy over "
        "the evaluations of one run, mean ± std over runs; 'selected' is the mean test accuracy "
        "of the evaluation each validator scores highest, against the last evaluation (final, THE "
        "result) and the best one (oracle: selection on the test set).",
        "",
    ]) + "\n" + validator_tables(rows)  # fmt: skip
    if args.validators_results:
        Path(args.validators_results).write_text(vtext)
        if args.figure and validator_figure(rows, Path(args.figure)):
            print(f"figure: {args.figure}")
    print(vtext)


if __name__ == "__main__":
    raise SystemExit(main())
