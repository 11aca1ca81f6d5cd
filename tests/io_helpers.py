"""Helpers for the reader/preprocessing tests: where the real records live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
PTBXL = DATA / "ptbxl"
CINC = DATA / "cinc2021"
CHAPMAN_MAT = DATA / "chapman" / "MUSE_20180111_155115_19000.mat"
MITBIH_100 = DATA / "physionet_misc" / "100"
TEST01 = DATA / "physionet_misc" / "test01_00s"
SHARED_DATA = Path(os.environ.get("ECGTEXT_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_data() -> Path:
    """``../shared/data`` (or ``$ECGTEXT_SHARED_DATA``), else skip the calling test."""
    if not (SHARED_DATA / "ptbxl").is_dir():
        pytest.skip(f"../shared/data not present: {SHARED_DATA} (set ECGTEXT_SHARED_DATA)")
    return SHARED_DATA


def base_pre():
    """The dbeta-base preprocessing contract (500 Hz, 5000 samples, aVF before aVL)."""
    from ecgtext.config import load_preset

    return load_preset("dbeta-base").preprocess


def standard_pre():
    """500 Hz, 5000 samples, standard lead order (aVL before aVF)."""
    from ecgtext.config import PreprocessConfig

    return PreprocessConfig()


def chmod_is_effective(folder: Path) -> bool:
    """False when running as root (or on a filesystem ignoring modes): chmod 000 still reads."""
    probe = folder / ".chmod-probe"
    probe.write_text("x")
    probe.chmod(0)
    try:
        with open(probe):
            return False
    except PermissionError:
        return True
    finally:
        probe.chmod(0o644)
        probe.unlink()
