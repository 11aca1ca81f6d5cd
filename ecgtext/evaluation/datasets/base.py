"""The one labelled-dataset type every adapter returns, and record keys.

A :class:`LabelledDataset` is what evaluation needs from a dataset folder:
record keys (paths the ECG readers accept), a multi-hot label matrix, the class
list and a train / val / test assignment. Adapters (``ptbxl``, ``cinc``,
``code15``, ``generic``) only translate a folder's own conventions into it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ecgtext.errors import DataError

SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {
    "train": "train", "training": "train", "tr": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val", "va": "val",
    "test": "test", "testing": "test", "te": "test",
}
# extensions that name a record rather than a different record (a WFDB record's
# header and signal files are the same record)
_RECORD_EXT = (".hea", ".dat", ".mat", ".xml", ".npy", ".npz", ".csv", ".edf")
KEY_SEP = "::"


def normalise_split(value: Any, where: str) -> str:
    """``"Validation"`` -> ``"val"``; anything unknown is a :class:`DataError`."""
    s = str(value).strip().lower()
    if s in _SPLIT_ALIASES:
        return _SPLIT_ALIASES[s]
    raise DataError(f"{where}: unknown split {value!r}; expected train, val or test")


def record_id(key: str) -> str:
    """A record's short identity: file name without its extension (``"00001_hr"``,
    ``"A0001"``), or ``"ecg_tracings::12"`` for one record of a container."""
    container, sep, inner = str(key).partition(KEY_SEP)
    base = os.path.basename(container.replace("\\", "/").rstrip("/"))
    stem, ext = os.path.splitext(base)
    if ext.lower() in _RECORD_EXT or (sep and ext):
        base = stem
    return f"{base}{KEY_SEP}{inner}" if sep else base


def record_path_key(key: str) -> str:
    """Absolute, extension-less form of a key, for matching keys written elsewhere."""
    container, sep, inner = str(key).partition(KEY_SEP)
    p = os.path.normpath(os.path.abspath(os.path.expanduser(container))).replace("\\", "/")
    root, ext = os.path.splitext(p)
    if ext.lower() in _RECORD_EXT or (sep and ext):
        p = root
    return f"{p}{KEY_SEP}{inner}" if sep else p


@dataclass
class LabelledDataset:
    """Records with multi-hot labels and a split.

    ``keys``: (N,) record paths the readers accept (a WFDB ``.hea``, or
    ``"file.hdf5::i"``); ``Y``: (N, C) uint8, ``Y[i, c] = 1`` when record i has
    class ``classes[c]``; ``split``: (N,) of ``"train"``, ``"val"``, ``"test"``.
    ``meta`` records how labels and splits were made (conventions, dropped
    records, class -> source codes, suggested read options).
    """

    name: str
    keys: list[str]
    Y: np.ndarray
    classes: list[str]
    split: np.ndarray
    task: str | None = None
    root: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.keys = [str(k) for k in self.keys]
        self.Y = np.asarray(self.Y, dtype=np.uint8)
        self.split = np.asarray(self.split, dtype=object)
        self.classes = [str(c) for c in self.classes]
        n = len(self.keys)
        if self.Y.ndim != 2 or self.Y.shape != (n, len(self.classes)):
            raise ValueError(f"Y must be ({n}, {len(self.classes)}), got {self.Y.shape}")
        if self.split.shape != (n,):
            raise ValueError(f"split must have {n} entries, got {self.split.shape}")
        bad = sorted(set(self.split.tolist()) - set(SPLITS))
        if bad:
            raise ValueError(f"unknown split value(s) {bad}")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("duplicate class names")

    @property
    def paths(self) -> list[str]:
        return self.keys

    @property
    def label(self) -> str:
        """``"ptbxl/super"``-style name for reports."""
        return f"{self.name}/{self.task}" if self.task else self.name

    def __len__(self) -> int:
        return len(self.keys)

    def indices(self, split: str) -> np.ndarray:
        """Row indices of one split, in dataset order."""
        return np.flatnonzero(self.split == split)

    def counts(self) -> dict[str, int]:
        return {s: int((self.split == s).sum()) for s in SPLITS}

    def positives(self, split: str | None = None) -> dict[str, int]:
        """Positive examples per class (in one split, or overall)."""
        rows = self.Y if split is None else self.Y[self.split == split]
        return {c: int(v) for c, v in zip(self.classes, rows.sum(axis=0))}

    def select(self, rows: np.ndarray, note: str | None = None) -> "LabelledDataset":
        """A copy holding only ``rows`` (indices or a boolean mask)."""
        rows = np.asarray(rows)
        idx = np.flatnonzero(rows) if rows.dtype == bool else rows.astype(int)
        meta = dict(self.meta)
        if note:
            meta.setdefault("notes", []).append(note)
        return LabelledDataset(name=self.name, keys=[self.keys[i] for i in idx], Y=self.Y[idx],
                               classes=list(self.classes), split=self.split[idx], task=self.task,
                               root=self.root, meta=meta)

    def drop_empty_classes(self) -> "LabelledDataset":
        """Drop classes without a single positive example (label list = classes present)."""
        keep = self.Y.sum(axis=0) > 0
        if keep.all():
            return self
        dropped = [c for c, k in zip(self.classes, keep) if not k]
        meta = dict(self.meta)
        meta["classes_without_positives"] = dropped
        return LabelledDataset(name=self.name, keys=self.keys, Y=self.Y[:, keep],
                               classes=[c for c, k in zip(self.classes, keep) if k],
                               split=self.split, task=self.task, root=self.root, meta=meta)

    def summary(self) -> dict[str, Any]:
        """Sizes, classes and per-split positives, for JSON reports."""
        return {"dataset": self.name, "task": self.task, "root": self.root, "n_records": len(self),
                "splits": self.counts(), "classes": list(self.classes),
                "positives": {s: self.positives(s) for s in SPLITS}}


def multi_hot(label_lists: list[list[str]], classes: list[str]) -> np.ndarray:
    """(N, C) uint8 from per-record label lists; labels outside ``classes`` are ignored."""
    index = {c: j for j, c in enumerate(classes)}
    Y = np.zeros((len(label_lists), len(classes)), dtype=np.uint8)
    for i, labels in enumerate(label_lists):
        for lab in labels:
            j = index.get(lab)
            if j is not None:
                Y[i, j] = 1
    return Y


def require_file(path: str | os.PathLike, what: str, hint: str = "") -> str:
    """``path`` if it is a file, else a one-line :class:`DataError` naming it."""
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise DataError(f"{p}: {what} not found" + (f" ({hint})" if hint else ""))
    return p


def require_dir(path: str | os.PathLike, what: str = "dataset folder") -> str:
    p = os.fspath(path)
    if not os.path.exists(p):
        raise DataError(f"{p}: {what} not found")
    if not os.path.isdir(p):
        raise DataError(f"{p}: expected a {what}, found a file")
    return p
