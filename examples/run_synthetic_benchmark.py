#!/usr/bin/env python
"""Compare LA-CMFER with source-only and the baselines on the synthetic benchmark, over seeds.

Every (seed, target, method) is one run of ``examples/train_cmfer.py`` with the same budget
(``--preset benchmark`` plus any overrides given after ``--``). The result of a run is its
**final-step** target test accuracy (fused view); best-over-training is reported separately and
labelled as selection on the test set. Runs are spread over ``--jobs`` worker processes with
``--threads`` torch threads each; finished runs are appended to ``<out>/runs.jsonl``, so an
interrupted benchmark continues where it stopped when started again with the same arguments.

Usage::

    python examples/run_synthetic_benchmark.py                      # 3 seeds × 6 targets × 7 methods
    python examples/run_synthetic_benchmark.py --seeds 0 --targets CK+ JAFFE -- --steps 50

Writes the markdown table to ``--results`` (default ``examples/results/synthetic_benchmark.md``).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import shlex
import signal
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import train_cmfer
from cmfer.data import TARGETS

HERE = Path(__file__).resolve().parent
METHODS = ("source-only", "mmd", "dann", "coral", "m3sda", "mcc", "lacmfer")
LABELS = {"source-only": "source-only", "mmd": "MMD", "dann": "DANN", "coral": "CORAL",
          "m3sda": "M3SDA", "mcc": "MCC", "lacmfer": "LA-CMFER"}  # fmt: skip


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train one (seed, target, method) and return its numbers (runs in a worker process)."""
    import torch

    torch.set_num_threads(job["threads"])
    script = train_cmfer
    folder = Path(job["out"]) / f"seed{job['seed']}" / job["target"].replace("+", "plus")
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in job["method"])
    method_args = job.get("variant_args") or ["--method", job["method"]]
    args = [
        "--preset", job["preset"], *job["extra"], *method_args,
        "--target", job["target"], "--seed", str(job["seed"]), "--device", "cpu",
        "--out", str(folder / name), "--no-progress",
    ]  # fmt: skip
    summary = script.train(script.config_from_args(args))
    final, best = summary["final"], summary["oracle"]
    return {
        "seed": job["seed"],
        "target": summary["target"],
        "method": job["method"],
        "variant_args": job.get("variant_args") or [],
        "acc_fused": final["acc_fused"],
        "acc_global": final["acc_global"],
        "acc_local": final["acc_local"],
        "macro_f1_fused": final["macro_f1_fused"],
        "best_acc_fused": best["acc_fused"],
        "wall_time_s": summary["wall_time_s"],
        "train_time_s": summary["train_time_s"],
        "steps": summary["config"]["steps"],
    }


def _mean_std(values: Sequence[float]) -> str:
    if not values:
        return "–"
    mean = 100 * statistics.fmean(values)
    std = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {std:.1f}"


