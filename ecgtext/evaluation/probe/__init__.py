"""Linear probing: a linear head on frozen ECG features, trained on 1 / 10 / 100 % of a
training split, selected on validation, evaluated on test.

Modules: ``config`` (options), ``head`` (the linear head, save/load), ``train``
(NumPy and scikit-learn trainers), ``subsets`` (training subsets), ``run`` (one
run and the protocol), ``outputs`` (predictions, report), ``predict`` (apply a
saved head to new records).
"""

from __future__ import annotations

from ecgtext.evaluation.probe.config import (
           HEAD_CONFIG,
           HEAD_WEIGHTS,
           HEADS,
           MISSING_CLASS,
           ProbeConfig,
)
from ecgtext.evaluation.probe.head import LinearHead
from ecgtext.evaluation.probe.outputs import save_outputs, write_predictions
from ecgtext.evaluation.probe.predict import predict_records
from ecgtext.evaluation.probe.result import ProbeResult
from ecgtext.evaluation.probe.run import fit_probe, run_probe
from ecgtext.evaluation.probe.subsets import draw_subset
from ecgtext.evaluation.probe.train import train_linear, train_sklearn
from ecgtext.evaluation.reports import write_splits

__all__ = ["HEADS", "HEAD_CONFIG", "HEAD_WEIGHTS", "MISSING_CLASS", "LinearHead", "ProbeConfig", "ProbeResult",
           "draw_subset", "fit_probe", "predict_records", "run_probe", "save_outputs", "train_linear",
           "train_sklearn", "write_predictions", "write_splits"]
