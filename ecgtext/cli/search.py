"""``ecgtext search``: text -> ECGs, ECG -> ECGs and ECG -> reports over an embedding set."""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .options import (
    BatchSizeOption,
    DeviceOption,
    NumWorkersOption,
    Precision,
    PrecisionOption,
    Score,
    with_read_options,
)

QUERY = "Queries"


class Format(str, enum.Enum):
    table = "table"
    jsonl = "jsonl"
    csv = "csv"


@with_read_options
def command(
    index: Annotated[Path, typer.Argument(
        help="An index folder ('ecgtext index') or an 'ecgtext embed' Parquet file / shard folder.",
        show_default=False)],
    text: Annotated[Optional[list[str]], typer.Option(
        "--text", "-t", rich_help_panel=QUERY, help="A query in words (repeatable).", show_default=False)] = None,
    ecg: Annotated[Optional[list[str]], typer.Option(
        "--ecg", rich_help_panel=QUERY, help="An ECG file to find similar records (or reports) for (repeatable).",
        show_default=False)] = None,
    text_file: Annotated[Optional[Path], typer.Option(
        "--text-file", rich_help_panel=QUERY, help="Queries in words, one per line ('#' starts a comment).",
        show_default=False)] = None,
    top_k: Annotated[int, typer.Option(
        "--top-k", "-k", min=1, help="Results per query (clamped to the size of the set).")] = 10,
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="Model to embed the queries with: directory, registered name or hf-hub:org/repo. "
        "Default: the model recorded in the index; another model is refused.", show_default=False)] = None,
    score: Annotated[Score, typer.Option(
        "--score", help="Text -> ECG and ECG -> report scores, as in zeroshot: raw dot product (the paper), "
        "cosine, or softmax(raw / temperature) over the queries. Within a modality: always cosine.")] = Score.raw,
    temperature: Annotated[float, typer.Option("--temperature", min=1e-6, help="Softmax temperature.")] = 1.0,
    fmt: Annotated[Optional[Format], typer.Option(
        "--format", "-f", help="table (default on a terminal), jsonl (default in a pipe) or csv.",
        show_default=False)] = None,
    columns: Annotated[Optional[str], typer.Option(
        "--columns", help="Other columns of the set to show, comma-separated, or 'all'.", show_default=False)] = None,
    plot: Annotated[Optional[Path], typer.Option(
        "--plot", help="Draw every retrieved ECG (12-lead layout) into this folder, with the query, rank and "
        "score in its title.", show_default=False)] = None,
    exact: Annotated[bool, typer.Option(
        "--exact", help="Scan all features exactly instead of using the FAISS index.")] = False,
    keep_case: Annotated[bool, typer.Option(
        "--keep-case", rich_help_panel=QUERY, help="Do not lower-case query texts (zero-shot lower-cases).")] = False,
    no_cache: Annotated[bool, typer.Option(
        "--no-cache", rich_help_panel=QUERY, help="Recompute query text features instead of using the cache.")] = False,
    batch_size: BatchSizeOption = 32,
    num_workers: NumWorkersOption = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = Precision.auto,
    *,
    read_options=None,  # a ReadOptions, built by with_read_options (ECG queries and plots)
):
    """Search an embedding set: ECGs matching words, ECGs like a given ECG, reports for an ECG.

    Text queries are scored exactly like zeroshot (lower-cased, raw dot product
    of the unimodal features by default); ECG queries find the most similar
    records of an ECG set (cosine) or the best-matching texts of a report set
    (built with 'ecgtext embed --texts'). One output row per query and rank:
    query, rank, path (window, start_s for per-window sets) or text, score.

    Examples:

      ecgtext search emb.index -t "atrial fibrillation" -k 5 --plot plots/

      ecgtext search emb.index --ecg new.hea -k 10 --format csv

      ecgtext search reports.parquet --ecg new.hea -k 3
    """
    from ecgtext.inference.search import QueryError, SearchOptions, iter_plots, read_query_file, search

    from ..errors import ConfigError
    from .logs import STATE
    from .output import default_format, report_error

    queries = list(text or [])
    if text_file is not None:
        queries += read_query_file(text_file)
    ecgs: list[str] = []
    if ecg:
        from ..io import expand_paths

        ecgs = expand_paths(ecg)
        if not ecgs:
            raise QueryError("no ECG records found in the --ecg paths", option="ecg")
    if queries and ecgs:
        raise ConfigError("search with query texts or with ECG files, not both")
    if not queries and not ecgs:
        raise QueryError("no queries: give --text, --text-file or --ecg")
    cols = [c.strip() for c in (columns or "").split(",") if c.strip()]
    opts = SearchOptions(k=top_k, how=score.value, temperature=temperature, lowercase=not keep_case,
                         use_cache=not no_cache, exact=exact)
    result = search(index, texts=queries, ecgs=ecgs, model=model, options=opts, read_options=read_options,
                    columns=cols, batch_size=batch_size, num_workers=num_workers, device=device,
                    precision=precision.value)
    for err in result.errors:
        report_error(err)
    _write(result.hits, (fmt.value if fmt else default_format()))
    failed = bool(result.errors)
    if plot is not None:
        written = 0
        for _, out in iter_plots(result, plot, read_options):
            if isinstance(out, str):
                written += 1
            else:
                report_error(out)
                failed = True
        if not STATE.quiet:
            print(f"{plot}: {written} plot(s)", file=sys.stderr)
    if failed:
        raise typer.Exit(1)


def _write(hits, fmt: str) -> None:
    import csv
    import json

    rows = [h.to_dict() for h in hits]
    if fmt == "jsonl":
        for r in rows:
            sys.stdout.write(json.dumps(r) + "\n")
        sys.stdout.flush()
        return
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    if fmt == "csv":
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(keys)
        for r in rows:
            w.writerow(["" if r.get(k) is None else r.get(k) for k in keys])
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(box=None, header_style="bold", pad_edge=False)
    shown = [k for k in keys if k not in ("score_name", "row")]
    for k in shown:
        t.add_column(f"score ({rows[0]['score_name']})" if k == "score" and rows else k,
                     justify="right" if k in ("rank", "score", "window", "start_s") else "left",
                     overflow="fold")
    last = None
    for r in rows:
        if last is not None and r["query"] != last:
            t.add_section()
        last = r["query"]
        t.add_row(*[_cell(k, r.get(k)) for k in shown])
    Console(highlight=False).print(t)


def _cell(key: str, value) -> str:
    if value is None:
        return ""
    if key == "score":
        return f"{value:.4g}"
    return str(value)
