"""PTB-XL: the four benchmark tasks of Strodthoff et al. (2020) on the official folds.

Conventions (those of the benchmark code, ``utils.compute_label_aggregations``
and ``select_data`` with ``min_samples=0``, which MERL's and D-BETA's split
files follow):

- every SCP code in a record's ``scp_codes`` counts, whatever its likelihood
  (0.0 included: a statement the cardiologist left unquantified is still made);
- ``super``: ``diagnostic_class`` of the statements with ``diagnostic == 1``;
  ``sub``: their ``diagnostic_subclass``; ``form``: statements with
  ``form == 1``; ``rhythm``: statements with ``rhythm == 1``;
- the class list is the classes with at least one positive record in the data
  given; records with no label for the task are dropped for that task;
- split: ``strat_fold`` 1-8 train, 9 val, 10 test.
"""

from __future__ import annotations

import ast
import os

import numpy as np

from ecgtext.errors import DataError
from ecgtext.evaluation.datasets.base import LabelledDataset, multi_hot, require_dir, require_file

TASKS = ("super", "sub", "form", "rhythm")
_FOLDS = {**{f: "train" for f in range(1, 9)}, 9: "val", 10: "test"}


def _statements(root: str):
    import pandas as pd

    path = require_file(os.path.join(root, "scp_statements.csv"), "PTB-XL statement table",
                        "a PTB-XL folder holds ptbxl_database.csv and scp_statements.csv")
    try:
        df = pd.read_csv(path, index_col=0)
    except Exception as exc:
        raise DataError(f"{path}: cannot read ({type(exc).__name__})") from None
    need = {"diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass"}
    if not need <= set(df.columns):
        raise DataError(f"{path}: missing column(s) {', '.join(sorted(need - set(df.columns)))}")
    return df


def task_mapping(statements, task: str) -> dict[str, str]:
    """SCP code -> class for ``task`` (codes outside the task are absent)."""
    if task == "super":
        d = statements[statements.diagnostic == 1.0]
        return {k: str(v) for k, v in d.diagnostic_class.items() if isinstance(v, str)}
    if task == "sub":
        d = statements[statements.diagnostic == 1.0]
        return {k: str(v) for k, v in d.diagnostic_subclass.items() if isinstance(v, str)}
    if task == "form":
        return {k: k for k in statements.index[statements.form == 1.0]}
    if task == "rhythm":
        return {k: k for k in statements.index[statements.rhythm == 1.0]}
    raise DataError(f"unknown PTB-XL task {task!r}; expected one of {', '.join(TASKS)}")


def load_ptbxl(root: str, task: str | None = None, rate: int = 500, **_ignored) -> LabelledDataset:
    """PTB-XL folder ``root`` (``ptbxl_database.csv``, ``scp_statements.csv``,
    ``records500/``) -> dataset for ``task`` at ``rate`` Hz (500 or 100).

    Records whose WFDB header is missing under ``root`` are dropped and counted
    in ``meta["missing_files"]`` (a partial download still evaluates).
    """
    import pandas as pd

    if task is None:
        raise DataError(f"PTB-XL needs a task: one of {', '.join(TASKS)}", field="task", option="task")
    if task not in TASKS:
        raise DataError(f"unknown PTB-XL task {task!r}; expected one of {', '.join(TASKS)}")
    if int(rate) not in (100, 500):
        raise DataError(f"PTB-XL comes at 100 or 500 Hz, not {rate}")
    root = require_dir(root, "PTB-XL folder")
    db_path = require_file(os.path.join(root, "ptbxl_database.csv"), "PTB-XL label file",
                           "a PTB-XL folder holds ptbxl_database.csv and scp_statements.csv")
    try:
        db = pd.read_csv(db_path)
    except Exception as exc:
        raise DataError(f"{db_path}: cannot read ({type(exc).__name__})") from None
    col = "filename_hr" if int(rate) == 500 else "filename_lr"
    need = {"ecg_id", "scp_codes", "strat_fold", col}
    if not need <= set(db.columns):
        raise DataError(f"{db_path}: missing column(s) {', '.join(sorted(need - set(db.columns)))}")
    mapping = task_mapping(_statements(root), task)

    keys, labels, splits, missing, unlabelled = [], [], [], [], 0
    for ecg_id, codes_text, fold, fname in zip(db.ecg_id, db.scp_codes, db.strat_fold, db[col]):
        try:
            codes = ast.literal_eval(codes_text)  # a dict literal; literal_eval runs no code
            if not isinstance(codes, dict):
                raise ValueError
        except (ValueError, SyntaxError):
            raise DataError(f"{db_path}: ecg_id {ecg_id}: scp_codes is not a dict literal: {str(codes_text)[:60]}") from None
        labs = sorted({mapping[c] for c in codes if c in mapping})
        if not labs:
            unlabelled += 1
            continue
        try:
            split = _FOLDS[int(fold)]
        except (KeyError, ValueError):
            raise DataError(f"{db_path}: ecg_id {ecg_id}: strat_fold {fold!r} is not 1-10") from None
        hea = os.path.join(root, str(fname) + ".hea")
        if not os.path.isfile(hea):
            missing.append(hea)
            continue
        keys.append(hea)
        labels.append(labs)
        splits.append(split)
    if not keys:
        hint = f"e.g. {missing[0]} is missing" if missing else "no record has a label for this task"
        raise DataError(f"{root}: no PTB-XL record usable for task {task} at {rate} Hz ({hint})")
    classes = sorted({c for labs in labels for c in labs})
    ds = LabelledDataset(name="ptbxl", task=task, root=root, keys=keys, Y=multi_hot(labels, classes),
                         classes=classes, split=np.array(splits, dtype=object))
    ds.meta.update({
        "label_convention": "Strodthoff et al. 2020 benchmark: every scp_codes entry counts (likelihood 0 "
                            "included); classes = those with >= 1 positive; records without a label dropped",
        "split_convention": "strat_fold 1-8 train, 9 val, 10 test",
        "rate": int(rate),
        "records_without_label": unlabelled,
        "missing_files": len(missing),
    })
    if missing:
        ds.meta["missing_example"] = missing[0]
    return ds
