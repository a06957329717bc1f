"""Pretrain the synthetic benchmark's stand-in encoder with settings of your own.

:func:`lacmfer.data.synthetic.pretrained_encoder` builds the default one into the cache on first use
(the training example's ``--encoder-weights synthetic``); this script builds one with other
settings, e.g. for the comparison in ``results/pretraining.md``. The ResNet-18 stem, ``layer1`` and
``layer2`` learn, without any expression label, which synthetic subject a face shows and to fill in
masked parts of it, every face in a random style that is none of the six benchmark styles. It writes
a torchvision-format ``resnet18`` state dict that loads like an ImageNet file, and a JSON sidecar
(settings, proxy accuracy, wall time, command)::

    OMP_NUM_THREADS=2 python examples/benchmark/pretrain_encoder.py --threads 2 --out encoder.pth
    python examples/train_cmfer.py --encoder-weights encoder.pth ...
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from collections.abc import Sequence
from typing import Optional

import torch

from lacmfer.data.synthetic import PretrainConfig, pretrain_encoder


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--out", required=True, help="output .pth (its .json sidecar beside it)")
    for field in dataclasses.fields(PretrainConfig):
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(flag, type=type(field.default), default=field.default,
                            help=f"(default: {field.default})")  # fmt: skip
    parser.add_argument("--threads", type=int, help="torch threads (pin them for the same bytes)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = PretrainConfig(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(PretrainConfig)}
    )
    words = sys.argv if argv is None else ["examples/benchmark/pretrain_encoder.py", *argv]
    record = pretrain_encoder(args.out, config, progress=not args.no_progress,
                              command=shlex.join(["python", *words]))  # fmt: skip
    print(json.dumps(record, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
