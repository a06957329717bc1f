"""Pretrain LA-CMFER's ResNet-18 encoder offline, on synthetic faces in random styles.

The paper starts the encoder from ImageNet weights; offline, this script makes a stand-in: the
encoder (stem, ``layer1``, ``layer2``) learns to recognise synthetic subjects and to fill in
masked parts of their faces, every face rendered in a random style that is none of the six
benchmark styles (no expression label is used; see ``examples/cmfer/pretrain.py``). About 3
minutes on 2 CPU cores. It writes a torchvision-format ``resnet18`` state dict that
loads like an ImageNet file, plus a JSON sidecar (seed, steps, proxy task, accuracy, wall time,
command)::

    OMP_NUM_THREADS=2 python examples/pretrain_encoder.py --threads 2 --out encoder.pth

    from lacmfer.modules import LACMFER
    model = LACMFER.tiny(7, encoder_weights="encoder.pth")

Without ``--out`` the file goes to the cache (``$LACMFER_CACHE``, else
``$XDG_CACHE_HOME/lacmfer``, else ``~/.cache/lacmfer``), where ``ensure_encoder()`` finds it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Optional

import torch
from cmfer.pretrain import PretrainConfig, default_cache_dir, encoder_path, pretrain_encoder


def main(argv: Optional[Sequence[str]] = None) -> int:
    defaults = PretrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None, help="output .pth (default: the cache)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--identities", type=int, default=defaults.identities)
    parser.add_argument("--identity-weight", type=float, default=defaults.identity_weight)
    parser.add_argument(
        "--reconstruction-weight", type=float, default=defaults.reconstruction_weight
    )
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = PretrainConfig(
        seed=args.seed,
        steps=args.steps,
        image_size=args.image_size,
        batch_size=args.batch_size,
        identities=args.identities,
        identity_weight=args.identity_weight,
        reconstruction_weight=args.reconstruction_weight,
        lr=args.lr,
    )
    out = args.out if args.out else encoder_path(default_cache_dir(), config)
    command = " ".join(["python", *sys.argv]) if argv is None else " ".join(argv)
    record = pretrain_encoder(out, config, progress=not args.no_progress, command=command)
    print(json.dumps(record, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
