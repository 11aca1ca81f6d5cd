"""MATLAB ``.mat`` files without a WFDB header.

- CPSC 2018 layout: a struct ``ECG`` with ``data`` (12 x samples, mV) and
  ``sex``/``age`` fields. The file does not state rate or lead order; the
  dataset documents 500 Hz and I, II, III, aVR, aVL, aVF, V1-V6, which we use
  unless the ``fs``/``leads`` options say otherwise.
- Any other numeric variable (``val`` preferred, else the only array, else
  the ``mat_key`` option), e.g. Chapman-Shaoxing's ``val`` (5000 x 12, µV): needs
  ``fs`` and ``leads`` (and ``units="uV"`` for µV; mV is assumed and
  checked).
- MATLAB v7.3 files (HDF5 inside) are read with ``h5py``; MATLAB stores
  column-major, so arrays are transposed back to MATLAB's shape.

A ``.mat`` with a same-named ``.hea`` beside it is a WFDB signal file (CinC
Challenges) and never reaches this reader.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..config import STANDARD_LEADS
from ..errors import FormatError
from .array_reader import finish_array
from .record import Ecg, ReadOptions

CPSC_FS = 500.0
_FS_NAMES = ("fs", "Fs", "FS", "sample_rate", "sampling_rate", "SamplingRate", "freq")


def _is_numeric(v: Any) -> bool:
    return isinstance(v, np.ndarray) and v.dtype.kind in "iuf" and v.size > 1


def _text(v: Any) -> str | None:
    a = np.asarray(v)
    if a.dtype.kind in "US" and a.size >= 1:
        return str(a.reshape(-1)[0]).strip()
    if a.dtype.kind in "iu" and a.ndim >= 1 and a.size > 0 and a.size < 64:  # v7.3 char arrays
        try:
            return "".join(chr(int(c)) for c in a.reshape(-1)).strip()
        except ValueError:
            return None
    return None


def _number(v: Any) -> float | None:
    a = np.asarray(v)
    if a.dtype.kind in "iuf" and a.size == 1:
        x = float(a.reshape(()))
        return x if np.isfinite(x) else None
    return None


def _load(path: str) -> dict[str, Any]:
    """Variables of a .mat file (v4-v7 via scipy, v7.3 via h5py), names -> arrays/structs."""
    import scipy.io

    try:
        m = scipy.io.loadmat(path)
    except NotImplementedError:  # scipy: "Please use HDF reader for matlab v7.3 files"
        return _load_v73(path)
    except MemoryError:
        raise
    except PermissionError as exc:
        from .paths import os_error

        raise os_error(path, exc) from None
    except Exception:  # scipy raises ValueError/TypeError/OSError/... on non-MAT bytes
        raise FormatError(path, "not a MATLAB .mat file we can read (unrecognised, corrupt or "
                                "truncated contents)") from None
    return {k: v for k, v in m.items() if not k.startswith("__")}


def _load_v73(path: str) -> dict[str, Any]:
    import h5py

    out: dict[str, Any] = {}
    try:
        with h5py.File(path, "r") as f:
            for name, item in f.items():
                if name.startswith("#"):
                    continue
                if isinstance(item, h5py.Dataset):
                    out[name] = np.asarray(item[()]).T  # column-major on disk
                elif isinstance(item, h5py.Group):
                    out[name] = {k: np.asarray(v[()]).T for k, v in item.items()
                                 if isinstance(v, h5py.Dataset)}
    except OSError as exc:
        raise FormatError(path, f"not a MATLAB v7.3 (HDF5) file we can read ({exc})") from None
    return out


def _struct_fields(v: Any) -> dict[str, Any] | None:
    """A MATLAB struct (scipy record array or v7.3 group) as a dict, else None."""
    if isinstance(v, dict):
        return v
    if isinstance(v, np.ndarray) and v.dtype.names and v.size == 1:
        return {name: v[name].reshape(-1)[0] for name in v.dtype.names}
    return None


def read_mat(path: str, options: ReadOptions) -> Ecg:
    """Read a header-less ``.mat`` ECG (CPSC 2018 struct, or a plain array with options)."""
    variables = _load(path)
    if not variables:
        raise FormatError(path, "the .mat file holds no variables")
    meta: dict[str, Any] = {"format": "mat", "comments": []}
    key = options.mat_key
    if key is None:
        struct = _struct_fields(variables.get("ECG"))
        if struct is not None and "data" in struct:
            key = "ECG"
        elif "val" in variables:
            key = "val"
        else:
            arrays = [k for k, v in variables.items() if _is_numeric(v) or _struct_fields(v)]
            if len(arrays) != 1:
                raise FormatError(path, f"the .mat holds {len(arrays)} candidate arrays "
                                        f"({', '.join(sorted(variables))}); name the one to read",
                                  field="variable", value=arrays, option="mat_key")
            key = arrays[0]
    if key not in variables:
        raise FormatError(path, f"no variable {key!r} in the .mat (has: {', '.join(sorted(variables))})")
    meta["key"] = key
    value = variables[key]
    struct = _struct_fields(value)
    default_fs = default_leads = default_layout = None
    if struct is not None:
        if "data" not in struct:
            raise FormatError(path, f"variable {key!r} is a struct without a 'data' field "
                                    f"(fields: {', '.join(struct)})")
        # CPSC 2018: ECG.data is 12 x samples at 500 Hz in the standard lead order
        value = np.asarray(struct["data"])
        default_fs, default_leads, default_layout = CPSC_FS, list(STANDARD_LEADS), "leads-first"
        meta["layout"] = "cpsc2018"
        sex, age = _text(struct.get("sex")), _number(struct.get("age"))
        if sex:
            meta["sex"] = {"male": "M", "m": "M", "female": "F", "f": "F"}.get(sex.lower(), sex)
        if age is not None:
            meta["age"] = int(age) if float(age).is_integer() else age
    if not _is_numeric(np.asarray(value)):
        raise FormatError(path, f"variable {key!r} is not a numeric signal array")
    fs = next((x for x in (_number(variables[n]) for n in _FS_NAMES if n in variables)
               if x and x > 0), None)
    return finish_array(np.asarray(value), path, options, fs=fs, leads=None, units=None,
                        meta=meta, default_fs=default_fs, default_leads=default_leads,
                        default_layout=default_layout)
