"""Turn what users type (files, folders, globs, ``-``) into record paths; pick a reader.

Record paths are strings. One record of a multi-record container is
``"container::key"`` (e.g. ``"exams_part0.hdf5::1169160"``).
"""

from __future__ import annotations

import glob
import os
import sys
from pathlib import Path
from typing import Sequence, TextIO

from ..errors import FormatError, InputError, MissingFileError, UnreadableFileError
from .detect import CLINICAL_EXT, sniff_format

KEY_SEP = "::"
HDF5_EXT = (".h5", ".hdf5", ".hdf")
NPY_EXT = (".npy", ".npz")
CSV_EXT = (".csv", ".tsv")
MAT_EXT = (".mat",)
_NOT_WFDB_SIGNAL = HDF5_EXT + NPY_EXT + CSV_EXT  # never a WFDB signal file, even next to a .hea
_KNOWN = (".hea",) + MAT_EXT + HDF5_EXT + NPY_EXT + CSV_EXT
_GLOB_CHARS = set("*?[")


def os_error(path: str, exc: OSError, what: str = "file") -> InputError:
    """An OS error opening or reading ``path`` as a one-line :class:`InputError` in plain words."""
    import errno

    if isinstance(exc, FileNotFoundError):
        return MissingFileError(path, f"no such {what}")
    if isinstance(exc, IsADirectoryError):
        return FormatError(path, "is a folder, not an ECG file")
    if isinstance(exc, NotADirectoryError):
        return MissingFileError(path, f"no such {what} (a part of the path is a file, not a folder)")
    if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM):
        return UnreadableFileError(path, f"permission denied: cannot read the {what}")
    reason = exc.strerror or "input/output error"
    return UnreadableFileError(path, f"cannot read the {what} ({reason.lower()})")


def split_key(path: str | os.PathLike) -> tuple[str, str | None]:
    """``"a.hdf5::12"`` -> ``("a.hdf5", "12")``; a plain path -> ``(path, None)``."""
    s = os.fspath(path)
    if KEY_SEP in s and not os.path.exists(s):
        container, key = s.rsplit(KEY_SEP, 1)
        return container, key
    return s, None


def _header_candidates(path: str) -> list[str]:
    root, ext = os.path.splitext(path)
    out = [path + ".hea", path + ".HEA"]
    if ext and ext.lower() not in _NOT_WFDB_SIGNAL + (".hea",):
        out += [root + ".hea", root + ".HEA"]
    return out


def header_path(path: str) -> str:
    """The WFDB header of a ``.hea`` (any case), a signal file or a record name.

    ``00001_hr.HEA`` and ``00001_hr.hea`` are both found; when none exists the
    lower-case name is returned, so that reading it reports it missing.
    """
    if path.lower().endswith(".hea"):
        return path
    cands = _header_candidates(path)
    found = next((c for c in cands if os.path.isfile(c)), None)
    return found or (cands[2] if len(cands) > 2 else cands[0])


def _has_header(path: str) -> bool:
    """Whether ``path`` is a WFDB signal file (or record name) with a ``.hea`` beside it."""
    return any(os.path.exists(c) for c in _header_candidates(path))


def detect_format(path: str, forced: str | None = None) -> str:
    """The reader for ``path``: ``"wfdb"``, ``"mat"``, ``"hdf5"``, ``"npy"`` or ``"csv"``.

    Raises :class:`MissingFileError` for a path that does not exist and
    :class:`FormatError` for a folder, an empty file or an unknown extension.
    A ``.mat`` (or any file) with a same-named ``.hea`` beside it is WFDB.
    """
    if os.path.isdir(path):
        raise FormatError(path, "is a folder, not an ECG file; pass the files in it (or let the "
                                "command expand the folder)")
    if not os.path.exists(path):
        if (forced in (None, "wfdb")) and _has_header(path):
            return "wfdb"  # a WFDB record name without extension
        raise MissingFileError(path, "no such file")
    if os.path.getsize(path) == 0:
        raise FormatError(path, "empty file (0 bytes)")
    if forced:
        return forced
    ext = os.path.splitext(path)[1].lower()
    if ext == ".hea" or _has_header(path):
        return "wfdb"
    if ext in MAT_EXT:
        return "mat"
    if ext in HDF5_EXT:
        return "hdf5"
    if ext in NPY_EXT:
        return "npy"
    if ext in CSV_EXT:
        return "csv"
    if (sniffed := sniff_format(path)) is not None:  # clinical formats, by content
        return sniffed
    if ext in (".dat",):
        raise MissingFileError(path, f"WFDB signal file without its header "
                                     f"{os.path.basename(os.path.splitext(path)[0])}.hea")
    shown = ext or "(none)"
    raise FormatError(path, f"unknown extension {shown}; expected .hea (WFDB), .mat, .h5/.hdf5, "
                            ".npy/.npz, .csv or a clinical format (.xml, .dcm, .scp, .ecg, .edf), "
                            "or state the input format",
                      field="format", value=shown, option="format")


