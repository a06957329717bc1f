"""Every file of this repository that user-facing text names exists: the README, the docs, the
presets, the benchmark's README and result pages, and the docstrings and comments of the package and
the examples. A script that moves leaves no command or pointer behind that no longer works."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: A repository path: starts at a top-level folder, ends in a known suffix, not part of a longer
#: path (``../examples/...`` in the docs is resolved by Sphinx, which fails on a missing file).
PATH = re.compile(
    r"(?<![\w/.-])((?:examples|docs|lacmfer|tests)/[\w./+-]*\w\.(?:py|rst|md|yaml|jsonl|json|png|txt))"
    r"(?![\w.])"
)
#: Files a documented command writes (named as its output, not expected in a clone).
OUTPUTS = {"examples/benchmark/results/gpu_runs.jsonl", "examples/benchmark/results/gpu",
           "examples/benchmark/results/gpu/budget_curve.png"}  # fmt: skip


def texts() -> list[Path]:
    found = [ROOT / "README.md", ROOT / "setup.cfg", ROOT / "pyproject.toml", ROOT / ".ci" / "run"]
    for pattern in ("docs/**/*.rst", "docs/snippets/*.py", "examples/**/*.py", "examples/**/*.md",
                    "examples/configs/*.yaml", "lacmfer/**/*.py"):  # fmt: skip
        found += ROOT.glob(pattern)
    return sorted(p for p in found if "_build" not in p.parts and "archive" not in p.parts)


def named_paths(text: str) -> list[str]:
    return PATH.findall(text)


def test_the_pattern_finds_paths_and_only_paths() -> None:
    line = (
        "run `python examples/benchmark/run_benchmark.py curve` (records in "
        "examples/benchmark/results/benchmark_runs.jsonl; see docs/api/utils.rst, "
        "../examples/x.md and lacmfer.utils.save_checkpoint, not a path)"
    )
    assert named_paths(line) == [
        "examples/benchmark/run_benchmark.py",
        "examples/benchmark/results/benchmark_runs.jsonl",
        "docs/api/utils.rst",
    ]


@pytest.mark.parametrize("path", texts(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_named_file_exists(path: Path) -> None:
    missing = [
        f"line {i}: {name}"
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        for name in named_paths(line)
        if name not in OUTPUTS and not (ROOT / name).exists()
    ]
    assert not missing, f"{path.relative_to(ROOT)} names files that do not exist: {missing}"
