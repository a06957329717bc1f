"""Smoke test of examples/benchmark_model.py on a tiny configuration."""

from __future__ import annotations

import importlib

import pytest


def test_benchmark_script_prints_its_table(capsys: pytest.CaptureFixture[str]) -> None:
    module = importlib.import_module("benchmark_model")
    argv = "--tiny --image-size 32 --batch-size 2 --iters 1 --warmup 0 --spatial-kernel-size 7"
    table = module.main(argv.split())
    assert table in capsys.readouterr().out
    assert "| measurement | setting | ms / iter | result |" in table
    assert "one call per patch" in table and "batched (per-patch BN)" in table
    assert "full LACMFERLoss objective" in table and "of the full step" in table
