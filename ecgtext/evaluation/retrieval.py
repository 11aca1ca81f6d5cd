"""Retrieval metrics for ECG-report pairs: R@1, R@5, R@10, median and mean rank, both ways.

For the N pairs of a split, every ECG is scored against all N reports (ECG ->
text) and every report against all N ECGs (text -> ECG) with the zero-shot
score (:func:`ecgtext.inference.zeroshot.score`, raw dot product of the unimodal
features by default). A candidate is **correct** when its report, normalised,
equals the query's (lower-cased as the model sees it, whitespace collapsed,
surrounding punctuation stripped): templated reports ("sinus rhythm. normal
ecg.") are common and every ECG with the same report is an equally right answer.

Queries: every ECG (ECG -> text), and every *distinct* normalised report
(text -> ECG: a template written for 40 records is one query, not 40 identical
ones whose shared ranking would count 40 times). The rank of a query is 1 + the
number of *incorrect* candidates scoring at least as high as its best correct candidate (ties count against the model, so
constant features rank last, not first). ``R@k`` is the fraction of queries
with rank <= k; ``chance`` is the expected R@k of a random ranking with the same
correct sets, ``1 - C(N - c, k) / C(N, k)`` averaged over queries.
"""

from __future__ import annotations

import logging
import os
import re
import unicodedata
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ecgtext.errors import ConfigError, DataError

if TYPE_CHECKING:  # pragma: no cover
    from ecgtext.io import ReadOptions
    from ecgtext.model.dbeta import DBeta

logger = logging.getLogger(__name__)

KS = (1, 5, 10)
MATCHING = ("identical normalised reports count as correct matches (lower-cased, whitespace collapsed, "
            "surrounding punctuation stripped)")
_PUNCT = " \t\n.,;:!?-"


def normalise_report(text: str) -> str:
    """The form reports are compared in: NFKC, lower-case, one space between words, no
    surrounding punctuation (``"Sinus rhythm.  Normal ECG. "`` -> ``"sinus rhythm. normal ecg"``)."""
    t = unicodedata.normalize("NFKC", str(text)).lower()
    return re.sub(r"\s+", " ", t).strip(_PUNCT)


def report_groups(reports: Sequence[str]) -> np.ndarray:
    """(N,) int: pairs with equal normalised reports share a group id."""
    ids: dict[str, int] = {}
    return np.array([ids.setdefault(normalise_report(r), len(ids)) for r in reports], dtype=np.int64)


def first_correct_ranks(queries: np.ndarray, candidates: np.ndarray, q_groups: np.ndarray, c_groups: np.ndarray,
                        how: str = "raw", block: int = 1024) -> np.ndarray:
    """(Nq,) rank of each query's best correct candidate (see the module docstring).

    ``queries`` (Nq, D) and ``candidates`` (Nc, D) features; scores computed
    ``block`` queries at a time (memory ~ block x Nc).
    """
    from ecgtext.inference.zeroshot import score

    if how not in ("raw", "cosine"):
        raise ConfigError(f"retrieval scores are raw or cosine, not {how!r}", field="score", value=how,
                          option="score")
    ranks = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), block):
        S = score(queries[start:start + block], candidates, how).astype(np.float64)  # (b, Nc)
        g = q_groups[start:start + block]
        correct = c_groups[None, :] == g[:, None]
        if not correct.any(axis=1).all():
            raise DataError("a query has no correct candidate (its report is not among the candidates)")
        best = np.where(correct, S, -np.inf).max(axis=1, keepdims=True)
        ranks[start:start + block] = 1 + ((S >= best) & ~correct).sum(axis=1)
    return ranks


def chance_recall(n_correct: np.ndarray, n: int, k: int) -> float:
    """Expected R@k of a uniformly random ranking: mean of ``1 - C(n - c, k) / C(n, k)``."""
    k = min(k, n)
    c = np.asarray(n_correct, dtype=np.float64)
    i = np.arange(k, dtype=np.float64)
    miss = np.prod(np.clip((n - c[:, None] - i[None, :]) / (n - i[None, :]), 0.0, None), axis=1)
    return float(np.mean(1.0 - miss))


