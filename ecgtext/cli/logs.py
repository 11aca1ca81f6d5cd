"""Logging for the CLI: the library logs through ``logging``; the CLI shows it on stderr.

``ecgtext -q CMD`` shows errors only (and no progress bars or summary lines),
the default shows warnings, ``-v`` adds what was chosen (model, device,
precision, ...), ``-vv`` debugging detail. Records are rendered by
:class:`rich.logging.RichHandler` as one line each, ``warning: message``, in
a terminal and in a pipe alike (no wrapping, no padding), so they read like
the ``error:`` lines.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from rich.console import Console, Group
from rich.logging import RichHandler
from rich.text import Text

LOGGER = "ecgtext"
_STYLES = {"DEBUG": "dim", "INFO": "cyan", "WARNING": "yellow", "ERROR": "bold red", "CRITICAL": "bold red"}


@dataclass
class Verbosity:
    """What the root options asked for; commands read it (``quiet`` hides progress and summaries)."""

    quiet: bool = False
    verbose: int = 0


STATE = Verbosity()


class LineHandler(RichHandler):
    """A RichHandler that writes ``level: message`` on one line."""

    def render(self, *, record, traceback, message_renderable):  # noqa: D102 - RichHandler's hook
        level = record.levelname.lower()
        line = Text.assemble((f"{level}: ", _STYLES.get(record.levelname, "")), message_renderable)
        return line if traceback is None else Group(line, traceback)


def level_for(quiet: bool, verbose: int) -> int:
    if quiet:
        return logging.ERROR
    return {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)


def setup_logging(quiet: bool = False, verbose: int = 0) -> Callable[[], None]:
    """Install the stderr handler on the ``ecgtext`` logger (replacing an earlier one);
    returns the function that removes it again and restores the logger's level (the CLI
    calls it when the command ends, so in-process callers such as tests get the logger back)."""
    STATE.quiet, STATE.verbose = quiet, verbose
    logger = logging.getLogger(LOGGER)
    for h in list(logger.handlers):
        if isinstance(h, LineHandler):
            logger.removeHandler(h)
    previous = logger.level
    # soft_wrap: never break a line (logs are grepped); the console follows sys.stderr as it is at print time
    handler = LineHandler(console=Console(stderr=True, soft_wrap=True), show_time=False, show_level=False,
                          show_path=False, markup=False, rich_tracebacks=False)
    level = level_for(quiet, verbose)
    handler.setLevel(level)
    logger.addHandler(handler)
    logger.setLevel(level)

    def teardown() -> None:
        logger.removeHandler(handler)
        logger.setLevel(previous)
        STATE.quiet, STATE.verbose = False, 0

    return teardown
