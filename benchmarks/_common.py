"""What every benchmark prints first: the CPU its figures come from (they are ratios
measured in one run on that CPU; the flags say which fast paths it has)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile")


def cpu_info() -> str:
    """``"AMD EPYC; 2 logical CPUs; flags sse4_2 avx avx2 fma; Python 3.11.7"`` (Linux reads
    ``/proc/cpuinfo``; elsewhere the model from ``platform``)."""
    model, flags = platform.processor() or platform.machine() or "?", []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                flags = [f for f in FLAGS if f in have]
                break
    except OSError:
        pass
    return (f"{model}; {os.cpu_count()} logical CPUs; flags {' '.join(flags) or '?'}; "
            f"Python {platform.python_version()}")


def cpu_line() -> str:
    return f"CPU: {cpu_info()}"
