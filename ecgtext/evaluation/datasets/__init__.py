"""Dataset adapters: a dataset folder -> records, multi-hot labels and splits.

``load_dataset(kind, root, task=None, **opts)`` returns a
:class:`LabelledDataset`; kinds:

- ``ptbxl``: PTB-XL, tasks ``super`` / ``sub`` / ``form`` / ``rhythm``
  (benchmark conventions, official folds; ``rate=500|100``);
- ``cinc``: the PhysioNet/CinC 2020/2021 layout (``.hea`` + ``.mat`` with
  SNOMED-CT ``# Dx:``): CPSC 2018, Georgia, Chapman-Shaoxing, Ningbo, ...
  (``classes="scored"|"all"|<label set>``, ``seed=``);
- ``code15``: CODE-test (``ecg_tracings.hdf5`` + ``gold_standard.csv``), test only;
- ``generic``: a CSV / Parquet manifest of your own.

``split_files=[...]`` replaces the adapter's split with one read from split
files (ours: ``splits.csv``; MERL's ``*_train.csv`` / ``*_val.csv`` / ``*_test.csv``).
"""

from __future__ import annotations

from typing import Any, Sequence

from ecgtext.errors import DataError
from ecgtext.evaluation.datasets.base import SPLITS, LabelledDataset, record_id
from ecgtext.evaluation.datasets.splits import apply_split_files, read_split_files, stratified_split

__all__ = ["LabelledDataset", "load_dataset", "DATASET_KINDS", "SPLITS", "apply_split_files",
           "read_split_files", "stratified_split", "record_id"]

DATASET_KINDS = ("ptbxl", "cinc", "code15", "generic")
_ALIASES = {"ptb-xl": "ptbxl", "physionet": "cinc", "cinc2020": "cinc", "cinc2021": "cinc",
            "challenge": "cinc", "code": "code15", "code-test": "code15", "csv": "generic"}


def load_dataset(kind: str, root: str | Sequence[str], task: str | None = None, *,
                 split_files: Sequence[str] | None = None, **opts: Any) -> LabelledDataset:
    """Load dataset ``root`` of ``kind`` (see the module docstring); options go to the adapter."""
    k = _ALIASES.get(str(kind).lower(), str(kind).lower())
    if k == "ptbxl":
        from ecgtext.evaluation.datasets.ptbxl import load_ptbxl as loader
    elif k == "cinc":
        from ecgtext.evaluation.datasets.cinc import load_cinc as loader
    elif k == "code15":
        from ecgtext.evaluation.datasets.code15 import load_code15 as loader
    elif k == "generic":
        from ecgtext.evaluation.datasets.generic import load_generic as loader
    else:
        raise DataError(f"unknown dataset kind {kind!r}; expected one of {', '.join(DATASET_KINDS)}")
    if k != "generic" and not isinstance(root, (str, bytes)) and hasattr(root, "__len__"):
        if len(root) != 1:
            raise DataError(f"dataset kind {k} takes one folder, got {len(root)}")
        root = root[0]
    ds = loader(root, task, **opts)
    if split_files:
        ds = apply_split_files(ds, split_files)
    return ds
