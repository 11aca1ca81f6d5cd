"""Output helpers shared by the inference commands: result writers, error lines, progress.

Import-light (no torch/numpy at import): ``ecgtext --help`` imports the command
modules, which import this lazily anyway.
"""

from __future__ import annotations

import csv
import json
import sys
from typing import IO, Any, Sequence

FORMATS = ("table", "jsonl", "json", "csv", "tsv")


def default_format(stream: IO | None = None) -> str:
    """``table`` for a person at a terminal (stdout by default), ``jsonl`` for a pipe or file."""
    return "table" if (stream or sys.stdout).isatty() else "jsonl"


def report_error(err: BaseException) -> None:
    """One line per failed record on stderr: ``error: path: problem (use --flag)``."""
    from .errors import error_line

    print(error_line(err), file=sys.stderr, flush=True)


def summary_line(ok: int, failed: int, what: str = "ok") -> str:
    return f"{ok} {what}, {failed} failed"


class ResultWriter:
    """Writes zero-shot result dicts (``ZeroShotResult.to_dict()``) as they come, flushed per record."""

    def __init__(self, fmt: str, codes: Sequence[str], per_window: bool, top_k: int,
                 stream: IO | None = None, score_name: str = "raw"):
        if fmt not in FORMATS:
            raise ValueError(fmt)
        self.fmt = fmt
        self.codes = list(codes)
        self.per_window = per_window
        self.top_k = top_k
        self.stream = stream or sys.stdout
        self.score_name = score_name
        self._all: list[dict] = []
        self._csv = None
        self._console = None
        self._n = 0

    # -- per format
    def write(self, row: dict[str, Any]) -> None:
        self._n += 1
        if self.fmt == "jsonl":
            self.stream.write(json.dumps(row) + "\n")
            self.stream.flush()
        elif self.fmt == "json":
            self._all.append(row)
        elif self.fmt in ("csv", "tsv"):
            self._write_delimited(row)
        else:
            self._write_table_row(row)

    def close(self) -> None:
        if self.fmt == "json":
            self.stream.write(json.dumps(self._all, indent=1) + "\n")
            self.stream.flush()

    def _write_delimited(self, row: dict[str, Any]) -> None:
        if self._csv is None:
            self._csv = csv.writer(self.stream, delimiter="," if self.fmt == "csv" else "\t",
                                   lineterminator="\n")
            head = ["path"] + (["window", "start_s"] if self.per_window else [])
            self._csv.writerow(head + ["windows", "missing_leads", "top"] + self.codes)
        vals = [row["path"]] + ([row.get("window"), row.get("start_s")] if self.per_window else [])
        vals += [row["windows"], " ".join(row["missing_leads"]), " ".join(row["top"])]
        vals += [f"{row['scores'][c]:.6g}" for c in self.codes]
        self._csv.writerow(vals)
        self.stream.flush()

    def _write_table_row(self, row: dict[str, Any]) -> None:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        if self._console is None:
            self._console = Console(file=self.stream, highlight=False)
        width = self._console.width
        top_w = 16
        table = Table(show_header=self._n == 1, box=None, pad_edge=False, header_style="bold",
                      show_edge=False, collapse_padding=True)
        rec_w = max(20, width - (top_w + 1) * self.top_k - (14 if self.per_window else 8))
        table.add_column("record", width=rec_w, overflow="fold", no_wrap=False)
        if self.per_window:
            table.add_column("window", width=12, justify="right")
        else:
            table.add_column("win", width=6, justify="right")
        for i in range(self.top_k):
            table.add_column(f"#{i + 1} ({self.score_name})", width=top_w)
        cells: list[Any] = [Text(row["path"] + (f"  [missing {','.join(row['missing_leads'])}]"
                                                if row["missing_leads"] else ""))]
        if self.per_window:
            cells.append(f"{row['window']} @{row['start_s']:g}s")
        else:
            cells.append(str(row["windows"]))
        for code in row["top"]:
            cells.append(Text.assemble((code, "bold cyan"), f" {row['scores'][code]:.3g}"))
        cells += [""] * (self.top_k - len(row["top"]))
        table.add_row(*cells)
        self._console.print(table)
        self.stream.flush()


class Progress:
    """A rich progress bar on a terminal (stderr), nothing in a pipe or with ``quiet``."""

    def __init__(self, enabled: bool, label: str = "embedding"):
        self.enabled = enabled
        self.label = label
        self._bar = None
        self._task = None

    def start(self, total: int) -> None:
        if not self.enabled or total == 0:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("[red]{task.fields[failed]} failed"), TimeElapsedColumn(),
                                 TimeRemainingColumn(), console=Console(file=sys.stderr), transient=False)
        self._bar.start()
        self._task = self._bar.add_task(self.label, total=total, failed=0)
        self._failed = 0

    def advance(self, failed: bool = False) -> None:
        if self._bar is not None:
            self._failed += int(failed)
            self._bar.update(self._task, advance=1, failed=self._failed)

    def print_error(self, err: BaseException) -> None:
        if self._bar is not None:  # print above the bar instead of tearing it
            from .errors import error_line

            self._bar.console.print(error_line(err), markup=False, highlight=False)
        else:
            report_error(err)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
