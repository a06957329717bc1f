"""A ResNet-18 encoder pretrained on synthetic faces in random styles, without expression labels.

The paper starts LA-CMFER's encoder from ImageNet weights (``docs/method.rst``), which ``lacmfer``
does not ship. For the synthetic data this module makes a stand-in: the encoder of
:class:`~lacmfer.modules.ResNet18Encoder` (stem, ``layer1``, ``layer2``) is pretrained on a proxy
task that uses no expression label, on faces each rendered in a random style that is none of the six
of :data:`~lacmfer.data.synthetic.SYNTHETIC_DOMAINS`.
"""

from __future__ import annotations

import contextlib
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
from typing import IO, Any, Callable, Iterator, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...modules import ResNet18Encoder
from ..labels import NUM_CLASSES
from ..transforms import fer_augment, normalize
from ._faces import render_faces
from ._styles import SyntheticStyle, random_style

__all__ = ["PretrainConfig", "pretrain_encoder", "pretrained_encoder"]

# Name of the random styles (it seeds their shared subject pool, see ``random_style``).
_POOL_NAME = "pretrain-identities"

# Threads :func:`pretrained_encoder` pretrains with: the bytes of the file depend on the thread count
# (the order of floating-point sums), so every build of the cache uses the same one.
_PRETRAIN_THREADS = 2


@dataclass(frozen=True)
class PretrainConfig:
    """Settings of the encoder pretraining (:func:`pretrain_encoder`).

    Attributes:
        seed: Seed of the styles, faces, initialisation, masks and augmentation.
        steps: SGD steps.
        image_size: Side of the rendered faces.
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

    Raises:
        ValueError: if ``batch_size`` is not a multiple of ``styles_per_batch``, or ``image_size``
            not a multiple of 8 and of ``mask_patch``.

    Example:
        >>> PretrainConfig().tag(), PretrainConfig(image_size=32).tag() != PretrainConfig().tag()
        ('1df3d4e2', True)
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


def _cache_dir() -> Path:
    """``$LACMFER_CACHE``, else ``$XDG_CACHE_HOME/lacmfer``, else ``~/.cache/lacmfer``."""
    if os.environ.get("LACMFER_CACHE"):
        return Path(os.environ["LACMFER_CACHE"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "lacmfer"
    return Path.home() / ".cache" / "lacmfer"


def _encoder_path(directory: Union[str, os.PathLike[str]], config: PretrainConfig) -> Path:
    """Where the encoder of ``config`` is cached in ``directory`` (the sidecar: ``.json``)."""
    name = f"resnet18_synthetic_identity_{config.image_size}px_seed{config.seed}_{config.tag()}"
    return Path(directory) / f"{name}.pth"


def _identity_batch(config: PretrainConfig, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """One batch of the proxy task: faces of random subjects, each group in a new random style.

    Returns:
        ``(B, 3, S, S)`` images in ``[0, 1]`` and ``(B,)`` subject ids (the identity labels). The
        expressions are drawn at random and discarded.
    """
    per_style = config.batch_size // config.styles_per_batch
    images, ids = [], []
    for _ in range(config.styles_per_batch):
        style: SyntheticStyle = random_style(
            generator, name=_POOL_NAME, identities=config.identities
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


def _block_mask(config: PretrainConfig, n: int, generator: torch.Generator) -> Tensor:
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
        x, y = _identity_batch(config, gen)
        mask = _block_mask(config, y.numel(), gen)
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
    config: Optional[PretrainConfig] = None,
    *,
    progress: bool = True,
    command: Optional[str] = None,
) -> dict[str, Any]:
    """Pretrain the encoder on the proxy task and write ``out`` and its JSON sidecar.

    The proxy task uses no expression label. Every batch holds faces of subjects from a fixed pool
    of ``config.identities`` synthetic subjects (a subject keeps its face geometry, relative skin
    tone and resting expression across styles), in ``config.styles_per_batch`` random styles that
    are none of the six of :data:`~lacmfer.data.synthetic.SYNTHETIC_DOMAINS`, with a random
    expression at a random intensity. The encoder learns two things at once: which subject a face
    shows (a linear head on the pooled map, cross-entropy weighted by ``identity_weight``), and the
    whole normalised image from a copy whose ``mask_ratio`` share of ``mask_patch``-pixel blocks is
    hidden (a light decoder on the encoder's map, squared error on the hidden pixels weighted by
    ``reconstruction_weight``). Batches go through :func:`~lacmfer.data.fer_augment`.

    The result is a torchvision-format ``resnet18`` state dict holding the keys of the parts the
    encoder has (``conv1.*``, ``bn1.*``, ``layer1.*``, ``layer2.*``): it loads through
    ``LACMFER(encoder_weights=out)`` or ``ResNet18Encoder(weights=out)`` like an ImageNet file. The
    sidecar (``out`` with ``.json``) records the settings, the proxy task, the held-out identity
    accuracy and reconstruction error, the wall time, the thread count and ``command``. The file is
    written to a temporary name and renamed, so an interrupted run leaves none. For a seed and a
    thread count the file's bytes are the same on every run.

    Args:
        out: Path of the state dict (``.pth``).
        config: Settings (default: :class:`PretrainConfig`).
        progress: Print the step, loss and time every tenth of the steps (stdout).
        command: The command line recorded in the sidecar (default: ``sys.argv``).

    Returns:
        The sidecar's record.
    """
    config = config if config is not None else PretrainConfig()
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
    every = max(1, config.steps // 10)
    net.train()
    loss_sum, train_correct, train_seen = 0.0, 0, 0
    for step in range(config.steps):
        x, y = _identity_batch(config, gen)
        target = normalize(fer_augment(x, generator=gen))
        mask = _block_mask(config, y.numel(), gen)
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
        if progress and ((step + 1) % every == 0 or step + 1 == config.steps):
            print(
                f"lacmfer: pretraining step {step + 1}/{config.steps}, loss "
                f"{float(loss.detach()):.3f}, {time.perf_counter() - t0:.0f} s",
                flush=True,
            )
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
            "of the six benchmark styles (lacmfer.data.synthetic); expressions random, their "
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
    # The sidecar first: once the weights file exists, its record does too.
    _write_atomic(out.with_suffix(".json"), (json.dumps(record, indent=2) + "\n").encode())
    _write_atomic(out, blob)
    return record


def _write_atomic(path: Path, blob: bytes) -> None:
    """Write ``blob`` to ``path`` so that a reader sees either no file or the whole file."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(blob)
    os.replace(tmp, path)


