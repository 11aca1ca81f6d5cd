"""Per-class AUROC and F1 for multi-label evaluation, and the report both evaluations share.

AUROC is computed from ranks (Mann-Whitney U with average ranks for ties),
which equals ``sklearn.metrics.roc_auc_score`` and is vectorised over classes,
so model selection can afford it every epoch. A class whose evaluation split
lacks positives or negatives has no AUROC: it is skipped and reported, never
counted as 0.5.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def auroc_per_class(Y: np.ndarray, S: np.ndarray) -> np.ndarray:
    """(C,) AUROC of scores ``S`` (N, C) against labels ``Y`` (N, C); NaN where undefined."""
    from scipy.stats import rankdata

    Y = np.asarray(Y).astype(bool)
    S = np.asarray(S, dtype=np.float64)
    if Y.ndim == 1:
        Y, S = Y[:, None], S[:, None]
    ranks = rankdata(S, axis=0)  # average ranks for ties, as sklearn's roc_auc_score
    n_pos = Y.sum(axis=0).astype(np.float64)
    n_neg = Y.shape[0] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        u = (ranks * Y).sum(axis=0) - n_pos * (n_pos + 1) / 2
        auc = u / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return auc


def macro(values: np.ndarray) -> float:
    """Mean over defined (non-NaN) values; NaN when there are none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else float("nan")


def best_f1_threshold(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) maximising F1 of ``s >= threshold`` on ``y``; ``(nan, nan)`` without positives.

    Candidate thresholds are the distinct scores; ties in F1 go to the higher
    threshold (fewer positive calls).
    """
    y = np.asarray(y).astype(bool)
    s = np.asarray(s, dtype=np.float64)
    n_pos = int(y.sum())
    if n_pos == 0 or s.size == 0:
        return float("nan"), float("nan")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(~y_sorted)
    last = np.r_[s_sorted[1:] != s_sorted[:-1], True]  # end of each run of equal scores
    tp, fp, thr = tp[last], fp[last], s_sorted[last]
    f1 = 2 * tp / (tp + fp + n_pos)
    i = int(np.argmax(f1))  # first max = highest threshold
    return float(thr[i]), float(f1[i])


def f1_at(y: np.ndarray, s: np.ndarray, threshold: float) -> float:
    """F1 of predicting ``s >= threshold`` (NaN when nothing is predicted and nothing is true)."""
    y = np.asarray(y).astype(bool)
    pred = np.asarray(s) >= threshold
    tp = int((y & pred).sum())
    denom = int(y.sum()) + int(pred.sum())
    return float(2 * tp / denom) if denom else float("nan")


def skip_reason(y: np.ndarray, split: str = "test") -> str | None:
    """Why a class cannot be evaluated on a split, or ``None`` when it can."""
    n_pos = int(np.asarray(y).astype(bool).sum())
    if n_pos == 0:
        return f"no positive example in the {split} split"
    if n_pos == len(y):
        return f"no negative example in the {split} split"
    return None


def evaluate_scores(Y: np.ndarray, S: np.ndarray, classes: Sequence[str],
                    thresholds: np.ndarray | None = None, split: str = "test") -> dict[str, Any]:
    """Per-class AUROC (and F1 at given thresholds) on one split, with skipped classes.

    Returns ``{"per_class": {c: {auroc, f1, threshold, n_pos}}, "macro_auroc",
    "macro_f1", "skipped_classes": [c, ...], "skipped_reasons": {c: why}}``;
    macro values average the evaluated classes only. AUROC in [0, 1].
    """
    Y = np.asarray(Y)
    auc = auroc_per_class(Y, S)
    per_class: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    f1s, aucs = [], []
    for j, c in enumerate(classes):
        thr = None if thresholds is None or np.isnan(thresholds[j]) else float(thresholds[j])
        why = skip_reason(Y[:, j], split)
        if why:
            skipped[c] = why
            per_class[c] = {"auroc": None, "f1": None, "threshold": thr, "n_pos": int(Y[:, j].sum())}
            continue
        f1 = None if thr is None else f1_at(Y[:, j], S[:, j], thr)
        per_class[c] = {"auroc": float(auc[j]), "f1": f1, "threshold": thr, "n_pos": int(Y[:, j].sum())}
        aucs.append(auc[j])
        if f1 is not None:
            f1s.append(f1)
    return {"per_class": per_class, "macro_auroc": _num(macro(np.array(aucs))),
            "macro_f1": _num(macro(np.array(f1s))) if f1s else None,
            "skipped_classes": list(skipped), "skipped_reasons": skipped}


def _num(x: float) -> float | None:
    return None if x is None or np.isnan(x) else float(x)
