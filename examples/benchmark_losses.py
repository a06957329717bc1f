"""Benchmark: LA-CMFER losses, vectorised (lacmfer) vs a loop transcription, side by side.

Measures forward + backward of SID + CID (one branch) + MCC + MVV at ``B_s = B_t = B`` for several
``B`` with ``D = 1024`` and ``K = 7``, and prints one table with time and peak memory of both and their
ratios. Each measurement runs in a fresh subprocess, so peak memory is not polluted by the other runs:
on CPU it is the growth of the process's peak resident set during one forward + backward, on CUDA
``torch.cuda.max_memory_allocated``.

The loop transcription is what a direct reading of the equations gives, in the style of common
domain-adaptation code: Python loops over samples, classes and class pairs with boolean-mask indexing
and ``.item()``, and the classic multi-kernel MMD that materialises the ``(n, n, D)`` difference tensor.
It computes the same values (checked at the start of every run).

Extra rows time the baseline losses of :mod:`lacmfer.losses` (DANN with its discriminator, CORAL,
M3SDA moment matching, Minimum Class Confusion) at ``B_s = B_t = 128`` (``--baseline-size``),
forward + backward, lacmfer only: no loop transcription is run for them.

Usage::

    python examples/benchmark_losses.py                 # B in {32, 128, 512} on CPU
    python examples/benchmark_losses.py --sizes 32 128 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F

from lacmfer.functional import (
    coral,
    dual_level_alignment,
    minimum_class_confusion,
    moment_matching,
    multi_view_clustering_consistency,
    multi_view_pseudo_label_loss,
)
from lacmfer.losses import DomainAdversarialLoss

K = 7
D = 1024


# --------------------------------------------------------------------------------------------------
# The loop transcription.


def _dan_kernel(x: torch.Tensor, y: torch.Tensor, kernel_num: int = 5, kernel_mul: float = 2.0):
    """Classic multi-kernel Gaussian over x ∪ y, built from the (n, n, D) difference tensor."""
    total = torch.cat([x, y], dim=0)
    n = total.shape[0]
    diff = total.unsqueeze(0).expand(n, n, -1) - total.unsqueeze(1).expand(n, n, -1)
    l2 = (diff**2).sum(2)
    scale = total.detach().abs().max().item()
    beta = max(l2.detach().sum().item() / max(n * n - n, 1), 1e-12 * scale * scale)
    kernels = [
        torch.exp(-l2 / (beta * kernel_mul ** (q - kernel_num // 2))) for q in range(kernel_num)
    ]
    return sum(kernels)


def loop_losses(fs, zs, ys, ft, zt, zg_t, zl_t, threshold=0.4, tau=0.9):  # type: ignore[no-untyped-def]
    b_s, b_t = fs.shape[0], ft.shape[0]
    # Masks and pseudo-labels, sample by sample.
    mask_s, mask_t, pseudo = [], [], []
    for i in range(b_s):
        mask_s.append(torch.softmax(zs[i].detach(), 0).max().item() >= threshold)
    for j in range(b_t):
        p = torch.softmax(zt[j].detach(), 0)
        mask_t.append(p.max().item() >= threshold)
        pseudo.append(int(p.argmax().item()))
    labels = [int(y) for y in ys.tolist()]
    # Hardness, sample by sample.
    h_s, h_t = [], []
    for i in range(b_s):
        z = zs[i].detach()
        target = torch.zeros_like(z)
        target[labels[i]] = z.max()
        ok = mask_s[i] and labels[i] in pseudo
        h_s.append(((z - target) ** 2).mean().item() if ok else 0.0)
    for j in range(b_t):
        z = zt[j].detach()
        target = torch.zeros_like(z)
        target[pseudo[j]] = z.max()
        ok = mask_t[j] and pseudo[j] in labels
        h_t.append(((z - target) ** 2).mean().item() if ok else 0.0)
    ws = torch.tensor([h / sum(h_s) if sum(h_s) > 0 else 0.0 for h in h_s], dtype=fs.dtype)
    wt = torch.tensor([h / sum(h_t) if sum(h_t) > 0 else 0.0 for h in h_t], dtype=fs.dtype)
    kern = _dan_kernel(fs, ft)
    sid = ws @ kern[:b_s, :b_s] @ ws + wt @ kern[b_s:, b_s:] @ wt - 2 * ws @ kern[:b_s, b_s:] @ wt
    # Cluster level, pair by pair.
    same, cross = [], []
    ms = torch.tensor(mask_s)
    mt = torch.tensor(mask_t)
    for k in range(K):
        src = fs[ms & (ys == k)]
        for kk in range(K):
            tgt = ft[mt & (torch.tensor(pseudo) == kk)]
            if len(src) == 0 or len(tgt) == 0:
                continue
            kk_ = _dan_kernel(src, tgt)
            n = len(src)
            value = kk_[:n, :n].mean() + kk_[n:, n:].mean() - 2 * kk_[:n, n:].mean()
            (same if k == kk else cross).append(value)
    cid = sum(same) / len(same) - sum(cross) / len(cross) if same and cross else fs.sum() * 0
    # Multi-view clustering consistency, class pair by class pair.
    pg, pl = torch.softmax(zg_t, 1), torch.softmax(zl_t, 1)
    m = [[(pg[:, k] * pl[:, kk]).sum() for kk in range(K)] for k in range(K)]
    mcc = 0.0
    for k in range(K):
        row = sum(m[k])
        col = sum(m[kk][k] for kk in range(K))
        for kk in range(K):
            if kk != k:
                mcc = mcc + m[k][kk] / row + m[kk][k] / col
    mcc = mcc / (2 * K)
    # Voting, sample by sample.
    kept, labels_t = [], []
    for j in range(b_t):
        a, b = torch.softmax(zg_t[j].detach(), 0), torch.softmax(zl_t[j].detach(), 0)
        if a.argmax().item() == b.argmax().item() and (
            a.max().item() > tau or b.max().item() > tau
        ):
            kept.append(j)
            labels_t.append(int(a.argmax().item()))
    if kept:
        idx, lab = torch.tensor(kept), torch.tensor(labels_t)
        mvv = F.cross_entropy(zg_t[idx], lab) + F.cross_entropy(zl_t[idx], lab)
    else:
        mvv = zg_t.sum() * 0
    return sid + 0.02 * cid + mcc + mvv


def vectorised_losses(fs, zs, ys, ft, zt, zg_t, zl_t):  # type: ignore[no-untyped-def]
    return (
        dual_level_alignment(fs, zs, ys, ft, zt)
        + multi_view_clustering_consistency(zg_t, zl_t)
        + multi_view_pseudo_label_loss(zg_t, zl_t)
    )


# --------------------------------------------------------------------------------------------------
# The baselines (lacmfer only), on the same inputs.

SOURCES = 5  # leave-one-dataset-out: five labelled source datasets

#: Row labels of the baselines, by the variant name of their measurement.
BASELINES = {
    "dann": "DANN (with its D-1024-1024-2 discriminator)",
    "coral": "CORAL",
    "m3sda": f"M3SDA ({SOURCES} sources, moments 2)",
    "min-class-confusion": "Minimum Class Confusion (T = 2.5)",
}


def baseline_losses(name: str, device: str) -> Callable[..., torch.Tensor]:
    """One baseline's loss on the benchmark's inputs ``(fs, zs, ys, ft, zt, zg_t, zl_t)``."""
    if name == "dann":
        dann = DomainAdversarialLoss(D).to(device)  # pooled, hidden 1024, training-mode BN
        return lambda fs, zs, ys, ft, zt, zg_t, zl_t: dann(fs, ft)
    if name == "coral":
        return lambda fs, zs, ys, ft, zt, zg_t, zl_t: coral(fs, ft)
    if name == "m3sda":

        def m3sda(fs, zs, ys, ft, zt, zg_t, zl_t):  # type: ignore[no-untyped-def]
            domains = torch.arange(fs.shape[0], device=fs.device) % SOURCES
            return moment_matching(fs, domains, ft, num_domains=SOURCES)

        return m3sda
    return lambda fs, zs, ys, ft, zt, zg_t, zl_t: minimum_class_confusion(zg_t)


# --------------------------------------------------------------------------------------------------
# Measurement (in a child process).


def make_inputs(b: int, device: str, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, K, (b,), generator=g)
    centers = 2.0 * torch.randn(K, D, generator=g)
    fs = centers[labels] + torch.randn(b, D, generator=g)
    pseudo = torch.randint(0, K, (b,), generator=g)
    ft = centers[pseudo] + torch.randn(b, D, generator=g) + 0.5
    zs = 3 * F.one_hot(labels, K).float() + torch.randn(b, K, generator=g)
    zt = 3 * F.one_hot(pseudo, K).float() + torch.randn(b, K, generator=g)
    zl = zt + 2 * torch.randn(b, K, generator=g)
    tensors = [fs, zs, labels, ft, zt, zt.clone() * 1.5, zl]
    return [t.to(device) for t in tensors]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(variant: str, b: int, device: str, repeats: int, clock: str) -> dict[str, float]:
    torch.manual_seed(0)
    now = time.process_time if clock == "cpu" else time.perf_counter
    fn: Callable[..., torch.Tensor]
    if variant in BASELINES:
        fn = baseline_losses(variant, device)
    else:
        fn = loop_losses if variant == "loop" else vectorised_losses
    inputs = make_inputs(b, device)
    grads = [0, 3, 5, 6]  # feat_s, feat_t, both views' target logits

    def step() -> None:
        args = [t.clone().requires_grad_() if i in grads else t for i, t in enumerate(inputs)]
        fn(*args).backward()

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    if device.startswith("cuda"):
        step()
        sync()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        sync()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        base = _rss_bytes()
        step()
        peak = max(_peak_rss_bytes() - base, 0)
    times = []
    for _ in range(repeats):
        sync()
        t0 = now()
        step()
        sync()
        times.append(now() - t0)
    return {"time": statistics.median(times), "peak": float(peak)}


def run_child(
    variant: str, b: int, device: str, repeats: int, timeout: float, clock: str
) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", variant, str(b), device, str(repeats), clock]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return {"time": float("nan"), "peak": float("nan"), "note": f"> {timeout:.0f} s"}  # type: ignore[dict-item]
    except subprocess.CalledProcessError as err:
        last = (err.stderr or "").strip().splitlines()[-1:] or ["failed"]
        return {"time": float("nan"), "peak": float("nan"), "note": last[0][:40]}  # type: ignore[dict-item]
    return json.loads(out.stdout.strip().splitlines()[-1])


def check_agreement(device: str) -> float:
    args = make_inputs(24, device, seed=1)
    a = loop_losses(*args).double()
    b = vectorised_losses(*args).double()
    return float((a - b).abs() / b.abs().clamp_min(1e-12))


def _fmt_mib(x: float) -> str:
    return "n/a" if x != x else f"{x / 2**20:.1f}"


def _fmt_s(x: float) -> str:
    return "n/a" if x != x else (f"{x * 1e3:.1f} ms" if x < 1 else f"{x:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[32, 128, 512], help="batch sizes B"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
    parser.add_argument("--loop-repeats", type=int, default=2, help="timed repeats of the loop")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per measurement")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: elapsed time; cpu: process CPU time of all threads (steadier on a shared machine)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="intra-op threads of each measurement (0: torch's default). On a machine other "
        "processes load, use 1: multi-threaded small ops then wait for busy cores",
    )
    parser.add_argument(
        "--baseline-size",
        type=int,
        default=128,
        help="B of the extra rows that time the baseline losses (lacmfer only); 0: none",
    )
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the measurement processes
    if args.child:
        variant, b, device, repeats, clock = args.child
        print(json.dumps(child(variant, int(b), device, int(repeats), clock)))
        return

    rel = check_agreement(args.device)
    print(f"# LA-CMFER losses: SID + CID + MCC + MVV forward+backward, D={D}, K={K}")
    print(
        f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, device {args.device}, {args.clock} clock"
        + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else "")
    )
    if args.baseline_size > 0:
        print(
            f"# last {len(BASELINES)} rows: baseline losses at B_s = B_t = {args.baseline_size}, "
            "forward+backward, lacmfer only"
        )
    print(f"# loop and vectorised values agree to {rel:.1e} (relative)\n")
    header = ["B_s = B_t", "loop time", "lacmfer time", "speed-up", "loop peak MiB"]
    header += ["lacmfer peak MiB", "memory ratio"]
    print("| " + " | ".join(header) + " |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for b in args.sizes:
        vec = run_child("vectorised", b, args.device, args.repeats, args.timeout, args.clock)
        loop = run_child("loop", b, args.device, args.loop_repeats, args.timeout, args.clock)
        speed = loop["time"] / vec["time"]
        mem = (
            vec["peak"] / loop["peak"]
            if loop["peak"] == loop["peak"] and loop["peak"] > 0
            else float("nan")
        )
        note = f" ({loop['note']})" if "note" in loop else ""
        print(
            f"| {b} | {_fmt_s(loop['time'])}{note} | {_fmt_s(vec['time'])} | "
            f"{'n/a' if speed != speed else f'{speed:.0f}x'} | {_fmt_mib(loop['peak'])} | "
            f"{_fmt_mib(vec['peak'])} | {'n/a' if mem != mem else f'1/{1 / mem:.0f}' if mem > 0 else '~0'} |",
            flush=True,
        )
    # The baselines: lacmfer only (no loop transcription), one row each.
    b = args.baseline_size
    for name, label in BASELINES.items() if b > 0 else ():
        res = run_child(name, b, args.device, args.repeats, args.timeout, args.clock)
        note = f" ({res['note']})" if "note" in res else ""
        print(
            f"| {b}, {label} | — | {_fmt_s(res['time'])}{note} | — | — | "
            f"{_fmt_mib(res['peak'])} | — |",
            flush=True,
        )


if __name__ == "__main__":
    main()
