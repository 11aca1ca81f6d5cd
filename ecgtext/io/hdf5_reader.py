"""HDF5 containers: the CODE-15% layout (many exams per file) and single arrays.

CODE-15% (``exams_part*.hdf5``): dataset ``tracings`` of shape
(N, 4096, 12) float32 and ``exam_id`` (N,). What we assume, since the file
states none of it (each overridable with the ``fs``/``leads``/``units`` options):

- 400 Hz; leads in the order I, II, III, aVR, aVL, aVF, V1-V6 (the authors'
  ``DI, DII, DIII, AVR, AVL, AVF, V1..V6``);
- values in mV. The authors' README says "scale 1e-4V ... multiplied by 1000
  to obtain V", which contradicts itself; measured QRS amplitudes (~1-2 in
  lead II) are millivolts. Our amplitude check still rejects µV-like values;
- zero padding: 7 s (2800) and 10 s (4000) signals are centred in 4096 samples
  with zeros on both sides. We strip the leading and trailing samples where
  all 12 leads are exactly 0, so a 10 s exam becomes 4000 samples (10 s) and
  windows never see the padding as signal. An exam that is all zeros is a
  :class:`SignalError`;
- rows whose ``exam_id`` is 0 are unused pre-allocated rows and are skipped.

Each exam is a record ``"file.hdf5::<exam_id>"`` (the row index when there is
no ``exam_id``). Keys are unique: an ``exam_id`` that repeats is
``<exam_id>`` at its first row, then ``<exam_id>#2``, ``<exam_id>#3``, ... in
row order, so no exam is read twice or lost. A file with no exams (0 rows,
or only unused rows) is a :class:`SignalError`. Other HDF5 files: a 2-D dataset is one record, a 3-D one is
one record per row; pick the dataset with the ``mat_key`` option if there are several,
and state rate/leads via dataset or file attributes (``fs``, ``leads``,
``units``) or options.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from ..config import STANDARD_LEADS
from ..errors import EcgTextError, FormatError, MissingFileError, SignalError
from .array_reader import finish_array
from .paths import KEY_SEP, os_error
from .record import Ecg, ReadOptions

CODE_FS = 400.0
CODE_DATASET = "tracings"
_BLOCK = 256  # exams read per HDF5 slice when iterating
_FS_ATTRS = ("fs", "sample_rate", "sampling_rate", "sampling_frequency")
_LEAD_ATTRS = ("leads", "lead_names", "sig_name")


def _open(path: str):
    import h5py

    try:
        with open(path, "rb") as fh:  # OS problems (permissions, ...) named as such, not "not HDF5"
            magic = fh.read(8)
    except OSError as exc:
        raise os_error(path, exc) from None
    try:
        return h5py.File(path, "r")
    except OSError:
        what = "truncated or corrupt" if magic == b"\x89HDF\r\n\x1a\n" else "not an HDF5 file"
        raise FormatError(path, f"cannot open as HDF5: {what}") from None


class _Container:
    """An open HDF5 file with its signal dataset located and record keys listed."""

    def __init__(self, path: str, options: ReadOptions):
        import h5py

        self.path, self.options = path, options
        self.file = _open(path)
        try:
            self.name, self.ds = self._find(h5py)
            self.code = self.name.strip("/") == CODE_DATASET and self.ds.ndim == 3
            self.many = self.ds.ndim == 3
            self.keys, self.rows = self._keys()
        except BaseException:
            self.file.close()
            raise

    def _find(self, h5py) -> tuple[str, Any]:
        f, key = self.file, self.options.mat_key
        if key is None and CODE_DATASET in f:
            key = CODE_DATASET
        if key is not None:
            item = f.get(key)
            if not isinstance(item, h5py.Dataset):
                raise FormatError(self.path, f"no dataset {key!r} in the HDF5 file "
                                             f"(has: {', '.join(sorted(f.keys()))})")
            return key, item
        found: list[str] = []
        f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset)
                     and obj.ndim in (2, 3) and obj.dtype.kind in "iuf" else None)
        if len(found) != 1:
            raise FormatError(self.path, f"the HDF5 file holds {len(found)} candidate signal datasets "
                                         f"({', '.join(found) or 'none'}); name the one to read",
                              field="dataset", value=found, option="mat_key")
        return found[0], f[found[0]]

    def _keys(self) -> tuple[list[str], list[int]]:
        """Unique record keys and their rows: ``exam_id``, then ``exam_id#2``, ``#3``, ... for
        repeats (in row order), or the row index when there is no ``exam_id``."""
        if not self.many:
            return [], []
        n = self.ds.shape[0]
        ids = self.file.get("exam_id")
        if ids is not None and ids.shape == (n,) and ids.dtype.kind in "iu":
            values = np.asarray(ids[()])
            rows = [i for i in range(n) if not (self.code and values[i] == 0)]
            keys, count = [], {}
            for i in rows:
                k = str(int(values[i]))
                count[k] = count.get(k, 0) + 1
                keys.append(k if count[k] == 1 else f"{k}#{count[k]}")
            if len(keys) != len(set(keys)):  # an id that itself looks like "123#2": use rows
                return [f"row{i}" for i in rows], rows
            return keys, rows
        return [str(i) for i in range(n)], list(range(n))

    def require_records(self) -> None:
        if self.many and not self.keys:
            n = self.ds.shape[0]
            raise SignalError(self.path, f"the HDF5 file holds no exams (dataset {self.name!r} has "
                                         f"{n} row{'s' if n != 1 else ''}"
                                         f"{', all unused (exam_id 0)' if n else ''})",
                              field="exam count", value=0)

    def _attr(self, names: tuple[str, ...]) -> Any:
        for holder in (self.ds.attrs, self.file.attrs):
            for n in names:
                if n in holder:
                    return holder[n]
        return None

    def record(self, array: np.ndarray, key: str | None, row: int | None) -> Ecg:
        """One exam's 2-D array -> Ecg."""
        display = f"{self.path}{KEY_SEP}{key}" if key is not None else self.path
        meta: dict[str, Any] = {"format": "hdf5", "comments": [], "dataset": self.name}
        if key is not None:
            exam = key.split("#", 1)[0]
            meta["exam_id"] = int(exam) if exam.isdigit() else exam
            meta["row"] = row
        fs = self._attr(_FS_ATTRS)
        fs = float(np.asarray(fs).reshape(-1)[0]) if fs is not None else None
        leads = self._attr(_LEAD_ATTRS)
        if leads is not None:
            leads = [x.decode() if isinstance(x, bytes) else str(x) for x in np.asarray(leads).reshape(-1)]
        units = self._attr(("units",))
        if units is not None:
            units = np.asarray(units).reshape(-1)[0]
            units = units.decode() if isinstance(units, bytes) else str(units)
        if self.code:
            meta["layout"] = "code15"
        ecg = finish_array(array, display, self.options, fs=fs, leads=leads, units=units, meta=meta,
                           default_fs=CODE_FS if self.code else None,
                           default_leads=list(STANDARD_LEADS) if self.code else None,
                           default_layout="samples-first" if self.code else None)
        if self.code:
            ecg = _strip_padding(ecg)
        return ecg

    def iter(self, only: str | None = None) -> Iterator[Ecg]:
        if not self.many:
            if only is not None:
                raise MissingFileError(self.path, f"holds a single record; read it without '{KEY_SEP}{only}'")
            yield self.record(self._read(slice(None)), None, None)
            return
        if only is not None:
            try:
                i = self.keys.index(only)
            except ValueError:
                raise MissingFileError(f"{self.path}{KEY_SEP}{only}",
                                       f"no exam {only!r} in the file ({len(self.keys)} exams)") from None
            yield self.record(self._read(self.rows[i]), only, self.rows[i])
            return
        for start in range(0, len(self.rows), _BLOCK):
            rows = self.rows[start:start + _BLOCK]
            block = self._read(slice(rows[0], rows[-1] + 1))
            for key, row in zip(self.keys[start:start + _BLOCK], rows):
                yield self.record(block[row - rows[0]], key, row)

    def _read(self, index) -> np.ndarray:
        try:
            return np.asarray(self.ds[index])
        except EcgTextError:
            raise
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise SignalError(self.path, f"cannot read dataset {self.name!r} ({exc})") from None

    def close(self) -> None:
        self.file.close()


