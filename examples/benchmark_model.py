"""Benchmark: the LA-CMFER model, its batched local branch, and the losses' share of a training step.

Prints one markdown table with:

1. model forward + backward throughput (images/s) in training mode, plus inference forward;
2. :class:`~lacmfer.modules.LocalPatchBranch` forward + backward, patches folded into the batch
   (one call per shared sub-network, ``patch_norm="per_patch"`` and ``"joint"``) against one call
   per patch (the paper's code), with the ratio;
3. the share of a training step spent in the losses: a full step of the objective
   (:class:`~lacmfer.losses.LACMFERLoss`: model on the source batch, model on the target batch,
   label-smoothed CE on both heads, dual-level alignment on both branches, clustering consistency,
   multi-view voting, backward, SGD step) against the same step with only the two CE terms.
   Dropping the adaptation terms also drops the backward through the target forward, so a third
   step keeps that backward
   (CE + 0·target outputs) and isolates the loss terms' own cost; a last row times the loss terms
   alone (forward + backward on fixed features and logits).

Usage::

    python examples/benchmark_model.py                             # B = 32, 224x224, CPU
    python examples/benchmark_model.py --batch-size 8 --image-size 112 --iters 3
    python examples/benchmark_model.py --tiny --image-size 64      # the CPU-experiment preset
    python examples/benchmark_model.py --device cuda
"""

from __future__ import annotations

