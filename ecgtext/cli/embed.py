"""``ecgtext embed``: ECG records -> Parquet file of embeddings (resumable, shardable)."""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .options import (BatchSizeOption, DeviceOption, MinCoverageOption, ModelOption, NumWorkersOption,
                      PathsArgument, Precision, PrecisionOption, with_read_options)


class Aggregate(str, enum.Enum):
    mean = "mean"
    max = "max"
    first = "first"


@with_read_options
def command(
    paths: PathsArgument,
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="The Parquet file to write (a directory of part files with --shard).",
        show_default=False)],
    model: ModelOption = "dbeta-base",
    per_window: Annotated[bool, typer.Option(
        "--per-window", help="One row per model window (with window, start_s) instead of one per record.")] = False,
    aggregate: Annotated[Aggregate, typer.Option(
        "--aggregate", help="How a long record's window embeddings become one row.")] = Aggregate.mean,
    shard: Annotated[Optional[str], typer.Option(
        "--shard", help="i/n: process the i-th of n slices of the sorted inputs and write "
        "OUTPUT/part-i-of-n.parquet (default: RANK/WORLD_SIZE under torchrun).", show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Start again instead of resuming / adding to an existing output.")] = False,
    flush_every: Annotated[int, typer.Option(
        "--flush-every", min=1, help="Records per part file: an interrupted run keeps every complete "
        "part (also flushed every minute).")] = 256,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no summary line.")] = False,
    batch_size: BatchSizeOption = 32,
    num_workers: NumWorkersOption = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = Precision.auto,
    min_coverage: MinCoverageOption = 0.5,
    *,
    read_options=None,  # a ReadOptions, built by with_read_options from the reading options
):
    """Embed ECG records into a Parquet file: one row per record (or window).

    Columns: path, window, start_s, n_windows, fs, duration_s, missing_leads,
    model, embedding (fixed-size list of float32). Running the same command
    again resumes: records already written are skipped, and an interrupted run
    loses at most its last unflushed part. Failed records go to
    OUTPUT-stem.errors.jsonl; exit code 0 = all ok, 1 = some failed.

    Example: find data -name '*.hea' | ecgtext embed - -o emb.parquet
    """
    from ecgtext.inference.embed import parse_shard, run_embed
    from ..errors import InputError
    from ..io import expand_paths
    from .output import Progress, summary_line

    from .logs import STATE

    quiet = quiet or STATE.quiet  # `ecgtext -q embed` and `ecgtext embed -q` alike
    files = expand_paths(paths)
    if not files:
        raise InputError(None, "no ECG records found in the given paths")
    progress = Progress(enabled=not quiet and sys.stderr.isatty())
    failures = []

    def on_record(path, err):
        if err is not None:
            failures.append(err)
            progress.print_error(err)
        progress.advance(failed=err is not None)

    try:
        summary = run_embed(files, model, output, read_options, per_window=per_window,
                            aggregate=aggregate.value, batch_size=batch_size, num_workers=num_workers,
                            device=device, precision=precision.value, shard=parse_shard(shard),
                            overwrite=overwrite, flush_every=flush_every, min_coverage=min_coverage,
                            on_record=on_record, on_start=lambda todo, skipped: progress.start(todo))
    finally:
        progress.stop()
    if not quiet:
        line = f"{summary.output}: {summary_line(summary.written, summary.failed, 'embedded')}"
        if summary.skipped:
            line += f", {summary.skipped} already there"
        if summary.errors_path is not None:
            line += f" (see {summary.errors_path})"
        print(line, file=sys.stderr)
    if summary.failed:
        raise typer.Exit(1)
