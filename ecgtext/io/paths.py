"""Turn what users type (files, folders, globs, ``-``) into record paths; pick a reader.

Record paths are strings. One record of a multi-record container is
``"container::key"`` (e.g. ``"exams_part0.hdf5::1169160"``).
"""

from __future__ import annotations

import errno
import fnmatch
import glob
import os
import sys
from dataclasses import dataclass, field
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
        try:
            os.scandir(path).close()
        except OSError as exc:
            raise _folder_error(path, exc) from None
        raise FormatError(path, "is a folder, not an ECG file; pass the files in it (or let the "
                                "command expand the folder)")
    if not os.path.exists(path):
        if (forced in (None, "wfdb")) and _has_header(path):
            return "wfdb"  # a WFDB record name without extension
        if os.path.islink(path):
            raise MissingFileError(path, "broken or looping symbolic link")
        raise MissingFileError(path, "no such file")
    try:
        with open(path, "rb"):  # permission problems named as such, whatever the reader
            pass
    except OSError as exc:
        raise os_error(path, exc) from None
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
    """Whether a CSV's first line names at least one ECG lead (metadata tables do not).

    An unreadable CSV counts as a record, so that reading it reports the problem.
    """
    from .leads import canonical_lead

    try:
        with open(path, encoding="utf-8", errors="ignore") as fh:
            first = fh.readline()
    except OSError:
        return True
    for sep in (",", ";", "\t"):
        first = first.replace(sep, ",")
    return any(canonical_lead(c.strip().strip('"').split("(")[0].split("[")[0]) for c in first.split(","))


@dataclass
class Expanded:
    """What :func:`expand_inputs` found: record paths, and what could not be walked.

    ``paths`` are the records (input order, folders and globs sorted, one per
    real file). ``failures`` are the folders (or inputs) that could not be
    listed, one :class:`InputError` each; ``failed_paths`` the same paths.
    """

    paths: list[str] = field(default_factory=list)
    failures: list[InputError] = field(default_factory=list)

    @property
    def failed_paths(self) -> list[str]:
        return [str(f.path) for f in self.failures]


def _folder_error(path: str, exc: OSError) -> InputError:
    if isinstance(exc, PermissionError) or getattr(exc, "errno", None) in (errno.EACCES, errno.EPERM):
        return UnreadableFileError(path, "permission denied: cannot list the folder")
    if getattr(exc, "errno", None) == errno.ELOOP:
        return UnreadableFileError(path, "symbolic link loop: the folder cannot be opened")
    return UnreadableFileError(path, f"cannot list the folder ({(exc.strerror or 'input/output error').lower()})")


def _walk(folder: Path, failures: list[InputError], visited: set[tuple[int, int]] | None = None
          ) -> list[str]:
    """Records in a folder tree, sorted: WFDB headers and header-less ECG files.

    Symbolic links to folders are followed; a folder already visited (a link
    loop, or two links to one folder) is not walked again. Folders that cannot
    be listed are added to ``failures``.
    """
    found: list[str] = []
    visited = set() if visited is None else visited

    def onerror(exc: OSError) -> None:
        failures.append(_folder_error(str(exc.filename or folder), exc))

    for root, dirs, files in os.walk(folder, onerror=onerror, followlinks=True):
        try:
            st = os.stat(root)
        except OSError as exc:
            failures.append(_folder_error(root, exc))
            dirs[:] = []
            continue
        if (st.st_dev, st.st_ino) in visited:
            dirs[:] = []
            continue
        visited.add((st.st_dev, st.st_ino))
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


def _expand_one(item: str, failures: list[InputError]) -> list[str]:
    if item.strip() == "":
        return []
    if os.path.isdir(item):
        return _walk(Path(item), failures)
    if os.path.exists(item) or _has_header(item):
        return [_canonical(item)]
    if _GLOB_CHARS & set(item):
        matches = sorted(_glob(item))
        if matches:
            out: list[str] = []
            visited: set[tuple[int, int]] = set()
            for m in matches:
                out.extend(_walk(Path(m), failures, visited) if os.path.isdir(m) else [_canonical(m)])
            return out
    return [item]  # missing (or "file::key"): reading it reports the problem


