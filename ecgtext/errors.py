"""The exception hierarchy: every error a user can cause is an ``EcgTextError``.

The CLI maps these to one line (``error: <message>``) and a non-zero exit code;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class EcgTextError(Exception):
    """Base class of all errors ecgtext raises on purpose."""

    exit_code = 1


class ConfigError(EcgTextError):
    """A config file or option has unknown keys or invalid values."""

    exit_code = 2


class InputError(EcgTextError):
    """An ECG input file cannot be turned into a model tensor.

    ``path`` names the offending file; ``str(err)`` is one line that names it too.
    """

    exit_code = 3

    def __init__(self, path: str | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = " ".join(str(problem).split())  # always one line
        super().__init__(f"{self.path}: {self.problem}" if self.path else self.problem)


class FormatError(InputError):
    """The file is not in a format we can read (or its header is corrupt)."""


class MissingFileError(InputError):
    """The file, or a signal file its header names, does not exist."""


class SignalError(InputError):
    """The signal is empty, truncated, all-NaN or otherwise unusable."""


class LeadError(InputError):
    """Lead names are unknown, duplicated, or their count does not match."""


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
