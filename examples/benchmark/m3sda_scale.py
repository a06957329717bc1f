"""How large is M3SDA's moment term on this benchmark's features, in the authors' form and in the
library's? The basis of the M3SDA baseline's weight (``results/baselines.md``).

The authors' released code (Peng et al., "Moment Matching for Multi-Source Domain Adaptation", ICCV
2019) sums Euclidean distances over every source–target and source–source pair, for the means and
for four higher moments of the centred features, and weighs the sum by 1e-4 (DomainNet);
:func:`lacmfer.functional.moment_matching` follows the paper's equation (1): raw moments up to the
second, distances averaged per group of pairs. This script builds the benchmark's model from the
stand-in encoder, draws one source batch (5 sources) and one target batch, and prints both values
and the cross-entropy for each branch, so the weight that gives the authors' scale can be read off::

    OMP_NUM_THREADS=1 python examples/benchmark/m3sda_scale.py --target RAF-DB
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F

from lacmfer.data import InfiniteSampler, MultiSourceSampler, leave_one_domain_out, normalize
from lacmfer.data.synthetic import pretrained_encoder, synthetic_domains
from lacmfer.functional import moment_matching
from lacmfer.modules import LACMFER


def authors_form(
    feat_s: torch.Tensor, domains: torch.Tensor, feat_t: torch.Tensor, moments: int = 5
) -> float:
    """The released code's regulariser: means, then centred moments 2..``moments``, each as the sum
    of Euclidean distances over every source–target and source–source pair (a loop over the few
    domains is fine in a study script)."""
    groups = [feat_s[domains == d] for d in domains.unique().tolist()]
    total = 0.0
    centred = [g - g.mean(0) for g in groups]
    target = feat_t - feat_t.mean(0)
    for k in range(1, moments + 1):
        src = [g.mean(0) for g in groups] if k == 1 else [(c**k).mean(0) for c in centred]
        tgt = feat_t.mean(0) if k == 1 else (target**k).mean(0)
        total += sum(float((s - tgt).norm()) for s in src)
        total += sum(float((a - b).norm()) for a, b in itertools.combinations(src, 2))
    return total


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--target", default="RAF-DB")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--images", type=int, default=300, help="images per domain")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--encoder", choices=("synthetic", "none"), default="synthetic")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    task = leave_one_domain_out(synthetic_domains(args.images, 50, image_size=48), args.target)
    weights = str(pretrained_encoder(image_size=48)) if args.encoder == "synthetic" else None
    model = LACMFER.tiny(7, encoder_weights=weights).train()
    batch = MultiSourceSampler(task.source_sizes, args.batch_size, seed=args.seed).sample()
    x_s = torch.stack([task.source[i][0] for i in batch.indices.tolist()])
    y_s = torch.tensor([task.source[i][1] for i in batch.indices.tolist()])
    idx = InfiniteSampler(len(task.target_adapt), args.batch_size, seed=args.seed).sample().tolist()
    x_t = torch.stack([task.target_adapt[i][0] for i in idx])
    with torch.no_grad():
        out_s, out_t = model(normalize(x_s)), model(normalize(x_t))
        ce = F.cross_entropy(out_s.logits_g, y_s, label_smoothing=0.1)
        ce = ce + F.cross_entropy(out_s.logits_l, y_s, label_smoothing=0.1)
        print(f"source cross-entropy of the two heads: {float(ce):.2f}")
        ours_total = 0.0
        for view in ("g", "l"):
            f_s, f_t = getattr(out_s, f"feat_{view}"), getattr(out_t, f"feat_{view}")
            ours = float(moment_matching(f_s, batch.domains, f_t, num_domains=len(task.sources)))
            theirs = authors_form(f_s, batch.domains, f_t)
            ours_total += ours
            ratio = theirs / ours
            print(
                f"branch {view}: library form {ours:.1f}, authors' form {theirs:.1f}, ratio {ratio:.1f}"
            )
        print(f"library form, both branches: {ours_total:.1f} (x 0.5 = {0.5 * ours_total:.1f}; x 1e-3 = "
              f"{1e-3 * ours_total:.3f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
