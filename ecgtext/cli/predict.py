"""``ecgtext predict``: classify ECG files with a linear-probe head saved by ``ecgtext probe --save-head``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .options import (
    DeviceOption,
    NumWorkersOption,
    PathsArgument,
    Precision,
    PrecisionOption,
    with_read_options,
)
from .options import (
    ReportFormat as Fmt,
)


@with_read_options
def command(
    paths: PathsArgument,
    head_dir: Annotated[Path, typer.Option(
        "--head-dir", help="A head saved with 'ecgtext probe --save-head DIR'.", show_default=False)],
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="Model directory, registry name or hf-hub:org/repo. Default: the model the "
        "head was trained on.", show_default=False)] = None,
    features: Annotated[Optional[Path], typer.Option(
        "--features", help="Read ECG features from this Parquet file (from 'ecgtext embed') instead of "
        "computing them.", show_default=False)] = None,
    fmt: Annotated[Optional[Fmt], typer.Option(
        "--format", "-f", help="table, json, jsonl or csv. Default: table on a terminal, else jsonl.",
        show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Windows per model batch.")] = 32,
    num_workers: NumWorkersOption = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = Precision.auto,
    force: Annotated[bool, typer.Option(
        "--force", help="Apply the head even to features of other weights, precision or preprocessing than "
        "it was trained on.")] = False,
    *,
    read_options: Any = None,  # ReadOptions, filled in by with_read_options
):
    """Classify ECG files with a saved linear-probe head (labels use the head's validation thresholds).

    Example: ecgtext predict --head-dir head/ rec1.hea rec2.hea --format csv > predictions.csv
    """
    out = (fmt.value if fmt else ("table" if sys.stdout.isatty() else "jsonl"))
    render_predictions(list(paths or []), head_dir, model, features, read_options, out, batch_size,
                       num_workers or 0, device, precision.value, force=force)


def render_predictions(inputs, head_dir, model, features, read_options, fmt: str, batch_size, num_workers, device,
                       precision: str, force: bool = False) -> None:
    """Apply the head, then print rows as ``fmt`` (table, json, jsonl, csv); exit 1 if some records failed."""
    from ecgtext.evaluation.probe import predict_records

    from ..errors import ConfigError

    if not inputs and features is None:
        raise ConfigError("no ECG files to classify (give files, folders or a features Parquet)",
                          option="features")
    paths = inputs
    if inputs:
        from ..io import expand_paths

        paths = expand_paths(inputs)
    rows, errors, head = predict_records(head_dir, paths, model_source=model, features=features,
                                         read_options=read_options, batch_size=batch_size,
                                         num_workers=num_workers, device=device, precision=precision,
                                         force=force)
    for e in errors:
        typer.echo(f"error: {e}", err=True)  # already one line per record
    if fmt == "jsonl":
        for r in rows:
            typer.echo(json.dumps(r))
    elif fmt == "json":
        typer.echo(json.dumps(rows, indent=2))
    elif fmt == "csv":
        import csv

        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(["path", "labels"] + [f"p_{c}" for c in head.classes])
        for r in rows:
            w.writerow([r["path"], ";".join(r["labels"])] + [f"{r['probabilities'][c]:.6f}" for c in head.classes])
    else:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"predictions ({head.info.get('dataset', 'head')}, thresholds from validation)")
        t.add_column("record", overflow="fold")
        t.add_column("labels")
        t.add_column("top probabilities")
        for r in rows:
            top = sorted(r["probabilities"].items(), key=lambda kv: -kv[1])[:3]
            t.add_row(r["path"], ", ".join(r["labels"]) or "-", "  ".join(f"{c} {p:.2f}" for c, p in top))
        Console().print(t)
    if errors and not rows:
        raise typer.Exit(3)
    if errors:
        raise typer.Exit(1)
