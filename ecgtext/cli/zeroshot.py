"""``ecgtext zeroshot``: score ECG records against clinical label descriptions."""

from __future__ import annotations

import enum
import sys
from typing import Annotated, Optional

import typer

from .options import (
    BatchSizeOption,
    DeviceOption,
    MinCoverageOption,
    ModelOption,
    NumWorkersOption,
    PathsArgument,
    Precision,
    PrecisionOption,
    Score,
    with_read_options,
)


class Format(str, enum.Enum):
    table = "table"
    jsonl = "jsonl"
    json = "json"
    csv = "csv"
    tsv = "tsv"


@with_read_options
def command(
    paths: PathsArgument,
    model: ModelOption = "dbeta-base",
    labels: Annotated[Optional[str], typer.Option(
        "--labels", "-l", help="Label set: a built-in name (code15, ptbxl-super, ptbxl-sub, ptbxl-form, "
        "ptbxl-rhythm, cpsc2018, chapman-rhythm) or a JSON file {CODE: description}. "
        "Default: code15, unless --label is given.", show_default=False)] = None,
    label: Annotated[Optional[list[str]], typer.Option(
        "--label", help="An extra label CODE=description (repeatable; added after --labels).",
        show_default=False)] = None,
    score: Annotated[Score, typer.Option(
        "--score", help="raw: dot product of ECG and text features (the paper); cosine: of the "
        "normalised features; softmax: softmax(raw / temperature) over the label set.")] = Score.raw,
    temperature: Annotated[float, typer.Option(
        "--temperature", min=1e-6, help="Softmax temperature (1 = the scale D-BETA was trained with).")] = 1.0,
    fmt: Annotated[Optional[Format], typer.Option(
        "--format", "-f", help="Output format. Default: table on a terminal, jsonl otherwise.",
        show_default=False)] = None,
    top: Annotated[int, typer.Option("--top", "-k", min=1, help="How many best classes to list per record.")] = 3,
    per_window: Annotated[bool, typer.Option(
        "--per-window", help="One result per model window (long records) instead of the mean of the "
        "window scores per record.")] = False,
    plot: Annotated[Optional[str], typer.Option(
        "--plot", help="Draw each record (12-lead 3x4 layout + rhythm strip, ECG paper) with its top "
        "classes: FILE.png for one record, or a directory (one PNG per record).", show_default=False)] = None,
    keep_case: Annotated[bool, typer.Option(
        "--keep-case", help="Do not lower-case the descriptions (the paper lower-cases them).")] = False,
    no_cache: Annotated[bool, typer.Option(
        "--no-cache", help="Recompute the label text features instead of using $ECGTEXT_CACHE.")] = False,
    batch_size: BatchSizeOption = 32,
    num_workers: NumWorkersOption = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = Precision.auto,
    min_coverage: MinCoverageOption = 0.5,
    *,
    read_options=None,  # a ReadOptions, built by with_read_options from the reading options
):
    """Zero-shot classification: score each ECG against clinical label descriptions.

    A score is the dot product of the record's ECG feature and the feature of
    the lower-cased label description (as in the D-BETA paper); long records
    get the mean of their window scores. Results stream as they come: a table
    on a terminal, JSON lines in a pipe (--format). Failed files get one
    `error: path: problem` line on stderr; exit code 0 = all ok, 1 = some
    failed, 2 = usage error. Label text features are cached, so repeated runs
    do not load the text encoder.

    Example: ecgtext zeroshot records/ --labels ptbxl-super --format csv > scores.csv
    """
    import os

    from ecgtext.inference.engine import EngineOptions
    from ecgtext.inference.zeroshot import mean_over_windows, run_zeroshot

    from ..errors import ConfigError, InputError
    from ..io import expand_paths
    from ..labels import build_label_set
    from .output import ResultWriter, default_format, report_error, summary_line

    label_set = build_label_set(labels, label)
    files = expand_paths(paths)
    if not files:
        raise InputError(None, "no ECG records found in the given paths")
    plot_dir = None
    if plot is not None:
        is_file = os.path.splitext(plot)[1].lower() in (".png", ".pdf", ".svg") and not os.path.isdir(plot)
        if is_file and (len(files) > 1 or files[0].lower().endswith((".h5", ".hdf5", ".hdf"))):
            raise ConfigError(f"--plot {plot}: several records need a directory, not a file")
        plot_dir = None if is_file else plot
        try:
            os.makedirs(plot_dir or os.path.dirname(os.path.abspath(plot)), exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--plot {plot}: cannot create the folder ({exc.strerror})") from None

    out_fmt = (fmt.value if fmt else default_format())
    writer = ResultWriter(out_fmt, list(label_set), per_window, min(top, len(label_set)),
                          score_name=score.value)
    ok = failed = 0
    windows: list = []  # --per-window with --plot: the current record's windows

    def plot_record():
        if plot is None or not windows:
            return
        rec = mean_over_windows(windows)  # plot with the record's mean scores
        windows.clear()
        _plot(rec, plot, plot_dir, read_options, label_set, score.value, model, top)

    engine = EngineOptions(batch_size=batch_size, num_workers=num_workers, device=device,
                           precision=precision.value, min_coverage=min_coverage)
    for r in run_zeroshot(files, model, label_set, read_options, how=score.value, temperature=temperature,
                          per_window=per_window, lowercase=not keep_case, use_cache=not no_cache, engine=engine):
        if isinstance(r, InputError):
            failed += 1
            report_error(r)
            continue
        if r.window is None or r.window == 0:
            ok += 1
            plot_record()
        if plot is not None:
            windows.append(r)
        writer.write(r.to_dict(top_k=min(top, len(label_set))))
    plot_record()
    writer.close()
    if failed:
        from .logs import STATE

        if not STATE.quiet:
            print(summary_line(ok, failed), file=sys.stderr)
        raise typer.Exit(1)


def _plot(result, plot: str, plot_dir: str | None, read_options, label_set, score_name, model, top) -> None:
    import os

    from ..io import read_ecg
    from ..plot import plot_ecg, plot_name

    target = plot if plot_dir is None else os.path.join(plot_dir, plot_name(result.path))
    plot_ecg(read_ecg(result.path, read_options), target, top=result.top(top), score_name=score_name,
             model=os.path.basename(str(model).rstrip("/")), descriptions=label_set)
