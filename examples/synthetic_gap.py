"""Is the synthetic domain gap real? In-domain vs leave-one-domain-out accuracy of a small CNN.

For every target domain of :data:`lacmfer.data.SYNTHETIC_DOMAINS` this trains the same small CNN
twice, for the same number of steps:

(a) **in-domain** -- on the target's own labelled training split, tested on its held-out split;
(b) **cross-domain** -- on the training splits of the other five domains pooled (source only, no
    adaptation), tested on the same held-out target split.

If the six styles differ the way real FER datasets do, (b) falls clearly below (a) on every
target. Accuracy is measured against the test split's labels as given (noisy in the in-the-wild
domains, like the real test sets) and, in brackets, against the clean rendered expressions.

Run (about 1-2 minutes per target on one thread)::

    OMP_NUM_THREADS=1 python examples/synthetic_gap.py --threads 1

Options: ``--train N`` / ``--test N`` images per domain, ``--steps`` SGD steps per model,
``--image-size``, ``--targets`` (a subset, e.g. ``ck jaffe``), ``--seed``, ``--grid PATH``
(also save the face grid, e.g. ``docs/_static/synthetic_grid.png``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lacmfer.data import SYNTHETIC_DOMAINS, SyntheticFER, canonical_domain, fer_augment, normalize
from lacmfer.data.synthetic import save_grid


class SmallCNN(nn.Module):
    """A stride-2 stem and three conv-BN-ReLU-pool stages (16-32-64-128), pooling, a linear head."""

    def __init__(self, num_classes: int = 7) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
        ]
        c_in = 16
        for c_out in (32, 64, 128):
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).mean((2, 3)))


def train(
    images: Tensor, labels: Tensor, *, steps: int, batch: int, seed: int, lr: float = 3e-3
) -> SmallCNN:
    """Train :class:`SmallCNN` with AdamW, cosine decay and the paper's augmentation."""
    torch.manual_seed(seed)
    model = SmallCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(images.shape[0], (batch,), generator=gen)
        x = normalize(fer_augment(images[idx], generator=gen))
        loss = F.cross_entropy(model(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy in percent."""
    model.eval()
    preds = torch.cat([model(normalize(x)).argmax(1) for x in images.split(256)])
    return 100.0 * float((preds == labels).float().mean())


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=1500, help="training images per domain")
    parser.add_argument("--test", type=int, default=500, help="test images per domain")
    parser.add_argument("--steps", type=int, default=300, help="SGD steps per model")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--targets", nargs="*", default=list(SYNTHETIC_DOMAINS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--grid", default=None, help="also save a face grid PNG here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.grid:
        save_grid(args.grid)
        print(f"saved {args.grid}")

    t0 = time.perf_counter()
    data = {}
    for d in SYNTHETIC_DOMAINS:
        tr = SyntheticFER(d, args.train, image_size=args.image_size, seed=args.seed)
        te = SyntheticFER(d, args.test, image_size=args.image_size, seed=args.seed + 1)
        data[d] = (tr, te)
    print(
        f"generated {len(data) * (args.train + args.test)} images at {args.image_size}px in "
        f"{time.perf_counter() - t0:.1f}s"
    )
    header = f"{'target':<11} {'(a) in-domain':>20} {'(b) other five':>20} {'gap':>6} {'time':>6}"
    print(header)
    print("-" * len(header))
    for target in (canonical_domain(t) for t in args.targets):
        t1 = time.perf_counter()
        tr, te = data[target]
        model_a = train(tr.images, tr.labels, steps=args.steps, batch=args.batch, seed=args.seed)
        src = [data[d][0] for d in SYNTHETIC_DOMAINS if d != target]
        x_src = torch.cat([s.images for s in src])
        y_src = torch.cat([s.labels for s in src])
        model_b = train(x_src, y_src, steps=args.steps, batch=args.batch, seed=args.seed)
        acc_a = accuracy(model_a, te.images, te.labels)
        acc_b = accuracy(model_b, te.images, te.labels)
        clean_a = accuracy(model_a, te.images, te.clean_labels)
        clean_b = accuracy(model_b, te.images, te.clean_labels)
        print(
            f"{target:<11} {acc_a:>6.1f} ({clean_a:5.1f} clean) {acc_b:>6.1f} ({clean_b:5.1f} "
            f"clean) {acc_a - acc_b:>6.1f} {time.perf_counter() - t1:>5.0f}s",
            flush=True,
        )


if __name__ == "__main__":
    main()
