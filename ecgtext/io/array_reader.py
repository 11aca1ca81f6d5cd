"""Plain arrays: NumPy ``.npy``/``.npz`` and CSV (one column per lead).

These files rarely say their sampling rate, units or lead order, so the user
says it (``ReadOptions``); what the file does state wins:

- ``.npz`` may carry ``fs`` (or ``sample_rate``/``sampling_rate``), ``leads``
  (or ``lead_names``) and ``units`` arrays next to the signal;
- a CSV header names the leads (``I,II,...`` optionally with a unit,
  ``II (uV)``), and a leading ``time``/``t``/``time_s`` (seconds) or ``time_ms``
  column gives the rate.

Without a stated rate the ``fs`` option is required; without names ``leads``; without
units mV is assumed and checked for plausible amplitudes.
"""

from __future__ import annotations

import csv
import io
import re
import zlib
from dataclasses import replace
from typing import Any

import numpy as np

from ..errors import EcgTextError, FormatError, LeadError, SignalError
from .paths import os_error
from .record import Ecg, ReadOptions, make_ecg, mv_per_unit, orient

_SIGNAL_KEYS = ("signal", "signals", "ecg", "data", "val", "x", "tracings")
_FS_KEYS = ("fs", "sample_rate", "sampling_rate", "sampling_frequency", "freq")
_LEAD_KEYS = ("leads", "lead_names", "sig_name", "channels")
_META_KEYS = set(_FS_KEYS + _LEAD_KEYS + ("units",))
_TIME_S = {"time", "t", "time_s", "time (s)", "time[s]", "time [s]", "seconds", "sec", "s"}
_TIME_MS = {"time_ms", "time (ms)", "time [ms]", "ms", "t_ms"}
_INDEX = {"", "index", "sample", "samples", "unnamed: 0"}
_UNIT_SUFFIX = re.compile(r"^(.*?)\s*[\(\[]\s*([µμu]?V|mV|nV)\s*[\)\]]\s*$", re.IGNORECASE)


def need_fs(path: str) -> FormatError:
    return FormatError(path, "the file does not state its sampling rate; give it (in Hz)",
                       field="sampling rate", option="fs")


def need_leads(path: str, n: int | None = None) -> LeadError:
    count = f" ({n} channels)" if n else ""
    return LeadError(path, f"the file does not name its leads{count}; give their names in file "
                           "order ('standard' is I,II,III,aVR,aVL,aVF,V1-V6)",
                     field="lead names", value=n, option="leads")


def resolve_units(stated: str | None, options: ReadOptions, path: str) -> tuple[str, str]:
    """``(units, source)``: the file's units win, then the user's, then assumed mV."""
    if stated:
        if mv_per_unit(stated) is None:
            raise FormatError(path, f"the file states units {stated!r}, which we do not know "
                                    "(expected V, mV or uV)")
        return stated, "file"
    if options.units:
        return options.units, "option"
    return "mV", "assumed"


def finish_array(array: np.ndarray, path: str, options: ReadOptions, *, fs: float | None,
                 leads: list[str] | None, units: str | None, meta: dict[str, Any],
                 default_fs: float | None = None, default_leads: list[str] | None = None,
                 default_layout: str | None = None) -> Ecg:
    """Build an :class:`Ecg` from a 2-D array plus what the file stated (``fs``, ``leads``, ``units``).

    The user's options fill in what the file leaves out, then the format's
    documented defaults (``default_*``, e.g. CPSC's 500 Hz); else a clear error.
    """
    arr = np.asarray(array)
    if arr.dtype.kind not in "iuf":
        raise FormatError(path, f"the signal array holds {arr.dtype} values, not numbers")
    if arr.size == 0:
        raise SignalError(path, f"zero-length signal (array of shape {arr.shape})")
    # what the file states wins; note the options that it made moot
    ignored = [name for name, stated, given in (("fs", fs, options.fs), ("leads", leads, options.leads),
                                                ("units", units, options.units))
               if stated is not None and given is not None]
    if ignored:
        meta["options_ignored"] = ignored
    rate = next((x for x in (fs, options.fs, default_fs) if x is not None), None)
    if rate is None:
        raise need_fs(path)
    names = next((x for x in (leads, options.leads, default_leads) if x is not None), None)
    if names is None:
        a = arr.reshape(1, -1) if arr.ndim == 1 else arr
        raise need_leads(path, min(a.shape) if a.ndim == 2 and min(a.shape) <= 16 else None)
    sig = orient(arr, len(names), options.layout, path, default_layout)
    unit, source = resolve_units(units, options, path)
    return make_ecg(sig, float(rate), names, path, options, meta, units=unit, units_source=source)