def _summary(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    out = {f"R@{k}": float(np.mean(ranks <= k)) for k in ks}
    out["median_rank"] = float(np.median(ranks))
    out["mean_rank"] = float(np.mean(ranks))
    return out


def retrieval_metrics(ecg_feats: np.ndarray, text_feats: np.ndarray, reports: Sequence[str], *,
                      how: str = "raw", ks: Sequence[int] = KS, block: int = 1024) -> dict[str, Any]:
    """R@k, median and mean rank for ECG -> text and text -> ECG over N pairs.

    ``ecg_feats`` (N, D) and ``text_feats`` (N, D) are the unimodal features of
    pair i's ECG and report; ``reports`` the N report texts (for the matching).
    """
    E = np.asarray(ecg_feats, dtype=np.float32)
    T = np.asarray(text_feats, dtype=np.float32)
    n = len(reports)
    if E.shape[0] != n or T.shape[0] != n or E.ndim != 2 or T.shape != E.shape:
        raise ConfigError(f"need N x D ECG and text features for N = {n} reports, got {E.shape} and {T.shape}")
    if n == 0:
        raise DataError("no ECG-report pairs to evaluate")
    g = report_groups(reports)
    sizes = np.bincount(g)
    first = np.unique(g, return_index=True)[1]  # one text query per distinct report
    return {
        "n_pairs": n, "n_candidates": n, "n_distinct_reports": int(len(sizes)), "score": how,
        "n_queries": {"ecg_to_text": n, "text_to_ecg": int(len(sizes))},
        "matching": MATCHING, "rank_definition": "1 + incorrect candidates scoring >= the best correct one",
        "ecg_to_text": _summary(first_correct_ranks(E, T, g, g, how, block), ks),
        "text_to_ecg": _summary(first_correct_ranks(T[first], E, g[first], g, how, block), ks),
        "chance": {"ecg_to_text": {f"R@{k}": chance_recall(sizes[g], n, k) for k in ks},
                   "text_to_ecg": {f"R@{k}": chance_recall(sizes, n, k) for k in ks}},
    }


# --------------------------------------------------------------------------- datasets of pairs
@dataclass
class ReportPairs:
    """ECG records with their reports and a split (``train``/``val``/``test``) each."""

    name: str
    root: str
    keys: list[str]
    reports: list[str]
    split: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def select(self, split: str) -> "ReportPairs":
        rows = np.flatnonzero(self.split == split)
        return ReportPairs(self.name, self.root, [self.keys[i] for i in rows], [self.reports[i] for i in rows],
                           self.split[rows], dict(self.meta))


_PTBXL_FOLDS = {**{f: "train" for f in range(1, 9)}, 9: "val", 10: "test"}


def load_ptbxl_pairs(root: str | os.PathLike, rate: int = 500) -> ReportPairs:
    """PTB-XL records (whose header exists under ``root``) with their ``report`` column;
    folds 1-8 train, 9 val, 10 test (the recommended split)."""
    import pandas as pd

    from ecgtext.evaluation.datasets.base import require_dir, require_file

    r = require_dir(root, "PTB-XL folder")
    db_path = require_file(os.path.join(r, "ptbxl_database.csv"), "PTB-XL label file",
                           "a PTB-XL folder holds ptbxl_database.csv")
    db = pd.read_csv(db_path)
    col = "filename_hr" if int(rate) == 500 else "filename_lr"
    need = {"report", "strat_fold", col}
    if not need <= set(db.columns):
        raise DataError(f"{db_path}: missing column(s) {', '.join(sorted(need - set(db.columns)))}", path=db_path)
    keys, reports, split, missing = [], [], [], 0
    for rep, fold, fname in zip(db.report, db.strat_fold, db[col]):
        hea = os.path.join(r, str(fname) + ".hea")
        if not isinstance(rep, str) or not rep.strip():
            continue
        if not os.path.isfile(hea):
            missing += 1
            continue
        keys.append(hea)
        reports.append(rep)
        split.append(_PTBXL_FOLDS.get(int(fold), "train"))
    if not keys:
        raise DataError(f"{r}: no PTB-XL record with a report and a header file", path=r)
    return ReportPairs("ptbxl", r, keys, reports, np.array(split, dtype=object),
                       {"split_convention": "strat_fold 1-8 train, 9 val, 10 test", "missing_files": missing})


def load_manifest_pairs(manifest: str | os.PathLike, *, path_column: str = "path", report_column: str = "report",
                        split_column: str = "split", data_root: str | None = None) -> ReportPairs:
    """A CSV/Parquet manifest of pairs: record path, report and (optionally) split columns;
    without a split column every pair is a test pair (retrieval trains nothing)."""
    import pandas as pd

    p = os.fspath(manifest)
    if not os.path.isfile(p):
        raise DataError(f"{p}: no such manifest", path=p)
    df = pd.read_parquet(p) if p.lower().endswith((".parquet", ".pq")) else pd.read_csv(p)
    for c, opt in ((path_column, "path_column"), (report_column, "report_column")):
        if c not in df.columns:
            raise DataError(f"{p}: no column {c} (columns: {', '.join(map(str, df.columns[:12]))})", path=p,
                            field="column", value=c, option=opt)
    base = data_root or os.path.dirname(os.path.abspath(p))
    df = df[df[report_column].notna() & (df[report_column].astype(str).str.strip() != "")]
    keys = [k if os.path.isabs(str(k)) else os.path.join(base, str(k)) for k in df[path_column]]
    split = (df[split_column].astype(str).str.lower().str.replace("valid", "val").str.replace("validation", "val")
             .to_numpy(dtype=object) if split_column in df.columns else np.array(["test"] * len(df), dtype=object))
    return ReportPairs("manifest", p, keys, [str(x) for x in df[report_column]], split,
                       {"split_convention": f"column {split_column}" if split_column in df.columns
                        else "no split column: every pair is a test pair"})


@dataclass
class RetrievalEvaluation:
    """The JSON report and the features behind it."""

    report: dict[str, Any]
    keys: list[str]
    ecg: np.ndarray
    text: np.ndarray


def evaluate_retrieval(pairs: ReportPairs, model: "DBeta | str | os.PathLike", *, split: str = "test",
                       how: str = "raw", read_options: "ReadOptions | None" = None, batch_size: int = 32,
                       num_workers: int = 0, device=None, precision: str = "auto",
                       model_info: dict[str, Any] | None = None) -> RetrievalEvaluation:
    """Embed the ``split`` pairs' ECGs and reports with ``model`` and compute :func:`retrieval_metrics`.

    Records that cannot be read are left out (and counted); their reports too.
    """
    import torch

    from ecgtext.evaluation.datasets.features import model_info as _model_info
    from ecgtext.hub.load import load_model
    from ecgtext.inference.engine import embed_paths
    from ecgtext.model.dbeta import DBeta

    sub = pairs.select(split)
    if not sub.keys:
        raise DataError(f"{pairs.root}: no {split} pairs", path=pairs.root)
    from ecgtext.inference.engine import resolve_device

    net = model if isinstance(model, DBeta) else load_model(model, device=resolve_device(device), components="all")
    E, ok, errs = embed_paths(sub.keys, net, read_options, batch_size=batch_size, num_workers=num_workers,
                              device=device, precision=precision)
    pos = {k: i for i, k in enumerate(sub.keys)}
    reports = [sub.reports[pos[k]] for k in ok]
    if not reports:
        raise DataError(f"{pairs.root}: no {split} record could be read"
                        + (f"; first error: {errs[0]}" if errs else ""), path=pairs.root)
    with torch.inference_mode():
        T = net.encode_texts(reports, lowercase=True).float().cpu().numpy()
    metrics = retrieval_metrics(E, T, reports, how=how)
    info = model_info if model_info is not None else _model_info(net, None if isinstance(model, DBeta) else str(model))
    report = {"mode": "retrieval", "dataset": pairs.name, "task": "retrieval", "split": split,
              "n_test": metrics["n_pairs"], **metrics, "model": info,
              "features": {"source": "computed", "dim": int(E.shape[1]), "n_missing": len(errs),
                           "errors": [str(e) for e in errs[:20]], "notes": []},
              "dataset_meta": pairs.meta,
              "metric_units": "R@k as fractions in [0, 1]; ranks 1 = best; N candidates = n_candidates"}
    return RetrievalEvaluation(report=report, keys=list(ok), ecg=E, text=T)


def run_retrieval_evaluation(pairs: ReportPairs, model: "DBeta | str | os.PathLike", *,
                             out_dir: str | os.PathLike | None = None, **kwargs: Any) -> dict[str, Any]:
    """:func:`evaluate_retrieval`, its report written to ``out_dir/result.json`` (``ecgtext probe --task retrieval``)."""
    report = evaluate_retrieval(pairs, model, **kwargs).report
    if out_dir is not None:
        import json
        from pathlib import Path

        from ecgtext.evaluation.reports import _jsonable
        from ecgtext.fsutil import atomic_write_text

        Path(out_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(out_dir) / "result.json", json.dumps(_jsonable(report), indent=2) + "\n")
        report["outputs"] = {"result": str(Path(out_dir) / "result.json")}
    return report


def load_report_pairs(kind: str, inputs: Sequence[str], *, rate: int = 500, path_column: str | None = None,
                      report_column: str | None = None, data_root: str | None = None) -> ReportPairs:
    """ECG-report pairs of a dataset layout: ``ptbxl`` (its ``report`` column) or ``generic``
    (a manifest with record path, report and optional split columns)."""
    if not inputs:
        raise ConfigError("give the dataset folder (or manifest file)")
    if kind == "ptbxl":
        return load_ptbxl_pairs(inputs[0], rate)
    if kind == "generic":
        if len(inputs) > 1:
            raise ConfigError(f"retrieval takes one manifest, got {len(inputs)}")
        return load_manifest_pairs(inputs[0], path_column=path_column or "path",
                                   report_column=report_column or "report", data_root=data_root)
    raise DataError(f"dataset layout {kind} has no reports; retrieval needs ptbxl or a generic manifest "
                    "with a report column", field="dataset", value=kind, option="dataset")