if sys.platform == "win32":
    import msvcrt

    def _try_lock(handle: IO[bytes]) -> bool:
        handle.seek(0)
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _lock(handle: IO[bytes]) -> None:
        while not _try_lock(handle):
            time.sleep(1.0)

    def _unlock(handle: IO[bytes]) -> None:
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(handle: IO[bytes]) -> bool:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _lock(handle: IO[bytes]) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)

    def _unlock(handle: IO[bytes]) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def _exclusive(lock: Path, on_wait: Callable[[], None]) -> Iterator[None]:
    """Hold an exclusive lock on the file ``lock`` across processes; ``on_wait()`` before waiting.

    The operating system releases the lock when its holder exits, even when killed, so a build
    cut off never leaves a stale lock. The (empty) lock file stays: removing it would let a
    waiter and a newcomer lock two different files.
    """
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+b") as handle:
        if not _try_lock(handle):
            on_wait()
            _lock(handle)
        try:
            yield
        finally:
            _unlock(handle)


def pretrained_encoder(
    *,
    image_size: int = 48,
    cache_dir: Optional[Union[str, os.PathLike[str]]] = None,
    progress: bool = True,
) -> Path:
    """The encoder pretrained on synthetic faces (:func:`pretrain_encoder`), from the cache.

    The synthetic data's stand-in for the ImageNet weights the paper starts from: pass the path to
    ``LACMFER(encoder_weights=...)``. The file is looked up in the cache and built there on first
    use, with the default :class:`PretrainConfig` at ``image_size`` and with
    ``torch.set_num_threads(2)`` during the build (restored after), so every build gives the same
    bytes. Building takes minutes on a CPU; later calls return at once. Processes that ask for it
    at the same time build it once: one builds, holding a lock file beside it
    (``<name>.pth.lock``), the others wait for it and then read the cache.

    Args:
        image_size: Side of the faces it is pretrained on (a multiple of 8).
        cache_dir: Directory of the cache (default: ``$LACMFER_CACHE``, else
            ``$XDG_CACHE_HOME/lacmfer``, else ``~/.cache/lacmfer``).
        progress: While building, print why, then the progress every tenth of the steps; while
            waiting for another process's build, say so (stdout).

    Returns:
        Path of a torchvision-format ``resnet18`` state dict (``conv1``, ``bn1``, ``layer1``,
        ``layer2``); its JSON sidecar lies beside it.
    """
    config = PretrainConfig(image_size=image_size)
    directory = Path(cache_dir) if cache_dir is not None else _cache_dir()
    path = _encoder_path(directory, config)
    if path.is_file():
        return path

    def on_wait() -> None:
        if progress:
            print(f"lacmfer: waiting for another process that is building {path}", flush=True)

    # Runs started together (a benchmark's pool, several scripts) build it once: the others wait.
    with _exclusive(path.with_name(path.name + ".lock"), on_wait):
        if path.is_file():  # built by the process this one waited for
            return path
        if progress:
            print(
                "lacmfer: pretraining the synthetic benchmark's stand-in encoder (no expression "
                "labels; it plays the role of ImageNet weights, which lacmfer does not ship) into "
                f"{path} ({config.steps} steps, about 3 minutes on 2 CPU cores at 48 px); built "
                "once, then read from the cache",
                flush=True,
            )
        threads = torch.get_num_threads()
        torch.set_num_threads(_PRETRAIN_THREADS)
        try:
            pretrain_encoder(
                path,
                config,
                progress=progress,
                command=f"pretrained_encoder(image_size={image_size})",
            )
        finally:
            torch.set_num_threads(threads)
    return path
