"""``examples/benchmark/pretrain_encoder.py``: a command line over the library's pretraining."""

from __future__ import annotations

import json
from pathlib import Path

import pretrain_encoder
import torch

from lacmfer.modules import LACMFER


def test_writes_a_file_that_loads_as_the_encoder(tmp_path: Path) -> None:
    out = tmp_path / "enc.pth"
    argv = ["--out", str(out), "--steps", "2", "--batch-size", "8", "--styles-per-batch", "2",
            "--identities", "4", "--eval-images", "8", "--image-size", "32", "--no-progress"]  # fmt: skip
    assert pretrain_encoder.main(argv) == 0
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert "examples/benchmark/pretrain_encoder.py" in sidecar["command"]
    state = torch.load(out, weights_only=True)
    assert {k.split(".")[0] for k in state} == {"conv1", "bn1", "layer1", "layer2"}
    model = LACMFER.tiny(7, encoder_weights=str(out))
    torch.testing.assert_close(model.encoder.conv1.weight, state["conv1.weight"])
