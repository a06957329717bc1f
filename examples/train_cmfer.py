#!/usr/bin/env python
r"""Train LA-CMFER for cross-multidomain facial expression recognition (CMFER), end to end.

Several labelled source domains, one unlabelled target domain, one model that must work on the
target. The script composes the library: the :class:`~lacmfer.modules.LACMFER` model and the whole
objective :class:`~lacmfer.losses.LACMFERLoss` (``docs/method.rst``) with the paper's recipe as its
defaults: SGD (Nesterov, momentum 0.9, weight decay 1e-4), lr 1e-2 for branches and heads and 1e-3
for the encoder, inverse decay ``lr·(1 + 10·min(1, t/T))^-0.75`` with ``T = steps // 2``, 128 source
+ 128 target images a step at 224×224, augmentation on the batches. Source and target batches go
through the model in separate calls, so BatchNorm normalises each domain with its own statistics.
``--method`` replaces the adaptation terms by a baseline's loss from the library (MMD, DANN, CORAL,
M3SDA moment matching, Minimum Class Confusion) or by nothing (source-only), with the same model,
data and recipe.

Usage::

    python examples/train_cmfer.py                  # built-in synthetic data, a preset for the device
    python examples/train_cmfer.py --preset smoke   # seconds on a CPU
    python examples/train_cmfer.py --method source-only --target CK+ --out runs/source-only
    python examples/train_cmfer.py --preset paper --data-root /data/fer \
        --domains CK+,JAFFE,Oulu-CASIA,RAF-DB,FER-2013 --encoder-weights resnet18-f37072fd.pth \
        --target all --out runs/paper
    torchrun --nproc_per_node=4 examples/train_cmfer.py --preset paper ...   # DDP, same flags
    python examples/train_cmfer.py --evaluate runs/paper/RAF-DB/checkpoints/last.pt

A run never loses what it made: an ``--out`` that holds a run is refused unless ``--resume``
(continue it with its own settings; a finished run is left untouched) or ``--overwrite`` (start
over) is given, and never into a folder of the other kind (``--target all`` or one target); with
``--resume`` a larger ``--steps`` extends a run, on the data it was trained on, and a checkpoint
continues only into its own run's ``--out`` or an empty one; ``--dry-run`` checks all this and
the settings without writing anything; every image of the lists in use is
opened before the first step (``--check-images full`` decodes it too); a mistake is one line on
stderr naming the flag (exit status 2), and Ctrl-C one line saying how to continue.

Presets are YAML files in ``examples/configs/`` (``--preset NAME`` or ``--config FILE``; without
either: ``cpu`` or ``gpu`` by the device); flags override them. ``--out`` receives
``metrics.jsonl`` (the objective's terms every ``--log-every`` steps, target evaluation and the
unsupervised validators every ``--eval-every``), ``summary.json`` (``final``: the last step, THE
result; ``selected``: chosen by ``--select-by`` without target labels; ``oracle``: best test
accuracy over training, a selection on the test set and not a result; ``environment``: the
machine and the encoder file, on which a bit-for-bit repeat depends), ``checkpoints/``, the plots,
``tb/`` and with ``--analyse`` the feature space (``docs/guides/shift_analysis.rst``). Target labels
serve evaluation and logged diagnostics only, never a loss, a validator or the selection.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import math
import os
import re
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset

from lacmfer.analysis import (
    FeatureCollector,
    ShiftReport,
    classification_metrics,
    confusion_matrix,
    plot_confusion,
    plot_shift,
    shift_report,
)
from lacmfer.data import (
    CLASSES,
    SIX_DOMAINS,
    FERAugment,
    InfiniteSampler,
    LabelledSubset,
    LeaveOneDomainOutTask,
    MultiSourceSampler,
    canonical_dataset,
    check_images,
    fer_list_domains,
    leave_one_domain_out,
    normalize,
    protocol_lists_dir,
    sampler_loader,
)
from lacmfer.data.synthetic import pretrained_encoder, synthetic_domains
from lacmfer.functional import CONSISTENCY_KINDS, mmd2, refine_pseudo_labels
from lacmfer.losses import (
    CLUSTER_RAMPS,
    CORALLoss,
    DomainAdversarialLoss,
    LACMFERLoss,
    MinimumClassConfusionLoss,
    MomentMatchingLoss,
)
from lacmfer.modules import LACMFER, SHARE_MODES
from lacmfer.utils import (
    MetricsLog,
    Progress,
    environment,
    get_rng_state,
    json_safe,
    load_checkpoint,
    plot_metrics,
    read_jsonl,
    save_checkpoint,
    set_rng_state,
    state_dict_hash,
)
from lacmfer.validation import SourceAccuracy, ValidatorSuite

PRESETS = {p.stem: p for p in sorted((Path(__file__).resolve().parent / "configs").glob("*.yaml"))}
METHODS = ("lacmfer", "source-only", "mmd", "dann", "coral", "m3sda", "class-confusion")
#: A baseline's loss weight, from its paper: DANN 1.0 with its reversal schedule (Ganin et al., JMLR
#: 2016), CORAL 1.0 (Sun & Saenko, ECCV-W 2016), Minimum Class Confusion 1.0 (Jin et al., ECCV 2020);
#: MMD takes LA-CMFER's alignment weight 0.4. M3SDA (Peng et al., ICCV 2019): the authors' released
#: trade-off, 1e-4 on the distances summed over every pair and five centred moments, is 1e-3 on the
#: library's form (raw moments, distances averaged per group), whose value on pooled ResNet
#: features is about a tenth of theirs.
BASELINE_WEIGHTS = {"mmd": 0.4, "dann": 1.0, "coral": 1.0, "m3sda": 1e-3, "class-confusion": 1.0}
SELECT_BY = ("final", "entropy", "im", "snd", "bnm", "agreement", "source-acc")
#: Old spellings, accepted with a deprecation message: a setting, and a value of --method.
RENAMED = {"consistency_on_logits": "consistency_from_logits"}
RENAMED_METHODS = {"mcc": "class-confusion"}
#: What a run writes into --out: the only names --overwrite removes.
OUTPUTS = ("metrics.jsonl", "summary.json", "config.json", "checkpoints", "tb", "confusion.png")
OUTPUTS += ("curves.png", "results.md", "summary_all.json", "analysis.json", "features.png")
OUTPUTS += ("distances.png", "weights_rank*.json")
ORACLE_NOTE = "selection on the test set (best over training; not a valid result)"
SUMMARY_KEYS = ("step", "acc_fused", "acc_global", "acc_local", "macro_f1_fused")
#: Settings that always come from the command, never from the checkpoint a run resumes: what to do,
#: where, and on which device. The rest of a resumed run's settings are its own unless given.
INVOCATION = ("preset", "config", "dry_run", "out", "target", "resume", "overwrite", "evaluate")
INVOCATION += ("stop_at", "device", "progress")
#: What --evaluate takes from the command line; it takes every other setting from the checkpoint.
EVALUATE_FLAGS = {"evaluate", "data_root", "device", "num_workers", "threads", "analyse", "out"}
EVALUATE_FLAGS |= {"dry_run"}
#: What a checkpoint holds for an exact resume: state dicts, and the run's counters.
STATEFUL = ("model", "optimizer", "scheduler", "scaler", "objective", "baseline")
COUNTERS = ("step", "oracle", "selected", "train_time", "images")


class UsageError(Exception):
    """A mistake in the command line or in what it points to: one line on stderr, exit status 2."""


@functools.cache  # each message once
def warn(message: str) -> None:
    print(f"train_cmfer.py: warning: {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- the command line
class Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (no usage block): a :class:`UsageError`."""

    def error(self, message: str) -> Any:
        raise UsageError(message)


class Help(argparse.HelpFormatter):
    """Shows each option's default, once, when it has one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        shown = action.default not in (None, False, argparse.SUPPRESS) and action.option_strings
        return f"{action.help} (default: %(default)s)" if shown else str(action.help)


def at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def method_name(value: str) -> str:
    if value in RENAMED_METHODS:
        new = RENAMED_METHODS[value]
        warn(f"--method {value} is deprecated: Minimum Class Confusion is now --method {new} "
             "(mcc names the multi-view clustering consistency of --consistency)")  # fmt: skip
        return new
    return value


class Renamed(argparse.Action):
    """An old spelling of a switch: sets the new option and says so."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        warn(f"{option} is deprecated: use --{self.dest.replace('_', '-')}")
        setattr(namespace, self.dest, True)