def make_table(rows: list[dict[str, Any]], methods: Sequence[str], targets: Sequence[str]) -> str:
    """Markdown tables: final-step accuracy (THE result) and best-over-training (labelled)."""

    def cell(target: Optional[str], method: str, key: str) -> str:
        if target is None:  # average over targets, per seed, then mean ± std over seeds
            seeds = sorted({r["seed"] for r in rows})
            per_seed = []
            for s in seeds:
                vals = [r[key] for r in rows if r["seed"] == s and r["method"] == method]
                if len(vals) == len(targets):
                    per_seed.append(statistics.fmean(vals))
            return _mean_std(per_seed)
        return _mean_std([r[key] for r in rows if r["target"] == target and r["method"] == method])

    out = []
    for key, title in (
        ("acc_fused", "Final-step target accuracy (%), fused view: THE result"),
        ("best_acc_fused", "Best over training (%): selection on the test set, NOT a valid result"),
    ):
        out.append(f"### {title}\n")
        out.append("| target | " + " | ".join(LABELS.get(m, m) for m in methods) + " |")
        out.append("|---|" + "---|" * len(methods))
        for t in targets:
            out.append(f"| {t} | " + " | ".join(cell(t, m, key) for m in methods) + " |")
        out.append(
            "| **mean of the targets** | "
            + " | ".join(f"**{cell(None, m, key)}**" for m in methods)
            + " |"
        )
        out.append("")
    return "\n".join(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--targets", nargs="+", default=None, help="default: the six domains")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=ARGS",
        help="an extra column: train_cmfer flags under a label, e.g. "
        "'LA-CMFER w/o SID+CID=--method lacmfer --no-sid --no-cid' (repeatable)",
    )
    p.add_argument("--notes", default=None, help="markdown file appended to the results")
    p.add_argument("--preset", default="benchmark", help="train_cmfer preset of every run")
    p.add_argument("--jobs", type=int, default=2, help="worker processes")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--out", default="runs/synthetic_benchmark", help="run folders and runs.jsonl")
    p.add_argument(
        "--results",
        default=str(HERE / "results" / "synthetic_benchmark.md"),
        help="markdown file for the tables ('' to skip)",
    )
    args = p.parse_args(argv)
    script = train_cmfer
    targets = list(args.targets or TARGETS)
    targets = [
        script.config_from_args(["--target", t, "--device", "cpu"]).targets[0] for t in targets
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw = out / "runs.jsonl"
    key_args = {"preset": args.preset, "extra": extra}
    done: list[dict[str, Any]] = []
    if raw.exists():
        for line in raw.read_text().splitlines():
            r = json.loads(line)
            if r.get("setup") == key_args:
                done.append(r)
    columns: dict[str, list[str]] = {m: [] for m in args.methods}
    for spec in args.variant:
        label, sep, flags = spec.partition("=")
        if not sep or not label.strip():
            raise SystemExit(f"--variant must be LABEL=ARGS, got {spec!r}")
        columns[label.strip()] = shlex.split(flags)
    done = [r for r in done if r["method"] in columns]
    done = [r for r in done if r.get("variant_args", []) == columns[r["method"]]]
    have = {(r["seed"], r["target"], r["method"]) for r in done}
    jobs = [
        {"seed": s, "target": t, "method": m, "variant_args": columns[m], "preset": args.preset,
         "extra": extra, "threads": args.threads, "out": str(out)}
        for s in args.seeds for t in targets for m in columns
        if (s, t, m) not in have
    ]  # fmt: skip
    print(f"{len(done)} runs already done, {len(jobs)} to run on {args.jobs} worker(s)", flush=True)
    start = time.perf_counter()
    # SIGTERM -> SystemExit, so the pool below terminates its workers instead of orphaning them
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if jobs:
        ctx = mp.get_context("spawn")  # fresh interpreters: no forked thread pools
        with ctx.Pool(args.jobs, maxtasksperchild=None) as pool:
            for r in pool.imap_unordered(run_one, jobs):
                r["setup"] = key_args
                done.append(r)
                with raw.open("a") as f:
                    f.write(json.dumps(r) + "\n")
                print(
                    f"seed {r['seed']} {r['target']:<10} {r['method']:<11} final acc "
                    f"{100 * r['acc_fused']:5.1f}  ({r['wall_time_s']:.0f} s)",
                    flush=True,
                )
    elapsed = time.perf_counter() - start
    rows = [r for r in done if r["seed"] in args.seeds and r["target"] in targets]
    rows = [r for r in rows if r["method"] in columns]
    table = make_table(rows, list(columns), targets)
    cfg = script.config_from_args(["--preset", args.preset, *extra, "--device", "cpu"])
    run_time = sum(r["wall_time_s"] for r in rows)
    per_method = {
        m: statistics.fmean([r["wall_time_s"] for r in rows if r["method"] == m] or [math.nan])
        for m in columns
    }
    command = "python examples/run_synthetic_benchmark.py " + shlex.join(
        [*(argv or []), *(["--", *extra] if extra else [])]
    )
    text = "\n".join(
        [
            "# Synthetic six-domain benchmark: LA-CMFER, source-only and the baselines\n",
            f"Command: `{command.strip()}`  ",
            f"Per run: `--preset {args.preset}` {shlex.join(extra)} -- {cfg.steps} steps, "
            f"{cfg.batch_size}+{cfg.target_batch} images a step, {cfg.image_size}×{cfg.image_size}, "
            f"width `{cfg.width}`, lr {cfg.lr} (encoder × {cfg.encoder_lr_scale}), "
            f"{cfg.synthetic_train_size} training images per domain, {cfg.synthetic_test_size} "
            "target test images (a separate draw). Same budget for every method.  ",
            f"Seeds {args.seeds}; mean ± std over seeds (the mean row: mean over targets per "
            "seed, then mean ± std over seeds).  ",
            f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores "
            f"(shared), {args.jobs} worker(s) × {args.threads} thread(s).  ",
            f"Wall time of this invocation: {elapsed / 60:.1f} min for {len(jobs)} new run(s) "
            f"({len(rows) - len(jobs)} reused from {raw}); summed run time of the "
            f"{len(rows)} runs in the tables: {run_time / 60:.1f} min; mean per run: "
            + ", ".join(f"{LABELS.get(m, m)} {per_method[m]:.0f} s" for m in columns)
            + ".\n",
            *(f"Column `{m}`: `{shlex.join(flags)}`.  " for m, flags in columns.items() if flags),
            "",
            table,
            Path(args.notes).read_text() if args.notes else "",
        ]
    )
    print(text)
    if args.results:
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        Path(args.results).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
