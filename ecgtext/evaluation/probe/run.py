"""One probe run (fit on a subset, select on validation, test) and the protocol over fractions and seeds.

Linear probing: a linear head on frozen ECG features, trained on 1 / 10 / 100 % of a
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

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from ecgtext.errors import DataError
from ecgtext.evaluation.datasets.base import SPLITS, LabelledDataset
from ecgtext.evaluation.metrics import (
    best_f1_threshold,
    evaluate_scores,
    skip_reason,
)

if TYPE_CHECKING:  # pragma: no cover
    from ecgtext.evaluation.datasets.features import DatasetFeatures
from ecgtext.evaluation.probe.config import ProbeConfig
from ecgtext.evaluation.probe.head import LinearHead
from ecgtext.evaluation.probe.outputs import save_outputs
from ecgtext.evaluation.probe.result import ProbeResult
from ecgtext.evaluation.probe.subsets import draw_subset
from ecgtext.evaluation.probe.train import train_linear, train_sklearn
from ecgtext.evaluation.reports import _jsonable


def _no_training_split(ds: LabelledDataset) -> DataError:
    test_only = ds.name == "code15"
    return DataError(f"{ds.root}: dataset {ds.label} has no training split "
                     f"({'a test set only: evaluate it zero-shot' if test_only else 'give a split file'})",
                     path=str(ds.root), field="split", option="zeroshot" if test_only else "split_file")


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
        raise _no_training_split(ds)
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


def run_probe(ds: LabelledDataset, config: ProbeConfig | None = None, *,
              features: str | os.PathLike | None = None, model_source: str | None = None,
              read_options=None, embed_batch_size: int = 32, num_workers: int = 0, device: str | None = None,
              precision: str = "auto", out_dir: str | os.PathLike | None = None, save_head: str | os.PathLike | None = None,
              plot: str | os.PathLike | None = None, force: bool = False, allow_missing: bool = False) -> ProbeResult:
    """Features (read from ``features`` or computed with ``model_source``) -> :func:`fit_probe`
    -> outputs in ``out_dir`` (``splits.csv``, ``predictions.csv``, ``result.json``).

    Saved ``features`` given together with ``model_source`` must come from those
    weights with the same preprocessing (and precision, when one is asked for
    instead of ``auto``): otherwise a :class:`~ecgtext.errors.ProvenanceError`
    unless ``force``. Test records without features are an error unless
    ``allow_missing``.
    """
    from ecgtext.evaluation.datasets.features import dataset_features

    cfg = config or ProbeConfig()
    if ds.counts()["train"] == 0:  # fail before spending minutes on features
        raise _no_training_split(ds)
    model = None
    if features is None:
        from ecgtext.inference.engine import load_ecg_model

        model = load_ecg_model(model_source or "dbeta-base", device=device)
    expect, fields = None, ("weights_sha256", "preprocess")
    if features is not None and model_source is not None:
        from ecgtext.inference.engine import resolve_device
        from ecgtext.inference.provenance import provenance_of_source

        expect = provenance_of_source(model_source, device=resolve_device(device), precision=precision)
        if precision != "auto":  # no features are computed here: compare precision only when asked for
            fields += ("precision",)
    feats = dataset_features(ds, features=features, model=model, model_source=model_source,
                             read_options=read_options, batch_size=embed_batch_size, num_workers=num_workers,
                             device=device, precision=precision, expect=expect, expect_fields=fields,
                             force=force, allow_missing=allow_missing)
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
