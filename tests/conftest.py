"""Shared test fixtures: where the bundled fixtures and ../shared/data live."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTDATA = REPO / "tests" / "data"
CONFORMANCE = TESTDATA / "conformance"
TINY_DIR = CONFORMANCE / "dbeta-tiny"
SHARED = Path(os.environ.get("ECGTEXT_SHARED", REPO.parent / "shared"))
SHARED_DATA = Path(os.environ.get("ECGTEXT_SHARED_DATA", SHARED / "data"))


def shared_data() -> Path:
    """../shared/data, or skip the test (it exists for developers and CI, not on a fresh clone)."""
    if not (SHARED_DATA / "ptbxl").is_dir():
        pytest.skip(f"{SHARED_DATA} not present: wide-data test skipped")
    return SHARED_DATA


@pytest.fixture
def shared_data_dir() -> Path:
    return shared_data()


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    return TINY_DIR


@pytest.fixture
def tiny_copy(tmp_path) -> Path:
    """A writable copy of the tiny model directory."""
    d = tmp_path / "dbeta-tiny"
    shutil.copytree(TINY_DIR, d)
    return d


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch, tmp_path_factory):
    # tests never reach the real Hub, and never touch the user's caches
    monkeypatch.setenv("HF_HUB_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "1"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    cache = tmp_path_factory.getbasetemp() / "ecgtext-cache"
    monkeypatch.setenv("ECGTEXT_CACHE", str(cache))
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf-home"))