def build_parser() -> tuple[argparse.ArgumentParser, set[str]]:
    """The options, and the names of those that may change between a run and its ``--resume``."""
    p = Parser(prog="train_cmfer.py", formatter_class=Help, description=__doc__.split("\n\n")[0])
    on_off, pos, nonneg, two = argparse.BooleanOptionalAction, at_least(1), at_least(0), at_least(2)
    g = p.add_argument_group(
        "presets (flags override them; the defaults shown below are the paper's recipe, and a run "
        "without --preset or --config takes the cpu or gpu preset over them)"
    )
    g.add_argument("--preset", choices=sorted(PRESETS), help="settings of examples/configs/: smoke "
                   "(seconds), cpu (minutes on 2 cores), gpu, paper (the paper's recipe), "
                   "benchmark; without --preset or --config: cpu or gpu by the device")  # fmt: skip
    g.add_argument("--config", metavar="FILE", help="YAML or JSON file of settings (option names), "
                   "over --preset if given (or a preset the file names as 'preset: NAME'), else over the "
                   "defaults shown")  # fmt: skip
    g.add_argument("--dry-run", action="store_true", help="check the settings and print them and "
                   "the runs they make, then exit: nothing is read or written")  # fmt: skip

    g = p.add_argument_group("data (without --data-root: the built-in synthetic six-domain data)")
    g.add_argument("--lists", metavar="DIR", help="the protocol's image lists (default: the "
                   "lists shipped with lacmfer)")  # fmt: skip
    g.add_argument("--strip-prefix", help="prefix removed from the list paths before they are "
                   "joined to --data-root (default: ../datasets, as the published lists start)")  # fmt: skip
    g.add_argument("--affectnet-lists", metavar="ADAPT,TEST", help="AffectNet's list files")
    g.add_argument("--leakage-free", action=on_off, help="keep target test images out of the "
                   "adaptation set (default: on; off = the published protocol)")  # fmt: skip
    g.add_argument("--skip-unreadable", action="store_true", help="train without the images "
                   "that are missing or do not decode (saying how many) instead of stopping")  # fmt: skip
    g.add_argument("--check-images", choices=("header", "full"), default="header", help="before "
                   "the first step, open every image and read its header, or decode it in full "
                   "(slower; also finds files cut short after their header)")  # fmt: skip
    g.add_argument("--domains", help="comma-separated domains (default: the six); all but the "
                   "target are the sources")  # fmt: skip
    g.add_argument("--target", default="RAF-DB", help="target domain, or 'all': each in turn, "
                   "into <out>/<target>/")  # fmt: skip
    g.add_argument("--split-seed", type=nonneg, default=0, help="seed of the data and of every "
                   "split, apart from --seed: all seeds are tested on the same images")  # fmt: skip
    g.add_argument("--image-size", type=pos, default=224, help="input side, a multiple of 16")
    g.add_argument("--synthetic-train-size", type=two, default=1500, help="images per domain")
    g.add_argument("--synthetic-test-size", type=pos, default=500, help="target test images")
    g.add_argument("--source-val-fraction", type=float, default=0.0, help="share of each source "
                   "held out: source accuracy and loss are logged at each evaluation")  # fmt: skip
    g.add_argument("--source-mode", choices=("pooled", "balanced"), default="pooled")
    g.add_argument("--augment", action=on_off, default=True, help="the paper's augmentation")

    g = p.add_argument_group("model")
    g.add_argument("--width", choices=("full", "tiny"), default="full", help="tiny = LACMFER.tiny")
    g.add_argument("--encoder-weights", metavar="FILE", help="torchvision resnet18 checkpoint "
                   "(ImageNet in the paper), or 'synthetic': the synthetic benchmark's stand-in "
                   "encoder, built once into the cache (default: random initialisation)")  # fmt: skip
    g.add_argument("--share", choices=SHARE_MODES, default="column", help="local sub-networks")

    g = p.add_argument_group("objective (the paper's ablation switches and the baselines)")
    g.add_argument("--method", type=method_name, choices=METHODS, default="lacmfer", help="lacmfer"
                   " = LACMFERLoss; source-only = its cross-entropy alone; a baseline adds "
                   "--baseline-weight × its loss on both branches: mmd, dann, coral, m3sda, "
                   "class-confusion (Minimum Class Confusion)")  # fmt: skip
    g.add_argument("--sid", action=on_off, default=True, help="sample-level alignment")
    g.add_argument("--cid", action=on_off, default=True, help="cluster-level alignment")
    g.add_argument("--consistency", choices=CONSISTENCY_KINDS, default="mcc", help="mcc = the "
                   "multi-view clustering consistency; l1/mse/kl = a per-sample discrepancy")  # fmt: skip
    g.add_argument("--no-consistency", dest="consistency", action="store_const", const="none")
    g.add_argument("--consistency-from-logits", action="store_true", help="logits, not "
                   "probabilities, into the consistency term (the authors' code)")  # fmt: skip
    g.add_argument("--consistency-on-logits", dest="consistency_from_logits", action=Renamed,
                   help=argparse.SUPPRESS)  # fmt: skip
    g.add_argument("--voting", action=on_off, default=True, help="multi-view voting loss")
    for name, default, text in (
        ("label-smoothing", 0.1, "of the source cross-entropy"),
        ("align-weight", 0.4, "weight of Σ_b (L_sid + λ_cid L_cid)"),
        ("cid-weight", 0.02, "λ_cid"),
        ("consistency-weight", 0.5, "weight of the consistency term"),
        ("voting-weight", 0.1, "weight of the voting loss"),
        ("align-threshold", 0.4, "confidence threshold δ of the alignment"),
        ("pseudo-threshold", 0.9, "confidence threshold τ of the voting"),
        ("kernel-mul", 2.0, "bandwidth ratio of the Gaussian kernels"),
    ):
        g.add_argument(f"--{name}", type=float, default=default, help=text)
    g.add_argument("--kernel-num", type=int, default=5, help="Gaussian kernels of the MMD")
    g.add_argument("--cluster-ramp", choices=CLUSTER_RAMPS, default="none")
    g.add_argument("--per-source", action="store_true", help="align source by source")
    g.add_argument("--baseline-weight", type=float, help="default: the baseline's paper's ("
                   + ", ".join(f"{k} {v}" for k, v in BASELINE_WEIGHTS.items()) + ")")  # fmt: skip
    g.add_argument("--adapt-after", type=nonneg, default=0, help="source-only steps first")
    g.add_argument("--adapt-warmup", type=nonneg, default=0, help="then a linear rise over these")

    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=pos, default=20000, help="with --resume, more extends the run")
    g.add_argument("--batch-size", type=two, default=128, help="source images a step (all ranks)")
    g.add_argument("--target-batch-size", type=two, help="default: as --batch-size")
    g.add_argument("--lr", type=float, default=0.01, help="lr of branches and heads")
    g.add_argument("--encoder-lr-scale", type=float, default=0.1, help="encoder lr = lr × this")
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--nesterov", action=on_off, default=True)
    g.add_argument("--weight-decay", type=float, default=1e-4)
    g.add_argument("--decay-gamma", type=float, default=10.0, help="γ of lr·(1 + γ·min(1, t/T))^-p")
    g.add_argument("--decay-power", type=float, default=0.75, help="p of the inverse decay")
    g.add_argument("--decay-steps", type=pos, help="T (default: --steps // 2; kept when extended)")
    g.add_argument("--ramp-steps", type=pos, help="horizon of the cluster ramp and of DANN's "
                   "schedule (default: --steps; kept when extended)")  # fmt: skip
    g.add_argument("--select-by", choices=SELECT_BY, default="final", help="report the evaluation "
                   "an unsupervised validator scores highest beside the last step (source-acc "
                   "needs --source-val-fraction)")  # fmt: skip

    g = p.add_argument_group("runtime (a run continues with its own settings on --resume; of what "
                             "is given anew, only these and a larger --steps may differ)")  # fmt: skip
    mutable = {"preset", "config", "steps"}

    def opt(*flags: str, **kwargs: Any) -> None:
        mutable.add(g.add_argument(*flags, **kwargs).dest)

    opt("--data-root", metavar="DIR", help="the real datasets, where the list paths point")
    opt("--num-workers", type=nonneg, help="image-decoding workers (default: 4)")
    opt("--out", default="runs/cmfer", help="output folder")
    opt("--resume", nargs="?", const="last", metavar="CKPT", help="continue the run in --out (or "
        "from CKPT) with the settings it was started with; a finished run is left as it is")  # fmt: skip
    opt("--overwrite", action="store_true", help="start over in an --out that holds a run")
    opt("--evaluate", metavar="CKPT", help="no training: score a checkpoint on its target")
    opt("--stop-at", type=pos, help="stop after this step (resume later with --resume)")
    opt("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    opt("--amp", choices=("none", "bf16", "fp16"), default="none", help="autocast (losses: fp32)")
    opt("--compile", action="store_true", help="torch.compile the model and the objective")
    opt("--channels-last", action=on_off, help="default: on with CUDA")
    opt("--seed", type=nonneg, default=0, help="initialisation, sampling, augmentation")
    opt("--threads", type=pos, help="CPU threads; pin them for results that reproduce bit for bit")
    opt("--eval-every", type=pos, default=500)
    opt("--log-every", type=pos, default=50)
    opt("--ckpt-every", type=pos, default=1000)
    opt("--keep-checkpoints", type=nonneg, default=3, help="periodic ones, beside last.pt")
    opt("--progress", action=on_off, default=True, help="a line every --log-every steps")
    opt("--tensorboard", action=on_off, help="<out>/tb (default: when installed)")
    opt("--plots", action=on_off, default=True, help="confusion.png and curves.png")
    opt("--analyse", action="store_true", help="the feature space at step 0 and at the end "
        "(lacmfer.analysis): features.png, distances.png, analysis.json, summary.json")  # fmt: skip
    opt("--write-weight-hash", action="store_true", help="<out>/weights_rank<r>.json (DDP checks)")
    return p, mutable


def read_settings(
    path: Path, known: Sequence[str], switches: set[str], valued: set[str], where: str,
    presets: Sequence[str] = (),
) -> dict[str, Any]:  # fmt: skip
    """A YAML or JSON file of settings, each key checked against the options (``switches``: the
    on/off ones, which take true or false; ``valued``: those that take a value, never true or
    false; ``preset`` only where ``presets`` names those it may be). Mistakes start with ``where``
    (the flag and the file)."""
    try:
        if path.suffix.lower() == ".json":
            values = json.loads(path.read_text())
        else:
            import yaml  # PyYAML, in the `example` extra

            try:
                values = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as err:
                raise ValueError(" ".join(str(err).split())) from None
    except (OSError, ValueError) as err:
        raise UsageError(f"{where}: cannot read it ({str(err).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise UsageError(f"{where}: expected a mapping of settings")
    out = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name in RENAMED:
            warn(f"{where}: setting '{key}' is deprecated: use '{RENAMED[name]}'")
            name = RENAMED[name]
        if name == "preset" and presets:
            if value not in presets:
                raise UsageError(f"{where}: setting 'preset' must be one of {', '.join(presets)}")
        elif name not in known or name in ("preset", "config"):
            raise UsageError(f"{where}: unknown setting '{key}'")
        if name in switches and not isinstance(value, bool):
            raise UsageError(f"{where}: setting '{key}' must be true or false, got {value!r}")
        if name in valued and isinstance(value, bool):
            raise UsageError(f"{where}: setting '{key}' takes a value, got {value!r}")
        out[name] = value
    return out


def parse_args(argv: Optional[Sequence[str]]) -> tuple[argparse.Namespace, set[str], set[str]]:
    """The parser's defaults < the preset < ``--config`` < the command line. Settings from files
    become flags in front of the command line, so argparse checks them like typed flags. Returns
    the settings, those that may change on ``--resume``, and those given by the command line or
    its ``--config`` file (not by a preset): what ``--resume`` sets over the checkpoint's."""
    parser, mutable = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    first = parser.parse_args(argv)
    unset = object()  # argparse fills in defaults only where the namespace lacks the name
    typed = parser.parse_args(argv, argparse.Namespace(**{a.dest: unset for a in parser._actions}))
    on_line = {k for k, v in vars(typed).items() if v is not unset}
    given = set(on_line)
    kinds: dict[str, set[bool]] = {}  # dest -> whether each of its options is an on/off switch
    for action in parser._actions:
        kinds.setdefault(action.dest, set()).add(action.nargs == 0)
    switches = {dest for dest, kind in kinds.items() if kind == {True}}
    valued = {dest for dest, kind in kinds.items() if kind == {False}}
    config: dict[str, Any] = {}
    if first.config is not None:  # a config file may name the preset it builds on
        where = f"--config {first.config}"
        config = read_settings(Path(first.config), list(vars(first)), switches, valued, where,
                               presets=sorted(PRESETS))  # fmt: skip
    named = config.pop("preset", None)  # the command line's --preset comes first
    preset, values = first.preset or named, {}
    if preset is None and first.config is None and first.evaluate is None:
        on_cuda = first.device.startswith("cuda") or (
            first.device == "auto" and torch.cuda.is_available()
        )
        preset = "gpu" if on_cuda else "cpu"
    files = (("--preset", preset, PRESETS.get(preset or "")), ("--config", None, first.config))
    origin: dict[str, str] = {}  # setting -> the file it came from
    for flag, name, path in files:
        if path is not None:
            where = f"{flag} {name} ({path})" if name else f"{flag} {path}"
            if flag == "--config":
                settings = config
            else:
                settings = read_settings(Path(path), list(vars(first)), switches, valued, where)
            try:  # a bad value names its file, not only the flag it becomes
                parser.parse_args(as_flags(settings))
            except UsageError as err:
                raise UsageError(f"{where}: {err}") from None
            values.update(settings)
            origin.update(dict.fromkeys(settings, where))
            if flag == "--config":
                given |= set(settings)
    args = parser.parse_args([*as_flags(values), *argv])
    args.preset = preset
    try:
        check_args(args)
    except UsageError as err:  # a value from a file: say which file
        flag = re.match(r"--([\w-]+)", str(err))
        name = flag.group(1).replace("-", "_") if flag else ""
        if name in origin and name not in on_line:
            raise UsageError(f"{origin[name]}: {err}") from None
        raise
    return args, mutable, given


def as_flags(settings: dict[str, Any]) -> list[str]:
    """Settings as the command-line flags they stand for (true/false: the switch or its --no-)."""
    flags = []
    for name, value in settings.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        elif value is not None:
            flags += [flag, str(value)]
    return flags


def check_args(args: argparse.Namespace) -> None:
    """Reject what the types cannot, naming the flag, before anything runs."""
    if args.image_size % 16:
        raise UsageError(f"--image-size must be a multiple of 16, got {args.image_size}")
    if args.resume is None:  # resuming, the run's own --steps counts (checked when it is read)
        check_stop(args)
    if not 0.0 <= args.source_val_fraction < 1.0:
        raise UsageError(
            f"--source-val-fraction must lie in [0, 1), got {args.source_val_fraction}"
        )
    if args.select_by == "source-acc" and args.source_val_fraction == 0.0:
        raise UsageError("--select-by source-acc needs --source-val-fraction (held-out sources)")
    if (args.baseline_weight or 0.0) < 0:
        raise UsageError(f"--baseline-weight must be >= 0, got {args.baseline_weight}")
    for name in (
        "lr",
        "encoder_lr_scale",
        "momentum",
        "weight_decay",
        "decay_gamma",
        "decay_power",
    ):
        value, low = getattr(args, name), "> 0" if name == "lr" else ">= 0"
        if not math.isfinite(value) or value < 0 or (value == 0 and name == "lr"):
            raise UsageError(f"--{name.replace('_', '-')} must be {low}, got {value}")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", args.device):
        raise UsageError(f"--device {args.device}: one of auto, cpu, cuda or cuda:N")
    if args.lists is not None and not Path(args.lists).is_dir():
        raise UsageError(f"--lists {args.lists}: not a folder (the lists' folder is expected)")
    if args.resume not in (None, "last") and Path(args.resume).is_dir():
        raise UsageError(f"--resume {args.resume} is a folder: name a checkpoint file, or pass "
                         "--out FOLDER --resume to continue the run in FOLDER")  # fmt: skip
    if args.resume is not None and args.overwrite:
        raise UsageError("--resume and --overwrite exclude each other")
    if args.target == "all" and args.resume not in (None, "last"):
        raise UsageError("--resume CKPT names one run: with --target all use --resume alone")
    real = ("lists", "strip_prefix", "affectnet_lists", "leakage_free", "num_workers")
    given = [n for n in real if getattr(args, n) is not None] + [
        "skip_unreadable"
    ] * args.skip_unreadable
    if args.data_root is None and given:
        flag = "--" + given[0].replace("_", "-")
        raise UsageError(f"{flag} applies to image files and needs --data-root (without it the "
                         "built-in synthetic data are used)")  # fmt: skip
    if args.data_root is not None and not Path(args.data_root).is_dir():
        raise UsageError(f"--data-root {args.data_root}: no such folder")
    if args.encoder_weights not in (None, "synthetic") and not Path(args.encoder_weights).is_file():
        raise UsageError(f"--encoder-weights {args.encoder_weights}: no such file (a torchvision "
                         "resnet18 checkpoint, or 'synthetic')")  # fmt: skip
    try:  # the library checks the objective's settings, under the same names as the flags
        LACMFERLoss(**objective_settings(args, num_domains=2))
    except (TypeError, ValueError) as err:
        flag = re.sub(r"`(\w+)`", lambda m: "--" + m.group(1).replace("_", "-"), str(err))
        raise UsageError(flag) from None
    try:
        names = domain_names(args)
    except ValueError:
        raise UsageError(f"--domains {args.domains}: not one of {', '.join(SIX_DOMAINS)}") from None
    if len(set(names)) != len(names) or len(names) < 2:
        raise UsageError(f"--domains {args.domains}: two or more different domains (one target, "
                         "the rest sources)")  # fmt: skip
    try:
        targets(args)
    except ValueError:
        known = f"--domains {args.domains}" if args.domains else ", ".join(SIX_DOMAINS)
        raise UsageError(f"--target {args.target}: not one of {known} or all") from None


def check_stop(args: argparse.Namespace) -> None:
    if args.stop_at is not None and args.stop_at > args.steps:
        raise UsageError(f"--stop-at {args.stop_at} is beyond --steps {args.steps}")


def domain_names(args: argparse.Namespace) -> tuple[str, ...]:
    names = SIX_DOMAINS if args.domains is None else args.domains.split(",")
    return tuple(canonical_dataset(d.strip(), SIX_DOMAINS) for d in names)


def targets(args: argparse.Namespace) -> tuple[str, ...]:
    names = domain_names(args)
    return names if args.target == "all" else (canonical_dataset(args.target, names),)


# ------------------------------------------------------------------------------------------ data
@functools.lru_cache(maxsize=1)  # rendered once per process; training never writes into them
def synthetic_data(size: int, test: int, side: int, seed: int, names: tuple[str, ...]) -> Any:
    return synthetic_domains(size, test, domains=names, image_size=side, seed=seed)


def build_task(args: argparse.Namespace, target: str) -> tuple[LeaveOneDomainOutTask, Any]:
    """The synthetic domains (no ``--data-root``) or the protocol's image lists with ``target`` held
    out, and the held-out source images (``--source-val-fraction``) or None. The data and every
    split depend on ``--split-seed``, never on ``--seed``."""
    names = domain_names(args)
    if args.data_root is None:
        sizes = (args.synthetic_train_size, args.synthetic_test_size, args.image_size)
        task = leave_one_domain_out(synthetic_data(*sizes, 2 * args.split_seed, names), target)
        task.notes.append("synthetic data: the target test set is a separate draw (no leakage)")
    else:
        try:  # an empty set: an empty list, or --skip-unreadable dropped a whole domain
            task = leave_one_domain_out(real_domains(args, names, target), target,
                                        leakage_free=args.leakage_free is not False,
                                        seed=args.split_seed)  # fmt: skip
        except ValueError as err:
            raise UsageError(f"--lists {args.lists or protocol_lists_dir()}: {err}") from None
    if args.source_val_fraction == 0:
        return task, None
    try:
        return task.split_sources(args.source_val_fraction, seed=args.split_seed)
    except ValueError as err:
        raise UsageError(f"--source-val-fraction {args.source_val_fraction}: {err}") from None


def real_domains(args: argparse.Namespace, names: tuple[str, ...], target: str) -> dict[str, Any]:
    """The image lists of ``names``. Before any training, every image the task will read is
    opened and its header decoded (``--check-images full``: every pixel); ``--skip-unreadable``
    drops the ones that fail."""
    extra = {}
    if args.affectnet_lists:
        adapt, _, test = args.affectnet_lists.partition(",")
        extra["AffectNet"] = (adapt, test or adapt)
        missing = [f for f in (adapt, test or adapt) if not Path(f).is_file()]
        if missing and "AffectNet" in names:
            raise UsageError(f"--affectnet-lists {args.affectnet_lists}: no file {missing[0]}")
    elif "AffectNet" in names:
        raise UsageError("--domains: AffectNet's lists are not distributed; pass "
                         "--affectnet-lists ADAPT,TEST or leave AffectNet out")  # fmt: skip
    lists = args.lists or protocol_lists_dir()
    prefix = args.strip_prefix or "../datasets"
    try:
        domains = fer_list_domains(lists, domains=names, lists=extra, root=args.data_root,
                                   strip_prefix=prefix, image_size=args.image_size)  # fmt: skip
    except FileNotFoundError as err:
        raise UsageError(f"--lists {lists}: {err.strerror}: {err.filename}") from None
    except ValueError as err:  # the file, then its first bad line
        raise UsageError(f"--lists {lists}: {' '.join(str(err).split(chr(10))[:2])}") from None
    used = [s.adapt for s in domains.values()] + [domains[target].test]
    full = args.check_images == "full"
    bad = {p: e for ds in used for p, e in check_images(ds.paths, decode=full).items()}
    if bad and not args.skip_unreadable:
        raise UsageError(f"--data-root {args.data_root}: {len(bad)} images of the lists in use "
                         f"are missing or do not decode (e.g. {', '.join(list(bad)[:3])}); fix "
                         "--data-root or --strip-prefix, or pass --skip-unreadable")  # fmt: skip
    if bad and len(bad) == sum(len(ds) for ds in used):
        raise UsageError(f"--data-root {args.data_root}: none of the images of the lists in use "
                         "reads (fix --data-root or --strip-prefix)")  # fmt: skip
    if not bad:
        return domains
    print(
        f"--skip-unreadable: training without {len(bad)} missing or unreadable images", flush=True
    )
    kept = {
        id(ds): LabelledSubset(ds, [i for i, p in enumerate(ds.paths) if p not in bad])
        for ds in used
    }
    return {n: type(s)(kept.get(id(s.adapt), s.adapt), kept.get(id(s.test), s.test))
            for n, s in domains.items()}  # fmt: skip


# -------------------------------------------------------------------------- model and objective
def objective_settings(args: argparse.Namespace, num_domains: int) -> dict[str, Any]:
    """:class:`~lacmfer.losses.LACMFERLoss`'s settings, named as the flags. A baseline keeps its
    cross-entropy and adaptation schedule and turns the paper's terms off."""
    on = args.method == "lacmfer"
    names = ("label_smoothing", "align_weight", "cid_weight", "consistency_weight", "voting_weight",
             "align_threshold", "pseudo_threshold", "kernel_num", "kernel_mul", "cluster_ramp",
             "adapt_after", "adapt_warmup")  # fmt: skip
    return {
        **{n: getattr(args, n) for n in names},
        "sid": args.sid and on,
        "cid": args.cid and on,
        "consistency": args.consistency if on else "none",
        "consistency_from_logits": args.consistency_from_logits and on,
        "voting": args.voting and on,
        "num_domains": num_domains if args.per_source else None,
        "ramp_steps": args.ramp_steps or args.steps,
    }


def baseline_losses(
    args: argparse.Namespace, dims: Sequence[int], domains: int, sync: bool
) -> nn.ModuleList:
    """A baseline's loss module for each branch (none for lacmfer, source-only and mmd)."""
    per_source = domains if args.per_source else None
    if args.method == "dann":
        horizon = args.ramp_steps or args.steps
        return nn.ModuleList(DomainAdversarialLoss(d, num_domains=per_source, max_steps=horizon,
                                                   sync_dist=sync) for d in dims)  # fmt: skip
    if args.method == "coral":
        return nn.ModuleList(CORALLoss(num_domains=per_source, sync_dist=sync) for _ in dims)
    if args.method == "m3sda":
        return nn.ModuleList([MomentMatchingLoss(num_domains=domains, sync_dist=sync)] * 2)
    if args.method == "class-confusion":
        return nn.ModuleList([MinimumClassConfusionLoss(sync_dist=sync)] * 2)
    return nn.ModuleList()


class TrainStep(nn.Module):
    """Model, objective and baseline in one module: one forward a step is what DDP (which also
    syncs a DANN discriminator) and ``torch.compile`` want. Source and target batches go through
    the model in two calls (per-domain BatchNorm). ``loss = CE + w·weight·Σ_b baseline_b`` for a
    baseline, with ``w`` the objective's adaptation schedule."""

    def __init__(self, run: Run, weight: float) -> None:
        super().__init__()
        self.model, self.objective, self.baseline = run.model, run.objective, run.baseline
        self.method, self.weight, self.kernel = run.args.method, weight, run.args.kernel_num
        self.kernel_mul = run.args.kernel_mul

    def forward(
        self, x_s: Tensor, y_s: Tensor, d_s: Tensor, x_t: Tensor
    ) -> tuple[Tensor, Any, Any]:
        out_s, out_t = self.model(x_s), self.model(x_t)
        terms = self.objective(out_s, y_s, out_t, d_s)
        if self.method in ("lacmfer", "source-only"):
            return terms.loss, terms, out_t
        align = terms.ce.new_zeros(())
        for b, view in enumerate(("g", "l")):
            f_s, f_t = getattr(out_s, f"feat_{view}"), getattr(out_t, f"feat_{view}")
            if self.method == "mmd":
                align = align + mmd2(f_s, f_t, kernel_num=self.kernel, kernel_mul=self.kernel_mul)
            elif self.method == "m3sda":
                align = align + self.baseline[b](f_s, d_s, f_t)
            elif self.method == "class-confusion":
                align = align + self.baseline[b](getattr(out_t, f"logits_{view}"))
            else:  # dann, coral: per source when they were built with num_domains
                per_source = self.baseline[b].num_domains is not None
                align = align + self.baseline[b](f_s, f_t, d_s if per_source else None)
        loss = terms.loss + terms.adaptation_weight * self.weight * align
        return loss, terms._replace(loss=loss, align=align), out_t


def encoder_file(args: argparse.Namespace, rank: int, world: int) -> Optional[str]:
    """The encoder's torchvision-format weights: the user's file, the synthetic stand-in (rank 0
    builds it on first use while the others wait), or None (random initialisation)."""
    if args.encoder_weights != "synthetic":
        return args.encoder_weights
    if rank == 0:
        pretrained_encoder(image_size=args.image_size)
    if world > 1:
        dist.barrier()
    return str(pretrained_encoder(image_size=args.image_size))


# ------------------------------------------------------------------------------------------ run
class Ranks(NamedTuple):
    rank: int = 0
    world: int = 1
    local: int = 0


def setup_device(args: argparse.Namespace) -> tuple[Ranks, torch.device]:
    """The device and, under ``torchrun``, the process group (NCCL on CUDA, else gloo)."""
    env = [
        int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0))
    ]
    ranks = Ranks(*env)
    name = args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: CUDA is not available")
    device = torch.device(f"cuda:{ranks.local}" if name == "cuda" else name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    if ranks.world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if args.batch_size % ranks.world or (args.target_batch_size or args.batch_size) % ranks.world:
        raise UsageError(f"--batch-size and --target-batch-size must divide by {ranks.world} ranks")
    return ranks, device


class Run:
    """Everything one training run holds: data, model, objective, optimiser, counters, log."""

    def __init__(self, args: argparse.Namespace, task: LeaveOneDomainOutTask, source_val: Any,
                 ranks: Ranks, device: torch.device, out: Path) -> None:  # fmt: skip
        self.args, self.task, self.source_val, self.ranks = args, task, source_val, ranks
        self.device, self.out = device, out
        self.main, sync = ranks.rank == 0, ranks.world > 1
        cl = args.channels_last if args.channels_last is not None else device.type == "cuda"
        self.memory_format = torch.channels_last if cl else torch.contiguous_format
        self.encoder = encoder = encoder_file(args, ranks.rank, ranks.world)
        # The model and the discriminators get the same initialisation on every rank; the
        # augmentation a per-rank seed; the samplers split one global stream over the ranks.
        torch.manual_seed(args.seed)
        build = LACMFER.tiny if args.width == "tiny" else LACMFER
        try:
            self.model = build(7, share=args.share, encoder_weights=encoder)
        except Exception as err:  # missing, truncated, not a resnet18 state dict
            if encoder is None:
                raise
            reason = " ".join(str(err).split())[:300] or type(err).__name__
            raise UsageError(f"--encoder-weights {encoder}: not a torchvision resnet18 state "
                             f"dict: {reason}") from None  # fmt: skip
        self.model.to(device, memory_format=self.memory_format)
        settings = objective_settings(args, len(task.sources))
        self.objective = LACMFERLoss(**settings, sync_dist=sync).to(device)
        dims = self.model.feature_dims
        self.baseline = baseline_losses(args, dims, len(task.sources), sync).to(device)
        weight = args.baseline_weight
        weight = BASELINE_WEIGHTS.get(args.method, 0.0) if weight is None else weight
        step: nn.Module = TrainStep(self, weight)
        if sync:
            ids = None if device.index is None else [device.index]
            step = DistributedDataParallel(step, device_ids=ids)
        self.step_fn = torch.compile(step) if args.compile else step
        groups = self.model.parameter_groups(args.lr, encoder_lr_scale=args.encoder_lr_scale,
                                             weight_decay=args.weight_decay)  # fmt: skip
        if list(self.baseline.parameters()):  # DANN's discriminators
            groups.append({"params": list(self.baseline.parameters()), "lr": args.lr,
                           "weight_decay": args.weight_decay})  # fmt: skip
        nesterov = args.nesterov and args.momentum > 0
        self.optimizer = torch.optim.SGD(groups, args.lr, args.momentum, nesterov=nesterov)
        horizon = args.decay_steps or max(1, args.steps // 2)

        def decay(t: int) -> float:  # the paper's inverse decay
            return float((1.0 + args.decay_gamma * min(1.0, t / horizon)) ** -args.decay_power)

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, decay)
        self.scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")
        self.augment = FERAugment() if args.augment else None
        self.aug_gen = torch.Generator(device).manual_seed(args.seed * 1000 + ranks.rank + 1)
        torch.manual_seed(args.seed * 1000 + ranks.rank + 7)
        self.step, self.train_time, self.images = 0, 0.0, 0
        self.oracle: Optional[dict[str, Any]] = None  # best test accuracy (test-set selection)
        self.selected: Optional[dict[str, Any]] = None  # what --select-by prefers so far
        self.log = MetricsLog(out, enabled=self.main, tensorboard=args.tensorboard)
        for note in self.log.notes if self.main else ():  # e.g. --tensorboard, not installed
            warn(note)
        self.synthetic = args.data_root is None
        self.workers = 0 if self.synthetic else 4 if args.num_workers is None else args.num_workers

    def start_streams(self) -> None:
        """The training streams from ``self.step`` on (this rank's part of each global batch)."""
        a, r, w, task = self.args, self.ranks.rank, self.ranks.world, self.task
        sizes = [len(d) for d in task.source.datasets]
        source = MultiSourceSampler(sizes, a.batch_size // w, mode=a.source_mode, seed=a.seed,
                                    rank=r, world_size=w)  # fmt: skip
        target = InfiniteSampler(len(task.target_adapt), (a.target_batch_size or a.batch_size) // w,
                                 seed=a.seed, rank=r, world_size=w)  # fmt: skip
        pin = self.device.type == "cuda"
        loader = {"start": self.step, "num_workers": self.workers, "pin_memory": pin}
        self.source_stream = sampler_loader(task.source, source, **loader)  # images, labels, ids
        self.target_stream = sampler_loader(task.target_adapt, target, **loader)

    def autocast(self) -> Any:
        if self.args.amp == "none":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.args.amp == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def inputs(self, x: Tensor) -> Tensor:
        return normalize(x).contiguous(memory_format=self.memory_format)

    def train_step(self) -> tuple[Any, Any, Tensor]:
        """One optimiser step; returns the objective's terms, the target outputs and labels (for
        the logged diagnostics only)."""
        x_s, y_s, d_s = (t.to(self.device, non_blocking=True) for t in next(self.source_stream))
        x_t, y_t = (t.to(self.device, non_blocking=True) for t in next(self.target_stream))
        if self.augment is not None:
            x_s = self.augment(x_s, generator=self.aug_gen)
            x_t = self.augment(x_t, generator=self.aug_gen)
        with self.autocast():
            loss, terms, out_t = self.step_fn(self.inputs(x_s), y_s, d_s, self.inputs(x_t))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        with warnings.catch_warnings():  # fp16: the scaler skips a step whose gradients overflow,
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step")  # as meant
            self.scheduler.step()  # the schedule counts steps taken, skipped ones included
        self.objective.step()
        for module in self.baseline:
            if isinstance(module, DomainAdversarialLoss):
                module.step()
        self.step += 1
        self.images += (x_s.shape[0] + x_t.shape[0]) * self.ranks.world
        return terms, out_t, y_t

    def log_step(self, terms: Any, out_t: Any, labels_t: Tensor) -> dict[str, float]:
        """Write the step's terms, the lr and the pseudo-labels' accuracy (one host sync)."""
        parts: dict[str, Tensor] = {}
        for name, value in terms._asdict().items():
            value = value.detach().float()
            if value.numel() == 2:  # per branch
                parts[f"{name}_g"], parts[f"{name}_l"] = value[0], value[1]
            else:
                parts[name] = value.reshape(())
        labels, kept = refine_pseudo_labels(out_t.logits_g.detach(), out_t.logits_l.detach(),
                                            threshold=self.args.pseudo_threshold)  # fmt: skip
        right = ((labels == labels_t) & kept).float().sum()
        parts["pseudo_label_acc"] = right / kept.float().sum()  # nan when nothing is kept
        values = dict(zip(parts, torch.stack(list(parts.values())).tolist()))
        lr = self.optimizer.param_groups[-1]["lr"]
        self.log.write({"kind": "train", "step": self.step, **values, "lr": lr})
        return values

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """Target test metrics (global, local, fused view), every unsupervised validator on the
        unlabelled adaptation set, and held-out source accuracy and loss. Each rank takes its
        shard; the statistics are combined over ranks."""
        task, sync = self.task, self.ranks.world > 1
        self.broadcast_buffers()
        training = self.model.training
        self.model.eval()

        def shard(data: Any) -> Iterator[Any]:
            for x, y, *_ in self.shard(data):
                with self.autocast():
                    yield self.model(self.inputs(x.to(self.device))), y.to(self.device)

        confusion = torch.zeros(3, 7, 7, dtype=torch.int64, device=self.device)
        for out, y in shard(task.target_test):
            for v, logits in enumerate((out.logits_g, out.logits_l, out.logits)):
                confusion[v] += confusion_matrix(logits.argmax(1), y, 7)
        validators = ValidatorSuite(sync_dist=sync, max_samples=2048, seed=self.args.split_seed)
        for out, _ in shard(task.target_adapt):  # the labels are dropped here
            validators.update(out.logits.float(), out.logits_g.float(), out.logits_l.float())
        record = {f"val_{k}": float(v) for k, v in validators.compute().items()}
        if self.source_val is not None:
            accuracy, loss = SourceAccuracy(sync_dist=sync), torch.zeros(2, device=self.device)
            for out, y in shard(self.source_val):
                accuracy.update(out.logits.float(), y)
                loss += torch.stack([F.cross_entropy(out.logits.float(), y, reduction="sum"),
                                     loss.new_tensor(len(y))])  # fmt: skip
            if sync:
                dist.all_reduce(loss)
            record["val_source-acc"] = float(accuracy.compute())
            record["source_val_loss"] = float(loss[0] / loss[1])
        if sync:
            dist.all_reduce(confusion)
        self.model.train(training)
        m = dict(zip(("global", "local", "fused"), map(classification_metrics, confusion)))
        order = ("fused", "global", "local")
        return {
            **{f"acc_{v}": float(m[v].accuracy) for v in order},
            **{f"macro_f1_{v}": float(m[v].macro_f1) for v in order},
            "per_class_acc_fused": m["fused"].per_class_accuracy.tolist(),
            "confusion_fused": confusion[2].tolist(), "num_test": int(m["fused"].num_samples),
            **record,
        }  # fmt: skip

    def shard(self, data: Any) -> DataLoader:
        """This rank's part (``rank::world``) of ``data``, in batches, in order."""
        part = Subset(data, range(self.ranks.rank, len(data), self.ranks.world))
        size = max(64, 2 * self.args.batch_size // self.ranks.world)
        return DataLoader(part, batch_size=size, num_workers=self.workers)

    def analyse(self) -> ShiftReport:
        """Where domains and classes lie in feature space (:mod:`lacmfer.analysis`): 200 images of
        each source and of the target's test set (its labels: evaluation only), a seeded draw."""
        self.broadcast_buffers()
        gen = torch.Generator().manual_seed(self.args.split_seed)
        domains = [*self.task.source_sets, self.task.target_test]
        collector = FeatureCollector(features=("feat_g", "feat_l"), sync_dist=self.ranks.world > 1)
        for domain, data in enumerate(domains):
            part = Subset(data, torch.randperm(len(data), generator=gen)[:200].tolist())
            batches = ((self.inputs(x), y) for x, y in self.shard(part))
            collector.collect(self.model, batches, domain=domain, device=self.device)
        return shift_report(collector.compute(), target=len(domains) - 1, seed=self.args.split_seed)

    def evaluate_and_log(self) -> dict[str, Any]:
        """Evaluate, log, and update the oracle and the ``--select-by`` choice (the validator's
        score only, no target label; rank 0 saves the chosen weights as ``selected.pt``)."""
        record = {"kind": "eval", "step": self.step, **self.evaluate()}
        self.log.write(record)
        if self.oracle is None or record["acc_fused"] > self.oracle["acc_fused"]:
            self.oracle = {k: record[k] for k in SUMMARY_KEYS}
        if self.args.select_by != "final":
            score = record[f"val_{self.args.select_by}"]
            # a NaN score (a diverged model) is never chosen, and any finite one replaces it
            if self.selected is None or (
                math.isfinite(score) and not score <= self.selected["score"]
            ):
                self.selected = {**{k: record[k] for k in SUMMARY_KEYS}, "score": score}
                if self.main:
                    state = {
                        "config": vars(self.args),
                        "step": self.step,
                        "model": self.model.state_dict(),
                    }
                    save_checkpoint(state, self.out / "checkpoints" / "selected.pt")
        return record

    def broadcast_buffers(self) -> None:
        """Rank 0's BatchNorm statistics on every rank (DDP syncs them at each forward anyway; this
        makes evaluation, checkpoints and weight hashes agree after the last one)."""
        for buf in self.model.buffers() if self.ranks.world > 1 else ():
            dist.broadcast(buf, src=0)

    def save(self) -> None:
        """``last.pt`` and, every ``--ckpt-every`` steps, a copy ``step_<n>.pt`` (the newest
        ``--keep-checkpoints`` are kept): everything an exact resume needs, in types that
        ``torch.load(weights_only=True)`` reads. The samplers need no state: they replay ``step``
        draws. A collective under DDP; rank 0 writes."""
        self.broadcast_buffers()
        rngs = get_rng_state(self.aug_gen, device=self.device, sync_dist=self.ranks.world > 1)
        if not self.main:
            return
        state = {k: getattr(self, k).state_dict() for k in STATEFUL}
        state.update({k: getattr(self, k) for k in COUNTERS})
        state.update(config=vars(self.args), rng=rngs, world_size=self.ranks.world)
        folder = self.out / "checkpoints"
        save_checkpoint(state, folder / "last.pt")
        if self.step % self.args.ckpt_every == 0 and self.args.keep_checkpoints > 0:
            shutil.copyfile(folder / "last.pt", folder / f"step_{self.step:07d}.pt")
            for old in sorted(folder.glob("step_*.pt"))[: -self.args.keep_checkpoints]:
                old.unlink()

    def load(self, ckpt: dict[str, Any]) -> None:
        if ckpt["world_size"] != self.ranks.world:
            raise UsageError(f"--resume: the run was trained on {ckpt['world_size']} ranks; resume "
                             f"it on as many, not {self.ranks.world}")  # fmt: skip
        for key in STATEFUL:
            getattr(self, key).load_state_dict(ckpt[key])
        for key in COUNTERS:
            setattr(self, key, ckpt[key])
        for rng in ckpt["rng"]:  # older checkpoints of this script: {"torch", "augment", "cuda"}
            rng.setdefault("generators", [rng.pop("augment")] if "augment" in rng else [])
        set_rng_state(ckpt["rng"], self.aug_gen, device=self.device)


def read_checkpoint(path: Path, flag: str) -> dict[str, Any]:
    """A checkpoint of this script, read without running any code a file might hold."""
    try:
        return load_checkpoint(path, required=("config", "step", "model"))
    except (OSError, ValueError) as err:
        raise UsageError(f"{flag} {err}") from None


def reconcile(
    args: argparse.Namespace, saved: dict[str, Any], step: int, mutable: set[str], given: set[str]
) -> argparse.Namespace:
    """The settings to resume with: the checkpoint's, under what this command gives (its flags
    and its ``--config`` file; a preset does not count) and where and how it runs. What shaped
    the steps already taken cannot change; a larger ``--steps`` extends the run and keeps its lr
    and ramp horizons."""
    saved = dict(saved)
    for name, default in (  # horizons that followed --steps stay those of the run's own --steps
        ("decay_steps", max(1, saved["steps"] // 2)),
        ("ramp_steps", saved["steps"]),
    ):
        saved[name] = default if saved.get(name) is None else saved[name]
    here = given | set(INVOCATION)
    values = {k: v for k, v in vars(args).items() if k in here or k not in saved}
    args = argparse.Namespace(**{**saved, **values})
    if args.steps < step:
        raise UsageError(f"--steps {args.steps}: the checkpoint is at step {step}")
    check_stop(args)
    if (saved.get("data_root") is None) != (args.data_root is None):  # it may move, not change kind
        was = saved.get("data_root") or "the built-in synthetic data"
        raise UsageError(f"--data-root {args.data_root}: the checkpoint was trained on {was}; "
                         "resume it on the same data")  # fmt: skip
    if args.data_root is not None and not Path(args.data_root).is_dir():  # moved since
        raise UsageError(f"--data-root {args.data_root} (the checkpoint's): no such folder; pass "
                         "--data-root where the data are now")  # fmt: skip
    changed = [k for k, v in vars(args).items()
               if k not in mutable and k not in INVOCATION and saved.get(k) != v]  # fmt: skip
    if changed:
        diff = ", ".join(
            f"--{k.replace('_', '-')} {saved.get(k)} -> {getattr(args, k)}" for k in changed
        )
        raise UsageError(f"--resume: the checkpoint was trained with other settings ({diff})")
    return args


# ------------------------------------------------------------------------------------- training
def train(args: argparse.Namespace, mutable: set[str], given: set[str], target: str, out: Path,
          ranks: Ranks, device: torch.device) -> dict[str, Any]:  # fmt: skip
    """Train, resume, or leave as it is (finished) the run of ``target`` in ``out``."""
    start, say = time.perf_counter(), print if ranks.rank == 0 else lambda *a, **k: None
    args = argparse.Namespace(**{**vars(args), "target": target, "out": str(out)})
    path = out / "checkpoints" / "last.pt" if args.resume in (None, "last") else Path(args.resume)
    ckpt = None
    if args.resume is not None and (args.resume != "last" or path.exists()):
        ckpt = read_checkpoint(path, "--resume")
        saved = ckpt["config"]
        args = reconcile(args, saved, ckpt["step"], mutable, given)
        if args.threads is not None:  # the run's own, unless given: a bit-for-bit continuation
            torch.set_num_threads(args.threads)
        summary = read_json(out / "summary.json")
        if ckpt["step"] == args.steps and summary is not None and summary.get("completed"):
            say(f"{out}: finished (step {args.steps} of {args.steps}); nothing to do", flush=True)
            return summary
    elif args.resume is not None:
        check_stop(args)
        say(f"--resume: no checkpoint in {out / 'checkpoints'} yet; starting at step 0", flush=True)
    (task, source_val), stop = build_task(args, target), args.stop_at or args.steps
    data = args.data_root or "the built-in synthetic data (procedural faces, not real images)"
    batch = f"{args.batch_size} + {args.target_batch_size or args.batch_size} images"
    say(f"{args.method} -> {task.target} on {data}; sources {', '.join(task.sources)}; "
        f"{args.steps} steps of {batch}; out {out}", flush=True)  # fmt: skip
    run = Run(args, task, source_val, ranks, device, out)
    # a checkpoint of another run's folder, resumed into an empty one, brings that run's history
    origin = path.parent.parent if ckpt is not None and path.parent.name == "checkpoints" else out
    if ckpt is not None:
        run.load(ckpt)
        say(f"resuming from {path} at step {run.step} of {args.steps}", flush=True)
    if run.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(vars(args), indent=2) + "\n")
        # steps logged after the checkpoint are redone, and so is an evaluation at its step
        records = run.log.records() or read_jsonl(origin / "metrics.jsonl")
        run.log.keep([r for r in records if (r["step"], r["kind"] != "train") < (run.step, True)])
    run.start_streams()
    last_eval, values = None, None
    analysis = read_json(out / "analysis.json") or read_json(origin / "analysis.json") or {}
    analysis = {k: v for k, v in analysis.items() if k != "final"}  # the end is analysed anew
    if args.analyse and not any(k.startswith("step_") for k in analysis):
        tick = time.perf_counter()  # the feature space before the first step (or at the resumed
        first = f"step_{run.step}"  # one, for a run that was not analysed from its start)
        analysis = {first: run.analyse().to_dict(), "seconds": time.perf_counter() - tick}
    if run.main and analysis:
        (out / "analysis.json").write_text(json.dumps(analysis) + "\n")
    if ckpt is not None:  # the evaluation of the checkpoint's step, if that step had one
        s, old = run.step, ckpt["config"]
        due = ((old["eval_every"], old["steps"]), (args.eval_every, args.steps))
        if any(s % every == 0 or s == steps for every, steps in due):
            last_eval = run.evaluate_and_log()
        del ckpt
    images = args.batch_size + (args.target_batch_size or args.batch_size)
    progress = Progress(stop, run.step, enabled=args.progress if run.main else False,
                        desc=f"{args.method} -> {task.target}", images_per_step=images)  # fmt: skip
    run.model.train()
    while run.step < stop:
        tick = time.perf_counter()
        terms, out_t, labels_t = run.train_step()
        if run.step % args.log_every == 0 or run.step == stop:
            values = run.log_step(terms, out_t, labels_t)
            progress.update(run.step, {k: values[k] for k in ("loss", "ce", "align")})
        run.train_time += time.perf_counter() - tick
        if run.step % args.ckpt_every == 0 or run.step == stop:
            run.save()  # before the step's evaluation: a crash there keeps the step
        if run.step % args.eval_every == 0 or run.step == args.steps:
            last_eval = run.evaluate_and_log()
    if args.write_weight_hash:  # DDP checks: the ranks must agree on the weights
        run.broadcast_buffers()
        check = {"weights": state_dict_hash(run.model.state_dict()), "last_train": values}
        (out / f"weights_rank{ranks.rank}.json").write_text(json.dumps(check) + "\n")
    summary = make_summary(run, last_eval, time.perf_counter() - start)
    if args.analyse and summary["completed"]:
        tick = time.perf_counter()
        analysis["final"] = run.analyse().to_dict()
        analysis["seconds"] = analysis.get("seconds", 0.0) + time.perf_counter() - tick
        summary["analysis"] = write_analysis(run, analysis, out) if run.main else None
    if run.main:
        write_outputs(run, summary)
    run.log.close()
    return summary


def read_json(path: Path) -> Optional[dict[str, Any]]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def write_analysis(
    run: Run, analysis: dict[str, Any], out: Path, prefix: str = ""
) -> dict[str, Any]:
    """``analysis.json`` (every number and the maps), the figures, and the numbers alone (for
    ``summary.json``) of the reports in ``analysis`` (``step_0`` and ``final``, or one)."""
    (out / f"{prefix}analysis.json").write_text(json.dumps(analysis) + "\n")
    reports = [(k, ShiftReport.from_dict(v)) for k, v in analysis.items() if k != "seconds"]
    names = [*run.task.sources, f"{run.task.target} (target, test set)"]
    paths = {"features": out / f"{prefix}features.png", "distances": out / f"{prefix}distances.png"}
    titled = [(k.replace("_", " "), r) for k, r in reports]
    if run.args.plots and not plot_shift(titled, names, CLASSES, **paths):
        run.log.notes.append("matplotlib not installed: analysis figures skipped")
    numbers = {k: {n: v for n, v in r.to_dict().items() if n not in ("points", "domains", "labels")}
               for k, r in reports}  # fmt: skip
    return {**numbers, "seconds": analysis["seconds"]}


def make_summary(run: Run, last_eval: Optional[dict[str, Any]], wall: float) -> dict[str, Any]:
    """``final`` (THE result), ``selected`` (by ``--select-by``, no target labels) and ``oracle``
    (selection on the test set), each labelled."""
    args = run.args
    completed = run.step == args.steps and last_eval is not None
    final = {k: v for k, v in last_eval.items() if k != "kind"} if completed and last_eval else None
    selected = None
    if final is not None:
        chosen = {k: final[k] for k in SUMMARY_KEYS} if args.select_by == "final" else run.selected
        selected = {
            **(chosen or {}),
            "validator": args.select_by,
            "note": "chosen without target labels",
        }
    return {
        "target": run.task.target, "sources": list(run.task.sources), "method": args.method,
        "data": "synthetic" if run.synthetic else "real", "completed": completed,
        "step": run.step, "final": final, "selected": selected,
        "oracle": None if run.oracle is None else {**run.oracle, "note": ORACLE_NOTE},
        "wall_time_s": wall, "train_time_s": run.train_time,
        "images_per_s": run.images / run.train_time if run.train_time > 0 else None,
        "protocol_notes": run.task.notes, "notes": run.log.notes, "config": vars(args),
        "environment": environment_of(run),
    }  # fmt: skip


def environment_of(run: Run) -> dict[str, Any]:
    """Where the run (its last part, if resumed) was computed, and which encoder it started from:
    bit-for-bit repeats need both (the synthetic stand-in is built on the machine that uses it)."""
    info = environment(run.device)
    if run.encoder is not None:
        info["encoder_sha256"] = hashlib.sha256(Path(run.encoder).read_bytes()).hexdigest()
    return info


def write_outputs(run: Run, summary: dict[str, Any]) -> None:
    final, out = summary["final"], run.out
    if run.args.plots and final is not None:
        title = f"{run.args.method} -> {run.task.target}, step {summary['step']}"
        cm = final["confusion_fused"]
        ok = plot_confusion(cm, CLASSES, out / "confusion.png",
                            title=f"{title}, fused acc {final['acc_fused']:.3f}")  # fmt: skip
        if not (ok and plot_metrics(run.log.records(), out / "curves.png", title=title)):
            summary["notes"].append("matplotlib not installed: plots skipped")
    (out / "summary.json").write_text(json.dumps(json_safe(summary), indent=2) + "\n")


def result_lines(summary: dict[str, Any]) -> str:
    final, selected, oracle = summary["final"], summary["selected"], summary["oracle"]
    name = f"{summary['target']} ({summary['data']} data, {summary['method']})"
    if final is None:
        return f"{name}: stopped at step {summary['step']} (continue with --resume)"
    views = f"global {100 * final['acc_global']:.1f}%, local {100 * final['acc_local']:.1f}%"
    lines = [f"{name}: final-step target accuracy {100 * final['acc_fused']:.1f}% fused ({views}, "
             f"macro-F1 {final['macro_f1_fused']:.3f}) -- the result"]  # fmt: skip
    if selected["validator"] != "final":
        lines.append(f"  selected by {selected['validator']} (no target labels): step "
                     f"{selected['step']}, {100 * selected['acc_fused']:.1f}%")  # fmt: skip
    lines.append(f"  best over training {100 * oracle['acc_fused']:.1f}% at step {oracle['step']} "
                 "[selection on the test set: not a result]")  # fmt: skip
    return "\n".join(lines)


def evaluate_checkpoint(args: argparse.Namespace, ranks: Ranks, device: torch.device) -> None:
    """Score a checkpoint on its target with the checkpoint's settings; only where things are
    (``--data-root``, ``--device``, ``--num-workers``, ``--threads``) comes from the command line."""
    path = Path(args.evaluate)
    ckpt = read_checkpoint(path, "--evaluate")
    where = {"device": args.device, "num_workers": args.num_workers, "threads": args.threads,
             "data_root": args.data_root or ckpt["config"]["data_root"]}  # fmt: skip
    saved = argparse.Namespace(
        **{**ckpt["config"], **where, "encoder_weights": None, "tensorboard": False}
    )
    check_args(saved)
    run = Run(saved, *build_task(saved, saved.target), ranks, device, path.parent)
    run.model.load_state_dict(ckpt["model"])
    r = run.evaluate()
    if args.analyse:  # the figures go to --out, named after the checkpoint
        tick, out = time.perf_counter(), Path(args.out)
        report = {f"step_{ckpt['step']}": run.analyse().to_dict(), "seconds": 0.0}
        report["seconds"] = time.perf_counter() - tick
        if ranks.rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            write_analysis(run, report, out, prefix=f"{path.stem}_")
    scores = ", ".join(f"{k[4:]} {v:.4g}" for k, v in r.items() if k.startswith("val_"))
    if ranks.rank == 0:
        print(f"{saved.target} ({'synthetic' if run.synthetic else 'real'} data, {saved.method}), "
              f"{path} at step {ckpt['step']}: target accuracy {100 * r['acc_fused']:.1f}% fused "
              f"(global {100 * r['acc_global']:.1f}%, local {100 * r['acc_local']:.1f}%, macro-F1 "
              f"{r['macro_f1_fused']:.3f})\n  validators (no target labels): {scores}")  # fmt: skip


# ----------------------------------------------------------------------------------------- main
def prepare_out(args: argparse.Namespace, names: Sequence[str], dry_run: bool = False) -> Path:
    """Refuse an ``--out`` that holds a run unless told what to do with it; check it is writable
    (``dry_run``: only the refusals, nothing written)."""
    out = Path(args.out)
    run_marks = ("metrics.jsonl", "summary.json", "checkpoints")
    one_run = any((out / m).exists() for m in run_marks)
    per_target = [d for d in SIX_DOMAINS if any((out / d / m).exists() for m in run_marks)]
    if args.target == "all" and one_run:  # neither kind of run may land in the other's folder
        raise UsageError(f"--out {out} holds a run of one target; --target all writes a folder "
                         "per target: choose another --out")  # fmt: skip
    if args.target != "all" and (per_target or (out / "summary_all.json").exists()):
        held = ", ".join(per_target) or "no target yet"
        raise UsageError(f"--out {out} holds a --target all run ({held}): continue it with "
                         "--target all, or choose another --out")  # fmt: skip
    folders = [out] + ([out / t for t in names] if args.target == "all" else [])
    marks = (*run_marks, "results.md")
    occupied = [f for f in folders if any((f / m).exists() for m in marks)]
    if occupied and args.resume is None and not args.overwrite:
        raise UsageError(f"--out {out} holds a run; pass --resume to continue it (a finished run is "
                         "left as it is) or --overwrite to start over")  # fmt: skip
    own = out.resolve() / "checkpoints"
    if (
        occupied
        and args.resume not in (None, "last")
        and own not in Path(args.resume).resolve().parents
    ):
        raise UsageError(f"--out {out} holds another run than --resume {args.resume}: continue a "
                         "checkpoint in its own run's --out, or into an empty one")  # fmt: skip
    if dry_run:
        return out
    if args.overwrite and args.target == "all":  # an earlier run's targets, whichever they were
        folders += [f for f in (out / d for d in SIX_DOMAINS) if f not in folders]
        occupied = [f for f in folders if any((f / m).exists() for m in marks)]
    for path in (p for f in occupied if args.overwrite for name in OUTPUTS for p in f.glob(name)):
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / ".write_test").write_text("")
        (out / ".write_test").unlink()
    except OSError as err:
        raise UsageError(f"--out {out}: cannot write there ({type(err).__name__})") from None
    return out


def dry_run_text(args: argparse.Namespace, names: Sequence[str], out: Path) -> str:
    """What ``--dry-run`` prints: the runs, then every setting (as ``config.json`` would hold it)."""
    data = args.data_root or "the built-in synthetic data"
    batch = f"{args.batch_size} + {args.target_batch_size or args.batch_size} images"
    lines = [f"{args.method} -> {t} on {data}; {args.steps} steps of {batch}; out "
             f"{out / t if args.target == 'all' else out}" for t in names]  # fmt: skip
    if args.resume is not None:
        lines.append("--resume: a run's checkpoint holds its settings; those below apply only to a "
                     "run without one, and to what this command gives")  # fmt: skip
    return "\n".join([*lines, json.dumps(vars(args), indent=2)])


def write_overall(out: Path, summaries: Sequence[dict[str, Any]]) -> str:
    """``results.md`` and ``summary_all.json`` of ``--target all`` (rewritten only if they change)."""
    done = [s for s in summaries if s["final"] is not None]
    mean = sum(s["final"]["acc_fused"] for s in done) / len(done) if done else None
    table = ["| target | final accuracy (fused, %) | best over training (selection on the test "
             "set, %) |", "|---|---:|---:|"]  # fmt: skip
    table += [f"| {s['target']} | {100 * s['final']['acc_fused']:.1f} | "
              f"{100 * s['oracle']['acc_fused']:.1f} |" for s in done]  # fmt: skip
    table.append(f"| **mean of {len(done)} of {len(summaries)}** | "
                 f"**{'-' if mean is None else f'{100 * mean:.1f}'}** | |")  # fmt: skip
    overall = {"mean_final_acc_fused": mean, "finished": [s["target"] for s in done],
               "targets": [s["target"] for s in summaries]}  # fmt: skip
    texts = {
        "results.md": "\n".join(table) + "\n",
        "summary_all.json": json.dumps(overall, indent=2) + "\n",
    }
    for name, text in texts.items():
        if not (out / name).exists() or (out / name).read_text() != text:
            (out / name).write_text(text)
    return texts["results.md"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    made: Optional[Path] = None  # an --out this call created, removed again if a mistake stops it
    try:
        args, mutable, given = parse_args(argv)
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        ranks, device = setup_device(args)
        try:
            if args.evaluate is not None:
                ignored = sorted(given - EVALUATE_FLAGS)
                if ignored and ranks.rank == 0:
                    warn("--evaluate scores the checkpoint with its own settings; ignored: "
                         + ", ".join("--" + k.replace("_", "-") for k in ignored))  # fmt: skip
                if not args.dry_run:
                    evaluate_checkpoint(args, ranks, device)
                return 0
            names = targets(args)
            if args.dry_run:
                print(dry_run_text(args, names, prepare_out(args, names, dry_run=True)), flush=True)
                return 0
            made = None if Path(args.out).exists() else Path(args.out)
            out = prepare_out(args, names) if ranks.rank == 0 else Path(args.out)
            summaries = []
            for target in names:
                folder = out / target if args.target == "all" else out
                summaries.append(train(args, mutable, given, target, folder, ranks, device))
                if ranks.rank == 0:
                    print(result_lines(summaries[-1]), flush=True)
            if args.target == "all" and ranks.rank == 0:
                print(write_overall(out, summaries), end="", flush=True)
            return 0
        finally:
            if dist.is_initialized():
                dist.barrier()
                dist.destroy_process_group()
    except UsageError as err:
        print(f"train_cmfer.py: error: {err}", file=sys.stderr, flush=True)
        remove_if_empty(made)  # a mistake leaves no empty --out behind
        return 2
    except KeyboardInterrupt:
        print("train_cmfer.py: interrupted; --resume continues from the last checkpoint",
              file=sys.stderr, flush=True)  # fmt: skip
        remove_if_empty(made)  # nor does an interruption before anything was written
        return 130


def remove_if_empty(folder: Optional[Path]) -> None:
    if folder is not None and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


if __name__ == "__main__":
    raise SystemExit(main())
