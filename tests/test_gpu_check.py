"""benchmarks/gpu_check.sh works before a GPU session spends its time on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO


@pytest.mark.slow  # ~2-4 min on 2 shared cores: four steps, each in its own Python process
def test_gpu_check_dry_run_passes_on_cpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    r = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path / "out")],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "all steps passed" in r.stdout
    for step in ("agreement", "embed", "ddp"):
        assert json.loads((tmp_path / "out" / f"{step}.json").read_text())["ok"]


def test_gpu_check_refuses_without_a_gpu_in_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the real check would run")
    env = {**os.environ, "PYTHON": sys.executable, "PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)}
    r = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--out", str(tmp_path / "out")],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "--dry-run" in r.stderr
