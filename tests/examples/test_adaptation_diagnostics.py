"""Tests of examples/benchmark/adaptation_diagnostics.py on short smoke runs of the example."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path
from types import ModuleType

import pytest

ADAPTATION = ("grad_sid", "grad_cid", "grad_mcc", "grad_mvv")


@pytest.fixture(scope="module")
def diagnostics() -> ModuleType:
    return importlib.import_module("adaptation_diagnostics")


def train(script: ModuleType, out: Path, *args: str) -> Path:
    argv = ["--preset", "smoke", "--steps", "9", "--ckpt-every", "4", "--keep-checkpoints", "9",
            "--log-every", "1", "--no-progress", "--no-tensorboard", "--no-plots", "--out", str(out)]  # fmt: skip
    assert script.main([*argv, *args]) == 0
    return out


def logged(out: Path) -> dict[int, dict[str, float]]:
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in lines if r["kind"] == "train"}


@pytest.mark.parametrize("extra", [[], ["--augment", "--per-source"]])
def test_rows_recompute_the_batch_the_run_drew(
    script: ModuleType, diagnostics: ModuleType, tmp_path: Path, extra: list[str]
) -> None:
    """Each checkpoint's row is computed on the very batch of the next step: its cross-entropy and
    effective sample counts equal what the run logged at that step."""
    out = train(script, tmp_path / "run", *extra)
    rows = diagnostics.diagnose(out)
    log = logged(out)
    assert [r["step"] for r in rows] == [5.0, 9.0]  # step_8 is followed by step 9; step_9 is last
    for r in rows:
        want = log[int(r["step"])]
        assert r["ce"] == pytest.approx(want["ce"], rel=1e-6)
        assert r["n_eff_s"] == pytest.approx(want["effective_s_g"], rel=1e-6)
        assert r["n_eff_t"] == pytest.approx(want["effective_t_g"], rel=1e-6)
        assert r["grad_ce"] > 0 and all(math.isfinite(r[k]) and r[k] >= 0 for k in ADAPTATION)
        assert 0.0 <= r["conf_t"] <= 1.0 and 0.0 <= r["kept"] <= 1.0
        # the kept pseudo-labels' accuracy is the one the run logged (null there: nothing kept)
        if want["pseudo_label_acc"] is None:
            assert math.isnan(r["pl_acc"])
        else:
            assert r["pl_acc"] == pytest.approx(want["pseudo_label_acc"], rel=1e-6)
        assert math.isnan(r["conf_acc"]) == (r["conf_t"] == 0.0)  # no confident sample: no share


def test_source_only_has_no_adaptation_gradient(
    script: ModuleType, diagnostics: ModuleType, tmp_path: Path
) -> None:
    rows = diagnostics.diagnose(train(script, tmp_path / "so", "--method", "source-only"))
    assert rows and all(r[k] == 0.0 for r in rows for k in ADAPTATION)
    with pytest.raises(SystemExit, match="no step_"):
        diagnostics.diagnose(tmp_path / "nothing")


def test_share_right_is_nan_on_an_empty_mask(diagnostics: ModuleType) -> None:
    import torch

    labels, truth = torch.tensor([0, 1, 2, 2]), torch.tensor([0, 2, 2, 1])
    assert diagnostics.share_right(labels, truth, torch.tensor([True, True, True, False])) == 2 / 3
    assert math.isnan(diagnostics.share_right(labels, truth, torch.zeros(4, dtype=torch.bool)))
    assert diagnostics.share(math.nan) == "–" and diagnostics.share(0.875) == "0.88"
