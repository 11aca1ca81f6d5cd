"""The ``ecgtext`` entry point: --help, --version, fast start, error mapping."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ecgtext

BIN = Path(sys.executable).with_name("ecgtext")


def _run(*args, **kw):
    cmd = [str(BIN), *args] if BIN.exists() else [sys.executable, "-m", "ecgtext.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


def test_version():
    r = _run("--version")
    assert r.returncode == 0
    assert r.stdout.strip() == f"ecgtext {ecgtext.__version__}"


def test_help_lists_the_subcommands():
    r = _run("--help")
    assert r.returncode == 0
    for name in ("download", "zeroshot", "embed", "probe", "pretrain"):
        assert name in r.stdout


def test_help_does_not_import_heavy_libraries():
    code = ("import sys; from ecgtext.cli import app; "
            "heavy = [m for m in ('torch', 'transformers', 'pandas', 'pyarrow', 'matplotlib', 'sklearn') "
            "if m in sys.modules]; print(','.join(heavy))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ""


def test_unknown_command_is_a_usage_error():
    r = _run("frobnicate")
    assert r.returncode == 2
