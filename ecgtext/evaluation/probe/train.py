"""Training a head: MERL's protocol in NumPy (Adam, BCE, best validation AUROC) or scikit-learn's logistic regression."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ecgtext.evaluation.metrics import (
    auroc_per_class,
    macro,
)

if TYPE_CHECKING:  # pragma: no cover
    pass


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def train_linear(Xtr: np.ndarray, Ytr: np.ndarray, Xva: np.ndarray, Yva: np.ndarray, *, epochs: int = 100,
                 lr: float = 1e-3, batch_size: int = 16, weight_decay: float = 0.0, seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Train ``Linear(D, C)`` with Adam + BCE-with-logits; keep the epoch with the best
    validation macro AUROC. Returns (weight (C, D), bias (C,), info).

    This is ``torch.nn.Linear`` + ``torch.optim.Adam`` (betas 0.9 / 0.999,
    eps 1e-8, L2 ``weight_decay`` added to the gradient) + ``BCEWithLogitsLoss``
    (mean over batch and classes) written out in NumPy: the same updates, but
    without ~1 ms of framework overhead per 16-record step, which dominated the
    run time. Initialisation (``Linear``'s uniform +-1/sqrt(D)) and the epoch
    shuffles come from ``default_rng(seed)``.
    """
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(seed)
    Xtr = np.asarray(Xtr, np.float64)
    Ytr = np.asarray(Ytr, np.float64)
    Xva = np.asarray(Xva, np.float64)
    n, D = Xtr.shape
    C = Ytr.shape[1]
    bound = 1.0 / math.sqrt(D)
    W = rng.uniform(-bound, bound, size=(C, D))
    b = rng.uniform(-bound, bound, size=C)
    mW, vW, mb, vb = np.zeros_like(W), np.zeros_like(W), np.zeros_like(b), np.zeros_like(b)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    # selection needs a class with positives and negatives in validation
    can_select = len(Yva) > 0 and bool(np.any(~np.isnan(auroc_per_class(Yva, np.zeros(Yva.shape)))))
    best = (-np.inf, W.copy(), b.copy(), 0)
    curve: list[float] = []
    step = 0
    with threadpool_limits(1):  # tiny matrices: extra BLAS threads only contend
        for epoch in range(1, epochs + 1):
            perm = rng.permutation(n)
            for start in range(0, n, batch_size):
                idx = perm[start:start + batch_size]
                x, y = Xtr[idx], Ytr[idx]
                gz = (_sigmoid(x @ W.T + b) - y) / y.size  # d mean-BCE / d logits
                gW = gz.T @ x
                gb = gz.sum(axis=0)
                if weight_decay:
                    gW = gW + weight_decay * W
                    gb = gb + weight_decay * b
                step += 1
                c1, c2 = 1 - beta1 ** step, 1 - beta2 ** step
                for p, g, m, v in ((W, gW, mW, vW), (b, gb, mb, vb)):
                    m *= beta1
                    m += (1 - beta1) * g
                    v *= beta2
                    v += (1 - beta2) * g * g
                    p -= (lr / c1) * m / (np.sqrt(v) / math.sqrt(c2) + eps)
            if can_select:
                score = macro(auroc_per_class(Yva, Xva @ W.T + b))
                curve.append(round(float(score), 6))
                if score > best[0]:
                    best = (score, W.copy(), b.copy(), epoch)
    if not can_select:  # nothing to select on: the last epoch
        best = (float("nan"), W.copy(), b.copy(), epochs)
    info = {"best_epoch": best[3], "val_macro_auroc": None if np.isnan(best[0]) else float(best[0]),
            "val_curve": curve}
    return best[1].astype(np.float32), best[2].astype(np.float32), info


def train_sklearn(Xtr: np.ndarray, Ytr: np.ndarray, Xva: np.ndarray, Yva: np.ndarray, *,
                  C_grid: Sequence[float] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0), seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """One L2 logistic regression per class (one-vs-rest), ``C`` chosen by validation macro AUROC.

    Features are standardised with training statistics for the solver and the
    scaling is folded back into the weights, so the result is a plain linear
    head on raw features. A class with a single label value in training gets a
    constant head (weight 0, bias = log-odds of its smoothed rate).
    """
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    Xtr = np.asarray(Xtr, np.float64)
    mu = Xtr.mean(axis=0)
    sd = Xtr.std(axis=0)
    sd[sd < 1e-8] = 1.0
    Ztr = (Xtr - mu) / sd
    Zva = (np.asarray(Xva, np.float64) - mu) / sd
    C_cls = Ytr.shape[1]
    fits = [None if Ytr[:, j].min() == Ytr[:, j].max() else
            LogisticRegression(max_iter=1000, warm_start=True, random_state=seed) for j in range(C_cls)]
    best = None
    curve = {}
    with threadpool_limits(1):
        for c_val in sorted(C_grid):  # ascending C + warm start: each fit starts near the last
            W = np.zeros((C_cls, Ztr.shape[1]))
            b = np.zeros(C_cls)
            for j, clf in enumerate(fits):
                y = Ytr[:, j]
                if clf is None:
                    rate = (y.sum() + 0.5) / (len(y) + 1.0)
                    b[j] = math.log(rate / (1 - rate))
                    continue
                clf.set_params(C=c_val)
                clf.fit(Ztr, y)
                W[j], b[j] = clf.coef_[0], clf.intercept_[0]
            score = macro(auroc_per_class(Yva, Zva @ W.T + b)) if len(Yva) else float("nan")
            curve[str(c_val)] = None if np.isnan(score) else round(float(score), 6)
            if best is None or (not np.isnan(score) and (np.isnan(best[0]) or score > best[0])):
                best = (score, W, b, c_val)
    score, W, b, c_best = best
    W_raw = W / sd  # z = (x - mu) / sd  =>  W z + b = (W / sd) x + (b - (W / sd) mu)
    b_raw = b - W_raw @ mu
    info = {"C": c_best, "val_macro_auroc": None if np.isnan(score) else float(score), "val_curve": curve}
    return W_raw.astype(np.float32), b_raw.astype(np.float32), info
