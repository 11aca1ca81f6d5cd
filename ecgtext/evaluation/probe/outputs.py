"""Writing probe outputs: per-record predictions, the report, the ROC plot."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from ecgtext.evaluation.datasets.base import LabelledDataset
from ecgtext.evaluation.probe.result import ProbeResult
from ecgtext.evaluation.reports import write_splits


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