def _canonical(path: str) -> str:
    """A WFDB signal file or record name -> its ``.hea`` (so a record appears once)."""
    if path.lower().endswith(".hea") or not _has_header(path):
        return path
    return header_path(path)


def _csv_names_leads(path: Path) -> bool:
    """Whether a CSV's first line names at least one ECG lead (metadata tables do not)."""
    from .leads import canonical_lead

    try:
        with open(path, encoding="utf-8", errors="ignore") as fh:
            first = fh.readline()
    except OSError:
        return False
    for sep in (",", ";", "\t"):
        first = first.replace(sep, ",")
    return any(canonical_lead(c.strip().strip('"').split("(")[0].split("[")[0]) for c in first.split(","))


def _walk(folder: Path) -> list[str]:
    """Records in a folder tree, sorted: WFDB headers and header-less ECG files."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        heads = {n[:-4] for n in files if n.lower().endswith(".hea")}
        for name in sorted(files):
            if name.startswith("."):
                continue
            stem, ext = os.path.splitext(name)
            ext = ext.lower()
            p = Path(root) / name
            if ext == ".hea":
                found.append(str(p))
            elif stem in heads and ext not in _NOT_WFDB_SIGNAL:
                continue  # a WFDB record's signal or annotation file: listed via its .hea
            elif ext in MAT_EXT + HDF5_EXT + NPY_EXT + CLINICAL_EXT:
                found.append(str(p))
            elif ext in CSV_EXT and _csv_names_leads(p):
                found.append(str(p))
    return found


def _expand_one(item: str) -> list[str]:
    if item.strip() == "":
        return []
    if os.path.isdir(item):
        return _walk(Path(item))
    if os.path.exists(item) or _has_header(item):
        return [_canonical(item)]
    if _GLOB_CHARS & set(item):
        matches = sorted(glob.glob(item, recursive=True))
        if matches:
            out: list[str] = []
            for m in matches:
                out.extend(_walk(Path(m)) if os.path.isdir(m) else [_canonical(m)])
            return out
    return [item]  # missing (or "file::key"): reading it reports the problem


def expand_paths(inputs: Sequence[str], stdin: TextIO | None = None) -> list[str]:
    """Expand files, folders (recursively), globs and ``-`` into record paths.

    ``-`` reads newline-separated paths from ``stdin`` (default ``sys.stdin``;
    blank lines and ``#`` comments skipped). A folder yields one entry per
    record: a WFDB record's ``.hea`` but not its ``.dat``/``.mat`` signal
    files; header-less ``.mat``, HDF5 and ``.npy``/``.npz`` files; ``.csv``
    files whose first line names a lead. Order is the input order, folders
    and globs sorted; duplicates (by resolved path) are dropped. Paths that do
    not exist are kept, so reading them reports a one-line error in place.
    """
    out: list[str] = []
    seen: set[str] = set()
    for item in inputs:
        item = os.fspath(item)
        if item == "-":
            stream = stdin if stdin is not None else sys.stdin
            lines = [ln.strip() for ln in stream.read().splitlines()]
            expanded = [p for ln in lines if ln and not ln.startswith("#") for p in _expand_one(ln)]
        else:
            expanded = _expand_one(item)
        for p in expanded:
            key = os.path.normcase(os.path.abspath(p))
            if key not in seen:
                seen.add(key)
                out.append(p)
    return out
