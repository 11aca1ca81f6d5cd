"""Writers shared by every evaluation: the split file and JSON-safe reports."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ecgtext.evaluation.datasets.base import LabelledDataset, record_id


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    return obj


def write_splits(ds: LabelledDataset, path: str | os.PathLike, subsets: dict[int, np.ndarray] | None = None) -> str:
    """``splits.csv``: key, record, split, labels (``;``-joined) and, per seed, whether the
    record was in the training subset. Readable back with ``--split-file``."""
    import pandas as pd

    from ecgtext.fsutil import atomic_path

    df = pd.DataFrame({"key": ds.keys, "record": [record_id(k) for k in ds.keys], "split": ds.split,
                       "labels": [";".join(c for c, y in zip(ds.classes, row) if y) for row in ds.Y]})
    for seed, rows in (subsets or {}).items():
        flag = np.zeros(len(ds), dtype=np.uint8)
        flag[rows] = 1
        df[f"train_subset_seed{seed}"] = flag
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return os.fspath(path)
