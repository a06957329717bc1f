"""Where a result was computed: what its last bits depend on beyond the command and the seeds."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any, Optional, Union

import torch

__all__ = ["environment"]


def _cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what :mod:`platform` knows."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: Optional[Union[str, torch.device]] = None) -> dict[str, Any]:
    """The software and hardware a result was computed with, as a JSON-ready dict.

    A run with pinned seeds and threads repeats bit for bit only where these match: torch picks
    its CPU kernels by instruction set (AVX-512, AVX2, ...), as do oneDNN and MKL, and GPU kernels
    differ between models and library versions. Floating-point results that differ in the last
    bit grow apart over thousands of training steps, so the same command on another machine gives
    a result that differs like one of another seed. Record this beside a result so that a reader
    can tell a failed reproduction from a different machine.

    Args:
        device: The device the computation ran on; for a CUDA device, when CUDA is available, the
            GPU's name, compute capability and the CUDA and cuDNN versions are added. When CUDA is
            not available, a CUDA device is not an error: the CPU information alone is returned,
            without the GPU keys (check ``"gpu" in info`` to tell).

    Returns:
        ``python``, ``torch``, ``os``, ``machine``, ``cpu`` (model name), ``cpu_capability``
        (the instruction set torch's CPU kernels use), ``cpu_count``, ``threads`` (torch's intra-op
        threads), and for a CUDA device when CUDA is available ``gpu``, ``gpu_capability``,
        ``cuda``, ``cudnn``.

    Example:
        >>> info = environment("cpu")
        >>> sorted(info)[:4]
        ['cpu', 'cpu_capability', 'cpu_count', 'machine']
    """
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu": _cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cuda" and torch.cuda.is_available():
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        info.update(
            gpu=torch.cuda.get_device_name(index),
            gpu_capability=f"{major}.{minor}",
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    if sys.platform == "darwin" and dev is not None and dev.type == "mps":
        info["gpu"] = "Apple MPS"
    return info