def _strip_padding(ecg: Ecg) -> Ecg:
    """Drop CODE-15's symmetric zero padding (samples where every lead is exactly 0)."""
    nonzero = np.flatnonzero(np.any(ecg.signal != 0, axis=0))
    if nonzero.size == 0:
        raise SignalError(ecg.path, "the exam is all zeros (an empty, padding-only row)")
    first, last = int(nonzero[0]), int(nonzero[-1])
    n = ecg.signal.shape[1]
    ecg.meta["padding_removed"] = [first, n - 1 - last]
    if first or last < n - 1:
        ecg.signal = np.ascontiguousarray(ecg.signal[:, first:last + 1])
    return ecg


def iter_hdf5(path: str, options: ReadOptions, key: str | None = None) -> Iterator[Ecg]:
    """Yield every record (or only ``key``) of an HDF5 file as :class:`Ecg`."""
    box = _Container(path, options)
    try:
        if key is None:
            box.require_records()
        yield from box.iter(key)
    finally:
        box.close()


def list_hdf5(path: str, options: ReadOptions) -> list[str]:
    """Record keys ``"path::exam_id"`` of an HDF5 file (no signal read); ``[path]`` for one record."""
    box = _Container(path, options)
    try:
        box.require_records()
        return [f"{path}{KEY_SEP}{k}" for k in box.keys] if box.many else [path]
    finally:
        box.close()