import argparse
import copy
import platform
import time
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from lacmfer.losses import LACMFERLoss
from lacmfer.modules import LACMFER, LACMFEROutput, LocalPatchBranch, PatchBatchNorm2d


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_many(
    fns: dict[str, Callable[[], object]],
    device: torch.device,
    *,
    warmup: int,
    iters: int,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Best (minimum) seconds of each function over ``iters`` runs, measured with ``clock``.

    The functions run round-robin (one run of each per round, after ``warmup`` rounds) so that a
    burst of load on a shared machine hits all of them alike; the minimum is the least disturbed
    run.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    _sync(device)
    best = {name: float("inf") for name in fns}
    for _ in range(iters):
        for name, fn in fns.items():
            start = clock()
            fn()
            _sync(device)
            best[name] = min(best[name], clock() - start)
    return best


def time_it(
    fn: Callable[[], object],
    device: torch.device,
    *,
    warmup: int,
    iters: int,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Best seconds of ``fn`` over ``iters`` runs after ``warmup`` runs."""
    return time_many({"fn": fn}, device, warmup=warmup, iters=iters, clock=clock)["fn"]


def patch_by_patch(branch: LocalPatchBranch) -> Callable[[Tensor], Tensor]:
    """The paper's way: each patch sliced and run alone through its sub-network (plain BN)."""
    ref = copy.deepcopy(branch)
    for m in ref.modules():
        if isinstance(m, PatchBatchNorm2d):
            m.num_patches = 1
    gh, gw = ref.grid

    def run(x: Tensor) -> Tensor:
        h, w = x.shape[2] // gh, x.shape[3] // gw
        feats = []
        for i in range(gh):
            for j in range(gw):
                patch = x[:, :, i * h : (i + 1) * h, j * w : (j + 1) * w]
                feats.append(ref.subnets[ref.subnet_index(i * gw + j)](patch).mean(dim=(2, 3)))
        return torch.cat(feats, dim=1)

    return run


def _backward(fn: Callable[[Tensor], Tensor], x: Tensor) -> Callable[[], None]:
    def step() -> None:
        fn(x).sum().backward()

    return step


def training_step(
    model: LACMFER,
    x_s: Tensor,
    y_s: Tensor,
    x_t: Tensor,
    optimizer: torch.optim.Optimizer,
    loss_fn: LACMFERLoss,
    keep_target_graph: bool = False,
) -> Callable[[], None]:
    """One training step with ``loss_fn``: the full objective, or the source-only one.

    With ``keep_target_graph`` the loss gets ``0·Σ(z_G^t + z_L^t + f_G^t + f_L^t)``, so that a
    source-only step backpropagates through the target forward exactly as the full step does,
    without computing any adaptation term.
    """

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        out_s = model(x_s)  # separate forward calls: per-domain BatchNorm statistics
        out_t = model(x_t)
        loss = loss_fn(out_s, y_s, out_t).loss
        if keep_target_graph:
            loss = loss + 0.0 * sum(t.sum() for t in out_t[:4])
        loss.backward()
        optimizer.step()

    return step


def losses_alone(
    model: LACMFER, x_s: Tensor, y_s: Tensor, x_t: Tensor, loss_fn: LACMFERLoss
) -> Callable[[], None]:
    """Forward + backward of the adaptation terms on fixed (leaf) features and logits."""
    with torch.no_grad():
        out_s, out_t = model(x_s), model(x_t)
    leaves_s = LACMFEROutput(*(t.detach().requires_grad_(True) for t in out_s))
    leaves_t = LACMFEROutput(*(t.detach().requires_grad_(True) for t in out_t))

    def step() -> None:
        terms = loss_fn(leaves_s, y_s, leaves_t)
        (terms.loss - terms.ce).backward()

    return step


def build_model(args: argparse.Namespace, device: torch.device) -> LACMFER:
    kwargs = {"spatial_kernel_size": args.spatial_kernel_size}
    model = LACMFER.tiny(7, **kwargs) if args.tiny else LACMFER(7, **kwargs)
    return model.to(device)


def main(argv: Optional[list[str]] = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=32, help="images per batch (B_s = B_t)")
    parser.add_argument("--image-size", type=int, default=224, help="square input size")
    parser.add_argument("--iters", type=int, default=3, help="timed iterations (best of)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: elapsed time; cpu: this process's CPU time (all threads), steadier on a "
        "machine shared with other jobs (CPU device only)",
    )
    parser.add_argument("--tiny", action="store_true", help="LACMFER.tiny() instead of the paper's")
    parser.add_argument("--spatial-kernel-size", type=int, default=49, help="CBAM kernel (49/7)")
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["model", "branch", "step"], help="rows to skip"
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    b, s = args.batch_size, args.image_size
    if args.clock == "cpu" and device.type != "cpu":
        parser.error("--clock cpu measures host CPU time; use --clock wall with a GPU")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    timing: dict[str, Any] = {"warmup": args.warmup, "iters": args.iters, "clock": clock}
    rows: list[tuple[str, str, str, str]] = []
    notes: list[str] = []

    model = build_model(args, device).train()
    x_s = torch.randn(b, 3, s, s, device=device)
    x_t = torch.rand(b, 3, s, s, device=device)
    y_s = torch.randint(0, 7, (b,), device=device)
    name = "LACMFER.tiny" if args.tiny else "LACMFER (paper sizes)"

    if "model" not in args.skip:
        t = time_it(_backward(lambda x: model(x).logits, x_s), device, **timing)
        rows.append(
            (f"{name} fwd+bwd, train", f"B={b}, {s}x{s}", f"{t * 1e3:.1f}", f"{b / t:.1f} img/s")
        )
        model.eval()
        with torch.no_grad():
            t = time_it(lambda: model(x_s), device, **timing)
        model.train()
        rows.append(
            (
                f"{name} fwd, eval, no_grad",
                f"B={b}, {s}x{s}",
                f"{t * 1e3:.1f}",
                f"{b / t:.1f} img/s",
            )
        )

    if "branch" not in args.skip:
        with torch.no_grad():
            feat_map = model.encoder(x_s).detach()
        lb = model.local_branch
        c, h = feat_map.shape[1], feat_map.shape[2]
        branch_kwargs = {
            "grid": lb.grid,
            "blocks": lb.blocks,
            "share": lb.share,
            "reduction": lb.reduction,
            "spatial_kernel_size": lb.spatial_kernel_size,
        }
        batched = LocalPatchBranch(c, lb.out_channels, **branch_kwargs).to(device).train()
        joint = LocalPatchBranch(c, lb.out_channels, patch_norm="joint", **branch_kwargs)
        joint = joint.to(device).train()
        joint.load_state_dict(batched.state_dict())
        loop = patch_by_patch(batched)
        setting = f"B={b}, {c}x{h}x{h} map, share={lb.share!r}"
        t = time_many(
            {
                "loop": _backward(loop, feat_map),
                "batched": _backward(batched, feat_map),
                "joint": _backward(joint, feat_map),
            },
            device,
            **timing,
        )
        t_loop, t_batched, t_joint = t["loop"], t["batched"], t["joint"]
        rows.append(
            (
                "LocalPatchBranch fwd+bwd, one call per patch",
                setting,
                f"{t_loop * 1e3:.1f}",
                "1.00x",
            )
        )
        rows.append(
            (
                "LocalPatchBranch fwd+bwd, batched (per-patch BN)",
                setting,
                f"{t_batched * 1e3:.1f}",
                f"{t_loop / t_batched:.2f}x faster",
            )
        )
        rows.append(
            (
                "LocalPatchBranch fwd+bwd, batched (joint BN)",
                setting,
                f"{t_joint * 1e3:.1f}",
                f"{t_loop / t_joint:.2f}x faster",
            )
        )

    if "step" not in args.skip:
        full = LACMFERLoss()
        source_only = LACMFERLoss(sid=False, cid=False, consistency="none", voting=False)
        setting = f"B_s=B_t={b}, {s}x{s}"
        # each mode on its own copy of the model and optimiser, timed round-robin
        fns: dict[str, Callable[[], object]] = {}
        modes = {
            "ce": (source_only, False),
            "ce+target": (source_only, True),
            "full": (full, False),
        }
        for mode, (loss_fn, keep_target_graph) in modes.items():
            m = copy.deepcopy(model)
            o = torch.optim.SGD(
                m.parameter_groups(1e-2, weight_decay=1e-4),
                lr=1e-2,
                momentum=0.9,
                nesterov=True,
            )
            fns[mode] = training_step(m, x_s, y_s, x_t, o, loss_fn, keep_target_graph)
        fns["alone"] = losses_alone(model, x_s, y_s, x_t, full)
        times = time_many(fns, device, **timing)
        t_alone = times["alone"]
        t_full = times["full"]
        rows.append(
            (f"{name} train step, CE only", setting, f"{times['ce'] * 1e3:.1f}", "baseline")
        )
        rows.append(
            (
                f"{name} train step, CE + 0·(target outputs)",
                setting,
                f"{times['ce+target'] * 1e3:.1f}",
                "same backward graph as full, no loss terms",
            )
        )
        rows.append(
            (
                f"{name} train step, full LACMFERLoss objective",
                setting,
                f"{t_full * 1e3:.1f}",
                f"{2 * b / t_full:.1f} img/s; vs CE only: {100 * (t_full - times['ce']) / t_full:+.1f}%"
                f" of the step (incl. target backward); vs CE + target: "
                f"{100 * (t_full - times['ce+target']) / t_full:+.1f}%",
            )
        )
        rows.append(
            (
                "SID+CID (both branches) + MCC + MVV alone, fwd+bwd",
                f"B_s=B_t={b}, D_G={model.feature_dims[0]}, D_L={model.feature_dims[1]}",
                f"{t_alone * 1e3:.1f}",
                f"{100 * t_alone / t_full:.1f}% of the full step",
            )
        )

    threads = torch.get_num_threads()
    lines = [
        f"torch {torch.__version__}, device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
        + f", {threads} CPU thread(s), {platform.processor() or platform.machine()}; "
        f"{args.clock} clock, best of {args.iters} after {args.warmup} warm-up (round-robin); "
        f"CBAM k={args.spatial_kernel_size}",
        "",
        "| measurement | setting | ms / iter | result |",
        "|---|---|---:|---|",
    ]
    lines += [f"| {a} | {b_} | {c_} | {d} |" for a, b_, c_, d in rows]
    lines += [f"\nNote: {n}" for n in notes]
    table = "\n".join(lines)
    print(table)
    return table


if __name__ == "__main__":
    main()
