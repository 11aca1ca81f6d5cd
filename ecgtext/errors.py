"""The exception hierarchy: every error a user can cause is an ``EcgTextError``.

The CLI maps these to one line (``error: <message>``) and a non-zero exit code;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import re
from typing import Any


class EcgTextError(Exception):
    """Base class of all errors ecgtext raises on purpose.

    Besides the one-line message every error may carry typed fields for
    programs and for the CLI (all ``None`` when they do not apply):

    - ``path``: the file (or ``"container::key"`` record) at fault;
    - ``field``: what is wrong in domain terms (``"sampling rate"``, ``"units"``);
    - ``value``: the offending value as read (``0.0``, ``"furlongs"``);
    - ``option``: the :class:`~ecgtext.io.ReadOptions` field (or other option
      name) that would fix it, without dashes (``"fs"``, ``"units"``,
      ``"leads"``, ``"gain"``, ``"format"``, ``"lead_map"``, ``"mat_key"``,
      ``"layout"``, ``"ignore_unknown_leads"``). Messages never name CLI flags;
      the CLI renders ``option`` as its flag (``--fs``).
    """

    exit_code = 1
    path: str | None = None
    field: str | None = None
    value: Any = None
    option: str | None = None

    def __init__(self, *args: Any, path: str | None = None, field: str | None = None,
                 value: Any = None, option: str | None = None):
        super().__init__(*args)
        if path is not None:
            self.path = str(path)
        self.field, self.value, self.option = field, value, option

    def __reduce__(self):
        # keyword-only fields survive pickling (worker processes send errors back)
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


def _rebuild(cls: type, args: tuple, state: dict) -> "EcgTextError":
    err = Exception.__new__(cls)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    return err


class ConfigError(EcgTextError):
    """A config file or option has unknown keys or invalid values."""

    exit_code = 2


class InputError(EcgTextError):
    """An ECG input file cannot be turned into a model tensor.

    ``path`` names the offending file; ``str(err)`` is one line that names it too
    (``path: problem``); ``problem`` is the message without the path. ``field``,
    ``value`` and ``option`` are the typed fields of :class:`EcgTextError`.
    """

    exit_code = 3

    def __init__(self, path: str | None, problem: str, *, field: str | None = None,
                 value: Any = None, option: str | None = None):
        raw = None if path is None else (os.fsdecode(path) if isinstance(path, bytes) else str(path))
        self.problem = " ".join(str(problem).split())  # always one line
        super().__init__(f"{display_path(raw)}: {self.problem}" if raw else self.problem,
                         path=raw, field=field, value=value, option=option)
        self.path = raw  # lossless (undecodable bytes as surrogate escapes); the message shows display_path


def display_path(path: str) -> str:
    """``path`` as one printable line of valid UTF-8: bytes that are not UTF-8 (surrogate
    escapes) become ``\\xNN`` and control characters (a newline in a file name) ``\\n``,
    ``\\x07``. For messages and text columns; ``os.fsencode(path)`` is the lossless form."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace") if _SURROGATE.search(path) else path
    if _CONTROL.search(text):
        text = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
    return text


_SURROGATE = re.compile("[\udc80-\udcff]")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class FormatError(InputError):
    """The file is not in a format we can read (or its header is corrupt)."""


class MissingFileError(InputError):
    """The file, or a signal file its header names, does not exist."""


class SignalError(InputError):
    """The signal is empty, truncated, all-NaN or otherwise unusable."""


class LeadError(InputError):
    """Lead names are unknown, duplicated, or their count does not match."""


class UnreadableFileError(InputError):
    """The file or folder exists but cannot be read (permissions, I/O error)."""


class ProvenanceError(ConfigError):
    """Numbers made under another model, precision, device or preprocessing than this run's
    (``field`` names the first difference, ``value`` is ``(recorded, now)``), or a
    provenance block that cannot be read (``field="provenance"``)."""


class ModelError(EcgTextError):
    """A model directory or checkpoint is missing, incomplete or does not match."""

    exit_code = 4


class CheckpointMismatchError(ModelError):
    """A checkpoint's keys or shapes do not match the architecture."""


class HubError(EcgTextError):
    """Downloading from (or resolving against) the Hugging Face Hub failed."""

    exit_code = 5


class DataError(EcgTextError):
    """A dataset folder, manifest or label file is missing or malformed."""

    exit_code = 6
