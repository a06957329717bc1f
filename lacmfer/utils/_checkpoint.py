"""Checkpoints that survive a crash and resume exactly: atomic saves, safe loads, random states."""

from __future__ import annotations

import hashlib
import os
import pickle
import secrets
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch
import torch.distributed as dist
from torch import Tensor

from .._distributed import is_distributed
from .._serialization import load_error_reason

__all__: list[str] = []

PathLike = Union[str, "os.PathLike[str]"]


def save_checkpoint(state: Any, path: PathLike) -> Path:
    """Save ``state`` with :func:`torch.save` to a temporary file beside ``path``, check that it
    reads back, then rename it to ``path``.

    The temporary file has a name of its own (``<path>.<pid>.<random>.tmp``), so two processes
    saving to one ``path`` never write into one file (the last rename wins). It is flushed to disk
    (``os.fsync``) before the rename, the rename is atomic on POSIX and Windows file systems, and
    on POSIX the folder is synced after it. So a crash, a power loss or a full disk during the save
    leaves at ``path`` the previous checkpoint or the new one, whole, never half a file (on file
    systems that honour ``fsync`` and atomic renames, as local disks do; some network file systems
    do not). Missing parent folders are created. ``state`` must hold only what
    :func:`load_checkpoint` (``torch.load(weights_only=True)``) reads back: tensors, numbers,
    strings, ``None`` and dicts, lists and tuples of them (state dicts, counters, a configuration
    as a dict). The temporary file is loaded that way before the rename (memory-mapped: the
    tensors' bytes are not read), so an object it would refuse (an ``argparse.Namespace``, a
    :class:`~pathlib.Path`, a numpy array or scalar, an instance of your own class) fails the save
    now, not the resume hours later.

    Args:
        state: the object to save.
        path: where it goes.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        TypeError: ``state`` holds an object that cannot be pickled (a lambda, a lock, an open
            file: the message names ``path`` and, for a dict, the top-level key that holds it) or
            that ``torch.load(weights_only=True)`` refuses (the message names it). Either way the
            previous checkpoint at ``path`` is kept and no temporary file is left.

    Example:
        >>> import tempfile, torch
        >>> from lacmfer.utils import load_checkpoint, save_checkpoint
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = save_checkpoint({"step": 3, "w": torch.ones(2)}, f"{folder}/ckpt/last.pt")
        ...     load_checkpoint(path, required=("step",))["step"]
        3
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    created = False
    try:
        with open(tmp, "xb") as f:  # "x": a new file, never one another writer has open
            created = True
            try:
                torch.save(state, f)
            except (pickle.PicklingError, AttributeError, TypeError) as err:
                raise TypeError(
                    f"{path}: {_unpicklable(state)} holds an object that cannot be pickled "
                    f"({err}); a checkpoint holds tensors, numbers, strings, None and lists, "
                    "tuples and dicts of them (what torch.load(weights_only=True) reads)"
                ) from err
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them the file
        try:  # what load_checkpoint will do, without reading the tensors' bytes
            back = torch.load(tmp, map_location="cpu", weights_only=True, mmap=True)
        except pickle.UnpicklingError as err:  # weights_only refuses an object of the state
            raise TypeError(
                f"{path}: state holds an object that load_checkpoint cannot read back "
                f"({load_error_reason(err)}); a checkpoint holds tensors, numbers, strings, None and "
                "lists, tuples and dicts of them (what torch.load(weights_only=True) reads): "
                "convert it, e.g. a Namespace with vars(), a path with str(), a numpy array "
                "with torch.from_numpy() and a numpy scalar with .item()"
            ) from err
        del back  # releases the memory map before the rename
        os.replace(tmp, path)
    except BaseException:  # also KeyboardInterrupt: no half-written file is left behind
        if created:
            tmp.unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)
    return path


class _Discard:
    """A file that forgets what is written to it."""

    def write(self, data: bytes) -> int:
        return len(data)


class _Probe(pickle.Pickler):
    """Pickles into nothing, tensors and storages as stand-ins: finds an object that cannot be
    pickled without copying any tensor's bytes."""

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, (Tensor, torch.UntypedStorage, torch.TypedStorage)):
            return 0
        return None


