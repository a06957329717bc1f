#!/usr/bin/env python
"""Does adaptation help, and at which budget? LA-CMFER, source-only and the baselines on the
synthetic six-domain benchmark.

Every run is one command line of ``examples/train_cmfer.py`` (``--preset benchmark`` plus the
run's flags), started as its own process with one pinned thread, so that **its command alone
reproduces it** from a fresh clone. Each finished run appends one JSON record to ``--records``
(default ``examples/benchmark/results/benchmark_runs.jsonl``): ``target``, ``seed``, ``method``,
``variant`` (extra flags), ``steps``, ``batch``, ``final_acc`` (fused target test accuracy at the
last step, %, THE result), ``selected_acc`` (the evaluation the preset's unsupervised validator
prefers), ``oracle_acc`` (best over training: selection on the test set, not a result), ``evals``
(every evaluation: accuracy, validator scores, source validation loss when sources are held out),
``train`` (the mean of the last fifth of the logged training records: source cross-entropy, the
sample-level alignment's effective sample counts, confident samples, ...), ``train_s`` (the
seconds spent in training steps, summed over every process of the run, resumes included),
``wall_s`` (the driver's wall time; a resumed run's counts from its resume, and its record says
``resumed``), ``environment`` (the machine and the encoder file's hash, from the run's
``summary.json``: the command repeats a run bit for bit on the same kind of machine; on another
CPU instruction set it gives a result that differs like one of another seed) and ``command``. The
driver resumes:
a run whose command is in the records is not run again, and a run folder left by an interrupted
run is continued with ``--resume`` from its last checkpoint (the driver adds ``--ckpt-every`` for a
checkpoint every twentieth of a run; neither flag changes the result, so neither is part of the
recorded command). Runs pair only within one kind of machine (the same command on another CPU
instruction set or a GPU is another run), so the unit the driver completes is a *group* of runs
that pair (one target and seed at one budget and batch): a group that no one kind of machine has
complete is made whole on this one, its runs recorded elsewhere made again here (their records stay
in the file; each table counts a run once, from the kind that holds most of its group), and a run
folder made or begun on another kind is renamed ``<name>.from-<kind>`` and kept. Before the first
run the example checks, with ``--dry-run``, the settings of
one run of each method and variant (``--preset`` and the flags after ``--``): a mistake stops the
driver in one line, not every run an hour later.

Studies (the first arguments; each writes its tables from the records alone)::

    python examples/benchmark/run_benchmark.py short    # 250 steps of 32 + 32: every method × 6
                                                        # targets × 3 seeds, ablations, variants
    python examples/benchmark/run_benchmark.py rule     # the budget rule: source-only with 10 % of
                                                        # each source held out, 250 ... 4000 steps
    python examples/benchmark/run_benchmark.py curve    # the budget curve: source-only, LA-CMFER,
                                                        # LA-CMFER w/o SID, MMD at several budgets
                                                        # and batch sizes
    python examples/benchmark/run_benchmark.py trained  # every method × 6 targets × 3 seeds at the
                                                        # budget the rule chose
    python examples/benchmark/run_benchmark.py curve --tables-only   # rewrite the tables
    python examples/benchmark/run_benchmark.py curve trained         # both from one pool of runs

Several studies in one command share one pool of ``--jobs`` runs (a run two studies both need,
such as the curve's 4000-step runs that the trained table reuses, runs once), so no slot stands idle
while the last run of one study finishes; each study still writes its own tables. ``trained`` reads
the budget the ``rule`` study committed, so the rule runs first, on its own.

On a GPU: ``--device cuda --jobs 8`` runs eight runs at once on one device (each its own process);
GPU records are not CPU records (other kernels), so give them their own ``--records`` file.
``--dry-run`` prints the commands still to run. Flags after ``--`` go to every run.

Do the records reproduce? ``--reproduce N --draw SEED`` runs nothing new: it draws ``N`` of the
studies' records made on this kind of machine (``random.Random(SEED)``), reruns each from its
command with ``--out`` under ``<--runs>/reproduce``, prints recorded against rerun (final accuracy
and the largest difference over the evaluations), appends each comparison to
``reproductions.jsonl`` in ``--results``, and exits 1 when a final accuracy differs by more than
one point.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from functools import cache
from pathlib import Path
from typing import Any, Optional

from lacmfer.data import SIX_DOMAINS, canonical_dataset
from lacmfer.utils import environment, read_jsonl

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RESULTS = HERE / "results"
FIGURE = ROOT / "docs" / "_static" / "budget_curve.png"
#: The training example's presets (examples/configs/*.yaml), by name.
PRESETS = sorted(p.stem for p in (HERE.parent / "configs").glob("*.yaml"))
LABELS = {"source-only": "source-only", "mmd": "MMD", "dann": "DANN", "coral": "CORAL",
          "m3sda": "M3SDA", "class-confusion": "Min. class confusion", "lacmfer": "LA-CMFER"}  # fmt: skip
METHODS = tuple(LABELS)
PRESET_STEPS, PRESET_BATCH = 250, 32  # examples/configs/benchmark.yaml
#: The ablations of the paper (LA-CMFER without one component), run on ``--ablation-seeds``.
ABLATIONS = {
    "w/o SID": ["--no-sid"],
    "w/o CID": ["--no-cid"],
    "w/o consistency": ["--consistency", "none"],
    "w/o voting": ["--no-voting"],
}
#: Variants beyond the paper's recipe, reported apart from it: ``w/o SID`` (the ablation that did
#: best on the ablation seed, rerun on the other seeds) and ``warm start`` (100 source-only steps,
#: then every adaptation term ramps in over 50 steps; fixed before any run of it).
VARIANTS = {
    "w/o SID": ABLATIONS["w/o SID"],
    "warm start": ["--adapt-after", "100", "--adapt-warmup", "50"],
}
VALIDATORS = ("entropy", "im", "snd", "bnm", "agreement")
#: The budget curve: one lab and two in-the-wild targets (fixed before any curve run), the methods
#: it compares (MMD: the best baseline of the 250-step table), its budgets and batch sizes.
CURVE_TARGETS = ("CK+", "RAF-DB", "FER-2013")
CURVE_METHODS = (("source-only", ()), ("lacmfer", ()), ("lacmfer", ("--no-sid",)), ("mmd", ()))
CURVE_BUDGETS = {32: (250, 1000, 4000), 128: (1000,)}
STUDIES = ("short", "rule", "curve", "trained")
#: The table each study writes (the short study also writes validators.md).
TABLES = {"short": "synthetic_benchmark.md", "rule": "budget_rule.md", "curve": "budget_curve.md",
          "trained": "trained_benchmark.md"}  # fmt: skip
#: The budget rule (fixed before any run at a budget above 250): source-only with 10 % of each
#: source held out; the trained budget is the smallest budget B of the grid at which doubling the
#: budget lowers the mean held-out source loss over the targets by less than 2 % -- the sources are
#: learned. It reads no target label and no adaptation run.
RULE_BUDGETS = (250, 500, 1000, 2000, 4000)
RULE_FLAGS = ("--source-val-fraction", "0.1")
RULE_TOLERANCE = 0.02
TRAINED = "trained_budget.json"  # in the results folder: the rule's choice
CHECKPOINTS = 20  # checkpoints a run: what an interrupted run can lose is a twentieth of it
MACHINE_FILE = "machine.json"  # in a run folder: the kind of machine the driver began it on
KIND_KEYS = ("cpu", "cpu_capability", "gpu")  # what tells one kind of machine from another
TRAIN_KEYS = ("ce", "sid", "effective_s_g", "effective_s_l", "effective_t_g", "effective_t_l",
              "masked_s_g", "masked_t_g", "kept_fraction", "pseudo_label_acc")  # fmt: skip


# ------------------------------------------------------------------------------------------ runs
def job(method: str, target: str, seed: int, variant: Sequence[str] = (), steps: int = PRESET_STEPS,
        batch: int = PRESET_BATCH, extra: Sequence[str] = (), device: str = "cpu",
        preset: str = "benchmark", runs: str = "runs/synthetic_benchmark") -> dict[str, Any]:  # fmt: skip
    """One run: its identity and the shell command that reproduces it from a fresh clone. The
    preset's own budget keeps the command (and folder) of the original 250-step records."""
    budget = ["--steps", str(steps), "--eval-every", str(max(1, steps // 5)), "--batch-size"]
    budget = [] if (steps, batch) == (PRESET_STEPS, PRESET_BATCH) else [*budget, str(batch)]
    name = method + "".join(f"_{v.strip('-')}" for v in variant)
    folder = Path(runs) / ("" if not budget else f"b{batch}_s{steps}")
    folder = folder / ("" if device == "cpu" else device) / f"seed{seed}" / target / name
    args = ["python", "examples/train_cmfer.py", "--preset", preset, *extra, *budget,
            "--method", method, *variant, "--target", target, "--seed", str(seed), "--threads", "1",
            "--device", device, "--no-progress", "--out", str(folder)]  # fmt: skip
    command = "OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 " + shlex.join(args)
    return {"method": method, "target": target, "seed": seed, "variant": list(variant),
            "steps": steps, "batch": batch, "folder": str(folder), "device": device,
            "command": command}  # fmt: skip


def command_args(j: dict[str, Any]) -> list[str]:
    """The job's command as arguments for this interpreter (its environment assignments apart)."""
    args = shlex.split(j["command"].split(" ", 2)[2])
    args[0] = sys.executable  # the recorded "python": this interpreter
    return args


def refusal(j: dict[str, Any]) -> Optional[str]:
    """What the training example says against the job's settings (``--dry-run``: it reads and
    writes nothing, and the job's own folder is swapped for a fresh one), or None."""
    args = command_args(j)
    with tempfile.TemporaryDirectory() as tmp:
        args[args.index("--out") + 1] = str(Path(tmp) / "run")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        proc = subprocess.run([*args, "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                              text=True)  # fmt: skip
    if proc.returncode == 0:
        return None
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit status {proc.returncode}"


def execute(j: dict[str, Any]) -> dict[str, Any]:
    """Run one job's command (``--resume`` when an interrupted run left its folder) and make its
    record from the run's outputs."""
    start = time.perf_counter()
    args = command_args(j)
    # A checkpoint every twentieth of the run, so that an interrupted run loses at most that much;
    # checkpoints leave the run unchanged (resume is exact), so the record keeps its command.
    args += ["--ckpt-every", str(max(1, j["steps"] // CHECKPOINTS))]
    folder = ROOT / j["folder"]
    here = this_machine(j.get("device", "cpu"))
    made_on = folder_machine(folder)
    if made_on is not None and made_on != here:
        # A run of this command made (or begun) on another kind of machine: it is kept beside,
        # and the run is made here, whole (a run resumed on another kind is neither's).
        move_aside(folder, made_on)
    resumed = (folder / "checkpoints" / "last.pt").exists()
    if resumed:
        args.append("--resume")  # exact: the same result as one uninterrupted run
    elif folder.exists():
        shutil.rmtree(folder)  # stopped before its first checkpoint: nothing to keep
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MACHINE_FILE).write_text(json.dumps(dict(zip(KIND_KEYS, here))) + "\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"run failed: {j['command']}\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}"
        )
    summary = json.loads((folder / "summary.json").read_text())
    lines = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    evals = []
    for r in lines:
        if r["kind"] == "eval":
            entry = {"step": r["step"], "acc": 100 * r["acc_fused"]}
            entry.update({k[4:]: r[k] for k in r if k.startswith("val_")})
            if "source_val_loss" in r:
                entry["source_val_loss"] = r["source_val_loss"]
            evals.append(entry)
    train = [r for r in lines if r["kind"] == "train"]
    tail = train[-max(1, len(train) // 5) :]
    final, selected, oracle = summary["final"], summary["selected"], summary["oracle"]
    return {
        "target": summary["target"], "seed": j["seed"], "method": j["method"],
        "variant": j["variant"], "steps": summary["config"]["steps"],
        "batch": summary["config"]["batch_size"],
        "final_acc": 100 * final["acc_fused"], "selected_acc": 100 * selected["acc_fused"],
        "validator": selected["validator"], "oracle_acc": 100 * oracle["acc_fused"],
        "oracle_note": oracle["note"], "evals": evals,
        "train": {k: _mean([r.get(k) for r in tail]) for k in TRAIN_KEYS},
        "train_s": round(summary["train_time_s"], 1),
        "wall_s": round(time.perf_counter() - start, 1), "command": j["command"],
        **({"resumed": True} if resumed else {}),
        **({"environment": summary["environment"]} if "environment" in summary else {}),
    }  # fmt: skip


@cache
def this_machine(device: str = "cpu") -> tuple[Any, ...]:
    """The kind of machine runs on ``device`` are made on here, as :func:`kind` reads a record."""
    env = environment(device)
    return tuple(env.get(k) for k in KIND_KEYS)


def kind(r: dict[str, Any]) -> tuple[Any, ...]:
    """The kind of machine a record (or a run's ``summary.json``) was made on, without its encoder
    (built on that machine, it follows from the machine). Records made before environments were
    recorded give ``(None, None, None)``: no kind the driver runs on."""
    env = r.get("environment") or {}
    return tuple(env.get(k) for k in KIND_KEYS)


def folder_machine(folder: Path) -> Optional[tuple[Any, ...]]:
    """The kind of machine that made the run in ``folder`` (its summary, else the driver's note of
    where it began), or None for a folder without either."""
    summary = read_json_file(folder / "summary.json")
    if summary is not None:
        return kind(summary)
    note = read_json_file(folder / MACHINE_FILE)
    return None if note is None else tuple(note.get(k) for k in KIND_KEYS)


def read_json_file(path: Path) -> Optional[dict[str, Any]]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def move_aside(folder: Path, made_on: tuple[Any, ...]) -> Path:
    """Rename a run folder made on another kind of machine to ``<name>.from-<kind>[-<n>]``."""
    name = "-".join(str(v) for v in made_on if v) or "an-unrecorded-machine"
    name = f"{folder.name}.from-{re.sub(r'[^A-Za-z0-9.]+', '-', name).strip('-')}"
    aside, n = folder.with_name(name), 1
    while aside.exists():
        n += 1
        aside = folder.with_name(f"{name}-{n}")
    folder.rename(aside)
    return aside


def run_group(command: str) -> str:
    """The runs that pair with each other: one target and seed at one budget and batch (and
    device) of a study, which is the parent of the run's ``--out`` folder."""
    args = shlex.split(command)
    return str(Path(args[args.index("--out") + 1]).parent)


def still_to_run(jobs: Sequence[dict[str, Any]], records: Sequence[dict[str, Any]],
                 here: tuple[Any, ...]) -> list[dict[str, Any]]:  # fmt: skip
    """The jobs to run on a machine of kind ``here``: every job without a record, and, in a group
    of runs that pair (:func:`run_group`) which no one kind of machine has complete, every job
    without a record made here. Runs pair only within one kind, so the runs a group still lacks,
    made here, pair with none made elsewhere: the group is made whole here, and the records made
    elsewhere stay in the file (a group complete on another kind is left as it is)."""
    made: dict[str, set[tuple[Any, ...]]] = defaultdict(set)
    for r in records:
        made[r["command"]].add(machine(r))
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for j in jobs:
        groups[run_group(j["command"])].append(j)
    pending = set()
    for group in groups.values():
        if set.intersection(*(made[j["command"]] for j in group)):
            continue  # complete on one kind of machine
        pending |= {j["command"] for j in group if all(m[:3] != here for m in made[j["command"]])}
    return [j for j in jobs if j["command"] in pending]


def counted(jobs: Sequence[dict[str, Any]],
            records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:  # fmt: skip
    """The records a study's tables count, in file order: one per run. A run recorded on several
    kinds of machine counts with the record of the kind that holds most of its group's records
    (a tie: the kind recorded last), so that a group made whole again on one kind is counted
    from that kind."""
    index: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        index[r["command"]].append(i)
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for j in jobs:
        groups[run_group(j["command"])].append(j)
    kept = []
    for group in groups.values():
        mine = [i for j in group for i in index[j["command"]]]
        if not mine:
            continue
        votes = Counter(machine(records[i]) for i in mine)
        last = {machine(records[i]): i for i in sorted(mine)}
        best = max(votes, key=lambda m: (votes[m], last[m]))
        for j in group:
            rows = index[j["command"]]
            ours = [i for i in rows if machine(records[i]) == best]
            if rows:
                kept.append((ours or rows)[-1])
    return [records[i] for i in sorted(set(kept))]


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.fmean(kept) if kept else None


def read_records(path: Path) -> list[dict[str, Any]]:
    rows = read_jsonl(path)
    for r in rows:  # records made before budgets were recorded ran the preset's
        r.setdefault("steps", PRESET_STEPS)
        r.setdefault("batch", PRESET_BATCH)
    return rows


# ------------------------------------------------------------------------------------- the jobs
def study_jobs(study: str, args: argparse.Namespace, extra: Sequence[str]) -> list[dict[str, Any]]:
    seeds, targets, dev = args.seeds, args.targets, args.device

    def job(*a: Any, **k: Any) -> dict[str, Any]:
        return globals()["job"](*a, **k, preset=args.preset, runs=args.runs)

    jobs: list[dict[str, Any]] = []
    if study == "short":
        for s in seeds:
            jobs += [job(m, t, s, extra=extra, device=dev) for t in targets for m in args.methods]
            if s in args.ablation_seeds:
                jobs += [job("lacmfer", t, s, v, extra=extra, device=dev) for t in targets
                         for v in ABLATIONS.values()]  # fmt: skip
        for s in seeds:
            fresh = [
                v
                for v in VARIANTS.values()
                if not (s in args.ablation_seeds and v in ABLATIONS.values())
            ]
            jobs += [
                job("lacmfer", t, s, v, extra=extra, device=dev) for t in targets for v in fresh
            ]
    elif study == "rule":
        jobs = [job("source-only", t, 0, RULE_FLAGS, steps=b, extra=extra, device=dev)
                for b in args.budgets or RULE_BUDGETS for t in args.curve_targets]  # fmt: skip
    elif study == "curve":
        for batch in args.batches:
            for steps in args.budgets or CURVE_BUDGETS.get(batch, ()):
                jobs += [job(m, t, s, v, steps=steps, batch=batch, extra=extra, device=dev)
                         for s in seeds for t in args.curve_targets for m, v in CURVE_METHODS]  # fmt: skip
    elif study == "trained":
        budget = trained_budget(args.results)
        if budget is None:
            raise ValueError(f"--results {args.results}: no trained budget there (its "
                             f"{TRAINED}): run the rule study first, or point --results at "
                             "the folder that holds it")  # fmt: skip
        jobs = [job(m, t, s, steps=budget, extra=extra, device=dev)
                for s in seeds for t in targets for m in args.methods]  # fmt: skip
    return jobs


def trained_budget(results: Path) -> Optional[int]:
    path = results / TRAINED
    return int(json.loads(path.read_text())["budget"]) if path.exists() else None


# ----------------------------------------------------------------------------------- statistics
def mean_std(values: Sequence[float]) -> str:
    """Mean ± sample standard deviation; one value has no spread to show."""
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.1f} (1 run)"
    return f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f}"


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


def machine(r: dict[str, Any]) -> tuple[Any, ...]:
    """The kind of machine a record was made on (its ``environment``): runs pair only within one,
    as the same command on another kind gives another run (another encoder, other rounding).
    Records made before environments were recorded all come from one machine kind."""
    return (*kind(r), (r.get("environment") or {}).get("encoder_sha256"))


def differences(rows: list[dict[str, Any]], method: str, base: str = "source-only") -> list[float]:
    """acc(method) − acc(base) over the (target, seed) pairs both have, made on one kind of machine."""

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return r["target"], r["seed"], machine(r)

    by_key = {key(r): r["final_acc"] for r in rows if r["method"] == base}
    return [r["final_acc"] - by_key[key(r)]
            for r in rows if r["method"] == method and key(r) in by_key]  # fmt: skip


def interval(diffs: Sequence[float]) -> Optional[tuple[float, float, float]]:
    """Mean and 95 % t-interval of paired differences (None for fewer than 2)."""
    if len(diffs) < 2:
        return None
    half = t_quantile(0.975, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    mean = statistics.fmean(diffs)
    return mean, mean - half, mean + half


def paired_difference(rows: list[dict[str, Any]], method: str, base: str = "source-only") -> str:
    """Mean of acc(method) − acc(base) over the (target, seed) pairs both have, its 95 % t-interval,
    the number of pairs and the verdict ('better'/'worse' only when the interval excludes 0)."""
    diffs = differences(rows, method, base)
    ci = interval(diffs)
    if ci is None:
        return "–"
    mean, lo, hi = ci
    verdict = "better" if lo > 0 else "worse" if hi < 0 else "no clear difference"
    return f"{mean:+.1f} [{lo:+.1f}, {hi:+.1f}] (n = {len(diffs)}, {verdict})"


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


# --------------------------------------------------------------------------------------- tables
def main_tables(rows: list[dict[str, Any]], targets: Sequence[str], title: str) -> list[str]:
    """Final accuracy, paired differences, the validator's and the oracle's choice."""
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    methods = ["source-only", *[m for m in methods if m != "source-only"]]
    lines = [f"### {title}: final-step target accuracy (%), fused view -- THE result", ""]
    lines += method_table(rows, "final_acc", methods, targets)
    lines += ["", "Paired difference to source-only (final step, points): mean over the (target, "
              "seed) pairs [95 % t-interval].", "", "| method | difference to source-only |",
              "|---|---|"]  # fmt: skip
    lines += [
        f"| {LABELS[m]} | {paired_difference(rows, m)} |" for m in methods if m != "source-only"
    ]
    validator = next((r["validator"] for r in rows if r["validator"] != "final"), "final")
    lines += ["", f"Checkpoint selected by `{validator}` (no target labels) (%):", ""]
    lines += method_table(rows, "selected_acc", methods, targets)
    lines += ["", "Best over training (%): selection on the test set, NOT a valid result:", ""]
    lines += method_table(rows, "oracle_acc", methods, targets)
    return lines


def short_tables(
    records: list[dict[str, Any]], targets: Sequence[str], ablation_seeds: Sequence[int]
) -> str:
    main = [r for r in records if not r["variant"]]
    lines = main_tables(main, targets, f"{PRESET_STEPS} steps of {PRESET_BATCH} + {PRESET_BATCH} "
                        "(the short-budget regime)")  # fmt: skip
    ablations = [r for r in records if r["method"] == "lacmfer" and r["variant"] in ABLATIONS.values()
                 and r["seed"] in ablation_seeds]  # fmt: skip
    if ablations:
        seeds = sorted({r["seed"] for r in ablations})
        full = [r for r in main if r["method"] == "lacmfer" and r["seed"] in seeds]
        names = [
            "LA-CMFER",
            *[n for n, f in ABLATIONS.items() if any(r["variant"] == f for r in ablations)],
        ]
        lines += ["", f"### Ablations of LA-CMFER (final step, %, seed(s) {seeds})", "",
                  "| target | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]  # fmt: skip
        columns = {n: full if n == "LA-CMFER" else [r for r in ablations if r["variant"] == ABLATIONS[n]]
                   for n in names}  # fmt: skip
        complete = [
            t for t in targets if all(any(r["target"] == t for r in c) for c in columns.values())
        ]
        for t in [*targets, "mean"]:
            keep = complete if t == "mean" else [t]
            cells = [f"{statistics.fmean(v):.1f}" if (v := [r["final_acc"] for r in columns[n]
                     if r["target"] in keep]) else "–" for n in names]  # fmt: skip
            label = f"**mean of the {len(complete)} complete target(s)**" if t == "mean" else t
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    named = {"source-only": [r for r in main if r["method"] == "source-only"],
             "LA-CMFER": [r for r in main if r["method"] == "lacmfer"]}  # fmt: skip
    for name, flags in VARIANTS.items():
        named[name] = [r for r in records if r["method"] == "lacmfer" and r["variant"] == flags]
    variants = [n for n in list(named)[2:] if named[n]]
    if variants:
        seeds = sorted({r["seed"] for n in variants for r in named[n]})
        rows = [{**r, "method": n} for n, runs in named.items() for r in runs if r["seed"] in seeds]
        lines += ["", f"### Variants beyond the paper's recipe (final step, %, seeds {seeds})", ""]
        lines += method_table(rows, "final_acc", [n for n in named if named[n]], targets)
        lines += [
            "",
            "| variant | difference to source-only | difference to LA-CMFER |",
            "|---|---|---|",
        ]
        for n in variants:
            cells = [
                paired_difference(rows, n, "source-only"),
                paired_difference(rows, n, "LA-CMFER"),
            ]
            if VARIANTS[n] in ABLATIONS.values() and ablation_seeds:
                fresh = [r for r in rows if r["seed"] not in ablation_seeds]
                kept = sorted({r["seed"] for r in fresh if r["method"] == n})
                cells[0] += f"; seeds {kept} alone: {paired_difference(fresh, n, 'source-only')}"
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def rule_tables(records: list[dict[str, Any]], targets: Sequence[str],
                grid: Sequence[int] = RULE_BUDGETS) -> tuple[str, Optional[int]]:  # fmt: skip
    """The held-out source loss of source-only at each budget and the budget the rule picks."""
    runs = [r for r in records if r["method"] == "source-only" and r["variant"] == list(RULE_FLAGS)]
    losses: dict[int, float] = {}
    lines = ["### The budget rule: held-out source loss of source-only (seed 0)", "",
             "| steps | " + " | ".join(targets) + " | mean | held-out source acc (%) | target acc (%) |",
             "|---:|" + "---:|" * (len(targets) + 3)]  # fmt: skip
    for b in grid:
        cell = {r["target"]: r for r in runs if r["steps"] == b}
        if not cell:
            continue
        vals = [cell[t]["evals"][-1]["source_val_loss"] if t in cell else None for t in targets]
        done = [v for v in vals if v is not None]
        mean = statistics.fmean(done) if len(done) == len(targets) else None
        if mean is not None:
            losses[b] = mean
        src = _mean([100 * cell[t]["evals"][-1]["source-acc"] for t in targets if t in cell])
        tgt = _mean([cell[t]["final_acc"] for t in targets if t in cell])
        cells = ["–" if v is None else f"{v:.4f}" for v in [*vals, mean]]
        lines.append(f"| {b} | " + " | ".join(cells) + f" | {src or 0:.1f} | {tgt or 0:.1f} |")
    chosen = None
    for b in grid:
        if b in losses and 2 * b in losses and losses[2 * b] > (1 - RULE_TOLERANCE) * losses[b]:
            chosen = b
            break
    if chosen is None and len(losses) == len(grid):
        chosen = grid[-1]  # still improving at the largest budget the grid affords
    verdict = f"Chosen: **{chosen} steps**." if chosen else "Not decided yet (runs missing)."
    lines += ["", f"Rule: the smallest budget B at which doubling it lowers the mean held-out "
              f"source loss by less than {100 * RULE_TOLERANCE:.0f} %. {verdict}"]  # fmt: skip
    return "\n".join(lines) + "\n", chosen


def curve_tables(records: list[dict[str, Any]],
                 targets: Sequence[str] = CURVE_TARGETS) -> tuple[str, list[dict[str, Any]]]:  # fmt: skip
    """Per budget and batch: each method's accuracy, its paired difference to source-only and to
    MMD, and why (source cross-entropy, SID's effective samples, confident samples)."""
    names = {("lacmfer", ()): "LA-CMFER", ("lacmfer", ("--no-sid",)): "LA-CMFER w/o SID",
             ("source-only", ()): "source-only", ("mmd", ()): "MMD"}  # fmt: skip
    lines = ["### The budget curve (final step; targets " + ", ".join(targets) + ")", "",
             "Paired differences over the (target, seed) pairs, mean [95 % t-interval]; "
             "`CE` = source cross-entropy of the two heads and `n_eff` = effective number of "
             "source / target samples the sample-level alignment's weights rest on (global "
             "branch), both averaged over the last fifth of the logged steps. Runs pair only with "
             "runs of the same kind of machine (a record's `environment`; one made on another kind "
             "starts from another stand-in encoder), so a pair whose runs were made on two kinds "
             "counts in `acc` and `runs` but in no difference.", "",
             "| batch | steps | method | acc (%) | vs source-only | vs MMD | vs w/o SID | CE | "
             "n_eff s / t | runs |", "|---:|---:|---|---:|---|---|---|---:|---:|---:|"]  # fmt: skip
    points = []
    for batch in sorted({r["batch"] for r in records}):
        for steps in sorted({r["steps"] for r in records if r["batch"] == batch}):
            rows = [{**r, "method": names[(r["method"], tuple(r["variant"]))]} for r in records
                    if r["batch"] == batch and r["steps"] == steps and r["target"] in targets
                    and (r["method"], tuple(r["variant"])) in names]  # fmt: skip
            for name in names.values():
                mine = [r for r in rows if r["method"] == name]
                if not mine:
                    continue
                ce = _mean([r.get("train", {}).get("ce") for r in mine])
                eff_s = _mean([r.get("train", {}).get("effective_s_g") for r in mine])
                eff_t = _mean([r.get("train", {}).get("effective_t_g") for r in mine])
                vs_so = paired_difference(rows, name) if name != "source-only" else "—"
                vs_mmd = paired_difference(rows, name, "MMD") if name != "MMD" else "—"
                vs_sid = "—"  # SID's own effect: LA-CMFER against its ablation
                if name == "LA-CMFER":
                    vs_sid = paired_difference(rows, name, "LA-CMFER w/o SID")
                acc = mean_std([r["final_acc"] for r in mine])
                eff = "–" if eff_s is None else f"{eff_s:.1f} / {eff_t:.1f}"
                lines.append(f"| {batch} | {steps} | {name} | {acc} | {vs_so} | {vs_mmd} | {vs_sid} | "
                             f"{'–' if ce is None else f'{ce:.2f}'} | {eff} | {len(mine)} |")  # fmt: skip
                diffs = differences(rows, name) if name != "source-only" else []
                ci = interval(diffs)
                if ci is not None:
                    points.append({"batch": batch, "steps": steps, "method": name, "mean": ci[0],
                                   "lo": ci[1], "hi": ci[2], "n": len(diffs)})  # fmt: skip
    lines += ["", "Per target: final accuracy (%), mean ± std over the seeds.", "",
              "| batch | steps | target | " + " | ".join(names.values()) + " |",
              "|---:|---:|---|" + "---:|" * len(names)]  # fmt: skip
    for batch, steps, target in sorted({(r["batch"], r["steps"], r["target"]) for r in records
                                        if r["target"] in targets}):  # fmt: skip
        cells = [mean_std([r["final_acc"] for r in records if (r["batch"], r["steps"], r["target"],
                           r["method"], tuple(r["variant"])) == (batch, steps, target, *key)])
                 for key in names]  # fmt: skip
        lines.append(f"| {batch} | {steps} | {target} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n", points


def curve_figure(points: list[dict[str, Any]], path: Path) -> bool:
    """Difference to source-only against steps: one curve per batch size, LA-CMFER solid, without
    SID dashed, MMD dotted, with the 95 % intervals; a point resting on fewer (target, seed) pairs
    than the most any point has is labelled with its count."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    if not points:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    styles = {"LA-CMFER": ("-", "o"), "LA-CMFER w/o SID": ("--", "s"), "MMD": (":", "^")}
    shift = {"LA-CMFER": 1.0, "LA-CMFER w/o SID": 1.04, "MMD": 0.96}  # keeps the bars apart
    colours = {32: "tab:blue", 128: "tab:orange"}
    most = max(p["n"] for p in points)
    for batch, method in sorted({(p["batch"], p["method"]) for p in points}):
        pts = sorted(
            (p for p in points if p["batch"] == batch and p["method"] == method),
            key=lambda p: p["steps"],
        )
        xs = [p["steps"] * shift.get(method, 1.0) for p in pts]
        ys = [p["mean"] for p in pts]
        line, marker = styles.get(method, ("-", "o"))
        ax.errorbar(xs, ys, yerr=[[p["mean"] - p["lo"] for p in pts],
                    [p["hi"] - p["mean"] for p in pts]], linestyle=line, marker=marker, capsize=3,
                    color=colours.get(batch, "grey"), label=f"{method}, {batch} + {batch}")  # fmt: skip
        for x, y, p in zip(xs, ys, pts):
            if p["n"] < most:
                ax.annotate(f"n = {p['n']}", (x, y), xytext=(4, 4), textcoords="offset points",
                            fontsize=6)  # fmt: skip
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    budgets = sorted({p["steps"] for p in points})
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.minorticks_off()
    ax.set(xlabel="training steps (budget)", ylabel="final accuracy − source-only (points)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


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
            lines.append(f"| {v} | {mean_std(rhos)} | {statistics.fmean(picked):.1f} | {final:.1f} | "
                         f"{oracle:.1f} | {len(picked)} |")  # fmt: skip
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ main
def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        argv, extra = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    p = Parser(prog="run_benchmark.py", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("studies", nargs="+", choices=STUDIES, metavar="study",
                   help=f"one or more of {', '.join(STUDIES)} (several: one pool of runs)")  # fmt: skip
    p.add_argument("--seeds", type=_count(0), nargs="+", default=[0, 1, 2])
    p.add_argument("--targets", nargs="+", default=list(SIX_DOMAINS), type=domain)
    p.add_argument("--curve-targets", nargs="+", default=list(CURVE_TARGETS), type=domain)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--ablation-seeds", type=_count(0), nargs="*", default=[0])
    p.add_argument("--batches", type=_count(2), nargs="+", default=sorted(CURVE_BUDGETS),
                   help="curve: batch sizes (source = target)")  # fmt: skip
    p.add_argument("--budgets", type=_count(1), nargs="+", help="rule, curve: budgets (default: "
                   "theirs)")  # fmt: skip
    p.add_argument("--device", default="cpu", type=_device, help="cpu, or cuda (cuda:N) to run "
                   "--jobs runs on one GPU")  # fmt: skip
    p.add_argument("--jobs", type=_count(1), default=2, help="runs at a time, one thread each")
    p.add_argument("--records", default=str(RESULTS / "benchmark_runs.jsonl"))
    p.add_argument("--results", type=Path, default=RESULTS, help="folder of the tables")
    p.add_argument("--preset", default="benchmark", help="train_cmfer preset of every run")
    p.add_argument("--runs", default="runs/synthetic_benchmark", help="folder of the run outputs")
    p.add_argument("--figure", type=Path, help=f"the curve's figure (default: {_shown(str(FIGURE))}"
                   ", or budget_curve.png in --results when that is given)")  # fmt: skip
    p.add_argument("--max-runs", type=_count(0), help="stop after this many new runs")
    p.add_argument("--dry-run", action="store_true", help="print the commands still to run")
    p.add_argument("--tables-only", action="store_true", help="no runs: rewrite the tables")
    p.add_argument("--reproduce", type=_count(1), metavar="N", help="no new runs: rerun N of the "
                   "studies' records made on this kind of machine, drawn at random (--draw), "
                   "into <--runs>/reproduce, and compare")  # fmt: skip
    p.add_argument("--draw", type=int, default=0, help="--reproduce: seed of the random draw")
    args = p.parse_args(argv)
    studies = list(dict.fromkeys(args.studies))  # in the order given, each once
    if "rule" in studies and "trained" in studies:
        p.error("study trained: it reads the budget the rule study chooses; run rule first, alone")
    if args.figure is None:
        args.figure = FIGURE if args.results == RESULTS else args.results / FIGURE.name
    if args.preset not in PRESETS:
        p.error(f"--preset {args.preset}: not one of the training example's ({', '.join(PRESETS)})")
    records_path = Path(args.records)
    if records_path.is_dir():
        p.error(f"--records {records_path}: a folder; name the JSON-lines file of the records")
    try:
        records = read_records(records_path)
        plan = {study: study_jobs(study, args, extra) for study in studies}
    except ValueError as err:  # a damaged records file; no budget for the trained study
        p.error(str(err))
    if args.reproduce is not None:
        if args.tables_only:
            p.error("--reproduce reruns records; --tables-only runs nothing: give one of them")
        return reproduce(plan, records, args, p)
    done = {r["command"] for r in records}
    here = this_machine(args.device)
    owner: dict[str, str] = {}  # command -> the first study that lists it
    runs: list[dict[str, Any]] = []  # every study's runs still to run in order, a shared run once
    for study, jobs in plan.items():
        recorded = sum(j["command"] in done for j in jobs)
        pending = still_to_run(jobs, records, here)
        again = sum(j["command"] in done for j in pending)
        print(f"{study}: {recorded} of {len(jobs)} runs in the records" + (
              f"; {again} of them made again here with their group (runs pair only within one "
              "kind of machine, and no one kind has their group complete)" if again else ""),
              flush=True)  # fmt: skip
        for j in jobs:
            owner.setdefault(j["command"], study)
        runs += [j for j in pending if j["command"] not in {r["command"] for r in runs}]
    # interrupted runs first: they are the nearest to a record
    runs.sort(key=lambda j: not (ROOT / j["folder"] / "checkpoints" / "last.pt").exists())
    todo = [] if args.tables_only else runs
    todo = todo[: args.max_runs] if args.max_runs is not None else todo
    print(f"{'/'.join(studies)}: {len(todo)} to run, {args.jobs} at a time", flush=True)
    # The example checks the settings of one run of each method and variant (--preset, the
    # flags after --) before any starts, so a mistake stops nothing hours later.
    first = {(j["method"], tuple(j["variant"])): j for j in reversed(todo)}
    with ThreadPoolExecutor(args.jobs) as pool:
        for j, why in zip(first.values(), pool.map(refusal, first.values())):
            if why is not None:
                why = why.removeprefix("train_cmfer.py: error: ")
                p.error(f"the training example refuses the runs' settings ({why}); its "
                        f"command: {j['command']}")  # fmt: skip
    if args.dry_run:
        print("\n".join(j["command"] for j in todo))
        return 0
    failed = 0
    if todo:
        try:  # before the first run, not when the first record arrives an hour later
            records_path.parent.mkdir(parents=True, exist_ok=True)
            records_path.open("a").close()
        except OSError as err:
            p.error(f"--records {records_path}: cannot write there ({err.strerror})")
        with ThreadPoolExecutor(args.jobs) as pool:
            futures = {pool.submit(execute, j): j for j in todo}
            for future in as_completed(futures):
                try:
                    r = future.result()
                except Exception as err:  # one failed run: the others go on and are recorded
                    failed += 1
                    print(f"{owner[futures[future]['command']]}: {err}", file=sys.stderr,
                          flush=True)  # fmt: skip
                    continue
                with records_path.open("a") as f:
                    f.write(json.dumps(r) + "\n")
                records.append(r)
                print(f"{owner[r['command']]}: seed {r['seed']} {r['target']:<10} {r['method']} "
                      f"{' '.join(r['variant'])} b{r['batch']} s{r['steps']}: final "
                      f"{r['final_acc']:5.1f} ({r['wall_s']:.0f} s)", flush=True)  # fmt: skip
    done = {r["command"] for r in records}
    others = [a for a in argv if a not in STUDIES]  # no option value is a study's name
    others += ["--", *extra] if extra else []
    for study, jobs in plan.items():
        commands = {j["command"] for j in jobs}
        rows = counted(jobs, records)
        superseded = sum(r["command"] in commands for r in records) - len(rows)
        missing = still_to_run(jobs, records, here)
        invocation = shlex.join(["python", "examples/benchmark/run_benchmark.py", study, *others])
        write_tables(study, rows, superseded, args, invocation)
        if missing:  # said in the table, so a partial table cannot pass for a finished one
            cells = Counter((j["steps"], j["batch"]) for j in missing)
            where = ", ".join(
                f"{n} at {s} steps of {b} + {b}" for (s, b), n in sorted(cells.items())
            )
            again = sum(j["command"] in done for j in missing)
            if again:
                name = ", ".join(str(v) for v in here if v)
                where += (f"; on a machine of the kind that wrote this table, {name}: {again} of "
                          f"them {'is' if again == 1 else 'are'} recorded on another kind, in "
                          "groups that no one kind has complete")  # fmt: skip
            with (args.results / TABLES[study]).open("a") as f:
                f.write(f"\n**Still to run: {len(missing)} of {len(jobs)} runs** ({where}); "
                        f"`run_benchmark.py {study}` resumes them.\n")  # fmt: skip
    if failed:
        print(f"{'/'.join(studies)}: {failed} run(s) failed (above); their folders are kept, and "
              "the next start resumes them from their last checkpoint", file=sys.stderr,
              flush=True)  # fmt: skip
        return 1
    return 0


def reproduce(plan: dict[str, list[dict[str, Any]]], records: list[dict[str, Any]],
              args: argparse.Namespace, p: argparse.ArgumentParser) -> int:  # fmt: skip
    """Rerun ``--reproduce`` records of the studies, drawn at random among those made on this kind
    of machine (only they can repeat bit for bit), each from its command with ``--out`` moved
    under ``<--runs>/reproduce``; print recorded against rerun, append each comparison to
    ``reproductions.jsonl`` in ``--results``. Exit status 1 when a final accuracy differs by more
    than one point."""
    here = this_machine(args.device)
    pool: list[dict[str, Any]] = []
    for jobs in plan.values():
        pool += [r for r in counted(jobs, records) if kind(r) == here and r not in pool]
    if len(pool) < args.reproduce:
        name = ", ".join(str(v) for v in here if v)
        p.error(f"--reproduce {args.reproduce}: the studies hold {len(pool)} record(s) made on this "
                f"kind of machine ({name}); a record repeats only on the kind that made it")  # fmt: skip
    drawn = random.Random(args.draw).sample(pool, args.reproduce)
    jobs = []
    for r in drawn:
        argv = shlex.split(r["command"])
        i = argv.index("--out") + 1
        out = Path(argv[i])
        try:  # the run's folder under --runs, else its whole path, below <--runs>/reproduce
            rel = out.relative_to(args.runs)
        except ValueError:
            rel = out.relative_to(out.anchor)
        argv[i] = str(Path(args.runs) / "reproduce" / rel)
        device = argv[argv.index("--device") + 1] if "--device" in argv else "cpu"
        jobs.append({**{k: r[k] for k in ("method", "target", "seed", "variant", "steps", "batch")},
                     "folder": argv[i], "device": device, "command": shlex.join(argv)})  # fmt: skip
    print(f"reproduce: {len(jobs)} of the {len(pool)} records made here, drawn with "
          f"random.Random({args.draw}), {args.jobs} at a time", flush=True)  # fmt: skip
    if args.dry_run:
        print("\n".join(j["command"] for j in jobs))
        return 0
    with ThreadPoolExecutor(args.jobs) as pool_:
        reruns = list(pool_.map(execute, jobs))
    lines = ["| record | recorded | rerun | largest difference over the evaluations |",
             "|---|---:|---:|---:|"]  # fmt: skip
    worst = 0.0
    path = args.results / "reproductions.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    for r, again in zip(drawn, reruns):
        diffs = [abs(a["acc"] - b["acc"]) for a, b in zip(r["evals"], again["evals"])]
        gap = max([abs(r["final_acc"] - again["final_acc"]), *diffs])
        worst = max(worst, abs(r["final_acc"] - again["final_acc"]))
        name = (f"{r['target']}, {r['method']}{''.join(' ' + v for v in r['variant'])}, "
                f"{r['steps']} steps of {r['batch']} + {r['batch']}, seed {r['seed']}")  # fmt: skip
        lines.append(f"| {name} | {r['final_acc']:.1f} | {again['final_acc']:.1f} | {gap:.2g} |")
        with path.open("a") as f:
            f.write(json.dumps({"record": r["command"], "recorded": r["final_acc"],
                                "rerun": again, "draw": args.draw,
                                "date": time.strftime("%Y-%m-%d")}) + "\n")  # fmt: skip
    print("\n".join(lines), flush=True)
    if worst > 1.0:
        print(f"reproduce: a final accuracy differs by {worst:.1f} points (more than 1)",
              file=sys.stderr, flush=True)  # fmt: skip
        return 1
    return 0


class Parser(argparse.ArgumentParser):
    """argparse with a mistake answered in one line naming the option (exit status 2)."""

    def error(self, message: str) -> Any:
        print(f"{self.prog}: error: {message}", file=sys.stderr, flush=True)
        raise SystemExit(2)


def _count(low: int) -> Any:
    def count(text: str) -> int:
        value = int(text)
        if value < low:
            raise ValueError
        return value

    count.__name__ = f"integer >= {low}"  # what argparse's message calls the expected type
    return count


def _device(name: str) -> str:
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise ValueError
    return name


_device.__name__ = "device (cpu, cuda or cuda:N)"


def domain(name: str) -> str:
    return canonical_dataset(name, SIX_DOMAINS)


def _header(title: str, invocation: str, rows: list[dict[str, Any]], records_path: str,
            superseded: int = 0) -> str:  # fmt: skip
    wall = sum(r["wall_s"] for r in rows)
    resumed = sum(bool(r.get("resumed")) for r in rows)
    since = f" ({resumed} resumed after an interruption: from their resume)" if resumed else ""
    timed = [r["train_s"] for r in rows if "train_s" in r]
    if timed:  # records made before train_s was recorded have only wall_s
        some = "" if len(timed) == len(rows) else f" over the {len(timed)} runs that record it"
        since += f", their training steps {sum(timed) / 3600:.1f} h (resumes included){some}"
    return "\n".join([
        f"# {title}", "",
        f"Generated by `{invocation}` from `{_shown(records_path)}` (one line per run, each with the "
        "exact command that reproduces it). Every run: `examples/train_cmfer.py --preset "
        "benchmark` (LACMFER.tiny with the synthetic benchmark's stand-in encoder, 48×48 images, "
        "3000 images per domain, 500 target test images from a separate draw, the paper's loss "
        "weights and optimiser, lr horizon = steps / 2) with the budget and batch shown; one "
        f"thread a run. Runs: {len(rows)}, their summed wall time {wall / 3600:.1f} h{since}; "
        f"machines: {_machines(rows)}.{_superseded(superseded)}", "", "",
    ])  # fmt: skip


def _superseded(n: int) -> str:
    if not n:
        return ""
    return (f" Not counted: {n} record(s) of these runs made on another kind of machine, whose "
            "groups of runs that pair (a target and seed at one budget) are counted from the kind "
            "that holds most of them; the records stay in the file.")  # fmt: skip


def _machines(rows: list[dict[str, Any]]) -> str:
    """The kinds of machine the runs were made on, with their counts."""
    kinds = Counter(
        "one kind, not recorded (records made before they held their environment; a 2-core x86_64 CPU)"
        if not r.get("environment") else
        f"{r['environment']['cpu']} ({r['environment'].get('gpu') or r['environment']['cpu_capability']}"
        f", encoder {str(r['environment'].get('encoder_sha256'))[:8]})"
        for r in rows
    )  # fmt: skip
    return "; ".join(f"{n} on {kind}" for kind, n in kinds.most_common())


def _shown(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return path


def write_tables(study: str, rows: list[dict[str, Any]], superseded: int,
                 args: argparse.Namespace, invocation: str) -> None:  # fmt: skip
    args.results.mkdir(parents=True, exist_ok=True)
    if study == "short":
        text = _header(
            "Synthetic benchmark, short budget: 250 steps of 32 + 32",
            invocation,
            rows,
            args.records,
            superseded,
        )
        text += short_tables(rows, args.targets, args.ablation_seeds)
        notes = args.results / "benchmark_notes.md"
        text += ("\n" + notes.read_text()) if notes.exists() else ""
        path = args.results / TABLES["short"]
        vtext = _header(
            "Unsupervised validators on the short-budget benchmark",
            invocation,
            rows,
            args.records,
            superseded,
        )
        (args.results / "validators.md").write_text(vtext + validator_tables(rows))
    elif study == "rule":
        table, chosen = rule_tables(rows, args.curve_targets, args.budgets or RULE_BUDGETS)
        text = _header("The budget rule", invocation, rows, args.records, superseded) + table
        path = args.results / TABLES["rule"]
        if chosen is not None and trained_budget(args.results) != chosen:
            rule = {"budget": chosen, "rule": RULE_FLAGS, "tolerance": RULE_TOLERANCE,
                    "grid": args.budgets or RULE_BUDGETS, "invocation": invocation}  # fmt: skip
            (args.results / TRAINED).write_text(json.dumps(rule, indent=2) + "\n")
    elif study == "curve":
        table, points = curve_tables(rows, args.curve_targets)
        text = _header("Does LA-CMFER help once the sources are learned? The budget curve", invocation,
                       rows, args.records, superseded) + table  # fmt: skip
        path = args.results / TABLES["curve"]
        if curve_figure(points, args.figure):
            text += f"\nFigure: `{_shown(str(args.figure))}`.\n"
        notes = args.results / "curve_notes.md"  # the reading, by hand
        text += ("\n" + notes.read_text()) if notes.exists() else ""
    else:
        budget = trained_budget(args.results)
        text = _header(f"Synthetic benchmark at the trained budget: {budget} steps of 32 + 32",
                       invocation, rows, args.records, superseded)  # fmt: skip
        text += (
            "\n".join(main_tables(rows, args.targets, f"{budget} steps (the rule's budget)")) + "\n"
        )
        path = args.results / TABLES["trained"]
    path.write_text(text)
    print(text)


if __name__ == "__main__":
    raise SystemExit(main())
