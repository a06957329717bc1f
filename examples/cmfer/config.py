"""The training configuration: one dataclass, presets from ``examples/configs/``, CLI overrides.

Every setting is written once, as a field of :class:`TrainConfig` whose metadata holds its help
text, group and choices; the command line is generated from the fields (``--field-name``, booleans
as ``--flag``/``--no-flag``) and :meth:`TrainConfig.validate` checks the values.

Precedence, lowest first: the dataclass defaults (the paper's recipe, ``docs/method.rst``) < the
preset (``--preset``; with neither ``--preset`` nor ``--config`` the ``auto`` preset picks ``cpu``
or ``gpu`` by the device) < the file given with ``--config`` (YAML or JSON) < the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Sequence, Union, get_args, get_origin

from lacmfer.functional import CONSISTENCY_KINDS
from lacmfer.losses import CLUSTER_RAMPS
from lacmfer.modules import SHARE_MODES

__all__ = [
    "CONFIG_DIR",
    "METHODS",
    "PRESETS",
    "SELECT_BY",
    "TrainConfig",
    "build_parser",
    "config_from_args",
    "load_config_file",
]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
PRESETS = ("auto", "benchmark", "cpu", "gpu", "paper", "smoke")
#: ``lacmfer`` is the method; the others are the baselines it is compared with.
METHODS = ("lacmfer", "source-only", "mmd", "dann", "coral", "m3sda", "mcc")
#: Checkpoint selection: the final step, or the step an unsupervised validator scores highest.
SELECT_BY = ("final", "entropy", "im", "snd", "bnm", "agreement", "source-acc")
AMP_MODES = ("none", "bf16", "fp16")


def _opt(
    default: Any, help: str, group: str, *, choices: Optional[Sequence[Any]] = None, **extra: Any
) -> Any:
    """A dataclass field whose metadata describes its command-line option."""
    metadata = {"help": help, "group": group, "choices": choices, **extra}
    return field(default=default, metadata=metadata)


DATA, MODEL, OBJECTIVE, OPTIM, SELECTION, RUNTIME = (
    "data",
    "model",
    "objective (the paper's ablation switches and the baselines)",
    "optimisation",
    "model selection without target labels",
    "runtime",
)


@dataclass
class TrainConfig:
    """Every setting of a run. The defaults are the paper's recipe on 224×224 images."""

    # ---------------------------------------------------------------- data
    data_root: Optional[str] = _opt(
        None,
        "folder holding the real datasets (CK+/, JAFFE/, RAF-DB/, ...: where the list paths point "
        "once --strip-prefix is removed); without it the built-in synthetic six-domain data are used",
        DATA,
    )
    lists: Optional[str] = _opt(
        None,
        "folder of the protocol's image lists (CK.txt, JAFFE.txt, Oulu.txt, RAF_*.txt, "
        "FER2013_*.txt); default: the lists shipped with lacmfer (lacmfer.data.protocol_lists_dir())",
        DATA,
    )
    strip_prefix: Optional[str] = _opt(
        "../datasets",
        "prefix removed from every list path before joining it to --data-root (the published "
        "lists start with ../datasets)",
        DATA,
    )
    affectnet_lists: Optional[str] = _opt(
        None, "ADAPT,TEST list files of AffectNet (not distributed with the protocol)", DATA
    )
    leakage_free: bool = _opt(
        True,
        "keep target test images out of the adaptation set; --no-leakage-free is the published "
        "protocol, test images included (docs/guides/datasets.rst)",
        DATA,
    )
    split_seed: int = _opt(
        0,
        "seed of the leakage-free adaptation/test split of the lab datasets (CK+, JAFFE, "
        "Oulu-CASIA) and of the synthetic data; fixed apart from --seed, so that runs with "
        "different seeds are tested on the same images",
        DATA,
    )
    domains: Optional[str] = _opt(
        None,
        "comma-separated domains of the protocol (default: all six); the ones that are not the "
        "target are the sources",
        DATA,
    )
    target: str = _opt(
        "RAF-DB",
        "target domain (CK+, JAFFE, Oulu-CASIA, AffectNet, RAF-DB, FER-2013; aliases such as raf, "
        "ck, fer2013 work) or 'all' (each in turn: <out>/<target>/ and <out>/results.md)",
        DATA,
    )
    image_size: int = _opt(224, "square input size (a multiple of 16)", DATA)
    synthetic_train_size: int = _opt(
        600, "synthetic images per domain for training/adaptation", DATA
    )
    synthetic_test_size: int = _opt(
        300, "synthetic target test images (a separate draw: no leakage)", DATA
    )
    source_val_fraction: float = _opt(
        0.0,
        "fraction of each source's images held out (not trained on) to score checkpoints by "
        "source accuracy (--select-by source-acc); 0 = none, all source images are trained on",
        DATA,
    )
    num_workers: int = _opt(4, "loader workers (real images only)", DATA)
    source_mode: str = _opt(
        "pooled",
        "source batches drawn from the pooled sources (the paper) or balanced per source",
        DATA,
        choices=("pooled", "balanced"),
    )
    augment: bool = _opt(
        True, "FERAugment on training batches (colour, greyscale, flip, affine)", DATA
    )
    # --------------------------------------------------------------- model
    width: str = _opt(
        "full",
        "full = the paper's widths; tiny = LACMFER.tiny() for CPU experiments",
        MODEL,
        choices=("full", "tiny"),
    )
    encoder_weights: Optional[str] = _opt(
        None,
        "torchvision resnet18 checkpoint file (.pth) for the encoder (ImageNet in the paper); "
        "'synthetic' = the encoder pretrained offline by examples/pretrain_encoder.py (built on "
        "first use into the cache)",
        MODEL,
    )
    share: str = _opt("column", "local sub-network sharing", MODEL, choices=SHARE_MODES)
    # ----------------------------------------------------------- objective
    method: str = _opt(
        "lacmfer",
        "lacmfer = the full objective (LACMFERLoss); source-only = label-smoothed CE on the "
        "sources; the baselines add --baseline-weight × their loss on both branches: mmd (pooled "
        "multi-kernel MMD²), dann (domain-adversarial, per-source discriminator), coral, m3sda "
        "(moment matching), mcc (minimum class confusion on the target logits)",
        OBJECTIVE,
        choices=METHODS,
    )
    sid: bool = _opt(True, "sample-level inter-domain alignment (--no-sid drops it)", OBJECTIVE)
    cid: bool = _opt(True, "cluster-level inter-domain alignment (--no-cid drops it)", OBJECTIVE)
    consistency: str = _opt(
        "mcc",
        "multi-view consistency term: mcc = multi-view clustering consistency (the paper); "
        "l1/mse/kl = a per-sample discrepancy between the two views instead; none = dropped "
        "(also --no-consistency)",
        OBJECTIVE,
        choices=CONSISTENCY_KINDS,
    )
    consistency_on_logits: bool = _opt(
        False,
        "feed raw logits instead of probabilities to the consistency term (the authors' code "
        "does this for MCC)",
        OBJECTIVE,
    )
    voting: bool = _opt(
        True, "multi-view pseudo-label voting loss (--no-voting drops it)", OBJECTIVE
    )
    label_smoothing: float = _opt(0.1, "label smoothing of the source CE", OBJECTIVE)
    align_weight: float = _opt(0.4, "weight of Σ_b (L_sid + λ_cid L_cid)", OBJECTIVE)
    cid_weight: float = _opt(0.02, "λ_cid, weight of L_cid inside the alignment term", OBJECTIVE)
    consistency_weight: float = _opt(0.5, "weight of the consistency term", OBJECTIVE)
    voting_weight: float = _opt(0.1, "weight of the pseudo-label voting loss", OBJECTIVE)
    align_threshold: float = _opt(0.4, "confidence threshold δ of the alignment", OBJECTIVE)
    pseudo_threshold: float = _opt(0.9, "confidence threshold τ of the voting", OBJECTIVE)
    kernel_num: int = _opt(5, "number of Gaussian kernels of the MMD", OBJECTIVE)
    kernel_mul: float = _opt(2.0, "bandwidth ratio of the Gaussian kernels", OBJECTIVE)
    cluster_ramp: str = _opt(
        "none", "ramp of the CID weight over training", OBJECTIVE, choices=CLUSTER_RAMPS
    )
    per_source: bool = _opt(
        False, "alignment source-by-source against the target, averaged", OBJECTIVE
    )
    baseline_weight: Optional[float] = _opt(
        None,
        "weight of a baseline's loss; default: its paper's (mmd 0.4 as LA-CMFER's alignment, "
        "dann 1.0 with DANN's schedule, coral 1.0, m3sda 0.5, mcc 1.0)",
        OBJECTIVE,
    )
    adapt_after: int = _opt(
        0,
        "source-only steps before the adaptation terms switch on; 0 = from the first step (the "
        "paper, whose encoder starts from ImageNet weights)",
        OBJECTIVE,
    )
    adapt_warmup: int = _opt(
        0,
        "steps, after --adapt-after, over which the weight of every adaptation term rises "
        "linearly from 0 to its value (0 = at once)",
        OBJECTIVE,
    )
    # -------------------------------------------------------- optimisation
    steps: int = _opt(
        20000,
        "training iterations; a larger value with --resume extends a run (the lr and ramp "
        "horizons stay those of the run)",
        OPTIM,
    )
    batch_size: int = _opt(
        128, "source images per step (global: split over DDP ranks; divisible by them)", OPTIM
    )
    target_batch_size: Optional[int] = _opt(
        None, "target images per step (default: the source batch size)", OPTIM
    )
    lr: float = _opt(1e-2, "learning rate of branches and heads", OPTIM)
    encoder_lr_scale: float = _opt(0.1, "encoder lr = lr × this (the paper: 1e-3 / 1e-2)", OPTIM)
    momentum: float = _opt(0.9, "SGD momentum", OPTIM)
    nesterov: bool = _opt(True, "Nesterov momentum", OPTIM)
    weight_decay: float = _opt(1e-4, "SGD weight decay", OPTIM)
    decay_gamma: float = _opt(10.0, "γ of the inverse decay lr·(1+γ·min(1,t/T))^-p", OPTIM)
    decay_power: float = _opt(0.75, "p of the inverse decay", OPTIM)
    decay_steps: Optional[int] = _opt(
        None,
        "horizon T of the inverse decay; default steps // 2 (the paper's T = 10 000 of 20 000)",
        OPTIM,
    )
    ramp_steps: Optional[int] = _opt(
        None, "horizon of the CID ramp and of DANN's schedule; default: steps", OPTIM
    )
    # ------------------------------------------------------- selection
    select_by: str = _opt(
        "final",
        "keep the checkpoint of the last step (final) or of the evaluation an unsupervised "
        "validator scores highest on the unlabelled target adaptation set (entropy, im, snd, bnm, "
        "agreement) or on held-out source images (source-acc, needs --source-val-fraction)",
        SELECTION,
        choices=SELECT_BY,
    )
    # ------------------------------------------------------------- runtime
    device: str = _opt("auto", "auto, cpu, cuda or cuda:N (DDP: the local rank's GPU)", RUNTIME)
    amp: str = _opt(
        "none", "autocast precision (fp16 adds a GradScaler); losses stay fp32", RUNTIME,
        choices=AMP_MODES,
    )  # fmt: skip
    compile: bool = _opt(False, "torch.compile the model and the objective", RUNTIME)
    channels_last: Optional[bool] = _opt(
        None, "channels_last memory format (default: on for CUDA)", RUNTIME
    )
    seed: int = _opt(0, "seed of model init, sampling and augmentation", RUNTIME)
    threads: Optional[int] = _opt(
        None,
        "torch CPU threads (torch.set_num_threads); pin it, with OMP_NUM_THREADS, for CPU "
        "results that reproduce bit for bit; default: torch's choice",
        RUNTIME,
    )
    out: str = _opt(
        "runs/cmfer", "output folder (metrics.jsonl, summary.json, checkpoints, plots)", RUNTIME
    )
    resume: Optional[str] = _opt(
        None,
        "resume from a checkpoint file, or (flag alone) from <out>/checkpoints/last.pt",
        RUNTIME,
        nargs="?",
        const="auto",
    )
    stop_at: Optional[int] = _opt(
        None,
        "stop after this step (checkpoint written), keeping the --steps schedule: an "
        "interruption to --resume from",
        RUNTIME,
    )
    eval_every: int = _opt(500, "evaluate every N steps", RUNTIME)
    log_every: int = _opt(
        50, "log the training losses every N steps (a line on stdout without a progress bar)",
        RUNTIME,
    )  # fmt: skip
    ckpt_every: int = _opt(1000, "checkpoint every N steps", RUNTIME)
    keep_checkpoints: int = _opt(3, "periodic checkpoints kept besides last.pt", RUNTIME)
    progress: Optional[bool] = _opt(
        None,
        "tqdm progress bar on stderr (default: when stderr is a terminal; otherwise a progress "
        "line every --log-every steps on stdout)",
        RUNTIME,
    )
    tensorboard: Optional[bool] = _opt(
        None, "TensorBoard event files in <out>/tb (default: if installed)", RUNTIME
    )
    plots: bool = _opt(True, "confusion-matrix and training-curve PNGs (needs matplotlib)", RUNTIME)
    write_weight_hash: bool = _opt(
        False,
        "each rank writes <out>/weights_rank<r>.json: SHA-256 of its final state dict and its "
        "last logged (rank-local) losses (DDP checks)",
        RUNTIME,
    )
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
        return self.decay_steps if self.decay_steps is not None else max(1, self.steps // 2)

    @property
    def schedule_steps(self) -> int:
        """Horizon of the CID ramp and DANN's schedule: ``steps`` unless set."""
        return self.ramp_steps if self.ramp_steps is not None else self.steps

    def validate(self) -> None:
        """Raise ``ValueError`` naming the setting if any value is out of range."""
        for f in fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices is not None and value not in choices:
                raise ValueError(f"`{f.name}` must be one of {list(choices)}, got {value!r}")
        positive = ("steps", "batch_size", "image_size", "eval_every", "log_every", "ckpt_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}")
        for name in ("target_batch_size", "decay_steps", "ramp_steps", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"`{name}` must be >= 1, got {value}")
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
        nonnegative = ("num_workers", "keep_checkpoints", "seed", "split_seed", "adapt_after",
                       "adapt_warmup")  # fmt: skip
        for name in nonnegative:
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.source_val_fraction < 1.0:
            raise ValueError(
                f"`source_val_fraction` must lie in [0, 1), got {self.source_val_fraction}"
            )
        if self.select_by == "source-acc" and self.source_val_fraction == 0.0:
            raise ValueError(
                "`select_by` 'source-acc' needs held-out source images: set `source_val_fraction` "
                "(e.g. 0.1)"
            )
        if self.baseline_weight is not None and self.baseline_weight < 0:
            raise ValueError(f"`baseline_weight` must be >= 0, got {self.baseline_weight}")
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


def load_config_file(path: Union[str, os.PathLike[str]]) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``, needs PyYAML) or JSON config file into a dict of
    :class:`TrainConfig` keys. Keys may use ``-`` or ``_``. Raises ``ValueError`` for unknown keys.
    """
    path = Path(path)
    text = path.read_text()
    if path.suffix.lower() == ".json":
        data = json.loads(text)
    else:
        try:
            import yaml
        except ImportError as err:  # pragma: no cover - PyYAML is in the `example` extra
            raise ImportError(
                f"reading {path} needs PyYAML: pip install 'lacmfer[example]' (or pass a .json file)"
            ) from err
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


def _value_type(annotation: Any) -> Any:
    """``int``/``float``/``str``/``bool`` of a field annotation (``Optional[X]`` gives ``X``)."""
    hint = eval(annotation, {"Optional": Optional}) if isinstance(annotation, str) else annotation
    if get_origin(hint) is Union:
        hint = next(a for a in get_args(hint) if a is not type(None))
    return hint


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface, one option per :class:`TrainConfig` field.

    Options default to "not given", so that presets and files apply; ``--help`` shows the paper
    default of each field and notes that the preset may override it.
    """
    p = argparse.ArgumentParser(
        prog="train_cmfer.py",
        description=(
            "Train LA-CMFER (or a baseline) for cross-multidomain facial expression recognition: "
            "labelled source domains, one unlabelled target domain, evaluation on the target test "
            "set. Without arguments it trains on the built-in synthetic six-domain data with a "
            "device-sized preset (`cpu` on a CPU, `gpu` on CUDA); `--preset paper` is the paper's "
            "recipe (224×224, 128+128 images a step, 20 000 steps). Defaults shown are the "
            "paper's; the preset in use overrides some of them (examples/configs/<preset>.yaml)."
        ),
        argument_default=argparse.SUPPRESS,
    )
    g = p.add_argument_group("configuration")
    g.add_argument(
        "--preset",
        choices=PRESETS,
        help="named settings from examples/configs/<name>.yaml: smoke (seconds, for tests), cpu "
        "(minutes on 2 CPU cores), gpu (synthetic, one GPU), paper (the paper's recipe), "
        "benchmark (one run of the synthetic comparison); default: auto = cpu or gpu by device",
    )
    g.add_argument("--config", help="YAML or JSON file of settings, applied over the preset")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in fields(TrainConfig):
        if not f.metadata.get("cli", True):
            continue
        group = groups.get(f.metadata["group"])
        if group is None:
            group = groups[f.metadata["group"]] = p.add_argument_group(f.metadata["group"])
        flag = "--" + f.name.replace("_", "-")
        text = f"{f.metadata['help']} (default: {f.default})"
        kind = _value_type(f.type)
        if kind is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, help=text)
            continue
        extra = {k: f.metadata[k] for k in ("nargs", "const") if k in f.metadata}
        group.add_argument(
            flag, dest=f.name, type=kind, choices=f.metadata.get("choices"), help=text, **extra
        )
    groups[OBJECTIVE].add_argument(
        "--no-consistency",
        dest="consistency",
        action="store_const",
        const="none",
        help="drop the consistency term (= --consistency none)",
    )
    return p


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