def _unpicklable(state: Any) -> str:
    """What holds the object that cannot be pickled, for a message: ``state[<key>]``, the first
    top-level entry of a mapping ``state`` that cannot be pickled, else ``state``."""
    if isinstance(state, Mapping):
        for key, value in state.items():
            try:
                _Probe(_Discard(), protocol=2).dump(value)
            except Exception:
                return f"state[{key!r}]"
    return "state"


def _sync_folder(folder: Path) -> None:
    """``fsync`` a folder, so that a rename in it is on disk (POSIX; a no-op where a file system
    or the platform does not support it)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(
    path: PathLike, *, required: Union[str, Sequence[str]] = (), map_location: Any = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)``: a file from elsewhere cannot run
    code when it is loaded.

    Args:
        path: the file.
        required: keys the checkpoint must hold; a single string is one key.
        map_location: as for :func:`torch.load` (default: every tensor on the CPU).

    Returns:
        The checkpoint, a dict.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: the file is truncated, corrupt, not a tensor file, holds objects that
            ``weights_only`` refuses, is not a dict, or lacks a ``required`` key. The message names
            the file and the reason (for an unreadable file, torch's own, e.g. the class refused);
            the exception torch raised is its ``__cause__``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated, corrupt, not a tensor file, refused by weights_only
        raise ValueError(f"{path}: not a readable checkpoint ({load_error_reason(err)})") from err
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: expected a dict, the file holds a {type(ckpt).__name__}")
    keys = (required,) if isinstance(required, str) else required
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise ValueError(f"{path}: the checkpoint lacks {', '.join(map(repr, missing))}")
    return ckpt


def get_rng_state(
    *generators: torch.Generator, device: Optional[Any] = None, sync_dist: bool = False
) -> list[dict[str, Any]]:
    """The random states an exact resume needs, one dict per rank.

    Each dict holds torch's global CPU state (``"torch"``), the CUDA state of ``device`` when it is
    a CUDA device (``"cuda"``) and the state of each of ``generators`` (``"generators"``, in order).
    With ``sync_dist=True`` under an initialised process group every rank's states are gathered
    (a collective: call it on every rank), so one file written by rank 0 resumes every rank; else
    the list holds this process's states alone.

    Args:
        *generators: explicit generators the run draws from (augmentation, dropout masks...).
        device: the device whose CUDA generator to include (none for a CPU device or ``None``).
        sync_dist: gather the states of every rank.

    Returns:
        A list with one dict per rank, index = rank; :func:`set_rng_state` restores it.

    Raises:
        TypeError: a generator is not a :class:`torch.Generator`, or ``device`` is not a device.
        ValueError: ``device`` names a device torch cannot use here (a CUDA device when CUDA is
            not available, or one past the last GPU).

    Example:
        >>> import torch
        >>> from lacmfer.utils import get_rng_state, set_rng_state
        >>> gen = torch.Generator().manual_seed(0)
        >>> states = get_rng_state(gen)
        >>> a = torch.rand(2, generator=gen)
        >>> set_rng_state(states, gen)
        >>> torch.equal(a, torch.rand(2, generator=gen))
        True
    """
    for i, g in enumerate(generators):
        if not isinstance(g, torch.Generator):
            raise TypeError(f"generators[{i}] must be a torch.Generator, got {type(g).__name__}")
    dev = _rng_device(device)
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if dev is not None and dev.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(dev)
    state["generators"] = [g.get_state() for g in generators]
    if not (sync_dist and is_distributed()):
        return [state]
    states: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return states


def set_rng_state(
    states: Sequence[Mapping[str, Any]], *generators: torch.Generator, device: Optional[Any] = None
) -> None:
    """Restore what :func:`get_rng_state` returned: this rank's entry of ``states``.

    Args:
        states: one dict per rank, as :func:`get_rng_state` returns them.
        *generators: the same generators, in the same order.
        device: the CUDA device whose generator to restore (when the states hold one).

    Raises:
        TypeError: ``states`` is not the list :func:`get_rng_state` returns (e.g. one rank's dict
            of it), or ``device`` is not a device.
        ValueError: ``states`` holds another number of ranks than this run has, another number
            of generators than given, or lacks torch's state; ``device`` names a device torch
            cannot use here.
    """
    if isinstance(states, (Mapping, str, bytes)) or not isinstance(states, Sequence):
        raise TypeError(
            "states must be the list get_rng_state returns (one dict per rank), got "
            f"{_kind(states)}"
        )
    world = dist.get_world_size() if is_distributed() else 1
    rank = dist.get_rank() if world > 1 else 0
    if len(states) != world:
        raise ValueError(
            f"states holds the random states of {len(states)} ranks; this run has {world}: "
            "resume on as many ranks as the run was saved from"
        )
    state = states[rank]
    if not isinstance(state, Mapping):
        raise TypeError(
            f"states[{rank}] must be a dict of random states, as get_rng_state returns, got "
            f"{_kind(state)}"
        )
    if "torch" not in state:
        raise ValueError(
            f"states[{rank}] lacks the key 'torch' (torch's CPU random state), holds "
            f"{sorted(map(str, state))}: states must be what get_rng_state returns"
        )
    saved = state.get("generators", [])
    if len(saved) != len(generators):
        raise ValueError(
            f"states holds {len(saved)} generator states, got {len(generators)} generators"
        )
    dev = _rng_device(device)
    torch.set_rng_state(state["torch"])
    for g, s in zip(generators, saved):
        g.set_state(s)
    if "cuda" in state and dev is not None and dev.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], dev)


def _kind(value: Any) -> str:
    """How a message shows a value of the wrong type: its type, and its keys for a mapping."""
    if isinstance(value, Mapping):
        return f"a {type(value).__name__} with keys {sorted(map(str, value))}"
    return f"a {type(value).__name__}"


def _rng_device(device: Any) -> Optional[torch.device]:
    """``device`` as a :class:`torch.device` (``None`` stays ``None``); a CUDA device must be one
    this process can use, since torch's CUDA random state calls fail (or, when restoring, are
    silently dropped) without it."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except TypeError:
        raise TypeError(
            f"device must be a torch.device, a str or an int, got {type(device).__name__}"
        ) from None
    except RuntimeError as err:  # "gpu", or an index with no accelerator
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"device={device!r} is not a device torch can use: {reason}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} is a CUDA device, but CUDA is not available "
                f"(torch.cuda.is_available() is False; torch {torch.__version__})"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and not 0 <= dev.index < count:
            raise ValueError(
                f"device={device!r} names GPU {dev.index}, but {count} GPU(s) are visible"
            )
    return dev


