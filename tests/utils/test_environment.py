"""lacmfer.utils.environment: the software and hardware a result was computed with."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import pytest
import torch

from lacmfer.utils import _environment, environment


def test_cpu_fields_match_torch_and_are_json() -> None:
    info = environment("cpu")
    assert info["torch"] == torch.__version__
    assert info["python"] == platform.python_version()
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["threads"] == torch.get_num_threads()
    assert isinstance(info["cpu"], str) and info["cpu"]
    assert "gpu" not in info and environment() == info
    assert json.loads(json.dumps(info)) == info


def test_threads_follow_the_setting() -> None:
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert environment()["threads"] == 1
    finally:
        torch.set_num_threads(threads)


def test_cpu_name_from_cpuinfo_or_platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: X\nmodel name\t: Example CPU 9000\n")
    assert _environment._cpu_name(info) == "Example CPU 9000"
    monkeypatch.setattr(_environment.platform, "processor", lambda: "")
    # no /proc/cpuinfo (macOS, Windows): platform's answer
    assert _environment._cpu_name(tmp_path / "missing") == platform.machine()
    monkeypatch.setattr(_environment.platform, "processor", lambda: "arm")
    assert _environment._cpu_name(tmp_path / "missing") == "arm"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_cuda_fields() -> None:
    info = environment("cuda")
    assert info["gpu"] == torch.cuda.get_device_name()
    assert info["cuda"] == torch.version.cuda


def test_a_cuda_device_without_cuda_gives_the_cpu_information(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Documented, and relied on: no error, the CPU fields alone (a GPU-less run still records).
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    info = environment("cuda")
    assert "gpu" not in info and "cuda" not in info
    assert info == environment("cpu")
