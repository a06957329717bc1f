"""Tests of examples/adaptation_diagnostics.py on the smoke preset."""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from types import ModuleType

import pytest

ADAPTATION = ("grad_sid", "grad_cid", "grad_mcc", "grad_mvv")


@pytest.fixture(scope="module")
def diagnostics() -> ModuleType:
    return importlib.import_module("adaptation_diagnostics")


def rows(diagnostics: ModuleType, out: Path, *args: str) -> list[dict[str, float]]:
    argv = ["--every", "2", "--preset", "smoke", "--steps", "4", "--out", str(out), *args]
    return list(diagnostics.diagnose(argv))


def test_a_switched_off_adaptation_follows_the_source_only_trajectory(
    diagnostics: ModuleType, tmp_path: Path
) -> None:
    source = rows(diagnostics, tmp_path / "a", "--method", "source-only")
    delayed = rows(diagnostics, tmp_path / "b", "--method", "lacmfer", "--adapt-after", "100")
    assert [r["step"] for r in source] == [0.0, 2.0, 4.0]
    for s, d in zip(source, delayed):
        assert s["ce"] == d["ce"] and s["grad_ce"] == d["grad_ce"] > 0  # same model, same data
        assert all(s[k] == 0.0 and d[k] == 0.0 for k in ADAPTATION)  # weight 0 -> no gradient


def test_full_objective_reports_finite_gradients_and_mask_statistics(
    diagnostics: ModuleType, tmp_path: Path
) -> None:
    out = rows(diagnostics, tmp_path, "--method", "lacmfer", "--batch-size", "8")
    for r in out:
        assert all(math.isfinite(v) for v in r.values())
        assert r["grad_mcc"] > 0  # the consistency term always has a gradient
        assert 0 <= r["n_eff_s"] <= 8 and 0 <= r["n_eff_t"] <= 8
        assert 0 <= r["conf_t"] <= 1 and 0 <= r["kept"] <= 1 and 0 <= r["pl_acc"] <= 1