def state_dict_hash(state_dict: Mapping[Any, Any]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of a state dict's tensors (in name order).

    Two models hash alike exactly when they hold bit-identical tensors under the same names: the
    check that the ranks of a distributed run agree, or that a resumed run matches an uninterrupted
    one. Nested mappings are walked, their tensors named with dotted paths as
    :meth:`torch.nn.Module.state_dict` names them (``{"model": {"fc.weight": w}}`` hashes
    ``model.fc.weight``), so several state dicts can be hashed together. Any other value (a number,
    a list: an optimizer's ``param_groups``) is refused, not skipped: a hash that ignored what it
    was given would match anything.

    Args:
        state_dict: names to tensors, or to mappings of them.

    Returns:
        The hex digest.

    Raises:
        TypeError: a value is neither a tensor nor a mapping; the message names its key.
        ValueError: two entries have the same dotted name (``"a.b"`` and ``"a": {"b": ...}``).

    Example:
        >>> import torch
        >>> from lacmfer.utils import state_dict_hash
        >>> a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
        >>> _ = b.load_state_dict(a.state_dict())
        >>> state_dict_hash(a.state_dict()) == state_dict_hash(b.state_dict())
        True
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
    h = hashlib.sha256()
    seen: set[str] = set()

    def walk(mapping: Mapping[Any, Any], prefix: str) -> None:
        for key in sorted(mapping):
            name, value = f"{prefix}{key}", mapping[key]
            if isinstance(value, Mapping):
                walk(value, name + ".")
                continue
            if not isinstance(value, Tensor):
                raise TypeError(
                    f"state_dict[{name!r}] must be a tensor or a mapping of tensors, got "
                    f"{type(value).__name__}"
                )
            if name in seen:
                raise ValueError(f"state_dict holds two entries named {name!r}")
            seen.add(name)
            t = value.detach().cpu().contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())

    walk(state_dict, "")
    return h.hexdigest()
