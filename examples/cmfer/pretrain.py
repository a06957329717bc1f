"""A pretrained ResNet-18 encoder made offline, on synthetic faces in random styles.

The paper starts LA-CMFER's encoder from ImageNet weights (``docs/method.rst``); nothing can be
downloaded here. This module pretrains the encoder of :class:`lacmfer.modules.ResNet18Encoder`
(stem, ``layer1``, ``layer2``) on a **proxy task that uses no expression label**, on faces whose
every image is rendered in a **random style** (:func:`lacmfer.data.random_style`: colour,
background, lighting, pose, face size, resolution, blur, noise and occluders drawn at random,
rejecting draws close to any of the six benchmark styles), with a random expression at a random
intensity whose label is never used:

* **face identity recognition** (FER models are commonly started from face-recognition weights):
  which of a fixed pool of synthetic subjects a face shows (a subject keeps its face geometry,
  relative skin tone and resting expression across styles), with a small weight;
* a **self-supervised masked-reconstruction term**: 40 % of the 8-pixel blocks of the input are
  hidden and a light decoder on the encoder's map reconstructs the whole (normalised) image.

Why this mix (measured with ``examples/synthetic_gap.py``'s in-domain run on RAF-DB, 48 px, 3000
training images, seed 0): an encoder pretrained on identity alone (1500 steps) *hurts* at the
benchmark's encoder learning rate (test accuracy 54.6 % vs 75.6 % for a randomly initialised
encoder) -- identity features are trained to ignore expressions; after 800 steps with the
reconstruction term, identity at weight 0.2 gives 71.6 %, reconstruction alone 73.8 %, identity at
weight 0.05 76.0 %; on AffectNet (one calibration earlier) the last gives 54.4 % vs 44.4 % from a
random encoder. The identity term stays near chance at this weight and budget: most of the
learning comes from the reconstruction term.

The result is a torchvision-format ``resnet18`` state dict holding the keys of the parts the
encoder has (``conv1.*``, ``bn1.*``, ``layer1.*``, ``layer2.*``): it loads through
``LACMFER(encoder_weights=path)`` / ``ResNet18Encoder(weights=path)`` exactly like an ImageNet file,
and a JSON sidecar records the seed, steps, proxy task, held-out accuracy, wall time and command.
The run is deterministic for a seed and a thread count (same file bytes on a rerun).

:func:`ensure_encoder` returns the cached file, building it on first use.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lacmfer.data import (
    NUM_CLASSES,
    SyntheticStyle,
    fer_augment,
    normalize,
    random_style,
    render_faces,
)
from lacmfer.modules import ResNet18Encoder

__all__ = [
    "PretrainConfig",
    "default_cache_dir",
    "encoder_path",
    "ensure_encoder",
    "pretrain_encoder",
    "render_identity_batch",
]

#: Name of the random styles (it seeds their shared subject pool, see ``random_style``).
POOL_NAME = "pretrain-identities"


#: Threads :func:`ensure_encoder` pretrains with (the cached file was built with as many).
PRETRAIN_THREADS = 2


@dataclass(frozen=True)
class PretrainConfig:
    """Settings of the pretraining.

    Attributes:
        seed: Seed of the styles, faces, initialisation, masks and augmentation.
        steps: SGD steps.
        image_size: Side of the rendered faces (the benchmark's image size).
        batch_size: Images a step.
        styles_per_batch: Random styles a batch is drawn from (``batch_size`` must divide by it).
        identities: Subjects in the pool (the classes of the identity task).
        identity_weight: Weight of the identity cross-entropy.
        reconstruction_weight: Weight of the self-supervised masked-reconstruction term (0: the
            identity task alone).
        mask_ratio: Share of the ``mask_patch``-pixel blocks hidden from the encoder.
        mask_patch: Side of a masked block in pixels.
        lr: Peak learning rate (SGD, Nesterov momentum 0.9, cosine decay, 5 % warm-up).
        weight_decay: Weight decay (not on biases and BatchNorm).
        label_smoothing: Label smoothing of the identity cross-entropy.
        eval_images: Held-out images (in styles never trained on) for the proxy accuracy.
    """

    seed: int = 0
    steps: int = 800
    image_size: int = 48
    batch_size: int = 64
    styles_per_batch: int = 4
    identities: int = 50
    identity_weight: float = 0.05
    reconstruction_weight: float = 1.0
    mask_ratio: float = 0.4
    mask_patch: int = 8
    lr: float = 0.05
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    eval_images: int = 1024

    def __post_init__(self) -> None:
        if self.batch_size % self.styles_per_batch:
            raise ValueError(
                f"`batch_size` ({self.batch_size}) must be a multiple of `styles_per_batch` "
                f"({self.styles_per_batch})"
            )
        if self.image_size % self.mask_patch or self.image_size % 8:
            raise ValueError(
                f"`image_size` ({self.image_size}) must be a multiple of 8 and of `mask_patch` "
                f"({self.mask_patch})"
            )

    def tag(self) -> str:
        """A short hash of the settings (part of the cache file name)."""
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:8]


def default_cache_dir() -> Path:
    """``$LACMFER_CACHE``, else ``$XDG_CACHE_HOME/lacmfer``, else ``~/.cache/lacmfer``."""
    if os.environ.get("LACMFER_CACHE"):
        return Path(os.environ["LACMFER_CACHE"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "lacmfer"
    return Path.home() / ".cache" / "lacmfer"


def encoder_path(directory: Union[str, os.PathLike[str]], config: PretrainConfig) -> Path:
    """Where the encoder of ``config`` is cached in ``directory`` (the sidecar: ``.json``)."""
    name = f"resnet18_synthetic_identity_{config.image_size}px_seed{config.seed}_{config.tag()}"
    return Path(directory) / f"{name}.pth"


def render_identity_batch(
    config: PretrainConfig, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """One batch of the proxy task: faces of random subjects, each group in a new random style.

    Returns:
        ``(B, 3, S, S)`` images in ``[0, 1]`` and ``(B,)`` subject ids (the identity labels). The
        expressions are drawn at random and discarded.
    """
    per_style = config.batch_size // config.styles_per_batch
    images, ids = [], []
    for _ in range(config.styles_per_batch):
        style: SyntheticStyle = random_style(
            generator, name=POOL_NAME, identities=config.identities
        )
        subject = torch.randint(config.identities, (per_style,), generator=generator)
        expression = torch.randint(NUM_CLASSES, (per_style,), generator=generator)
        images.append(
            render_faces(
                expression,
                style=style,
                image_size=config.image_size,
                generator=generator,
                identity=subject,
            )
        )
        ids.append(subject)
    return torch.cat(images), torch.cat(ids)


def block_mask(config: PretrainConfig, n: int, generator: torch.Generator) -> Tensor:
    """``(n, 1, S, S)`` mask, 1 on the ``mask_ratio`` share of ``mask_patch`` blocks hidden."""
    g = config.image_size // config.mask_patch
    hidden = (torch.rand(n, 1, g, g, generator=generator) < config.mask_ratio).float()
    return F.interpolate(hidden, scale_factor=config.mask_patch, mode="nearest")


class _PretrainNet(nn.Module):
    """The encoder, an identity classifier on the pooled map and a light decoder of the image."""

    def __init__(self, identities: int) -> None:
        super().__init__()
        self.encoder = ResNet18Encoder()
        c = self.encoder.out_channels
        self.head = nn.Linear(c, identities)
        layers: list[nn.Module] = []
        for c_in, c_out in ((c, 64), (64, 32), (32, 16)):
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            ]
        self.decoder = nn.Sequential(*layers, nn.Conv2d(16, 3, 3, padding=1))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        m = self.encoder(x)
        return self.head(m.mean((2, 3))), self.decoder(m)


def _lr_factor(steps: int) -> Callable[[int], float]:
    warm = max(1, steps // 20)

    def factor(t: int) -> float:
        if t < warm:
            return (t + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * (t - warm) / max(1, steps - warm)))

    return factor


@torch.no_grad()
def _evaluate(net: _PretrainNet, config: PretrainConfig) -> tuple[float, float]:
    """Identity accuracy (%) and masked-pixel reconstruction MSE, held out.

    On faces in styles drawn from a generator the training never uses.
    """
    net.eval()
    gen = torch.Generator().manual_seed(10_000_019 + config.seed)
    correct, total, sq_err, batches = 0, 0, 0.0, 0
    while total < config.eval_images:
        x, y = render_identity_batch(config, gen)
        mask = block_mask(config, y.numel(), gen)
        target = normalize(x)
        logits, recon = net(target * (1.0 - mask))
        correct += int((logits.argmax(1) == y).sum())
        sq_err += float(((recon - target).square() * mask).sum() / (3 * mask.sum()).clamp_min(1))
        total += y.numel()
        batches += 1
    net.train()
    return 100.0 * correct / total, sq_err / batches


def pretrain_encoder(
    out: Union[str, os.PathLike[str]],
    config: PretrainConfig = PretrainConfig(),
    *,
    progress: bool = True,
    command: Optional[str] = None,
) -> dict[str, Any]:
    """Pretrain the encoder on the proxy task and write ``out`` and its JSON sidecar.

    The file is written to a temporary name and renamed, so an interrupted run leaves no file.

    Args:
        out: Path of the state dict (``.pth``); the sidecar is ``out`` with ``.json``.
        config: Settings.
        progress: Show a tqdm progress bar (stderr).
        command: The command line recorded in the sidecar (default: ``sys.argv``).

    Returns:
        The sidecar's record.
    """
    out = Path(out)
    t0 = time.perf_counter()
    torch.manual_seed(config.seed)
    net = _PretrainNet(config.identities)
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in net.parameters():
        (no_decay if p.ndim == 1 else decay).append(p)
    groups: list[dict[str, Any]] = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay},
    ]
    optimizer = torch.optim.SGD(
        groups,
        lr=config.lr,
        momentum=0.9,
        nesterov=True,
        weight_decay=0.0,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(config.steps))
    gen = torch.Generator().manual_seed(config.seed)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=config.steps, desc="pretraining encoder", unit="step", file=sys.stderr)
    net.train()
    loss_sum, train_correct, train_seen = 0.0, 0, 0
    for step in range(config.steps):
        x, y = render_identity_batch(config, gen)
        target = normalize(fer_augment(x, generator=gen))
        mask = block_mask(config, y.numel(), gen)
        logits, recon = net(target * (1.0 - mask))  # hidden blocks set to the mean colour
        loss = config.identity_weight * F.cross_entropy(
            logits, y, label_smoothing=config.label_smoothing
        )
        if config.reconstruction_weight > 0:
            err = (recon - target).square() * mask
            loss = loss + config.reconstruction_weight * err.sum() / (3 * mask.sum()).clamp_min(1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step >= config.steps - 100:  # training accuracy over the last 100 steps
            train_correct += int((logits.argmax(1) == y).sum())
            train_seen += y.numel()
            loss_sum += float(loss.detach())
        if bar is not None:
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    if bar is not None:
        bar.close()
    accuracy, recon_mse = _evaluate(net, config)
    wall = time.perf_counter() - t0
    state = {k: v.detach().clone().contiguous() for k, v in net.encoder.state_dict().items()}
    record: dict[str, Any] = {
        "format": "torchvision resnet18 state dict, keys of conv1/bn1/layer1/layer2",
        "proxy_task": (
            f"face identity recognition ({config.identities} synthetic subjects, weight "
            f"{config.identity_weight}) plus a self-supervised term (reconstruct the "
            f"{config.mask_ratio:.0%} of {config.mask_patch}-px blocks hidden from the encoder, "
            f"weight {config.reconstruction_weight}); every image in a random style that is none "
            "of the six benchmark styles (lacmfer.data.random_style); expressions random, their "
            "labels unused"
        ),
        "config": dataclasses.asdict(config),
        "seed": config.seed,
        "steps": config.steps,
        "identity_accuracy_heldout_styles": round(accuracy, 2),
        "masked_reconstruction_mse_heldout_styles": round(recon_mse, 4),
        "identity_accuracy_train_last100": round(100.0 * train_correct / max(1, train_seen), 2),
        "chance_accuracy": round(100.0 / config.identities, 2),
        "wall_time_s": round(wall, 1),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs",
        "command": command if command is not None else " ".join(sys.argv),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()  # the bytes do not depend on the file name (torch.save records it)
    torch.save(state, buffer)
    blob = buffer.getvalue()
    record["sha256"] = hashlib.sha256(blob).hexdigest()
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.write_bytes(blob)
    os.replace(tmp, out)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def ensure_encoder(
    cache_dir: Optional[Union[str, os.PathLike[str]]] = None,
    *,
    seed: int = 0,
    progress: bool = True,
    config: Optional[PretrainConfig] = None,
) -> Path:
    """The cached pretrained encoder file, built on first use.

    Args:
        cache_dir: Directory of the cache (default: :func:`default_cache_dir`).
        seed: Pretraining seed (ignored when ``config`` is given).
        progress: Print what is done and show a progress bar while pretraining.
        config: Full settings (default: :class:`PretrainConfig` with ``seed``).

    Returns:
        Path of a torchvision-format ``resnet18`` state dict for ``encoder_weights=``.
    """
    cfg = config if config is not None else PretrainConfig(seed=seed)
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = encoder_path(directory, cfg)
    if path.is_file():
        return path
    if progress:
        print(
            f"lacmfer: no pretrained encoder in {directory}. The paper starts the encoder from "
            "ImageNet weights, which cannot be downloaded here, so one is pretrained now on a "
            "proxy task without expression labels (synthetic faces in random non-benchmark "
            "styles: identity recognition plus masked-image reconstruction; "
            f"{cfg.steps} steps, about 3 minutes on 2 CPU cores) and cached as {path.name} for "
            "later runs.",
            file=sys.stderr,
            flush=True,
        )
    # The bytes depend on the thread count (the order of floating-point sums): pretrain with a
    # fixed one, so that every run that builds the cache, however it pins its own threads, gets the
    # same encoder.
    threads = torch.get_num_threads()
    torch.set_num_threads(PRETRAIN_THREADS)
    try:
        pretrain_encoder(path, cfg, progress=progress, command=f"ensure_encoder(seed={cfg.seed})")
    finally:
        torch.set_num_threads(threads)
    return path
