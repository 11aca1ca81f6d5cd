"""Error rendering of the CLI: one line per error, with the flag that fixes it.

The library's errors carry typed fields (``path``, ``field``, ``value``,
``option``) and messages in domain terms without CLI flags; this module is the
one place that turns an error into the line a user sees, adding
``(use --flag)`` from ``option`` (huggingface_hub's ``format_known_exception``
pattern). Import-light: ``ecgtext --help`` imports it.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

import typer

from ..errors import EcgTextError

# option name (a ReadOptions field or a library keyword) -> the flag, with a value hint where it takes one
FLAGS: dict[str, str] = {
    "fs": "--fs HZ",
    "units": "--units UNIT",
    "leads": "--leads LEADS",
    "gain": "--gain ADC_PER_MV",
    "format": "--input-format FORMAT",
    "input_format": "--input-format FORMAT",
    "lead_map": "--lead-map OLD=NEW",
    "mat_key": "--mat-key NAME",
    "layout": "--layout leads-first|samples-first",
    "ignore_unknown_leads": "--ignore-unknown-leads",
    "shard": "--shard I/N",
    "output": "--output",
    "revision": "--revision REV",
    "file": "--file NAME",
}


def flag_for(option: str) -> str:
    """The CLI flag of an option name: ``lead_map`` -> ``--lead-map OLD=NEW``, ``force`` -> ``--force``."""
    return FLAGS.get(option, "--" + option.replace("_", "-"))


def format_known_exception(exc: BaseException) -> str:
    """One line for the user: the message, plus ``(use --flag)`` when the error names an option."""
    msg = " ".join(str(exc).split()) or type(exc).__name__
    option = getattr(exc, "option", None)
    if isinstance(exc, EcgTextError) and option:
        flag = flag_for(str(option))
        if flag.split()[0] not in msg:  # a message may already show the flag (user input echoed back)
            msg = f"{msg} (use {flag})"
    return msg


def error_line(exc: BaseException) -> str:
    """``error: <one line>``, never a traceback."""
    return f"error: {format_known_exception(exc)}"


def debug() -> bool:
    """``ECGTEXT_DEBUG=1``: let errors through with their traceback."""
    return bool(os.environ.get("ECGTEXT_DEBUG"))


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command: an :class:`EcgTextError` becomes its error line on stderr and exit
    code, inside the app (so ``app()``, ``main()`` and test runners behave alike)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except EcgTextError as exc:
            if debug():
                raise
            typer.echo(error_line(exc), err=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper
