"""Every Python code block of README.md and of the documentation's pages runs.

What is collected:

* README.md: every fenced block opened with three backticks and ``python``;
* ``docs/*.rst`` and ``docs/guides/*.rst``: every ``.. code-block:: python`` and every
  ``.. literalinclude::`` of a ``.py`` file (the whole file is run as ``__main__``).
  (``.. testcode::`` blocks are run by the Sphinx doctest builder, not here.)

The blocks of one page run in order in one namespace, as a reader would paste them into one session,
in a temporary working directory with one thread; a block that raises fails the page's test, which
names the file and the line of the block. So a snippet that drifts from the library fails CI.

Skipping a block: a block that cannot run here (it needs the real datasets, torchvision, a GPU or
``torchrun``) carries a comment line of its own that starts with ``# not run:`` followed by the reason,
e.g. ``# not run: needs torchvision``. Such blocks are listed by ``test_skipped_blocks_are_few`` and
must stay few. A literalinclude'd script that needs ``torchrun`` says so the same way in its first
lines and gets a test of its own below (``docs/snippets/ddp_own_loop.py``, marked ``distributed``).
"""

from __future__ import annotations

import os
import re
import runpy
import socket
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SKIP_MARKER = re.compile(r"^\s*# not run: \S", re.MULTILINE)
#: Blocks with the skip marker allowed over all pages (keep exceptions few).
MAX_SKIPPED = 4


@dataclass(frozen=True)
class Block:
    """One runnable unit: the source of a code block, or a script file to run as ``__main__``."""

    path: Path  # the page
    line: int  # 1-based line of the block's directive or fence in the page
    code: str = ""
    script: Path | None = None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def skipped(self) -> bool:
        text = self.code if self.script is None else _head(self.script)
        return bool(SKIP_MARKER.search(text))


def _head(script: Path, lines: int = 40) -> str:
    return "\n".join(script.read_text(encoding="utf-8").splitlines()[:lines])


def markdown_blocks(path: Path) -> list[Block]:
    """The fenced ``python`` blocks of a Markdown file."""
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start, body = i + 1, []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            blocks.append(Block(path, start, "\n".join(body) + "\n"))
        i += 1
    return blocks


_DIRECTIVE = re.compile(r"^(\s*)\.\.\s+(code-block|literalinclude)::\s*(.*?)\s*$")
_OPTION = re.compile(r"^\s*:[\w-]+:")


def rst_blocks(path: Path) -> list[Block]:
    """``code-block:: python`` bodies and literalinclude'd ``.py`` files of a reST page."""
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        match = _DIRECTIVE.match(lines[i])
        if match is None:
            i += 1
            continue
        indent, kind, argument = len(match.group(1)), match.group(2), match.group(3)
        start = i + 1
        i += 1
        while i < len(lines) and _OPTION.match(lines[i]):  # the directive's options
            i += 1
        body: list[str] = []
        while i < len(lines) and (
            not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent
        ):
            body.append(lines[i])
            i += 1
        if kind == "code-block" and argument == "python":
            blocks.append(Block(path, start, textwrap.dedent("\n".join(body)).strip() + "\n"))
        elif kind == "literalinclude" and argument.endswith(".py"):
            blocks.append(Block(path, start, script=(path.parent / argument).resolve()))
    return blocks


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.rst")), *sorted(DOCS.glob("guides/*.rst"))]


def page_blocks(page: Path) -> list[Block]:
    return markdown_blocks(page) if page.suffix == ".md" else rst_blocks(page)


PAGES_WITH_CODE = [p for p in pages() if page_blocks(p)]


@pytest.fixture
def one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_collector_finds_the_blocks() -> None:
    """The pages that have code today are found (guards against a collector that finds nothing)."""
    names = {p.relative_to(ROOT).as_posix() for p in PAGES_WITH_CODE}
    assert {"README.md", "docs/index.rst", "docs/guides/own_training_loop.rst"} <= names
    scripts = {b.script.name for p in PAGES_WITH_CODE for b in page_blocks(p) if b.script}
    assert {"own_backbone.py", "ddp_own_loop.py"} <= scripts


def test_skipped_blocks_are_few() -> None:
    skipped = [b.where for p in PAGES_WITH_CODE for b in page_blocks(p) if b.skipped]
    assert len(skipped) <= MAX_SKIPPED, f"too many '# not run:' blocks: {skipped}"


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_code_blocks_run(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    for block in page_blocks(page):
        if block.skipped:
            continue
        try:
            if block.script is not None:
                monkeypatch.setattr(sys, "argv", [str(block.script)])
                runpy.run_path(str(block.script), run_name="__main__")
            else:
                exec(compile(block.code, block.where, "exec"), namespace)
        except Exception as exc:  # name the block in the failure
            raise AssertionError(f"the code block at {block.where} fails: {exc!r}") from exc


# -------------------------------------------------------------------- the DDP script, under torchrun
DDP_SCRIPT = DOCS / "snippets" / "ddp_own_loop.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(*args: str) -> str:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(DDP_SCRIPT), *args,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # gloo on CPU
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_ddp_script_is_marked_not_run_in_process() -> None:
    """The generic runner skips it (it needs torchrun); the tests below run it."""
    assert SKIP_MARKER.search(_head(DDP_SCRIPT))


@pytest.mark.distributed
def test_ddp_own_loop_ranks_agree(tmp_path: Path) -> None:
    out = _torchrun("--steps", "3", "--out", str(tmp_path))
    assert "2 ranks hold identical weights: True" in out, out
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ckpt["world_size"] == 2 and ckpt["step"] == 3
    assert int(ckpt["loss_fn"]["num_steps"]) == 3  # the objective's state is saved too
    assert not any(k.startswith("module.") for k in ckpt["model"])


@pytest.mark.distributed
@pytest.mark.slow
def test_ddp_own_loop_resume_is_exact(tmp_path: Path) -> None:
    """3 steps, then a resumed run to 14 (across the warm-up at steps 10-20), equal an
    uninterrupted 14-step run."""
    _torchrun("--steps", "14", "--out", str(tmp_path / "full"))
    _torchrun("--steps", "3", "--out", str(tmp_path / "split"))
    _torchrun("--steps", "14", "--resume", str(tmp_path / "split" / "checkpoint.pt"), "--out",
              str(tmp_path / "split"))  # fmt: skip
    full = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)
    split = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=False)
    for key, value in full["model"].items():
        torch.testing.assert_close(split["model"][key], value, rtol=0, atol=0, msg=key)
    assert full["loss_fn"]["num_steps"] == split["loss_fn"]["num_steps"] == 14
