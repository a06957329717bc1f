"""Smoke test of examples/benchmark_model.py on a tiny configuration."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "examples" / "benchmark_model.py"


@pytest.mark.skipif(not SCRIPT.exists(), reason="examples/ not shipped with this checkout")
def test_benchmark_script_prints_its_table(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("benchmark_model", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = "--tiny --image-size 32 --batch-size 2 --iters 1 --warmup 0 --spatial-kernel-size 7"
    table = module.main(argv.split())
    assert table in capsys.readouterr().out
    assert "| measurement | setting | ms / iter | result |" in table
    assert "one call per patch" in table and "batched (per-patch BN)" in table
    assert ("of the full step" in table) or ("training-step rows skipped" in table)
