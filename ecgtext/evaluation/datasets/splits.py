"""Train / val / test assignments: seeded stratified splits and split files.

Datasets without an official split get a seeded, label-stratified one
(iterative stratification, Sechidis et al. 2011): each split receives close to
its share of every class, rare classes first. A split file (ours, or MERL's
published ``*_train.csv`` / ``*_val.csv`` / ``*_test.csv``) overrides it.
"""

from __future__ import annotations

import os
import re
from typing import Sequence

import numpy as np

from ecgtext.errors import DataError
from ecgtext.evaluation.datasets.base import SPLITS, LabelledDataset, normalise_split, record_id

DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)
# columns that can name the record in a split file, most specific first
# (MERL: filename_hr for PTB-XL, filename for CPSC 2018, ecg_path for CSN)
KEY_COLUMNS = ("key", "path", "record", "filename_hr", "filename", "ecg_path", "FileName",
               "file", "record_name", "ecg_id")


def stratified_split(Y: np.ndarray, seed: int, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> np.ndarray:
    """(N,) array of ``"train"|"val"|"test"`` with each class spread by ``fractions``.

    ``Y`` is (N, C) multi-hot. Deterministic for a given ``seed``; records
    without labels fill the splits to their overall sizes.
    """
    fr = np.asarray(fractions, dtype=float)
    if fr.shape != (3,) or (fr < 0).any() or not np.isclose(fr.sum(), 1.0):
        raise DataError(f"split fractions must be three non-negative numbers summing to 1, got {list(fractions)}")
    Y = np.asarray(Y, dtype=bool)
    n = Y.shape[0]
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)  # random tie-breaking among equal records
    want = fr * n  # records still wanted per split
    want_c = np.outer(fr, Y.sum(axis=0)).astype(float)  # (3, C) positives still wanted
    out = np.full(n, -1, dtype=int)
    left = np.ones(n, dtype=bool)
    Yo = Y[order]
    while True:
        counts = Yo[left[order]].sum(axis=0) if left.any() else np.zeros(Y.shape[1], int)
        active = np.flatnonzero(counts > 0)
        if active.size == 0:
            break
        c = active[np.argmin(counts[active])]  # rarest remaining class first
        for r in order[left[order] & Yo[:, c]]:
            # split wanting this class most; ties -> wanting most records; then fixed order
            s = int(np.lexsort((-np.arange(3), want, want_c[:, c]))[-1])
            out[r] = s
            left[r] = False
            want[s] -= 1
            want_c[s] -= Y[r]
    for r in order[left[order]]:
        s = int(np.lexsort((-np.arange(3), want))[-1])
        out[r] = s
        want[s] -= 1
    return np.array(SPLITS, dtype=object)[out]


def _split_from_name(path: str) -> str | None:
    tokens = re.split(r"[^a-z]+", os.path.splitext(os.path.basename(path))[0].lower())
    found = {normalise_split(t, path) for t in tokens
             if t in ("train", "training", "val", "valid", "validation", "dev", "test", "testing")}
    return found.pop() if len(found) == 1 else None


def read_split_files(files: Sequence[str]) -> dict[str, str]:
    """``{record id: split}`` from one or more CSV / Parquet split files.

    A file has a record column (one of :data:`KEY_COLUMNS`) and either a
    ``split`` column or a name saying which split it holds (MERL's
    ``icbeb_train.csv``). Records are matched by file name without extension.
    """
    import pandas as pd

    out: dict[str, str] = {}
    for f in files:
        f = os.fspath(f)
        if not os.path.isfile(f):
            raise DataError(f"{f}: split file not found")
        try:
            df = pd.read_parquet(f) if f.lower().endswith(".parquet") else pd.read_csv(f, dtype=str)
        except Exception as exc:  # malformed CSV / Parquet
            raise DataError(f"{f}: cannot read split file ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None
        col = next((c for c in KEY_COLUMNS if c in df.columns), None)
        if col is None:
            raise DataError(f"{f}: split file needs a record column (one of {', '.join(KEY_COLUMNS)}); "
                            f"found {', '.join(map(str, df.columns[:8]))}")
        if "split" in df.columns:
            splits = [normalise_split(v, f) for v in df["split"]]
        else:
            s = _split_from_name(f)
            if s is None:
                raise DataError(f"{f}: split file has no 'split' column and its name does not say "
                                "train, val or test")
            splits = [s] * len(df)
        for key, s in zip(df[col].astype(str), splits):
            rid = record_id(key.strip())
            prev = out.get(rid)
            if prev is not None and prev != s:
                raise DataError(f"{f}: record {rid} is in both {prev} and {s}")
            out[rid] = s
    if not out:
        raise DataError(f"{', '.join(map(str, files))}: split file(s) list no records")
    return out


def apply_split_files(ds: LabelledDataset, files: Sequence[str]) -> LabelledDataset:
    """``ds`` with splits taken from ``files``; records the files do not list are dropped."""
    table = read_split_files(files)
    rids = [record_id(k) for k in ds.keys]
    seen: dict[str, int] = {}
    for i, r in enumerate(rids):
        if r in seen:
            raise DataError(f"{ds.root}: record name {r} occurs twice ({ds.keys[seen[r]]}, {ds.keys[i]}); "
                            "split files match records by file name")
        seen[r] = i
    rows = [i for i, r in enumerate(rids) if r in table]
    if not rows:
        raise DataError(f"{', '.join(map(str, files))}: none of the {len(table)} records in the split "
                        f"file(s) is in {ds.root} (matched by file name, e.g. {next(iter(table))} vs {rids[0] if rids else '-'})")
    new = ds.select(np.array(rows, dtype=int))
    new.split = np.array([table[rids[i]] for i in rows], dtype=object)
    new.meta = dict(new.meta)
    new.meta["split_source"] = {"files": [os.fspath(f) for f in files],
                                "records_not_in_split_files": len(ds) - len(rows),
                                "split_file_records_not_found": len(set(table) - set(rids))}
    return new
