"""CODE-test (Ribeiro et al. 2020): 827 ECGs in ``ecg_tracings.hdf5`` + ``gold_standard.csv``.

The gold standard's six columns (1dAVb, RBBB, LBBB, SB, AF, ST) are renamed to
the ``code15`` label set's codes (1AVB, RBBB, LBBB, SBRAD, AFIB, STACH), so
zero-shot evaluation needs no mapping. Row i of the CSV labels row i of the
HDF5 ``tracings`` (record ``"ecg_tracings.hdf5::i"``). Every record is in the
test split: the set is for evaluation only.
"""

from __future__ import annotations

import os

import numpy as np

from ecgtext.errors import DataError, EcgTextError
from ecgtext.evaluation.datasets.base import LabelledDataset, require_dir

CODE_COLUMNS = {"1dAVb": "1AVB", "RBBB": "RBBB", "LBBB": "LBBB", "SB": "SBRAD", "AF": "AFIB", "ST": "STACH"}
TRACINGS = "ecg_tracings.hdf5"
GOLD = "gold_standard.csv"


def _find(root: str, name: str, max_depth: int = 3) -> str | None:
    """Shallowest ``name`` under ``root`` (the release nests it in ``data/`` or ``annotations/``)."""
    base_depth = root.rstrip(os.sep).count(os.sep)
    for d, dirs, files in os.walk(root):
        dirs.sort()
        if name in files:
            return os.path.join(d, name)
        if d.count(os.sep) - base_depth >= max_depth:
            dirs[:] = []
    return None


def load_code15(root: str, task: str | None = None, **_ignored) -> LabelledDataset:
    """CODE-test folder ``root`` (holding ``ecg_tracings.hdf5`` and ``gold_standard.csv``,
    possibly in sub-folders) -> test-only dataset with the ``code15`` classes."""
    import pandas as pd

    root = require_dir(root, "CODE-test folder")
    h5 = _find(root, TRACINGS)
    if h5 is None:
        raise DataError(f"{root}: no {TRACINGS} found (the CODE-test release's signal file)")
    gold = _find(root, GOLD)
    if gold is None:
        raise DataError(f"{root}: label file {GOLD} not found (CODE-test keeps it in annotations/)")
    try:
        df = pd.read_csv(gold)
    except Exception as exc:
        raise DataError(f"{gold}: cannot read ({type(exc).__name__})") from None
    missing = [c for c in CODE_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{gold}: missing column(s) {', '.join(missing)}; expected {', '.join(CODE_COLUMNS)}")
    from ecgtext.io import list_records

    try:
        keys = list_records(h5)
    except EcgTextError as exc:
        raise DataError(f"{h5}: cannot list records ({exc})") from None
    if len(keys) != len(df):
        raise DataError(f"{gold}: {len(df)} label rows but {h5} holds {len(keys)} tracings; "
                        "row i of the CSV must label tracing i")
    values = df[list(CODE_COLUMNS)].to_numpy()
    if not np.isin(values, (0, 1)).all():
        raise DataError(f"{gold}: label columns must hold 0 or 1")
    ds = LabelledDataset(name="code15", task=task, root=root, keys=keys, Y=values.astype(np.uint8),
                         classes=list(CODE_COLUMNS.values()), split=np.array(["test"] * len(keys), dtype=object))
    ds.meta.update({
        "label_convention": "gold_standard.csv columns renamed " +
                            ", ".join(f"{a}->{b}" for a, b in CODE_COLUMNS.items()),
        "split_convention": "test only (no training split: use for zero-shot evaluation)",
        "label_file": gold, "signal_file": h5,
    })
    return ds
