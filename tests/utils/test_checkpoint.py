"""lacmfer.utils checkpoints: atomic saves, safe loads, random states for an exact resume, hashes."""

from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import re
import stat
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lacmfer.utils import (
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
    state_dict_hash,
)


# ------------------------------------------------------------------------------- save and load
def test_save_then_load_round_trips_a_training_state(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": 7,
             "config": {"lr": 0.1, "name": "x", "none": None}, "rng": get_rng_state()}  # fmt: skip
    path = save_checkpoint(state, tmp_path / "a" / "b" / "last.pt")
    assert path == tmp_path / "a" / "b" / "last.pt" and path.is_file()
    back = load_checkpoint(str(path), required=("model", "step"))
    assert back["step"] == 7 and back["config"] == state["config"]
    for k, v in model.state_dict().items():
        assert torch.equal(back["model"][k], v)
    opt2 = torch.optim.SGD(torch.nn.Linear(3, 2).parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(back["optimizer"])  # loadable as it comes back
    assert not list(path.parent.glob("*.tmp"))


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    path = save_checkpoint({"step": 1}, tmp_path / "last.pt")
    before = path.read_bytes()

    class Unpicklable:
        def __reduce__(self) -> Any:
            raise RuntimeError("cannot pickle this")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_checkpoint({"step": 2, "bad": Unpicklable()}, path)
    assert path.read_bytes() == before
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no half-written temp file


def _local_function() -> Any:
    def inner() -> int:
        return 1

    return inner


UNPICKLABLE = {
    "lambda": lambda: 1,
    "local function": _local_function(),
    "lock": threading.Lock(),
}


@pytest.mark.parametrize("kind", list(UNPICKLABLE))
def test_save_names_the_path_and_key_of_what_cannot_be_pickled(tmp_path: Path, kind: str) -> None:
    path = save_checkpoint({"step": 1}, tmp_path / "last.pt")
    before = path.read_bytes()
    state = {"step": 2, "w": torch.ones(3), "v": UNPICKLABLE[kind]}
    with pytest.raises(
        TypeError,
        match="^" + re.escape(f"{path}: state['v'] holds an object that cannot be pickled"),
    ) as caught:
        save_checkpoint(state, path)
    assert caught.value.__cause__ is not None and "\n" not in str(caught.value)
    with pytest.raises(TypeError, match="^" + re.escape(f"{path}: state holds an object")):
        save_checkpoint([UNPICKLABLE[kind]], path)  # not a dict: no key to name
    assert path.read_bytes() == before and load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary file


def test_save_syncs_the_file_before_the_rename_and_the_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, str]] = []
    fsync, replace = os.fsync, os.replace

    def record_fsync(fd: int) -> None:
        events.append(("fsync", "folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"))
        fsync(fd)

    def record_replace(src: Any, dst: Any) -> None:
        events.append(("replace", Path(src).name))
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", record_fsync)
    monkeypatch.setattr(os, "replace", record_replace)
    save_checkpoint({"step": 1}, tmp_path / "last.pt")
    tmp_name = events[1][1]
    assert tmp_name.startswith("last.pt.") and tmp_name.endswith(".tmp")
    expected = [("fsync", "file"), ("replace", tmp_name)]
    if os.name == "posix":
        expected.append(("fsync", "folder"))
    assert events == expected
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 1

    def refuse(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(22, "Invalid argument")  # a file system that cannot sync folders
        fsync(fd)

    monkeypatch.setattr(os, "fsync", refuse)
    assert load_checkpoint(save_checkpoint({"step": 2}, tmp_path / "last.pt"))["step"] == 2


def test_two_writers_of_one_path_use_their_own_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"

    class SavesMidway:
        """Pickled as a tensor, after another writer saved to the same path meanwhile."""

        def __reduce_ex__(self, protocol: Any) -> Any:
            save_checkpoint({"writer": 2}, path)
            return torch.zeros(2).__reduce_ex__(protocol)

    save_checkpoint({"writer": 1, "x": SavesMidway()}, path)
    back = load_checkpoint(path)
    assert back["writer"] == 1 and torch.equal(back["x"], torch.zeros(2))  # the last rename
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_load_refuses_code_in_the_file(tmp_path: Path) -> None:
    # A pickle that would call os.system when unpickled without weights_only.
    class Payload:
        def __reduce__(self) -> Any:
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pt"
    torch.save({"step": 1, "x": Payload()}, path)
    with pytest.raises(ValueError, match=r"evil\.pt: not a readable checkpoint"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "plain pickle of a list"])
