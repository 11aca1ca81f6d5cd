"""Evaluation: labelled datasets, linear probing, metrics and dataset-level zero-shot.

``datasets`` adapts PTB-XL, CinC 2020/2021, CODE-15 and generic CSV layouts to one
:class:`~ecgtext.evaluation.datasets.LabelledDataset`; ``probe`` trains and applies
linear heads on frozen features; ``zeroshot`` scores a dataset against a label set;
``metrics`` computes AUROC / F1. Names are re-exported lazily.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "load_dataset": "datasets", "LabelledDataset": "datasets",
    "ProbeConfig": "probe", "run_probe": "probe", "fit_probe": "probe", "predict_records": "probe",
    "evaluate_zeroshot": "zeroshot", "zeroshot_dataset": "zeroshot", "run_zeroshot_evaluation": "zeroshot",
    "evaluate_scores": "metrics", "auroc_per_class": "metrics",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
