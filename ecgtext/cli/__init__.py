"""The ``ecgtext`` command line: a thin Typer app over the library.

Each subcommand lives in its own module and imports heavy libraries (torch,
transformers, pandas) inside its function, so ``--help`` stays fast.
Errors we raise on purpose (``EcgTextError``) become one line on stderr, with
the flag that fixes them, and a non-zero exit code (``cli/errors.py``); set
``ECGTEXT_DEBUG=1`` to see the traceback instead. The library logs through
``logging``; the root options ``-q``/``-v`` choose how much of it is shown
(``cli/logs.py``).
"""

from __future__ import annotations

import sys

import typer

from .. import __version__
from ..errors import EcgTextError
from .errors import debug, error_line, handle_errors

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
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
    quiet: bool = typer.Option(False, "--quiet", "-q",
                               help="Errors and results only: no warnings, progress bars or summaries."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True,
                                help="Say what was chosen (model, device, precision); -vv for debugging."),
):
    """ECG-text foundation models for 12-lead ECGs."""
    from .logs import setup_logging

    ctx.call_on_close(setup_logging(quiet=quiet, verbose=0 if quiet else verbose))
    if quiet or not sys.stderr.isatty():  # download progress bars: for a person at a terminal only
        import os

        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        if "huggingface_hub" in sys.modules:  # already imported: its switch was read at import
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()


def _register() -> None:
    # Each module defines ``command``; registration order = order in --help.
    import importlib

    for name in ("download", "zeroshot", "embed", "index", "search", "probe", "predict", "pretrain", "export"):
        try:
            mod = importlib.import_module(f"ecgtext.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"ecgtext.cli.{name}":
                continue  # subcommand not built yet
            raise
        app.command(name, help=mod.command.__doc__)(handle_errors(mod.command))


_register()


__all__ = ["app", "main", "error_line"]


def main() -> None:
    """Console-script entry point with the error mapping."""
    try:
        # standalone mode: click handles usage errors (exit 2), --help, Ctrl-C and EPIPE
        app()
    except EcgTextError as exc:  # raised outside a command (commands render their own)
        if debug():
            raise
        print(error_line(exc), file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