def test_load_names_the_file_of_a_damaged_checkpoint(tmp_path: Path, damage: str) -> None:
    good = save_checkpoint({"step": 1, "w": torch.ones(100)}, tmp_path / "good.pt").read_bytes()
    blob = {"truncated": good[: len(good) // 2], "garbage": b"\x00not a checkpoint" * 10,
            "empty": b"", "plain pickle of a list": pickle.dumps([1, 2])}[damage]  # fmt: skip
    path = tmp_path / "bad.pt"
    path.write_bytes(blob)
    with pytest.raises(ValueError, match=r"bad\.pt: (not a readable checkpoint|expected a dict)"):
        load_checkpoint(path)


def test_load_errors_for_a_missing_file_a_non_dict_and_missing_keys(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nothere\.pt: no such file"):
        load_checkpoint(tmp_path / "nothere.pt")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_checkpoint(tmp_path)  # a folder is not a checkpoint
    torch.save([torch.ones(1)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=r"list\.pt: expected a dict, the file holds a list"):
        load_checkpoint(tmp_path / "list.pt")
    save_checkpoint({"step": 1}, tmp_path / "c.pt")
    with pytest.raises(ValueError, match=r"c\.pt: the checkpoint lacks 'model', 'config'"):
        load_checkpoint(tmp_path / "c.pt", required=("step", "model", "config"))


class Unloadable:
    """A class of the test's own: pickles fine, but weights_only refuses to rebuild it."""

    def __init__(self) -> None:
        self.lr = 0.1


REFUSED = {
    "Namespace": (argparse.Namespace(lr=0.1), "argparse.Namespace"),
    "Path": (Path("data"), "pathlib.*Path"),
    "numpy array": (np.zeros(3, dtype=np.float32), "numpy"),
    "numpy scalar": (np.float32(0.5), "numpy"),
    "own class": (Unloadable(), "Unloadable"),
}


@pytest.mark.parametrize("kind", list(REFUSED))
def test_save_refuses_what_load_would_refuse(tmp_path: Path, kind: str) -> None:
    obj, name = REFUSED[kind]
    torch.save({"x": obj}, tmp_path / "plain.pt")  # the reference: torch itself refuses it
    with pytest.raises(pickle.UnpicklingError, match=name):
        torch.load(tmp_path / "plain.pt", weights_only=True)
    path = save_checkpoint({"step": 1, "w": torch.ones(3)}, tmp_path / "ckpt" / "last.pt")
    before = path.read_bytes()
    with pytest.raises(TypeError, match=name) as caught:
        save_checkpoint({"step": 2, "w": torch.zeros(3), "config": {"x": obj}}, path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert "tensors, numbers, strings" in message and "weights_only=True" in message
    assert isinstance(caught.value.__cause__, pickle.UnpicklingError)
    assert path.read_bytes() == before  # the previous checkpoint is untouched
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temporary file
    with pytest.raises(TypeError, match=name):  # no previous checkpoint: nothing is left
        save_checkpoint({"x": obj}, tmp_path / "fresh" / "last.pt")
    assert list((tmp_path / "fresh").iterdir()) == []


def test_load_error_gives_torchs_reason_and_chains_it(tmp_path: Path) -> None:
    path = tmp_path / "ns.pt"
    torch.save({"step": 1, "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(ValueError) as caught:
        load_checkpoint(path)
    message, cause = str(caught.value), caught.value.__cause__
    assert isinstance(cause, pickle.UnpicklingError)
    assert "argparse.Namespace" in str(cause)  # what torch says...
    assert message.startswith(f"{path}: not a readable checkpoint (UnpicklingError: ")
    assert "argparse.Namespace" in message  # ...is in the message: the refused class
    assert "\n" not in message and "\x1b" not in message and len(message) < len(str(path)) + 250
    good = save_checkpoint({"w": torch.ones(1000)}, tmp_path / "good.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError) as caught:
        load_checkpoint(tmp_path / "cut.pt")
    cause = caught.value.__cause__
    assert cause is not None and f"({type(cause).__name__}: " in str(caught.value)
    first = str(cause).strip().splitlines()[0].split(". ")[0]
    assert first[:150] in str(caught.value)  # the gist of torch's own words
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.pt: not a readable checkpoint \(EOFError\)$"):
        load_checkpoint(tmp_path / "empty.pt")  # no message: the class alone


def test_required_may_be_a_single_key(tmp_path: Path) -> None:
    path = save_checkpoint({"step": 1, "model": {}}, tmp_path / "c.pt")
    assert load_checkpoint(path, required="model")["step"] == 1
    with pytest.raises(ValueError, match=r"c\.pt: the checkpoint lacks 'config'$"):
        load_checkpoint(path, required="config")  # one key, not 'c', 'o', 'n', ...
    assert load_checkpoint(path, required=["step", "model"])["step"] == 1


# ----------------------------------------------------------------------------------- rng states
def draws(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(5), torch.randint(0, 100, (5,), generator=gen)


def test_restored_states_replay_the_same_draws(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(123)
    torch.manual_seed(9)
    draws(gen)  # somewhere in the middle of a run
    states = get_rng_state(gen)
    assert len(states) == 1 and set(states[0]) == {"torch", "generators"}
    expected = draws(gen)
    draws(gen)  # the run goes on, then stops
    path = save_checkpoint({"rng": states}, tmp_path / "rng.pt")
    gen2 = torch.Generator().manual_seed(0)  # a new process: fresh generators
    torch.manual_seed(0)
    set_rng_state(load_checkpoint(path)["rng"], gen2)
    for a, b in zip(expected, draws(gen2)):
        assert torch.equal(a, b)


def test_several_generators_keep_their_order() -> None:
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    states = get_rng_state(g1, g2)
    a1, a2 = torch.rand(3, generator=g1), torch.rand(3, generator=g2)
    set_rng_state(states, g1, g2)
    assert torch.equal(torch.rand(3, generator=g1), a1)
    assert torch.equal(torch.rand(3, generator=g2), a2)


def test_rng_state_errors() -> None:
    gen = torch.Generator()
    with pytest.raises(TypeError, match=r"generators\[1\] must be a torch.Generator, got int"):
        get_rng_state(gen, 3)  # type: ignore[arg-type]
    states = get_rng_state(gen)
    with pytest.raises(ValueError, match="random states of 2 ranks; this run has 1"):
        set_rng_state(states * 2, gen)
    with pytest.raises(ValueError, match="holds 1 generator states, got 0 generators"):
        set_rng_state(states)


def test_set_rng_state_refuses_one_ranks_dict_and_a_state_without_torchs() -> None:
    gen = torch.Generator()
    states = get_rng_state(gen)
    with pytest.raises(
        TypeError,
        match=r"^states must be the list get_rng_state returns \(one dict per rank\), got a dict "
        r"with keys \['generators', 'torch'\]$",
    ):
        set_rng_state(states[0], gen)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^states\[0\] must be a dict of random states"):
        set_rng_state([torch.get_rng_state()])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"^states\[0\] lacks the key 'torch'"):
        set_rng_state([{"generators": []}])
    a = torch.rand(2, generator=gen)
    set_rng_state(states, gen)  # the list itself still restores
    assert torch.equal(torch.rand(2, generator=gen), a)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1", torch.device("cuda")])
def test_a_cuda_device_without_cuda_is_refused(device: Any) -> None:
    pattern = r"^device=.*cuda.* is a CUDA device, but CUDA is not available"
    with pytest.raises(ValueError, match=pattern):
        get_rng_state(device=device)
    with pytest.raises(ValueError, match=pattern):
        set_rng_state(get_rng_state(), device=device)


def test_a_gpu_past_the_last_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(
        ValueError, match=r"^device='cuda:2' names GPU 2, but 2 GPU\(s\) are visible$"
    ):
        get_rng_state(device="cuda:2")


def test_a_device_torch_cannot_use_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^device='gpu' is not a device torch can use: "):
        get_rng_state(device="gpu")
    with pytest.raises(
        TypeError, match=r"^device must be a torch.device, a str or an int, got float"
    ):
        get_rng_state(device=1.5)
    accelerator = getattr(torch, "accelerator", None)
    if torch.cuda.is_available() or (accelerator is not None and accelerator.is_available()):
        return  # device 0 is usable here
    # An index alone means the accelerator (torch >= 2.6) or CUDA (before): none is there.
    with pytest.raises(ValueError, match=r"^device=0 (is not a device torch can use|is a CUDA)"):
        get_rng_state(device=0)


def test_a_cpu_device_or_none_adds_no_cuda_state() -> None:
    assert "cuda" not in get_rng_state(device="cpu")[0]
    assert "cuda" not in get_rng_state(device=torch.device("cpu"))[0]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_state_replays() -> None:
    device = torch.device("cuda")
    states = get_rng_state(device=device)
    a = torch.rand(4, device=device)
    set_rng_state(states, device=device)
    assert torch.equal(torch.rand(4, device=device), a)


# ----------------------------------------------------------------------------------------- hash
def hash_reference(state_dict: dict[str, Any]) -> str:
    """The same digest, written out one tensor at a time through numpy's bytes."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key]
        if isinstance(t, torch.Tensor):
            h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(bytes(t.detach().cpu().contiguous().view(-1).view(torch.uint8).tolist()))
    return h.hexdigest()


def test_hash_equals_the_reference_and_sees_every_change() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    sd = model.state_dict()
    assert state_dict_hash(sd) == hash_reference(sd)
    assert state_dict_hash(dict(reversed(list(sd.items())))) == state_dict_hash(sd)  # key order
    changed = {k: v.clone() for k, v in sd.items()}
    changed["0.weight"][1, 2] = torch.nextafter(changed["0.weight"][1, 2], torch.tensor(2.0))
    assert state_dict_hash(changed) != state_dict_hash(sd)  # one ulp
    renamed = {("x" + k if k == "0.bias" else k): v for k, v in sd.items()}
    assert state_dict_hash(renamed) != state_dict_hash(sd)
    as_double = {k: v.double() if v.is_floating_point() else v for k, v in sd.items()}
    assert state_dict_hash(as_double) != state_dict_hash(sd)  # the dtype counts
    reshaped = {**sd, "0.weight": sd["0.weight"].reshape(4, 3)}
    assert state_dict_hash(reshaped) != state_dict_hash(sd)  # the shape counts


def test_hash_of_odd_tensors() -> None:
    sd = {"b": torch.tensor([True, False]), "h": torch.ones(3, dtype=torch.bfloat16),
          "s": torch.tensor(2.0), "t": torch.arange(6.0).reshape(2, 3).t()}  # fmt: skip
    assert state_dict_hash(sd) == hash_reference(sd)  # non-contiguous, 0-d, bool, bf16


def flatten(tree: Mapping[Any, Any], prefix: str = "") -> dict[str, torch.Tensor]:
    """Nested mappings of tensors as one flat dict of dotted names, as Module.state_dict names."""
    flat: dict[str, torch.Tensor] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_hash_of_nested_state_dicts() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    sd = model.state_dict()
    nested = {"model": sd, "ema": {"net": {k: v + 1 for k, v in sd.items()}}}
    # the same digest as the flat dict with dotted names, i.e. as a wrapping module's state_dict
    assert state_dict_hash(nested) == hash_reference(flatten(nested))
    wrapper = torch.nn.ModuleDict({"model": model})
    assert state_dict_hash({"model": sd}) == state_dict_hash(wrapper.state_dict())
    assert state_dict_hash({"model": sd}) != hashlib.sha256().hexdigest()  # not a hash of nothing
    changed = {"model": {**sd, "1.running_mean": sd["1.running_mean"] + 1}}
    assert state_dict_hash(changed) != state_dict_hash({"model": sd})  # a change deep inside


def test_hash_refuses_what_it_cannot_hash() -> None:
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    with pytest.raises(
        TypeError,
        match=r"state_dict\['param_groups'\] must be a tensor or a mapping of tensors, got list",
    ):
        state_dict_hash(optimizer.state_dict())  # was the hash of its tensors alone
    with pytest.raises(TypeError, match=r"state_dict\['n'\] must be a tensor .*, got int$"):
        state_dict_hash({"w": torch.ones(1), "n": 5})
    with pytest.raises(TypeError, match=r"state_dict\['a\.step'\] must be a tensor .*, got float$"):
        state_dict_hash({"a": {"step": 3.0}})
    with pytest.raises(TypeError, match="state_dict must be a mapping, got list"):
        state_dict_hash([torch.ones(1)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"two entries named 'a\.b'"):
        state_dict_hash({"a.b": torch.ones(1), "a": {"b": torch.zeros(1)}})
    assert state_dict_hash({"state": optimizer.state_dict()["state"]}) == hash_reference(
        flatten({"state": optimizer.state_dict()["state"]})
    )