def _scalar(value: Any) -> float | None:
    a = np.asarray(value)
    if a.size != 1 or a.dtype.kind not in "iuf":
        return None
    v = float(a.reshape(()))
    return v if np.isfinite(v) and v > 0 else None


def _strings(value: Any) -> list[str] | None:
    a = np.asarray(value)
    if a.dtype.kind not in "USO" or a.size == 0:
        return None
    return [x.decode() if isinstance(x, bytes) else str(x) for x in a.reshape(-1)]


def read_npy(path: str, options: ReadOptions) -> Ecg:
    """A ``.npy`` array (leads x samples or samples x leads) or a ``.npz`` bundle."""
    import zipfile

    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc) and _has_npy_magic(path):
            raise FormatError(path, "the NumPy file holds Python objects, not numbers (it would need "
                                    "unpickling, which is never done)") from None
        raise FormatError(path, "not a NumPy .npy/.npz file we can read (corrupt header)") from None
    except zipfile.BadZipFile:
        raise FormatError(path, "not a valid .npz file (the zip archive is corrupt or truncated)") from None
    except PermissionError as exc:
        raise os_error(path, exc) from None
    except (OSError, EOFError):
        raise FormatError(path, "not a NumPy .npy/.npz file (unrecognised or truncated contents)") from None
    meta: dict[str, Any] = {"format": "npy", "comments": []}
    if isinstance(loaded, np.ndarray):
        return finish_array(_two_d(loaded, path), path, options, fs=None, leads=None, units=None,
                            meta=meta)
    with loaded as bundle:
        try:
            keys = list(bundle.keys())
            key = options.mat_key or next((k for k in _SIGNAL_KEYS if k in keys), None)
            if key is None:
                arrays = [k for k in keys if k not in _META_KEYS]
                if len(arrays) != 1:
                    raise FormatError(path, f"the .npz holds {len(arrays)} arrays "
                                            f"({', '.join(arrays) or 'none'}); name the one to read",
                                      field="array", value=arrays, option="mat_key")
                key = arrays[0]
            if key not in keys:
                raise FormatError(path, f"no array {key!r} in the .npz (has: {', '.join(keys)})")
            signal = bundle[key]
            fs = next((_scalar(bundle[k]) for k in _FS_KEYS if k in keys), None)
            leads = next((_strings(bundle[k]) for k in _LEAD_KEYS if k in keys), None)
            units = _strings(bundle["units"]) if "units" in keys else None
        except EcgTextError:
            raise
        except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error):
            raise FormatError(path, "cannot read the .npz: an array in it is corrupt or truncated") from None
    meta["format"] = "npz"
    meta["key"] = key
    unit = None
    if units:
        if len(set(units)) > 1:
            raise FormatError(path, f"the .npz states several units {sorted(set(units))}; "
                                    "store one unit for all leads")
        unit = units[0]
    return finish_array(_two_d(signal, path), path, options, fs=fs, leads=leads, units=unit, meta=meta)