def _match_parts(parts: list[str], pattern: list[str]) -> bool:
    """Whether path components match glob components (``**``: any number of components)."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_match_parts(parts[i:], pattern[1:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _match_parts(parts[1:], pattern[1:])


def _glob(pattern: str) -> list[str]:
    """``glob.glob(pattern, recursive=True)``, but ``**`` follows links to folders only once.

    The standard library follows symbolic links under ``**`` without loop
    protection: a link loop makes it enumerate paths until the OS refuses
    (exponentially many with two loops). Here ``**`` walks each real folder once.
    """
    if "**" not in pattern:
        return glob.glob(pattern)
    parts = pattern.split(os.sep)
    first = next(i for i, p in enumerate(parts) if _GLOB_CHARS & set(p))
    base = os.sep.join(parts[:first]) or (os.sep if pattern.startswith(os.sep) else ".")
    rest = [p for p in parts[first:] if p]
    if not os.path.isdir(base):
        return []
    out: list[str] = []
    visited: set[tuple[int, int]] = set()
    for root, dirs, files in os.walk(base, followlinks=True):
        st = os.stat(root)
        if (st.st_dev, st.st_ino) in visited:
            dirs[:] = []
            continue
        visited.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = os.path.relpath(root, base)
        prefix = [] if rel == "." else rel.split(os.sep)
        for name in dirs + sorted(f for f in files if not f.startswith(".")):
            if _match_parts(prefix + [name], rest):
                out.append(os.path.join(root, name) if parts[:first] else
                           os.path.normpath(os.path.join(root, name)))
    return out


def _real_key(path: str) -> str:
    """Duplicate key: the real path (links resolved) of the file, plus any ``::key``."""
    container, key = split_key(path)
    real = os.path.normcase(os.path.realpath(container))
    return real if key is None else f"{real}{KEY_SEP}{key}"


def expand_inputs(inputs: Sequence[str], stdin: TextIO | None = None) -> Expanded:
    """Expand files, folders (recursively), globs and ``-`` into record paths, and failures.

    ``-`` reads newline-separated paths from ``stdin`` (default ``sys.stdin``;
    blank lines and ``#`` comments skipped). A folder yields one entry per
    record: a WFDB record's ``.hea`` but not its ``.dat``/``.mat`` signal
    files; header-less ``.mat``, HDF5, ``.npy``/``.npz`` and clinical files;
    ``.csv`` files whose first line names a lead. Symbolic links to folders
    are followed, with loop protection. Order is the input order, folders and
    globs sorted; duplicates are dropped by *real* path (links resolved), so a
    record reached twice is read once. Paths that do not exist are kept, so
    reading them reports a one-line error in place; folders that cannot be
    listed are returned in ``failures``.
    """
    out = Expanded()
    seen: set[str] = set()
    for item in inputs:
        item = os.fsdecode(item) if isinstance(item, bytes) else os.fspath(item)
        if item == "-":
            expanded = [p for ln in read_path_list(stdin) for p in _expand_one(ln, out.failures)]
        else:
            expanded = _expand_one(item, out.failures)
        for p in expanded:
            key = _real_key(p)
            if key not in seen:
                seen.add(key)
                out.paths.append(p)
    # a whole container stands for all its records: drop "file::key" entries it covers
    whole = {_real_key(p) for p in out.paths if split_key(p)[1] is None}
    out.paths = [p for p in out.paths if split_key(p)[1] is None or _real_key(split_key(p)[0]) not in whole]
    return out


def read_path_list(stdin: TextIO | None = None) -> list[str]:
    """The paths listed one per line on ``stdin`` (default ``sys.stdin``); blank lines and
    ``#`` comments skipped. Read as bytes, so a name that is not UTF-8 survives (surrogate
    escapes), as it does in argv."""
    stream = stdin if stdin is not None else sys.stdin
    raw = stream.buffer.read() if hasattr(stream, "buffer") else stream.read()
    text = os.fsdecode(raw) if isinstance(raw, bytes) else raw
    lines = [ln.strip() for ln in text.replace("\r\n", "\n").split("\n")]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def expand_paths(inputs: Sequence[str], stdin: TextIO | None = None) -> list[str]:
    """:func:`expand_inputs` as one list: the records, then each folder that could not be
    listed (reading such a path reports the problem, so a batch counts it as a failure)."""
    found = expand_inputs(inputs, stdin)
    return found.paths + [p for p in found.failed_paths if p not in found.paths]
