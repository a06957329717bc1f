"""The training configuration: one dataclass, presets from ``examples/configs/``, CLI overrides.

Precedence, lowest first: the dataclass defaults (the paper's recipe, SPEC §4) < the preset
(``--preset``; with neither ``--preset`` nor ``--config`` the ``auto`` preset picks ``cpu`` or ``gpu``
by the device) < the file given with ``--config`` (YAML or JSON) < the command-line flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Sequence

__all__ = [
    "CONFIG_DIR",
    "METHODS",
    "PRESETS",
    "TrainConfig",
    "build_parser",
    "config_from_args",
    "load_config_file",
]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
PRESETS = ("auto", "benchmark", "cpu", "gpu", "paper", "smoke")
METHODS = ("lacmfer", "mmd", "source-only")
CONSISTENCIES = ("mcc", "l1", "mse", "kl")
AMP_MODES = ("none", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Every setting of a run. The defaults are the paper's recipe (SPEC §4) on 224×224 images.

    The fields are grouped as data, model, objective, optimisation and runtime; ``--help`` documents
    each flag and the field it sets.
    """

    # ---------------------------------------------------------------- data
    data_root: Optional[str] = None
    lists: Optional[str] = None
    strip_prefix: Optional[str] = "../datasets"
    affectnet_lists: Optional[str] = None
    leakage_free: bool = True
    domains: Optional[str] = None
    target: str = "RAF-DB"
    image_size: int = 224
    synthetic_train_size: int = 600
    synthetic_test_size: int = 300
    num_workers: int = 4
    source_mode: str = "pooled"
    augment: bool = True
    # --------------------------------------------------------------- model
    width: str = "full"
    encoder_weights: Optional[str] = None
    share: str = "column"
    # ----------------------------------------------------------- objective
    method: str = "lacmfer"
    sid: bool = True
    cid: bool = True
    consistency_enabled: bool = True
    consistency: str = "mcc"
    consistency_on_logits: bool = False
    voting: bool = True
    label_smoothing: float = 0.1
    align_weight: float = 0.4
    cid_weight: float = 0.02
    consistency_weight: float = 0.5
    voting_weight: float = 0.1
    align_threshold: float = 0.4
    pseudo_threshold: float = 0.9
    kernel_num: int = 5
    kernel_mul: float = 2.0
    cluster_ramp: str = "none"
    per_source: bool = False
    adapt_after: int = 0
    adapt_warmup: int = 0
    # -------------------------------------------------------- optimisation
    steps: int = 20000
    batch_size: int = 128
    target_batch_size: Optional[int] = None
    lr: float = 1e-2
    encoder_lr_scale: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    decay_gamma: float = 10.0
    decay_power: float = 0.75
    decay_steps: Optional[int] = None
    # ------------------------------------------------------------- runtime
    device: str = "auto"
    amp: str = "none"
    compile: bool = False
    channels_last: Optional[bool] = None
    seed: int = 0
    out: str = "runs/cmfer"
    resume: Optional[str] = None
    stop_at: Optional[int] = None
    eval_every: int = 500
    log_every: int = 50
    ckpt_every: int = 1000
    keep_checkpoints: int = 3
    progress: Optional[bool] = None
    tensorboard: Optional[bool] = None
    plots: bool = True
    write_weight_hash: bool = False
    preset: Optional[str] = field(default=None, metadata={"cli": False})

    # -- derived values ----------------------------------------------------
    @property
    def target_batch(self) -> int:
        """Target images per step (the source batch size unless set)."""
        return self.target_batch_size if self.target_batch_size is not None else self.batch_size

    @property
    def domain_names(self) -> tuple[str, ...]:
        """The protocol's domains in use (canonical names; all six unless ``domains`` is set)."""
        from lacmfer.data import SIX_DOMAINS, canonical_dataset

        if self.domains is None:
            return tuple(SIX_DOMAINS)
        return tuple(canonical_dataset(d.strip(), SIX_DOMAINS) for d in self.domains.split(","))

    @property
    def targets(self) -> tuple[str, ...]:
        """The target(s) to train: every domain for ``target="all"``, else the one named."""
        from lacmfer.data import canonical_dataset

        if self.target == "all":
            return self.domain_names
        return (canonical_dataset(self.target, self.domain_names),)

    @property
    def lr_decay_steps(self) -> int:
        """Horizon of the inverse decay: ``steps // 2`` unless set (the paper: 10 000 of 20 000)."""
        if self.decay_steps is not None:
            return self.decay_steps
        return max(1, self.steps // 2)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the setting if any value is out of range."""

        def choice(name: str, allowed: Sequence[str]) -> None:
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"`{name}` must be one of {list(allowed)}, got {value!r}")

        choice("method", METHODS)
        choice("consistency", CONSISTENCIES)
        choice("amp", AMP_MODES)
        choice("width", ("full", "tiny"))
        choice("share", ("column", "none", "all"))
        choice("source_mode", ("pooled", "balanced"))
        choice("cluster_ramp", ("none", "dann_sigmoid"))
        for name in ("steps", "batch_size", "image_size", "eval_every", "log_every", "ckpt_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}")
        if self.target_batch < 1:
            raise ValueError(f"`target_batch_size` must be >= 1, got {self.target_batch_size}")
        if self.image_size % 16 != 0:
            raise ValueError(
                f"`image_size` must be a multiple of 16 (the 2×2 patch grid of the stride-8 "
                f"encoder map, then a stride-2 block), got {self.image_size}"
            )
        if self.stop_at is not None and not 1 <= self.stop_at <= self.steps:
            raise ValueError(f"`stop_at` must be in [1, steps={self.steps}], got {self.stop_at}")
        if self.consistency == "kl" and self.consistency_on_logits:
            raise ValueError(
                "`consistency_on_logits` applies to 'mcc', 'l1' and 'mse'; 'kl' compares "
                "probability distributions"
            )
        for name in ("num_workers", "keep_checkpoints", "seed", "adapt_after", "adapt_warmup"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)}")
        if self.data_root is None and self.lists is not None:
            raise ValueError(
                "`lists` needs `data_root` (the folder the list paths are relative to)"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (checked: unknown names raise ``ValueError``)."""
        return dataclasses.replace(self, **_check_keys(changes, "replace"))


_FIELDS = {f.name: f for f in fields(TrainConfig)}


def _check_keys(values: dict[str, Any], where: str) -> dict[str, Any]:
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown} in {where}; known: {sorted(_FIELDS)}")
    return values


def _parse_flat_yaml(text: str) -> dict[str, Any]:
    """Parse the flat ``key: value`` YAML subset of the preset files (used without PyYAML)."""
    out: dict[str, Any] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"cannot parse config line {raw!r} (expected `key: value`)")
        value = value.strip()
        lowered = value.lower()
        parsed: Any
        if lowered in ("null", "~", ""):
            parsed = None
        elif lowered in ("true", "false"):
            parsed = lowered == "true"
        else:
            try:
                parsed = int(value)
            except ValueError:
                try:
                    parsed = float(value)
                except ValueError:
                    parsed = value.strip("'\"")
        out[key.strip()] = parsed
    return out


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``) or JSON config file into a dict of :class:`TrainConfig` keys.

    Keys may use ``-`` or ``_``. Raises ``ValueError`` for unknown keys.
    """
    path = Path(path)
    text = path.read_text()
    if path.suffix.lower() == ".json":
        data = json.loads(text)
    else:
        try:
            import yaml
        except ImportError:  # the presets are flat, so a small parser is enough
            data = _parse_flat_yaml(text)
        else:
            data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping, got {type(data).__name__}")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    return _check_keys(data, str(path))


def _preset_values(name: str, device: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise ValueError(f"`preset` must be one of {list(PRESETS)}, got {name!r}")
    if name == "auto":
        import torch

        on_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        name = "gpu" if on_cuda else "cpu"
    values = load_config_file(CONFIG_DIR / f"{name}.yaml")
    values["preset"] = name
    return values


# (flag, field, type or action, help). Boolean fields get --flag / --no-flag pairs.
def build_parser() -> argparse.ArgumentParser:
    """The command-line interface. Every option defaults to "not given" so presets/files apply."""
    p = argparse.ArgumentParser(
        prog="train_cmfer.py",
        description=(
            "Train LA-CMFER (or a baseline) for cross-multidomain facial expression recognition: "
            "labelled source domains, one unlabelled target domain, evaluation on the target test "
            "set. Without arguments it trains on the built-in synthetic six-domain data with a "
            "device-sized preset (`cpu` on a CPU, `gpu` on CUDA); `--preset paper` is the paper's "
            "recipe (224×224, 128+128 images a step, 20 000 steps)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    g = p.add_argument_group("configuration")
    g.add_argument(
        "--preset",
        choices=PRESETS,
        help="named settings from examples/configs/<name>.yaml: smoke (seconds, for tests), "
        "cpu (minutes on 2 CPU cores), gpu (synthetic, one GPU), paper (SPEC §4 recipe), "
        "benchmark (the synthetic comparison); default: auto = cpu or gpu by device",
    )
    g.add_argument(
        "--config", help="YAML or JSON file of TrainConfig keys, applied over the preset"
    )

    g = p.add_argument_group("data")
    g.add_argument(
        "--data-root",
        dest="data_root",
        help="folder holding the real datasets (CK+/, JAFFE/, RAF-DB/, ...: where the list "
        "paths point once --strip-prefix is removed); without it the built-in synthetic "
        "six-domain data are used",
    )
    g.add_argument(
        "--lists",
        help="folder of the protocol's image lists (CK.txt, JAFFE.txt, Oulu.txt, RAF_train.txt, "
        "RAF_test.txt, FER2013_train.txt, FER2013_test.txt), e.g. shared/data/fer_lists",
    )
    g.add_argument(
        "--target",
        help="target domain (CK+, JAFFE, Oulu-CASIA, AffectNet, RAF-DB, FER-2013; aliases such "
        "as raf, ck, fer2013 work) or 'all' (each domain in turn, results in <out>/<target>/ "
        "and a table in <out>/results.md)",
    )
    g.add_argument(
        "--domains",
        help="comma-separated domains of the protocol (default: all six); the ones that are not "
        "the target are the sources",
    )
    g.add_argument(
        "--strip-prefix",
        dest="strip_prefix",
        help="prefix removed from every list path before joining it to --data-root "
        "(the published lists start with ../datasets)",
    )
    g.add_argument(
        "--affectnet-lists",
        dest="affectnet_lists",
        help="ADAPT,TEST list files of AffectNet (not distributed with the protocol)",
    )
    _bool(
        g,
        "leakage-free",
        "keep target test images out of the adaptation set (default); --no-leakage-free is the "
        "published protocol, test images included (SPEC §5)",
    )
    g.add_argument("--image-size", dest="image_size", type=int, help="square input size (÷16)")
    g.add_argument(
        "--synthetic-train-size",
        dest="synthetic_train_size",
        type=int,
        help="synthetic images per domain for training/adaptation",
    )
    g.add_argument(
        "--synthetic-test-size",
        dest="synthetic_test_size",
        type=int,
        help="synthetic target test images (a separate draw: no leakage)",
    )
    g.add_argument(
        "--num-workers", dest="num_workers", type=int, help="loader workers (real images only)"
    )
    g.add_argument(
        "--source-mode",
        dest="source_mode",
        choices=("pooled", "balanced"),
        help="source batches drawn from the pooled sources (paper) or balanced per source",
    )
    _bool(g, "augment", "FERAugment on training batches (colour, greyscale, flip, affine)")

    g = p.add_argument_group("model")
    g.add_argument(
        "--width",
        choices=("full", "tiny"),
        help="full = the paper's widths; tiny = LACMFER.tiny() for CPU experiments",
    )
    g.add_argument(
        "--encoder-weights",
        dest="encoder_weights",
        help="torchvision resnet18 checkpoint file (.pth) for the encoder (ImageNet in the paper)",
    )
    g.add_argument("--share", choices=("column", "none", "all"), help="local sub-network sharing")

    g = p.add_argument_group("objective (SPEC §4; ablation switches of the paper)")
    g.add_argument(
        "--method",
        choices=METHODS,
        help="lacmfer = the full objective; source-only = label-smoothed CE on the sources; "
        "mmd = CE + align-weight · plain pooled MMD² per branch (lacmfer.functional.mmd2)",
    )
    _bool(g, "sid", "sample-level inter-domain alignment (--no-sid drops it)")
    _bool(g, "cid", "cluster-level inter-domain alignment (--no-cid drops it)")
    g.add_argument(
        "--no-consistency",
        dest="consistency_enabled",
        action="store_false",
        help="drop the multi-view consistency term",
    )
    g.add_argument(
        "--consistency",
        choices=CONSISTENCIES,
        help="mcc = multi-view clustering consistency (paper); l1/mse/kl = a per-sample "
        "L1/MSE/symmetric-KL discrepancy between the two views' probabilities instead",
    )
    g.add_argument(
        "--consistency-on-logits",
        dest="consistency_on_logits",
        action="store_true",
        help="feed raw logits instead of probabilities to the consistency term (the paper "
        "code's behaviour for MCC)",
    )
    _bool(g, "voting", "multi-view pseudo-label voting loss (--no-voting drops it)")
    for flag, name, text in (
        ("--label-smoothing", "label_smoothing", "label smoothing of the source CE"),
        ("--align-weight", "align_weight", "weight of Σ_b (L_sid + λ_cid L_cid) (or of MMD)"),
        ("--cid-weight", "cid_weight", "λ_cid, weight of L_cid inside the alignment term"),
        ("--consistency-weight", "consistency_weight", "weight of the consistency term"),
        ("--voting-weight", "voting_weight", "weight of the pseudo-label voting loss"),
        ("--align-threshold", "align_threshold", "confidence threshold δ of the alignment"),
        ("--pseudo-threshold", "pseudo_threshold", "confidence threshold τ of the voting"),
        ("--kernel-mul", "kernel_mul", "multi-kernel bandwidth ratio"),
    ):
        g.add_argument(flag, dest=name, type=float, help=text)
    g.add_argument("--kernel-num", dest="kernel_num", type=int, help="number of Gaussian kernels")
    g.add_argument(
        "--cluster-ramp",
        dest="cluster_ramp",
        choices=("none", "dann_sigmoid"),
        help="ramp of the CID weight over training",
    )
    _bool(g, "per-source", "alignment source-by-source against the target, averaged")
    g.add_argument(
        "--adapt-after",
        dest="adapt_after",
        type=int,
        help="source-only steps before the adaptation terms (alignment or MMD, consistency, "
        "voting) switch on; 0 = from the first step (the paper, whose encoder starts from "
        "ImageNet weights)",
    )
    g.add_argument(
        "--adapt-warmup",
        dest="adapt_warmup",
        type=int,
        help="steps, after --adapt-after, over which the weight of every adaptation term rises "
        "linearly from 0 to its value (0 = at once)",
    )

    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, help="training iterations")
    g.add_argument(
        "--batch-size",
        dest="batch_size",
        type=int,
        help="source images per step (global: split over DDP ranks)",
    )
    g.add_argument(
        "--target-batch-size",
        dest="target_batch_size",
        type=int,
        help="target images per step (default: the source batch size)",
    )
    g.add_argument("--lr", type=float, help="learning rate of branches and heads")
    g.add_argument(
        "--encoder-lr-scale",
        dest="encoder_lr_scale",
        type=float,
        help="encoder lr = lr × this (paper: 1e-3 / 1e-2)",
    )
    g.add_argument("--momentum", type=float, help="SGD momentum")
    _bool(g, "nesterov", "Nesterov momentum")
    g.add_argument("--weight-decay", dest="weight_decay", type=float, help="SGD weight decay")
    g.add_argument(
        "--decay-steps",
        dest="decay_steps",
        type=int,
        help="horizon T of the inverse decay lr·(1+γ·min(1,t/T))^-p; default steps//2, "
        "i.e. the paper's T=10 000 for 20 000 steps, scaled with --steps",
    )
    g.add_argument("--decay-gamma", dest="decay_gamma", type=float, help="γ of the inverse decay")
    g.add_argument("--decay-power", dest="decay_power", type=float, help="p of the inverse decay")

    g = p.add_argument_group("runtime")
    g.add_argument("--device", help="auto, cpu, cuda or cuda:N (DDP: the local rank's GPU)")
    g.add_argument(
        "--amp",
        choices=AMP_MODES,
        help="autocast precision (fp16 adds a GradScaler); loss kernels stay fp32",
    )
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    _bool(g, "channels-last", "channels_last memory format (default: on for CUDA)")
    g.add_argument("--seed", type=int, help="seed of model init, sampling and augmentation")
    g.add_argument("--out", help="output folder (metrics.jsonl, summary.json, checkpoints, plots)")
    g.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        help="resume from a checkpoint file, or (flag alone) from <out>/checkpoints/last.pt",
    )
    g.add_argument(
        "--stop-at",
        dest="stop_at",
        type=int,
        help="stop after this step (checkpoint written), keeping the --steps schedule: "
        "an interruption to --resume from",
    )
    g.add_argument("--eval-every", dest="eval_every", type=int, help="evaluate every N steps")
    g.add_argument("--log-every", dest="log_every", type=int, help="log training losses every N")
    g.add_argument("--ckpt-every", dest="ckpt_every", type=int, help="checkpoint every N steps")
    g.add_argument(
        "--keep-checkpoints",
        dest="keep_checkpoints",
        type=int,
        help="periodic checkpoints kept besides last.pt",
    )
    _bool(g, "progress", "tqdm progress bar (default: when stderr is a terminal)")
    _bool(g, "tensorboard", "TensorBoard event files in <out>/tb (default: if installed)")
    _bool(g, "plots", "confusion-matrix and training-curve PNGs (needs matplotlib)")
    g.add_argument(
        "--write-weight-hash",
        dest="write_weight_hash",
        action="store_true",
        help="each rank writes <out>/weights_rank<r>.json: SHA-256 of its final state dict and "
        "its last logged (rank-local) losses (DDP checks)",
    )
    return p


def _bool(group: argparse._ArgumentGroup, flag: str, text: str) -> None:
    name = flag.replace("-", "_")
    group.add_argument(f"--{flag}", dest=name, action="store_true", help=text)
    group.add_argument(f"--no-{flag}", dest=name, action="store_false", help=argparse.SUPPRESS)


def config_from_args(argv: Optional[Sequence[str]] = None) -> TrainConfig:
    """Build the :class:`TrainConfig` of a command line (``None`` = ``sys.argv[1:]``)."""
    args = vars(build_parser().parse_args(argv))
    preset = args.pop("preset", None)
    config_file = args.pop("config", None)
    values: dict[str, Any] = {}
    if preset is not None or config_file is None:
        values.update(_preset_values(preset or "auto", str(args.get("device", "auto"))))
    if config_file is not None:
        values.update(load_config_file(config_file))
    values.update(_check_keys(args, "the command line"))
    cfg = TrainConfig(**values)
    cfg.validate()
    return cfg
