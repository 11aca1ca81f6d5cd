"""The ``ecgtext`` command line: a thin Typer app over the library.

Each subcommand lives in its own module and imports heavy libraries (torch,
transformers, pandas) inside its function, so ``--help`` stays fast.
Errors we raise on purpose (``EcgTextError``) become one line on stderr and a
non-zero exit code; set ``ECGTEXT_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import os
import sys

import typer

from .. import __version__
from ..errors import EcgTextError

app = typer.Typer(
    name="ecgtext",
    help="ECG-text foundation models (D-BETA): zero-shot classification, embeddings, "
    "linear probing and pretraining for 12-lead ECGs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool):
    if value:
        typer.echo(f"ecgtext {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
):
    """ECG-text foundation models for 12-lead ECGs."""


def _register() -> None:
    # Each module defines ``command``; registration order = order in --help.
    import importlib

    for name in ("download", "zeroshot", "embed", "probe", "pretrain"):
        try:
            mod = importlib.import_module(f"ecgtext.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"ecgtext.cli.{name}":
                continue  # subcommand not built yet
            raise
        app.command(name, help=mod.command.__doc__)(mod.command)


_register()


def error_line(exc: BaseException) -> str:
    """One line for the user: what went wrong, never a traceback."""
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return f"error: {msg}"


def main() -> None:
    """Console-script entry point with the error mapping."""
    try:
        # standalone mode: click handles usage errors (exit 2), --help, Ctrl-C and EPIPE
        app()
    except EcgTextError as exc:
        if os.environ.get("ECGTEXT_DEBUG"):
            raise
        print(error_line(exc), file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