def _has_npy_magic(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(6) == b"\x93NUMPY"
    except OSError:
        return False


def _two_d(a: np.ndarray, path: str) -> np.ndarray:
    if a.ndim > 2:
        squeezed = a.squeeze()
        if squeezed.ndim > 2:
            raise SignalError(path, f"expected one record as a 2-D (leads x samples) array, found "
                                    f"shape {a.shape}; store many records in HDF5 instead")
        return squeezed
    return a


def _sniff_delimiter(first_line: str, path: str) -> str:
    if path.lower().endswith(".tsv"):
        return "\t"
    counts = {d: first_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def _is_number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def read_csv(path: str, options: ReadOptions) -> Ecg:
    """A CSV/TSV with one column per lead, a header row of lead names (or the ``leads`` option)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            text = fh.read()
    except UnicodeDecodeError:
        raise FormatError(path, "not a text CSV file (cannot decode as UTF-8)") from None
    lines = text.splitlines()
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        raise FormatError(path, "empty CSV file")
    delim = _sniff_delimiter(lines[0], path)
    header = [c.strip() for c in next(csv.reader([lines[0]], delimiter=delim))]
    has_header = not all(_is_number(c) for c in header if c)
    body = "\n".join(lines[1:] if has_header else lines)
    try:
        import pandas as pd

        frame = pd.read_csv(io.StringIO(body), sep=delim, header=None, skipinitialspace=True,
                            na_values=["", "nan", "NaN", "NA", "inf", "-inf"], keep_default_na=True)
    except pd.errors.EmptyDataError:
        frame = pd.DataFrame(np.zeros((0, len(header))))
    except (ValueError, pd.errors.ParserError) as exc:
        d = re.search(r"expected (\d+) fields in line (\d+), saw (\d+)", str(exc), re.IGNORECASE)
        raise FormatError(path, "malformed CSV: " + (
            f"rows have different numbers of fields (expected {d[1]}, saw {d[3]} in data row {d[2]})"
            if d else "unbalanced quotes or irregular rows")) from None
    n_cols = len(header) if has_header else frame.shape[1]
    if frame.shape[1] != n_cols and frame.shape[0] > 0:
        raise FormatError(path, f"the header has {n_cols} columns but the rows have {frame.shape[1]}")
    bad = [str(header[i] if has_header else i) for i, dt in enumerate(frame.dtypes) if dt.kind not in "iufb"]
    if bad:
        raise FormatError(path, f"non-numeric values in column(s) {', '.join(bad)}")
    values = frame.to_numpy(dtype=np.float64).reshape(-1, n_cols)  # (samples, columns)

    meta: dict[str, Any] = {"format": "csv", "comments": []}
    fs_stated = None
    names: list[str] | None = None
    units: str | None = None
    if has_header:
        keep, names, col_units = [], [], []
        for i, raw in enumerate(header):
            low = raw.lower()
            if low in _TIME_S or low in _TIME_MS:
                if fs_stated is None and values.shape[0] > 1:
                    fs_stated = _fs_from_time(values[:, i], 1000.0 if low in _TIME_MS else 1.0, path)
                continue
            if low in _INDEX:
                continue
            m = _UNIT_SUFFIX.match(raw)
            names.append(m[1] if m else raw)
            col_units.append(m[2] if m else None)
            keep.append(i)
        values = values[:, keep]
        stated = {u for u in col_units if u}
        if len(stated) > 1:
            raise FormatError(path, f"columns state different units {sorted(stated)}; use one unit")
        if stated and None in col_units:
            raise FormatError(path, "some column headers state a unit and some do not")
        units = stated.pop() if stated else None
        if options.layout == "leads-first":
            raise FormatError(path, "a CSV with a header has one column per lead; it cannot be "
                                    "read leads-first", field="layout", value=options.layout,
                              option="layout")
        if not names:
            raise SignalError(path, "the CSV has no lead columns")
    elif options.leads is not None and options.layout is None and values.shape[1] != len(options.leads):
        raise LeadError(path, f"wrong lead count: {len(options.leads)} lead names given but the "
                              f"CSV has {values.shape[1]} columns", field="lead count",
                        value=len(options.leads), option="leads")
    # columns are leads unless layout "leads-first" says the rows are
    opts = options if options.layout else replace(options, layout="samples-first")
    return finish_array(values, path, opts, fs=fs_stated, leads=names, units=units, meta=meta)


def _fs_from_time(t: np.ndarray, per_second: float, path: str) -> float:
    """Sampling rate from a time column (seconds or ms); uniform steps required."""
    d = np.diff(t[np.isfinite(t)])
    if d.size == 0 or np.any(d <= 0):
        raise FormatError(path, "the time column is not strictly increasing")
    step = float(np.median(d))
    if np.max(np.abs(d - step)) > 0.01 * step:
        raise FormatError(path, "the time column is not uniformly spaced; resample the file, or "
                                "drop the column and give the sampling rate",
                          field="sampling rate", option="fs")
    fs = per_second / step
    return float(round(fs)) if abs(fs - round(fs)) < 1e-3 * fs else fs
