"""Dataset-level zero-shot evaluation: per-class and macro AUROC on a dataset's test split.

Scores are those of ``ecgtext zeroshot``: the raw dot product of each record's
unimodal ECG feature with the unimodal text feature of its class's lower-cased
description (:func:`ecgtext.zeroshot.score`, ``how="raw"``). The report has the
shape of ``ecgtext probe``'s. A dataset class without a description in the
label set is skipped and reported; so is a class without positives (or
negatives) in the split. Descriptions are looked up by class name; a
Challenge class named ``"CRBBB|RBBB"`` matches a label named ``CRBBB`` or ``RBBB``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ecgtext.errors import ConfigError, DataError, ProvenanceError
from ecgtext.evaluation.datasets.base import LabelledDataset
from ecgtext.evaluation.metrics import evaluate_scores

if TYPE_CHECKING:  # pragma: no cover
    from ecgtext.io import ReadOptions
    from ecgtext.model.dbeta import DBeta


def match_descriptions(classes: Sequence[str], labels: Mapping[str, str]) -> dict[str, str]:
    """``{class: label code}`` for the classes the label set describes (exact name, then ``A|B`` parts)."""
    out: dict[str, str] = {}
    for c in classes:
        if c in labels:
            out[c] = c
            continue
        for part in c.split("|"):
            if part in labels:
                out[c] = part
                break
    return out


@dataclass
class ZeroShotEvaluation:
    """The JSON report, and the scores behind it (for plots and checks)."""

    report: dict[str, Any]
    keys: list[str]
    Y: np.ndarray  # (N, K) labels of the evaluated classes
    S: np.ndarray  # (N, K) raw scores
    classes: list[str]  # the K evaluated (described) classes


def _label_dict(label_set: str | Mapping[str, str]) -> tuple[dict[str, str], str]:
    if isinstance(label_set, Mapping):
        return dict(label_set), "custom"
    from ecgtext.labels import load_label_set

    return load_label_set(str(label_set)), str(label_set)


def zeroshot_dataset(dataset: LabelledDataset, model: "DBeta | str | os.PathLike",
                     label_set: str | Mapping[str, str], *, split: str = "test",
                     features: str | os.PathLike | None = None, read_options: "ReadOptions | None" = None,
                     batch_size: int = 32, num_workers: int = 0, device: str | None = None,
                     precision: str = "auto", force: bool = False, allow_missing: bool = False
                     ) -> ZeroShotEvaluation:
    """Zero-shot scores and metrics for ``dataset``'s ``split`` (see :func:`evaluate_zeroshot`).

    Saved ``features`` must come from the weights of ``model`` (whose text tower
    scores them): otherwise, or when they record no weights, a
    :class:`~ecgtext.errors.ProvenanceError` unless ``force``. Records of the
    split without features are an error unless ``allow_missing``."""
    from ecgtext.evaluation.datasets.features import dataset_features, model_info
    from ecgtext.inference.zeroshot import label_features, score
    from ecgtext.model.dbeta import DBeta

    labels, label_name = _label_dict(label_set)
    rows = dataset.indices(split)
    if len(rows) == 0:
        raise DataError(f"{dataset.root}: dataset {dataset.label} has no {split} split")
    described = match_descriptions(dataset.classes, labels)
    if not described:
        raise DataError(f"label set {label_name}: none of the dataset's classes "
                        f"({', '.join(dataset.classes[:12])}{', ...' if len(dataset.classes) > 12 else ''}) "
                        "has a description; give a label file with these codes", field="labels",
                        option="labels")
    ecg_model = None
    if features is None:
        if isinstance(model, DBeta):
            ecg_model = model
        else:
            from ecgtext.inference.engine import load_ecg_model

            ecg_model = load_ecg_model(model, device=device)
    feats = dataset_features(dataset, features=features, model=ecg_model,
                             model_source=None if isinstance(model, DBeta) else str(model),
                             read_options=read_options, rows=rows, batch_size=batch_size,
                             num_workers=num_workers, device=device, precision=precision,
                             allow_missing=allow_missing)
    ds = feats.dataset
    classes = [c for c in ds.classes if c in described]
    texts = {described[c]: labels[described[c]] for c in classes}
    text_feats = label_features(model, texts)  # (K', D) from the disk cache when possible
    codes = list(texts)
    T = text_feats.numpy()[[codes.index(described[c]) for c in classes]]
    if T.shape[1] != feats.X.shape[1]:
        raise ConfigError(f"text features have size {T.shape[1]}, the ECG features {feats.X.shape[1]} "
                          "(features from a different model?)")
    text_model = model_info(model) if isinstance(model, DBeta) else _source_info(model)
    ecg_sha = (feats.model or {}).get("weights_sha256")
    if ecg_sha != text_model.get("weights_sha256") and not force:
        if ecg_sha is None:
            raise ProvenanceError(f"{feats.source}: the ECG features record no weights, so they cannot be "
                                  f"checked against {text_model.get('id')}'s text features", path=feats.source,
                                  field="provenance", option="force")
        raise ProvenanceError(f"ECG features come from {feats.model.get('id')}, text features from "
                              f"{text_model.get('id')}: both must come from the same weights",
                              path=feats.source, field="weights_sha256",
                              value=(ecg_sha, text_model.get("weights_sha256")), option="force")
    S = score(feats.X, T, how="raw")
    cols = [ds.classes.index(c) for c in classes]
    Y = ds.Y[:, cols]
    ev = evaluate_scores(Y, S, classes, split=split)
    per_class, reasons = {}, {}
    for j, c in enumerate(ds.classes):
        if c in ev["per_class"]:
            per_class[c] = ev["per_class"][c]
            if c in ev["skipped_reasons"]:
                reasons[c] = ev["skipped_reasons"][c]
        else:
            per_class[c] = {"auroc": None, "f1": None, "threshold": None, "n_pos": int(ds.Y[:, j].sum())}
            reasons[c] = f"no description in label set {label_name}"
    counts = dataset.counts()
    report = {
        "mode": "zero-shot", "dataset": ds.name, "task": ds.task, "split": split, "label_set": label_name,
        "fraction": None, "seeds": None, "classes": list(ds.classes), "n_train": 0,
        "n_val": counts["val"], "n_test": len(ds), "per_class": per_class, "macro_auroc": ev["macro_auroc"],
        "macro_f1": None, "skipped_classes": [c for c in ds.classes if c in reasons], "skipped_reasons": reasons,
        "metric_units": "AUROC as a fraction in [0, 1]; no F1 (zero-shot has no validation thresholds)",
        "scoring": "raw dot product of unimodal ECG and lower-cased description features",
        "descriptions": {c: labels[described[c]] for c in classes},
        "model": feats.model or text_model, "features": feats.report(),
        "dataset_meta": json.loads(json.dumps(ds.meta, default=str)), "split_file": None,
    }
    return ZeroShotEvaluation(report=report, keys=list(ds.keys), Y=Y, S=S, classes=classes)


def _source_info(source: Any) -> dict[str, Any]:
    """Identity of the model whose text tower scores (never a blank: the same-weights check needs it)."""
    from ecgtext.hub.load import resolve_source
    from ecgtext.inference.engine import model_identity

    ident = model_identity(resolve_source(source))
    return {"source": str(source), "name": ident.name, "weights_sha256": ident.weights_sha256,
            "id": ident.short(), "model_dir": ident.model_dir}


def evaluate_zeroshot(dataset: LabelledDataset, model: "DBeta | str | os.PathLike",
                      label_set: str | Mapping[str, str], **kwargs: Any) -> dict[str, Any]:
    """Zero-shot per-class and macro AUROC on ``dataset``'s test split, as a JSON-ready dict.

    ``model`` is a loaded model (with its text tower, or a model directory /
    registry name); ``label_set`` a built-in name, a JSON file or a dict
    ``{code: description}``. Keyword options: ``split``, ``features`` (an embed
    Parquet file instead of running the ECG encoder), ``read_options``,
    ``batch_size``, ``num_workers``, ``device``, ``precision``.
    """
    return zeroshot_dataset(dataset, model, label_set, **kwargs).report


def save_zeroshot_outputs(ev: ZeroShotEvaluation, dataset: LabelledDataset, out_dir: str | os.PathLike, *,
                          plot: str | os.PathLike | None = None) -> dict[str, str]:
    """Write ``splits.csv``, ``scores.csv`` and ``result.json`` (and a ROC plot) to ``out_dir``."""
    import pandas as pd

    from ecgtext.evaluation.reports import write_splits
    from ecgtext.fsutil import atomic_path, atomic_write_text
    from ecgtext.plot import plot_roc

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"split_file": write_splits(dataset, out / "splits.csv")}
    df = pd.DataFrame({"key": ev.keys})
    for j, c in enumerate(ev.classes):
        df[f"y_{c}"] = ev.Y[:, j]
    for j, c in enumerate(ev.classes):
        df[f"s_{c}"] = ev.S[:, j]
    with atomic_path(out / "scores.csv") as tmp:
        df.to_csv(tmp, index=False, float_format="%.7g")
    files["scores"] = str(out / "scores.csv")
    if plot is not None:
        files["plot"] = plot_roc(ev.Y, ev.S, ev.classes, str(plot), title=f"zero-shot {ev.report['dataset']}")
    files["result"] = str(out / "result.json")
    ev.report["split_file"] = files["split_file"]
    ev.report["outputs"] = files
    atomic_write_text(out / "result.json", json.dumps(ev.report, indent=2, allow_nan=False) + "\n")
    return files


def run_zeroshot_evaluation(dataset: LabelledDataset, model: "DBeta | str | os.PathLike",
                            label_set: str | Mapping[str, str], *, out_dir: str | os.PathLike | None = None,
                            plot: str | os.PathLike | None = None, **kwargs: Any) -> ZeroShotEvaluation:
    """:func:`zeroshot_dataset`, then its outputs in ``out_dir`` (``ecgtext probe --zeroshot``)."""
    ev = zeroshot_dataset(dataset, model, label_set, **kwargs)
    if out_dir is not None:
        save_zeroshot_outputs(ev, dataset, out_dir, plot=plot)
    elif plot is not None:
        from ecgtext.plot import plot_roc

        plot_roc(ev.Y, ev.S, ev.classes, str(plot), title=f"zero-shot {ev.report['dataset']}")
    return ev
