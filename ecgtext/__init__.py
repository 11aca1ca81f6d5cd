"""ecgtext: ECG-text foundation models (D-BETA) for 12-lead ECGs.

The public API is imported lazily so ``import ecgtext`` stays cheap.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "load_model",
    "read_ecg",
    "iter_records",
    "prepare",
    "DBeta",
    "EcgTextError",
    "load_dataset",
    "evaluate_zeroshot",
    "run_zeroshot",
    "run_embed",
    "run_probe",
    "ReadOptions",
    "Ecg",
]

_LAZY = {
    "load_model": ("ecgtext.hub.load", "load_model"),
    "DBeta": ("ecgtext.model.dbeta", "DBeta"),
    "read_ecg": ("ecgtext.io", "read_ecg"),
    "iter_records": ("ecgtext.io", "iter_records"),
    "prepare": ("ecgtext.preprocess", "prepare"),
    "EcgTextError": ("ecgtext.errors", "EcgTextError"),
    "load_dataset": ("ecgtext.evaluation.datasets", "load_dataset"),
    "evaluate_zeroshot": ("ecgtext.evaluation.zeroshot", "evaluate_zeroshot"),
    "run_zeroshot": ("ecgtext.inference.zeroshot", "run_zeroshot"),
    "run_embed": ("ecgtext.inference.embed", "run_embed"),
    "run_probe": ("ecgtext.evaluation.probe", "run_probe"),
    "ReadOptions": ("ecgtext.io", "ReadOptions"),
    "Ecg": ("ecgtext.io", "Ecg"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'ecgtext' has no attribute {name!r}")
