"""Read ECG files of any supported format into one record type, :class:`Ecg`.

``read_ecg(path)`` returns exactly one record in mV with canonical lead names, or
raises an :class:`~ecgtext.errors.InputError` subclass whose one-line message
names the file. Formats: WFDB (``.hea`` + signal files, incl. CinC ``.mat``),
MATLAB ``.mat`` (CPSC 2018, plain arrays), HDF5 (CODE-15%), ``.npy``/``.npz``
and CSV. See ``docs/data-formats.md``.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import EcgTextError, FormatError
from .paths import KEY_SEP, Expanded, detect_format, expand_inputs, expand_paths, os_error, split_key
from .record import Ecg, ReadOptions

__all__ = ["Ecg", "ReadOptions", "read_ecg", "iter_records", "list_records", "expand_paths",
           "expand_inputs", "Expanded"]

log = logging.getLogger(__name__)


@contextmanager
def _as_input_errors(path: str, fmt: str) -> Iterator[None]:
    """Whatever a reader (or the library under it) raises becomes a one-line InputError.

    Readers raise specific domain errors for the problems we know; this is the
    net under them, so a library caller never sees ``KeyError`` or ``BadZipFile``.
    The original exception is logged at debug level for bug reports.
    """
    try:
        yield
    except (EcgTextError, MemoryError, KeyboardInterrupt, GeneratorExit):
        raise
    except OSError as exc:
        log.debug("reading %r", path, exc_info=True)
        raise os_error(path, exc) from None
    except Exception:  # noqa: BLE001 - see docstring
        log.debug("reading %r as %s failed", path, fmt, exc_info=True)
        raise FormatError(path, f"cannot be read as {fmt}: the file is corrupt or not in that format",
                          field="format", value=fmt, option="format") from None


def _reader(fmt: str):
    if fmt == "wfdb":
        from .wfdb_reader import read_wfdb
        return read_wfdb
    if fmt == "mat":
        from .mat_reader import read_mat
        return read_mat
    if fmt == "npy":
        from .array_reader import read_npy
        return read_npy
    if fmt == "csv":
        from .array_reader import read_csv
        return read_csv
    from .detect import CLINICAL_READERS, clinical_reader
    if fmt in CLINICAL_READERS:  # MUSE, Philips, aECG, DICOM, SCP-ECG, ISHNE, EDF
        return clinical_reader(fmt)
    raise AssertionError(fmt)


def iter_records(path: str | Path, options: ReadOptions | None = None) -> Iterator[Ecg]:
    """Yield the records of a file: one per exam for HDF5 containers, else exactly one.

    ``"file.hdf5::key"`` yields only that exam. Errors surface when iterated;
    to keep going past a bad exam of a container, loop over
    :func:`list_records` and call :func:`read_ecg` on each key.
    """
    options = options or ReadOptions()
    container, key = split_key(_text_path(path))
    yield from _iter_records(str(path), container, key, detect_format(container, options.format), options)


def _iter_records(path: str, container: str, key: str | None, fmt: str, options: ReadOptions) -> Iterator[Ecg]:
    """:func:`iter_records` once the format is known (detected once per record, not twice)."""
    if fmt == "hdf5":
        from .hdf5_reader import iter_hdf5
        records = iter_hdf5(container, options, key)
        while True:
            with _as_input_errors(container if key is None else f"{container}{KEY_SEP}{key}", fmt):
                ecg = next(records, None)
            if ecg is None:
                return
            yield ecg
    if key is not None:
        raise FormatError(str(path), f"'{KEY_SEP}' selects a record inside an HDF5 container, but "
                                     f"{container} is read as {fmt}")
    with _as_input_errors(container, fmt):
        ecg = _reader(fmt)(container, options)
    yield ecg


def _text_path(path: str | bytes | os.PathLike) -> str:
    """A path as ``str``; bytes that are not valid UTF-8 kept losslessly (surrogate escapes)."""
    return os.fsdecode(os.fspath(path))


def read_ecg(path: str | Path, options: ReadOptions | None = None) -> Ecg:
    """Read exactly one record as :class:`Ecg` (``signal``: (leads, samples) float32 mV).

    A container holding several records is a :class:`FormatError` that lists
    how to pick one (``"file.hdf5::exam_id"``, see :func:`list_records`).
    """
    options = options or ReadOptions()
    path = _text_path(path)
    container, key = split_key(path)
    fmt = detect_format(container, options.format)
    if fmt != "hdf5" or key is not None:
        return next(_iter_records(path, container, key, fmt, options))
    keys = list_records(container, options)
    if len(keys) != 1:
        raise FormatError(container, f"holds {len(keys)} records; read one as "
                                     f"'{container}{KEY_SEP}<exam_id>' (e.g. {keys[0] if keys else '...'}) "
                                     "or iterate over all with iter_records()")
    return next(iter_records(keys[0], options))


def list_records(path: str | Path, options: ReadOptions | None = None) -> list[str]:
    """Record paths in ``path`` without reading signals: ``"file.hdf5::exam_id"`` per HDF5
    exam, else ``[path]``."""
    options = options or ReadOptions()
    path = _text_path(path)
    container, key = split_key(path)
    fmt = detect_format(container, options.format)
    if key is not None:
        return [path]
    if fmt == "hdf5":
        from .hdf5_reader import list_hdf5
        with _as_input_errors(container, fmt):
            return list_hdf5(container, options)
    return [path]
