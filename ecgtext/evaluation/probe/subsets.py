"""Training subsets (1 / 10 / 100 %) drawn reproducibly from the training split."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ecgtext.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    pass
from ecgtext.evaluation.probe.config import _REDRAWS


def draw_subset(train_rows: np.ndarray, Y: np.ndarray, classes: Sequence[str], fraction: float, seed: int,
                missing_class: str = "error") -> tuple[np.ndarray, list[str], int]:
    """Rows of a ``fraction`` training subset drawn with ``default_rng(seed)``.

    Returns (rows, classes without a positive in the subset, draws made).
    ``fraction == 1`` keeps every training row. See the module docstring for
    ``missing_class``.
    """
    train_rows = np.asarray(train_rows)
    n = len(train_rows)
    k = n if fraction >= 1.0 else max(1, int(math.floor(fraction * n)))
    rng = np.random.default_rng(seed)
    absent = [c for c, m in zip(classes, Y[train_rows].sum(axis=0) == 0) if m]
    if absent and missing_class != "keep":  # no subset can hold them
        raise DataError(f"class(es) {', '.join(absent)} have no positive example in the training split "
                        f"({n} records); train anyway (missing-class rule 'keep'), or drop the class from "
                        "the dataset", field="classes", value=absent, option="missing_class")
    draws = 0
    while True:
        rows = train_rows if k == n else np.sort(rng.choice(train_rows, size=k, replace=False))
        draws += 1
        missing = [c for c, m in zip(classes, Y[rows].sum(axis=0) == 0) if m]
        if not missing or missing_class == "keep":
            return rows, missing, draws
        if missing_class == "redraw" and draws < _REDRAWS:
            continue
        where = f"the {100 * fraction:g} % training subset ({k} of {n} records, seed {seed})"
        if missing_class == "redraw":
            raise DataError(f"no draw in {draws} of {where} had a positive example of every class "
                            f"(last missing: {', '.join(missing)}); use a larger training fraction or the "
                            "missing-class rule 'keep'", field="classes", value=missing, option="fraction")
        raise DataError(f"class(es) {', '.join(missing)} have no positive example in {where}; use a larger "
                        "training fraction, or the missing-class rule 'redraw' (draw the subset again with the "
                        "same seed) or 'keep' (train anyway; MERL's protocol)", field="classes", value=missing,
                        option="fraction")
