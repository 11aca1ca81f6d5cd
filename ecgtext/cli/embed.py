"""``ecgtext embed``: ECG records -> Parquet file of embeddings (resumable, shardable)."""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .options import (
    BatchSizeOption,
    DeviceOption,
    MinCoverageOption,
    ModelOption,
    NumWorkersOption,
    Precision,
    PrecisionOption,
    with_read_options,
)


class Aggregate(str, enum.Enum):
    mean = "mean"
    max = "max"
    first = "first"


class Engine(str, enum.Enum):
    local = "local"
    ray = "ray"


SCALE = "Scaling"


@with_read_options
def command(
    paths: Annotated[Optional[list[str]], typer.Argument(
        help="ECG files, folders (searched recursively), globs, or '-' to read paths from stdin "
        "(none with --texts).", show_default=False)] = None,
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="The Parquet file to write (a directory of part files with --shard).",
        show_default=False)] = ...,
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
    texts: Annotated[Optional[Path], typer.Option(
        "--texts", rich_help_panel="Text embeddings",
        help="Embed report texts instead of ECGs: a CSV, TSV, Parquet or JSON-lines table; writes "
        "unimodal text features (source_row, text, model, embedding) for 'ecgtext index' / 'search'.",
        show_default=False)] = None,
    text_column: Annotated[str, typer.Option(
        "--text-column", rich_help_panel="Text embeddings", help="The column of --texts holding the text.")] = "report",
    id_column: Annotated[Optional[str], typer.Option(
        "--id-column", rich_help_panel="Text embeddings",
        help="A column of --texts copied next to each text (e.g. a report or study id).", show_default=False)] = None,
    engine: Annotated[Engine, typer.Option(
        "--engine", rich_help_panel=SCALE, help="local: this process (or one per torchrun rank); ray: a Ray "
        "Data pipeline on this machine or a cluster, writing OUTPUT/part-*.parquet (pip install "
        "'ecgtext[ray]'). Inputs may include Parquet/CSV manifests with a 'path' column.")] = Engine.local,
    ray_address: Annotated[Optional[str], typer.Option(
        "--ray-address", rich_help_panel=SCALE, help="Join this Ray cluster (host:port, ray://host:port or "
        "auto) instead of starting a local Ray instance.", show_default=False)] = None,
    ray_cpus: Annotated[Optional[int], typer.Option(
        "--ray-cpus", min=1, rich_help_panel=SCALE, help="CPUs of the local Ray instance (default: all).",
        show_default=False)] = None,
    read_tasks: Annotated[Optional[int], typer.Option(
        "--read-tasks", min=1, rich_help_panel=SCALE, help="Concurrent read/prepare tasks on Ray (default: "
        "as many as free CPUs allow).", show_default=False)] = None,
    actors: Annotated[int, typer.Option(
        "--actors", min=1, rich_help_panel=SCALE, help="Model actors on Ray (one GPU each on GPU "
        "clusters, else CPU actors).")] = 1,
    actor_cpus: Annotated[float, typer.Option(
        "--actor-cpus", min=0.01, rich_help_panel=SCALE, help="CPUs reserved per Ray model actor.")] = 1.0,
    merge: Annotated[bool, typer.Option(
        "--merge", rich_help_panel=SCALE, help="Merge the folder of part files given as PATHS (a Ray or "
        "--shard output) into the one file OUTPUT, checking that all parts have the same provenance.")] = False,
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

    Report texts: ecgtext embed --texts reports.csv --text-column report -o reports.parquet
    """
    from ecgtext.inference.embed import parse_shard, run_embed
    from ecgtext.inference.engine import EngineOptions

    from ..errors import ConfigError, InputError
    from ..io import expand_paths
    from .logs import STATE
    from .output import Progress

    quiet = quiet or STATE.quiet  # `ecgtext -q embed` and `ecgtext embed -q` alike
    if texts is not None:
        if paths:
            raise ConfigError("give ECG paths or --texts, not both")
        from ecgtext.inference.text_embed import run_embed_texts

        done = run_embed_texts(texts, model, output, text_column=text_column, id_column=id_column,
                               batch_size=batch_size, device=device, overwrite=overwrite)
        if not quiet:
            empty = f", {done.skipped_empty} empty skipped" if done.skipped_empty else ""
            print(f"{done.output}: {done.rows} texts embedded{empty}", file=sys.stderr)
        return
    if not paths:
        raise InputError(None, "no ECG records given (pass files or folders, or --texts TABLE for reports)")
    if merge:
        from ecgtext.inference.engines import merge_parts

        if len(paths) != 1:
            raise ConfigError("--merge takes one folder of part files", option="merge")
        rows = merge_parts(paths[0], output)
        if not quiet:
            print(f"{output}: {rows} rows merged from {paths[0]}", file=sys.stderr)
        return
    if engine is Engine.ray:
        from ecgtext.inference.engines.ray import RayOptions

        if shard is not None:
            raise ConfigError("--shard is for the local engine; Ray spreads the work itself", option="shard")
        opts = RayOptions(address=ray_address, num_cpus=ray_cpus, read_parallelism=read_tasks,
                          num_actors=actors, actor_cpus=actor_cpus, records_per_part=flush_every)
        _embed_ray(paths, model, output, read_options, opts, per_window=per_window, aggregate=aggregate.value,
                   batch_size=batch_size, precision=precision.value, min_coverage=min_coverage,
                   overwrite=overwrite, quiet=quiet)
        return
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
        engine = EngineOptions(batch_size=batch_size, num_workers=num_workers, device=device,
                               precision=precision.value, min_coverage=min_coverage)
        summary = run_embed(files, model, output, read_options, per_window=per_window,
                            aggregate=aggregate.value, shard=parse_shard(shard), overwrite=overwrite,
                            flush_every=flush_every, on_record=on_record,
                            on_start=lambda todo, skipped: progress.start(todo), engine=engine)
    finally:
        progress.stop()
    _finish(summary, quiet)


def _embed_ray(paths, model, output, read_options, opts, *, quiet: bool, **kwargs) -> None:
    """``--engine ray``: inputs are expanded on the Ray workers (only '-' is read here)."""
    from ecgtext.inference.engines.ray import run_embed_ray
    from ecgtext.io.paths import read_path_list

    from .output import Progress

    inputs = []
    for p in paths:
        inputs += read_path_list() if p == "-" else [p]
    progress = Progress(enabled=not quiet and sys.stderr.isatty())

    def on_record(path, err):
        if err is not None:
            progress.print_error(err)
        progress.advance(failed=err is not None)

    try:
        summary = run_embed_ray(inputs, model, output, read_options, options=opts, on_record=on_record,
                                on_start=lambda todo, skipped: progress.start(todo), **kwargs)
    finally:
        progress.stop()
    _finish(summary, quiet)


def _finish(summary, quiet: bool) -> None:
    """The summary line on stderr (both engines), then exit code 1 if records failed."""
    from .output import summary_line

    if not quiet:
        line = f"{summary.output}: {summary_line(summary.written, summary.failed, 'embedded')}"
        if summary.skipped:
            line += f", {summary.skipped} already there"
        if summary.errors_path is not None:
            line += f" (see {summary.errors_path})"
        print(line, file=sys.stderr)
    if summary.failed:
        raise typer.Exit(1)
