"""The LA-CMFER losses in your own training loop, with your own two-view backbone.

Self-contained: a tiny CNN with a global and a local head, toy source and target data with a domain
shift, and the paper's objective (:class:`lacmfer.losses.LACMFERLoss`, one call). Runs in a few
seconds on a CPU::

    python docs/snippets/own_backbone.py
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lacmfer.losses import LACMFERLoss

NUM_CLASSES = 7  # RAF-DB order: Surprise, Fear, Disgust, Happiness, Sadness, Anger, Neutral


class TwoViews(NamedTuple):
    """What the objective reads: features and logits of a global and a local view."""

    feat_g: Tensor
    logits_g: Tensor
    feat_l: Tensor
    logits_l: Tensor


class TwoViewCNN(nn.Module):
    """Any backbone works if it gives two views, each with features and logits.

    Here the global view pools the whole feature map and the local view keeps a 2×2 grid of regions.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, width: int = 16, dim: int = 64) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
        )
        self.global_proj = nn.Linear(2 * width, dim)
        self.local_proj = nn.Linear(4 * 2 * width, dim)
        self.head_g = nn.Linear(dim, num_classes)
        self.head_l = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> TwoViews:
        fmap = self.trunk(x)  # (B, C, H/4, W/4)
        feat_g = F.relu(self.global_proj(fmap.mean(dim=(2, 3))))  # (B, D)
        feat_l = F.relu(self.local_proj(F.adaptive_avg_pool2d(fmap, 2).flatten(1)))  # (B, D)
        return TwoViews(feat_g, self.head_g(feat_g), feat_l, self.head_l(feat_l))


def toy_domain(n: int, *, target: bool, seed: int) -> tuple[Tensor, Tensor]:
    """Images ``(n, 3, 32, 32)`` of 7 class patterns; the target is darker and colour-shifted."""
    patterns = torch.randn(NUM_CLASSES, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    patterns = F.interpolate(patterns, size=32, mode="bilinear", align_corners=False)
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
    images = patterns[labels] + 0.8 * torch.randn(n, 3, 32, 32, generator=gen)
    if target:  # the domain shift: contrast, brightness and a colour cast
        images = 0.6 * images + torch.tensor([0.5, 0.1, -0.3]).view(1, 3, 1, 1)
    return images, labels


def main(steps: int = 60, batch_size: int = 32) -> float:
    torch.manual_seed(0)
    x_src, y_src = toy_domain(1024, target=False, seed=1)
    x_tgt, y_tgt = toy_domain(1024, target=True, seed=2)  # y_tgt only for the final accuracy

    model = TwoViewCNN()
    # The paper's objective: CE_ls on both heads + 0.4 Σ_branch (SID + 0.02 CID) + 0.5 MCC + 0.1 MVV
    loss_fn = LACMFERLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)

    for step in range(steps):
        idx_s = torch.randint(0, len(x_src), (batch_size,))
        idx_t = torch.randint(0, len(x_tgt), (batch_size,))
        # source and target in separate forward calls: BatchNorm sees one domain at a time
        out_s, out_t = model(x_src[idx_s]), model(x_tgt[idx_t])
        terms = loss_fn(out_s, y_src[idx_s], out_t)  # no target labels

        optimizer.zero_grad(set_to_none=True)
        terms.loss.backward()
        optimizer.step()
        loss_fn.step()  # advances its schedules (no-ops with the paper's defaults)
        if step % 20 == 0 or step == steps - 1:
            print(
                f"step {step:3d}  loss {terms.loss.item():.3f}  alignment {terms.align.item():.3f}  "
                f"kept pseudo-labels {terms.kept_fraction.item():.0%}"
            )

    model.eval()
    with torch.no_grad():
        out = model(x_tgt)
        fused = (out.logits_g + out.logits_l) / 2
        accuracy = fused.argmax(dim=1).eq(y_tgt).float().mean().item()
    print(f"target accuracy (fused views): {accuracy:.1%}")
    return accuracy


if __name__ == "__main__":
    main()
