"""Shared helpers of the evaluation tests (datasets, probe, zero-shot, CLI).

Features of the tiny model are computed once per test session with the real
``ecgtext embed`` writer and kept under pytest's session base directory, so
every test module reuses the same Parquet file.
"""

from __future__ import annotations

import functools
import glob
from pathlib import Path

import numpy as np
from conftest import SHARED_DATA, TINY_DIR


@functools.lru_cache(maxsize=1)
def tiny_ecg_model():
    from ecgtext.inference.engine import load_ecg_model

    return load_ecg_model(TINY_DIR)


def features_file(tmp_path_factory, name: str, paths: list[str]) -> Path:
    """``<session tmp>/features/<name>.parquet`` embedded with the tiny model (computed once)."""
    from ecgtext.inference.embed import run_embed

    out = tmp_path_factory.getbasetemp() / "features" / f"{name}.parquet"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        summary = run_embed(paths, tiny_ecg_model(), out, num_workers=0)
        assert summary.failed == 0, f"{summary.failed} record(s) failed to embed"
    return out


def ptbxl_paths() -> list[str]:
    return sorted(glob.glob(str(SHARED_DATA / "ptbxl" / "records500" / "*" / "*_hr.hea")))


def cinc_paths() -> list[str]:
    return sorted(glob.glob(str(SHARED_DATA / "cinc2021" / "*.hea")))


def write_code15(folder: Path, headers: list[str], labels: np.ndarray, nested: bool = True) -> Path:
    """A CODE-test style folder from real WFDB records: ``ecg_tracings.hdf5`` (N, 4096, 12)
    at 400 Hz, signals centred with zero padding as in the release, and ``gold_standard.csv``."""
    import h5py
    import pandas as pd
    from scipy.signal import resample_poly

    from ecgtext.io import read_ecg

    tr = np.zeros((len(headers), 4096, 12), np.float32)
    for i, h in enumerate(headers):
        ecg = read_ecg(h)
        assert ecg.fs == 500.0 and len(ecg.leads) == 12
        x = resample_poly(ecg.signal, 4, 5, axis=1)[:, :4000]  # 500 -> 400 Hz
        pad = (4096 - x.shape[1]) // 2
        tr[i, pad:pad + x.shape[1]] = x.T
    data = folder / "data" if nested else folder
    data.mkdir(parents=True, exist_ok=True)
    with h5py.File(data / "ecg_tracings.hdf5", "w") as f:
        f.create_dataset("tracings", data=tr)
    ann = folder / "annotations" if nested else folder
    ann.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(labels.astype(int), columns=["1dAVb", "RBBB", "LBBB", "SB", "AF", "ST"]).to_csv(
        ann / "gold_standard.csv", index=False)
    return folder
