"""examples/train_cmfer.py under ``torchrun``: 2 CPU processes (gloo), DDP, sync_dist losses."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "train_cmfer.py"

pytestmark = pytest.mark.distributed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun(out: Path, *args: str, nproc: int = 2) -> None:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
        f"--master_port={free_port()}", str(SCRIPT), "--preset", "smoke", "--steps", "3",
        "--batch-size", "8", "--log-every", "1", "--eval-every", "3", "--no-progress",
        "--write-weight-hash", "--select-by", "entropy", "--out", str(out), *args,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def rank_check(out: Path, rank: int) -> dict[str, Any]:
    return dict(json.loads((out / f"weights_rank{rank}.json").read_text()))


def test_ranks_hold_identical_weights_and_resume(tmp_path: Path) -> None:
    full = tmp_path / "full"
    torchrun(full, "--analyse")
    r0, r1 = rank_check(full, 0), rank_check(full, 1)
    assert r0["weights"] == r1["weights"]
    # ... although each rank trained on its own half of the batch (rank-local CE differs), so
    # equality comes from DDP's gradient averaging, not from identical inputs
    assert r0["last_train"]["ce"] != r1["last_train"]["ce"]
    # sync_dist losses see the global batch: the same value on both ranks
    assert r0["last_train"]["align"] == pytest.approx(r1["last_train"]["align"], rel=1e-5)
    assert r0["last_train"]["consistency"] == pytest.approx(
        r1["last_train"]["consistency"], rel=1e-5
    )
    # rank 0 alone writes the outputs
    lines = (full / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3, 3]
    summary = json.loads((full / "summary.json").read_text())
    assert summary["final"]["num_test"] == 64  # the sharded evaluation covers the whole test set
    # the validators see the whole (sharded) adaptation set; the choice is made without labels
    assert summary["selected"]["validator"] == "entropy" and summary["selected"]["step"] == 3
    assert (full / "checkpoints" / "selected.pt").exists()
    # --analyse gathers the features of both ranks: 64 test images of the target, 64 of each source
    report = json.loads((full / "analysis.json").read_text())["final"]
    assert len(report["domains"]) == 6 * 64 and report["domains"].count(5) == 64

    # stop after step 2, resume under DDP: the same weights as the uninterrupted run
    split = tmp_path / "split"
    torchrun(split, "--stop-at", "2")
    torchrun(split, "--resume")
    assert rank_check(split, 0)["weights"] == r0["weights"]
    assert rank_check(split, 1)["weights"] == r0["weights"]
    assert (split / "metrics.jsonl").read_text() == (full / "metrics.jsonl").read_text()


def test_dann_discriminators_stay_in_sync(tmp_path: Path) -> None:
    """The DANN discriminators are trained inside the DDP-wrapped step: both ranks end with the
    same weights (model and discriminators), although each saw half of the batch."""
    import torch

    torchrun(tmp_path, "--method", "dann", "--per-source")
    assert rank_check(tmp_path, 0)["weights"] == rank_check(tmp_path, 1)["weights"]
    ckpt = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert any("discriminator" in k for k in ckpt["baseline"])
