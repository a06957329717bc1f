"""Your own LA-CMFER training loop under DistributedDataParallel (DDP), one process per device.

Start it with ``torchrun``, which sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` for every
process::

    torchrun --standalone --nproc_per_node=2 docs/snippets/ddp_own_loop.py             # 2 CPU processes
    torchrun --standalone --nproc_per_node=4 docs/snippets/ddp_own_loop.py --steps 200  # 4 GPUs

On CPU the processes talk through gloo, with CUDA through NCCL (one GPU per process). The data are
the built-in synthetic domains (:class:`lacmfer.data.synthetic.SyntheticFER`), target JAFFE, so the script
runs anywhere; the model is ``LACMFER.tiny`` on 32×32 images. ``--out DIR`` writes a checkpoint
that ``--resume DIR/checkpoint.pt`` continues, with the same number of processes.
"""

# not run: needs torchrun (the docs tests run it under torchrun with two gloo processes)
from __future__ import annotations

import argparse
import gc
import os
from pathlib import Path
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from lacmfer.data import InfiniteSampler, MultiSourceSampler, leave_one_domain_out, normalize
from lacmfer.data.synthetic import synthetic_domains
from lacmfer.functional import LACMFERTerms
from lacmfer.losses import LACMFERLoss
from lacmfer.modules import LACMFER
from lacmfer.utils import load_checkpoint, save_checkpoint


class TrainStep(nn.Module):
    """Model and objective in one module, so that DDP sees one forward per backward.

    The source and the target batch still go through the model in two separate calls (BatchNorm
    normalises each domain with its own statistics); DDP wraps this module, not the model.
    """

    def __init__(self, model: nn.Module, loss_fn: LACMFERLoss) -> None:
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(
        self, x_s: Tensor, labels_s: Tensor, domains_s: Tensor, x_t: Tensor
    ) -> LACMFERTerms:
        out_s, out_t = self.model(x_s), self.model(x_t)
        return self.loss_fn(out_s, labels_s, out_t, domains_s)


def setup() -> tuple[int, int, torch.device]:
    """Join the process group that torchrun describes; returns rank, world size and device."""
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if torch.cuda.is_available():
        # LOCAL_RANK is the process's index on its own machine: the GPU it owns. (The global rank
        # modulo the number of GPUs is wrong when machines have different numbers of GPUs.)
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl")
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
    return rank, world_size, device


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16, help="global source batch")
    parser.add_argument("--target-batch-size", type=int, default=16, help="global target batch")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--out", type=Path, default=None, help="folder for checkpoint.pt")
    parser.add_argument("--resume", type=Path, default=None, help="a checkpoint.pt to continue")
    args = parser.parse_args(argv)

    rank, world_size, device = setup()
    # Every rank takes an equal share of the global batch: the sizes must divide by the ranks.
    if args.batch_size % world_size or args.target_batch_size % world_size:
        raise ValueError(
            f"--batch-size ({args.batch_size}) and --target-batch-size "
            f"({args.target_batch_size}) must be divisible by the number of ranks ({world_size})"
        )

    # Data: five labelled sources, one unlabelled target (the same on every rank).
    task = leave_one_domain_out(synthetic_domains(96, 32, image_size=32, seed=0), "JAFFE")
    x_src = torch.cat([ds.images for ds in task.source_sets])  # (N, 3, 32, 32) in [0, 1]
    y_src = task.source_labels
    x_tgt = task.target_adapt.images  # its labels are never read
    # One global stream per sampler; each step, rank r takes the r-th share of it. With image files,
    # pass the samplers to DataLoader(batch_sampler=...) instead of indexing tensors.
    source_sampler = MultiSourceSampler(
        [len(ds) for ds in task.source_sets],
        args.batch_size // world_size,
        seed=0,
        rank=rank,
        world_size=world_size,
    )
    target_sampler = InfiniteSampler(
        len(x_tgt), args.target_batch_size // world_size, seed=0, rank=rank, world_size=world_size
    )

    # Model and objective: the same initial weights on every rank (DDP also broadcasts rank 0's).
    torch.manual_seed(0)
    model = LACMFER.tiny(num_classes=7).to(device)
    # sync_dist=True: the losses' batch statistics cover the global batch of all ranks. The model
    # starts from scratch, so the sources come first: 10 source-only steps, then the adaptation
    # terms rise over 10 steps (with an ImageNet encoder, the paper's 0 and 0).
    loss_fn = LACMFERLoss(sync_dist=True, adapt_after=10, adapt_warmup=10).to(device)
    step_fn = DistributedDataParallel(
        TrainStep(model, loss_fn), device_ids=[device.index] if device.type == "cuda" else None
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True)

    start = 0
    if args.resume is not None:
        ckpt = load_checkpoint(args.resume, required=("world_size", "model", "step"))
        if ckpt["world_size"] != world_size:  # each rank's share of the streams would change
            raise ValueError(
                f"{args.resume} was written by {ckpt['world_size']} ranks, this run has "
                f"{world_size}: resume with the same number of processes"
            )
        model.load_state_dict(ckpt["model"])
        loss_fn.load_state_dict(ckpt["loss_fn"])  # its step counter: not in model.state_dict()
        optimizer.load_state_dict(ckpt["optimizer"])
        source_sampler.load_state_dict(ckpt["source_sampler"])
        target_sampler.load_state_dict(ckpt["target_sampler"])
        start = ckpt["step"]

    model.train()
    for step in range(start, args.steps):
        src = source_sampler.sample()  # this rank's indices and source ids
        idx_t = target_sampler.sample()
        x_s = normalize(x_src[src.indices]).to(device)  # ImageNet mean/std, as the encoder expects
        x_t = normalize(x_tgt[idx_t]).to(device)
        terms = step_fn(x_s, y_src[src.indices].to(device), src.domains.to(device), x_t)
        optimizer.zero_grad(set_to_none=True)
        terms.loss.backward()  # DDP averages the gradients over the ranks
        optimizer.step()
        loss_fn.step()  # the objective's schedules (warm-up, cluster ramp)
        if rank == 0 and (step % 5 == 0 or step == args.steps - 1):
            print(
                f"step {step:3d}  loss {terms.loss.item():.3f}  CE {terms.ce.item():.3f}  "
                f"alignment {terms.align.item():.3f}  "
                f"adaptation weight {terms.adaptation_weight.item():.1f}",
                flush=True,
            )

    # Every rank must hold the same weights: gather a flat copy and compare.
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    copies = [torch.empty_like(flat) for _ in range(world_size)]
    dist.all_gather(copies, flat)
    if rank == 0:
        same = all(torch.equal(copies[0], c) for c in copies[1:])
        print(f"{world_size} ranks hold identical weights: {same}", flush=True)

    if args.out is not None and rank == 0:
        # The sampler positions are those of the global stream, the same on every rank.
        state: dict[str, Any] = {
            "step": args.steps,
            "world_size": world_size,
            "model": model.state_dict(),  # the bare model: no "module." prefix
            "loss_fn": loss_fn.state_dict(),
            "optimizer": optimizer.state_dict(),
            "source_sampler": source_sampler.state_dict(),
            "target_sampler": target_sampler.state_dict(),
        }
        save_checkpoint(state, args.out / "checkpoint.pt")  # atomic: a crash keeps the old one

    # Free the DDP module before the process group: a reducer that outlives its group can abort
    # the process at exit.
    del step_fn
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
