"""Linear probing: a linear head on frozen ECG features, trained on 1 / 10 / 100 % of a
training split, selected on validation, evaluated on test.

The default protocol is the one the D-BETA paper follows (MERL's evaluation
code): one linear layer, Adam (lr 1e-3), batch 16, up to 100 epochs,
BCE-with-logits on multi-hot labels, the epoch with the best validation macro
AUROC kept. ``head="sklearn"`` instead fits one-vs-rest logistic regressions
with ``C`` chosen on validation (fast, convex). Per-class decision thresholds
maximise F1 on validation and are applied unchanged to test.

Training subsets are drawn with ``numpy.random.default_rng(seed)`` from the
training split (uniformly, as MERL does). A class with no positive example in
the subset is, by ``missing_class``: ``"error"`` (default; says which classes
and what to do), ``"redraw"`` (draw again with the same generator until every
class has one) or ``"keep"`` (train anyway: the head learns "never", MERL's
behaviour).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ecgtext.evaluation.datasets.base import SPLITS, LabelledDataset, record_id
from ecgtext.errors import ConfigError, DataError, ModelError
from ecgtext.evaluation.metrics import auroc_per_class, best_f1_threshold, evaluate_scores, macro, skip_reason

if TYPE_CHECKING:  # pragma: no cover
    from ecgtext.evaluation.datasets.features import DatasetFeatures

HEADS = ("linear", "sklearn")
MISSING_CLASS = ("error", "redraw", "keep")
HEAD_WEIGHTS = "head.safetensors"
HEAD_CONFIG = "head.json"
_REDRAWS = 1000


@dataclass
class ProbeConfig:
    """Hyper-parameters of one probing run (defaults: the published protocol)."""

    fraction: float = 1.0
    seeds: tuple[int, ...] = (0,)
    head: str = "linear"
    epochs: int = 100
    lr: float = 1e-3
    batch_size: int = 16
    weight_decay: float = 0.0
    missing_class: str = "error"
    C_grid: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)

    def __post_init__(self):
        if not (0.0 < self.fraction <= 1.0):
            raise ConfigError(f"--fraction must be in (0, 1], got {self.fraction}")
        if self.head not in HEADS:
            raise ConfigError(f"unknown head {self.head!r}; expected one of {', '.join(HEADS)}")
        if self.missing_class not in MISSING_CLASS:
            raise ConfigError(f"unknown --missing-class {self.missing_class!r}; expected one of {', '.join(MISSING_CLASS)}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("epochs and batch size must be >= 1 and the learning rate > 0")
        self.seeds = tuple(int(s) for s in self.seeds)
        if not self.seeds:
            raise ConfigError("give at least one seed")

    def as_dict(self) -> dict[str, Any]:
        d = {"type": self.head, "missing_class": self.missing_class}
        if self.head == "linear":
            d.update({"optimizer": "adam", "lr": self.lr, "batch_size": self.batch_size, "epochs": self.epochs,
                      "weight_decay": self.weight_decay, "loss": "bce_with_logits",
                      "selection": "best validation macro AUROC"})
        else:
            d.update({"estimator": "one-vs-rest LogisticRegression (lbfgs)", "C_grid": list(self.C_grid),
                      "selection": "C with the best validation macro AUROC"})
        return d


# --------------------------------------------------------------------------- the head
@dataclass
class LinearHead:
    """``p = sigmoid(x @ weight.T + bias)``, per-class thresholds, and where it came from.

    ``weight``: (C, D) float32; ``bias``: (C,); ``thresholds``: (C,) probability
    cut-offs (NaN: no positive example in validation, 0.5 used to predict).
    """

    weight: np.ndarray
    bias: np.ndarray
    classes: list[str]
    thresholds: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.weight.shape[1])

    def logits(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise ConfigError(f"features have dimension {X.shape[-1]}, the head expects {self.dim} "
                              "(features from a different model?)")
        return X @ self.weight.T + self.bias

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(N, C) probabilities for (N, D) features."""
        z = self.logits(X).astype(np.float64)
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)

    def decide(self, P: np.ndarray) -> np.ndarray:
        """(N, C) bool: probability >= the class's validation threshold (0.5 where it has none)."""
        thr = np.where(np.isnan(self.thresholds), 0.5, self.thresholds)
        return P >= thr[None, :]

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write ``head.safetensors`` (weight, bias) and ``head.json`` (classes, thresholds, provenance)."""
        from safetensors.numpy import save_file

        from ecgtext.fsutil import atomic_path, atomic_write_text

        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        with atomic_path(d / HEAD_WEIGHTS) as tmp:
            save_file({"weight": np.ascontiguousarray(self.weight, np.float32),
                       "bias": np.ascontiguousarray(self.bias, np.float32)}, str(tmp))
        cfg = {"format": "ecgtext-linear-head", "version": 1, "classes": self.classes,
               "thresholds": [None if np.isnan(t) else float(t) for t in self.thresholds],
               "feature_dim": self.dim, **self.info}
        atomic_write_text(d / HEAD_CONFIG, json.dumps(cfg, indent=2) + "\n")
        return d

    @classmethod
    def load(cls, head_dir: str | os.PathLike) -> "LinearHead":
        """Read a head saved by :meth:`save`; anything inconsistent is a :class:`ModelError`."""
        from safetensors.numpy import load_file

        d = Path(head_dir)
        cfg_path, w_path = d / HEAD_CONFIG, d / HEAD_WEIGHTS
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise ModelError(f"{p}: not found (a head directory holds {HEAD_CONFIG} and {HEAD_WEIGHTS}, "
                                 "written by ecgtext probe --save-head)")
        try:
            cfg = json.loads(cfg_path.read_text())
            t = load_file(str(w_path))
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"{d}: cannot read head ({type(exc).__name__})") from None
        W, b = t.get("weight"), t.get("bias")
        classes = cfg.get("classes")
        if W is None or b is None or not isinstance(classes, list):
            raise ModelError(f"{d}: head files lack weight/bias/classes")
        if W.shape != (len(classes), cfg.get("feature_dim", W.shape[1])) or b.shape != (len(classes),):
            raise ModelError(f"{d}: weight {W.shape} / bias {b.shape} do not match {len(classes)} classes")
        thr = np.array([np.nan if v is None else float(v) for v in cfg.get("thresholds", [None] * len(classes))],
                       dtype=np.float64)
        if thr.shape != (len(classes),):
            raise ModelError(f"{d}: {len(thr)} thresholds for {len(classes)} classes")
        info = {k: v for k, v in cfg.items() if k not in ("classes", "thresholds", "feature_dim", "format", "version")}
        return cls(weight=W.astype(np.float32), bias=b.astype(np.float32), classes=[str(c) for c in classes],
                   thresholds=thr, info=info)


# --------------------------------------------------------------------------- training
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
                        f"({n} records); use --missing-class keep (train anyway), or drop the class from "
                        "the dataset")
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
                            f"(last missing: {', '.join(missing)}); use a larger --fraction or --missing-class keep")
        raise DataError(f"class(es) {', '.join(missing)} have no positive example in {where}; use a larger "
                        "--fraction, --missing-class redraw (draw the subset again with the same seed) or "
                        "--missing-class keep (train anyway; MERL's protocol)")


# --------------------------------------------------------------------------- one run
@dataclass
class ProbeResult:
    """The JSON report plus what tests and plots need: test scores per seed and the heads."""

    report: dict[str, Any]
    heads: list[LinearHead]
    test_keys: list[str]
    Y_test: np.ndarray
    P_test: list[np.ndarray]  # one (N_test, C) probability matrix per seed
    subsets: dict[int, np.ndarray]  # seed -> dataset rows of the training subset


def fit_probe(feats: "DatasetFeatures", config: ProbeConfig | None = None, *,
              model: dict[str, Any] | None = None) -> ProbeResult:
    """Run the probing protocol on aligned features (see :func:`dataset_features`).

    Returns per-class test AUROC and F1 (at validation thresholds), macro
    averages, and mean +- std over seeds (see :func:`ProbeResult`).
    """
    cfg = config or ProbeConfig()
    ds, X = feats.dataset, feats.X
    model = model if model is not None else feats.model
    counts = ds.counts()
    if counts["train"] == 0:
        raise DataError(f"{ds.root}: dataset {ds.label} has no training split "
                        f"({'test only: use --zeroshot' if ds.name == 'code15' else 'give a split file'})")
    if counts["test"] == 0:
        raise DataError(f"{ds.root}: dataset {ds.label} has no test split")
    tr, va, te = (ds.indices(s) for s in SPLITS)
    if len(va) == 0:
        raise DataError(f"{ds.root}: dataset {ds.label} has no validation split (needed to select the "
                        "epoch / C and the thresholds)")
    runs, heads, P_tests, subsets = [], [], [], {}
    for seed in cfg.seeds:
        rows, missing, draws = draw_subset(tr, ds.Y, ds.classes, cfg.fraction, seed, cfg.missing_class)
        subsets[seed] = rows
        if cfg.head == "linear":
            W, b, info = train_linear(X[rows], ds.Y[rows], X[va], ds.Y[va], epochs=cfg.epochs, lr=cfg.lr,
                                      batch_size=cfg.batch_size, weight_decay=cfg.weight_decay, seed=seed)
        else:
            W, b, info = train_sklearn(X[rows], ds.Y[rows], X[va], ds.Y[va], C_grid=cfg.C_grid, seed=seed)
        head = LinearHead(weight=W, bias=b, classes=list(ds.classes),
                          thresholds=np.full(len(ds.classes), np.nan))
        P_va = head.predict_proba(X[va])
        head.thresholds = np.array([best_f1_threshold(ds.Y[va, j], P_va[:, j])[0]
                                    for j in range(len(ds.classes))])
        P_te = head.predict_proba(X[te])
        ev = evaluate_scores(ds.Y[te], P_te, ds.classes, head.thresholds)
        runs.append({"seed": seed, "n_train": int(len(rows)), "draws": draws,
                     "classes_without_train_positive": missing, **info,
                     "macro_auroc": ev["macro_auroc"], "macro_f1": ev["macro_f1"],
                     "per_class": {c: {"auroc": v["auroc"], "f1": v["f1"], "threshold": v["threshold"]}
                                   for c, v in ev["per_class"].items()}})
        head.info = {"dataset": ds.label, "fraction": cfg.fraction, "seed": seed, "head": cfg.as_dict(),
                     "model": model, "val_macro_auroc": info.get("val_macro_auroc")}
        heads.append(head)
        P_tests.append(P_te)
    report = _combine(ds, runs, cfg, model, feats)
    return ProbeResult(report=report, heads=heads, test_keys=[ds.keys[i] for i in te], Y_test=ds.Y[te],
                       P_test=P_tests, subsets=subsets)


def _mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    v = np.array([x for x in values if x is not None], dtype=np.float64)
    if not v.size:
        return None, None
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def _combine(ds: LabelledDataset, runs: list[dict], cfg: ProbeConfig, model, feats) -> dict[str, Any]:
    te = ds.indices("test")
    first = runs[0]
    per_class, skipped, reasons = {}, [], {}
    for j, c in enumerate(ds.classes):
        why = skip_reason(ds.Y[te, j])
        if why:
            skipped.append(c)
            reasons[c] = why
        auc_m, auc_s = _mean_std([r["per_class"][c]["auroc"] for r in runs])
        f1_m, f1_s = _mean_std([r["per_class"][c]["f1"] for r in runs])
        entry = {"auroc": auc_m, "f1": f1_m, "threshold": first["per_class"][c]["threshold"],
                 "n_pos": int(ds.Y[te, j].sum()), "n_pos_train": int(ds.Y[ds.indices("train"), j].sum())}
        if len(runs) > 1:
            entry.update({"auroc_std": auc_s, "f1_std": f1_s})
        per_class[c] = entry
    mac_m, mac_s = _mean_std([r["macro_auroc"] for r in runs])
    f1m_m, f1m_s = _mean_std([r["macro_f1"] for r in runs])
    return {
        "mode": "linear-probe", "dataset": ds.name, "task": ds.task, "fraction": cfg.fraction,
        "seeds": list(cfg.seeds), "classes": list(ds.classes), "n_train": first["n_train"],
        "n_train_split": int(len(ds.indices("train"))), "n_val": int(len(ds.indices("val"))),
        "n_test": int(len(te)), "per_class": per_class, "macro_auroc": mac_m, "macro_auroc_std": mac_s,
        "macro_f1": f1m_m, "macro_f1_std": f1m_s, "skipped_classes": skipped, "skipped_reasons": reasons,
        "metric_units": "AUROC and F1 as fractions in [0, 1]; F1 at per-class thresholds chosen on validation",
        "head": cfg.as_dict(), "model": model, "features": feats.report(),
        "dataset_meta": _jsonable(ds.meta), "split_file": None, "runs": runs,
    }


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


# --------------------------------------------------------------------------- outputs
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


def write_predictions(result: ProbeResult, classes: Sequence[str], path: str | os.PathLike) -> str:
    """``predictions.csv``: per test record and seed, labels and probabilities per class."""
    import pandas as pd

    from ecgtext.fsutil import atomic_path

    frames = []
    for seed, P in zip(result.report["seeds"], result.P_test):
        df = pd.DataFrame({"key": result.test_keys, "seed": seed})
        for j, c in enumerate(classes):
            df[f"y_{c}"] = result.Y_test[:, j]
        for j, c in enumerate(classes):
            df[f"p_{c}"] = P[:, j]
        frames.append(df)
    with atomic_path(path) as tmp:
        pd.concat(frames, ignore_index=True).to_csv(tmp, index=False, float_format="%.7g")
    return os.fspath(path)


def save_outputs(result: ProbeResult, ds: LabelledDataset, out_dir: str | os.PathLike, *,
                 save_head: str | os.PathLike | None = None, plot: str | os.PathLike | None = None) -> dict[str, str]:
    """Write ``splits.csv``, ``predictions.csv``, ``result.json`` (and a head / ROC plot) to ``out_dir``."""
    from ecgtext.fsutil import atomic_write_text
    from ecgtext.plot import plot_roc

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"split_file": write_splits(ds, out / "splits.csv", result.subsets),
             "predictions": write_predictions(result, ds.classes, out / "predictions.csv")}
    if save_head is not None:
        files["head"] = str(result.heads[0].save(save_head))
    if plot is not None:
        files["plot"] = plot_roc(result.Y_test, result.P_test[0], ds.classes, str(plot),
                                 title=f"{ds.label}, {100 * result.report['fraction']:g} % labels")
    files["result"] = str(out / "result.json")
    result.report["split_file"] = files["split_file"]
    result.report["outputs"] = files
    atomic_write_text(out / "result.json", json.dumps(result.report, indent=2, allow_nan=False) + "\n")
    return files


# --------------------------------------------------------------------------- entry points
def run_probe(ds: LabelledDataset, config: ProbeConfig | None = None, *,
              features: str | os.PathLike | None = None, model_source: str | None = None,
              read_options=None, embed_batch_size: int = 32, num_workers: int = 0, device: str | None = None,
              precision: str = "auto", out_dir: str | os.PathLike | None = None, save_head: str | os.PathLike | None = None,
              plot: str | os.PathLike | None = None) -> ProbeResult:
    """Features (read from ``features`` or computed with ``model_source``) -> :func:`fit_probe`
    -> outputs in ``out_dir`` (``splits.csv``, ``predictions.csv``, ``result.json``)."""
    from ecgtext.evaluation.datasets.features import dataset_features

    cfg = config or ProbeConfig()
    if ds.counts()["train"] == 0:  # fail before spending minutes on features
        raise DataError(f"{ds.root}: dataset {ds.label} has no training split "
                        f"({'test only: use --zeroshot' if ds.name == 'code15' else 'give a split file'})")
    model = None
    if features is None:
        from ecgtext.inference.engine import load_ecg_model

        model = load_ecg_model(model_source or "dbeta-base", device=device)
    feats = dataset_features(ds, features=features, model=model, model_source=model_source,
                             read_options=read_options, batch_size=embed_batch_size, num_workers=num_workers,
                             device=device, precision=precision)
    provenance = dict(feats.model or {})
    if model_source is not None:  # lets --predict find the model of a head trained on --features
        provenance.setdefault("source", str(model_source))
    result = fit_probe(feats, cfg, model=provenance or None)
    if out_dir is not None:
        save_outputs(result, feats.dataset, out_dir, save_head=save_head, plot=plot)
    elif save_head is not None or plot is not None:
        from ecgtext.plot import plot_roc

        if save_head is not None:
            result.heads[0].save(save_head)
        if plot is not None:
            plot_roc(result.Y_test, result.P_test[0], feats.dataset.classes, str(plot))
    return result


def _same_model(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool | None:
    """Whether two provenance records name the same weights; ``None`` when unknown."""
    if not a or not b:
        return None
    ha = a.get("weights_sha256") or a.get("model_sha256")
    hb = b.get("weights_sha256") or b.get("model_sha256")
    if ha and hb:
        return ha == hb
    return None


def predict_records(head_dir: str | os.PathLike, paths: Sequence[str], *, model_source: str | None = None,
                    features: str | os.PathLike | None = None, read_options=None, batch_size: int = 32,
                    num_workers: int = 0, device: str | None = None, precision: str = "auto"
                    ) -> tuple[list[dict[str, Any]], list[str], LinearHead]:
    """Apply a saved head to records: per record ``{"path", "labels", "probabilities"}``.

    Features come from ``features`` (an embed Parquet file; ``paths`` then
    filter it, empty = all rows) or from the model the head was trained on
    (``model_source`` overrides; different weights are a :class:`ModelError`).
    Returns (rows, one-line errors for records that failed, the head).
    """
    from ecgtext.evaluation.datasets.features import model_info, read_feature_parquet

    head = LinearHead.load(head_dir)
    trained_on = head.info.get("model") or {}
    errors: list[str] = []
    if features is not None:
        table = read_feature_parquet(features)
        if _same_model(trained_on, table.model) is False:
            raise ModelError(f"{features}: features come from {table.model.get('id') or table.model.get('name')}, "
                             f"the head was trained on {trained_on.get('id') or trained_on.get('name')}")
        if paths:
            from ecgtext.evaluation.datasets.base import record_path_key

            pos = {record_path_key(k): i for i, k in enumerate(table.keys)}
            idx, keys = [], []
            for p in paths:
                i = pos.get(record_path_key(p))
                if i is None:
                    errors.append(f"{p}: no row in {features}")
                else:
                    idx.append(i)
                    keys.append(table.keys[i])
            X = table.X[idx] if idx else np.zeros((0, table.dim), np.float32)
        else:
            X, keys = table.X, table.keys
    else:
        from ecgtext.inference.engine import embed_paths, load_ecg_model

        source = model_source or trained_on.get("source") or trained_on.get("model_dir")
        if not source:
            raise ModelError(f"{head_dir}: the head does not record its model; pass --model")
        model = load_ecg_model(source, device=device)
        if _same_model(trained_on, model_info(model, source)) is False:
            raise ModelError(f"{source}: these weights differ from those the head was trained on "
                             f"({trained_on.get('id') or trained_on.get('name')})")
        X, keys, errs = embed_paths(list(paths), model, read_options, batch_size=batch_size,
                                    num_workers=num_workers, device=device, precision=precision)
        errors.extend(str(e) for e in errs)
    P = head.predict_proba(X) if len(X) else np.zeros((0, len(head.classes)), np.float32)
    decided = head.decide(P)
    rows = [{"path": k, "labels": [c for c, d in zip(head.classes, decided[i]) if d],
             "probabilities": {c: float(P[i, j]) for j, c in enumerate(head.classes)}}
            for i, k in enumerate(keys)]
    return rows, errors, head
