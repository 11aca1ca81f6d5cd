"""Long recordings opened lazily: read any sample range without loading the rest.

A 24-hour 12-lead Holter at 500 Hz is 43 million samples per lead; reading it
whole (``read_ecg``) and windowing it (``prepare``) holds several copies of it
(~9 GB). Here a recording is opened without reading its samples
(:func:`open_lazy`: ``.npy`` via ``np.load(mmap_mode="r")``, WFDB via the WFDB
reader's own range reads (``open_wfdb_range``), ISHNE via :class:`numpy.memmap`,
EDF via pyEDFlib's ``readSignal(start, n)``), and
:meth:`LazyRecord.read` returns the rows and values ``read_ecg`` would give for
a sample range. :class:`ecgtext.inference.streaming.WindowStream` turns that
into model windows a chunk at a time (windowing lives above this layer, beside
``prepare``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .derived import derive_limb_leads
from .leads import resolve_leads
from .record import ReadOptions, make_ecg, mv_per_unit, orient, unit_scale

log = logging.getLogger(__name__)

# A record whose files hold at least this many bytes is streamed (~45 min of 12-lead
# int16 at 500 Hz); smaller ones are read whole, which is faster.
STREAM_MIN_BYTES = 32 * 2 ** 20
CHUNK_WINDOWS = 32  # windows per chunk: 32 x 12 x 5000 float32 = 7.7 MB (~50 MB of temporaries)


@dataclass
class LazyRecord:
    """A recording opened without reading its samples.

    ``leads`` are the resolved lead names (after the lead map, derived limb
    leads included); :meth:`read` returns ``(leads, stop - start)`` float32 mV,
    exactly the rows and values :func:`~ecgtext.io.read_ecg` would give.
    """

    path: str
    fs: float
    leads: list[str]
    n_samples: int
    meta: dict[str, Any]
    _read: Callable[[int, int], np.ndarray]  # stored channels, float64 mV
    _keep: list[int]
    _stored: list[str]
    _derive: bool = False
    _close: Callable[[], None] | None = None

    def read(self, start: int, stop: int) -> np.ndarray:
        start, stop = max(0, int(start)), min(self.n_samples, int(stop))
        x = self._read(start, max(start, stop))
        if self._derive:
            x, _, _ = derive_limb_leads(x, self._stored)
        if self._keep != list(range(x.shape[0])):
            x = x[self._keep]
        return x.astype(np.float32)

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.fs

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = None

    def __enter__(self) -> "LazyRecord":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


PROBE_S = 60.0  # seconds read at open time to validate units and leads like read_ecg does


def _finish(path: str, fs: float, stored: list[str], n: int, read: Callable[[int, int], np.ndarray],
            options: ReadOptions, meta: dict[str, Any], derive: bool = False,
            close: Callable[[], None] | None = None, units_source: str = "file") -> LazyRecord:
    names = stored
    if derive:
        _, names, derived = derive_limb_leads(np.zeros((len(stored), 0)), stored)
        meta["derived_leads"] = derived
        derive = bool(derived)
    rec = LazyRecord(path=path, fs=float(fs), leads=[], n_samples=int(n), meta=meta, _read=read,
                     _keep=[], _stored=list(stored), _derive=derive, _close=close)
    try:
        # the first minute goes through make_ecg: the same rate, lead and amplitude checks as read_ecg
        head = read(0, min(int(n), max(1, int(PROBE_S * fs))))
        if derive:
            head, _, _ = derive_limb_leads(head, stored)
        probe = make_ecg(head, fs, names, path, options, meta, units="mV", units_source=units_source)
    except BaseException:
        rec.close()
        raise
    rec.meta = probe.meta
    rec.meta["file_leads"] = list(stored)
    rec.leads = probe.leads
    rec._keep = resolve_leads(names, options, path).keep  # the rows make_ecg kept
    return rec


# --------------------------------------------------------------------------- formats
# _mapped: every range read maps only that range and unmaps it on return. A map held open
# over a whole 24-hour file would keep each page read so far resident in the process
# (counted in its RSS) -- memory that grows with the recording, which is what we avoid.
def _lazy_npy(path: str, options: ReadOptions) -> LazyRecord | None:
    if not path.lower().endswith(".npy") or options.fs is None or options.leads is None:
        return None  # .npz cannot be memory-mapped; without fs/leads read_ecg reports the problem
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError):
        return None
    if arr.ndim != 2 or arr.dtype.kind not in "iuf":
        return None
    n = orient(arr, len(options.leads), options.layout, path).shape[1]  # a view: nothing read
    del arr
    units = options.units or "mV"
    scale = unit_scale(units, options.gain, path)

    def read(a: int, b: int) -> np.ndarray:
        # a fresh map per range, dropped on return (see _mapped)
        view = orient(np.load(path, mmap_mode="r", allow_pickle=False), len(options.leads), options.layout, path)
        try:
            return np.asarray(view[:, a:b], dtype=np.float64) * scale
        finally:
            del view

    return _finish(path, options.fs, list(options.leads), n, read, options,
                   {"format": "npy"}, units_source="assumed" if options.units is None else "option")


def _lazy_wfdb(path: str, options: ReadOptions) -> LazyRecord | None:
    from .wfdb_reader import open_wfdb_range

    rng = open_wfdb_range(path, options)  # the reader's own header grammar, checks and decoders
    if rng is None:
        return None  # multi-segment or multi-frequency: read_ecg reads it whole
    scales = [mv_per_unit(u) for u in rng.units]
    if any(sc is None for sc in scales):
        return None  # a unit only the options can explain: read_ecg applies them
    scale = np.asarray(scales, dtype=np.float64)[:, None]

    def read(a: int, b: int) -> np.ndarray:
        x = rng.read(a, b)
        x *= scale
        return x

    return _finish(path, rng.fs, list(rng.names), rng.n_samples, read, options, dict(rng.meta))


def _lazy_ishne(path: str, options: ReadOptions) -> LazyRecord | None:
    from .ishne_reader import ishne_channels, read_header, read_ishne_range

    h = read_header(path)
    keep = ishne_channels(path, h, options)

    def read(a: int, b: int) -> np.ndarray:
        return read_ishne_range(path, h, a, b, keep)

    return _finish(path, h.fs, [h.names[k] for k in keep], h.n_samples, read, options, dict(h.meta), derive=True)


def _lazy_edf(path: str, options: ReadOptions) -> LazyRecord | None:
    from .edf_reader import open_edf, open_reader, read_edf_range

    info = open_edf(path, options)
    if not info.uniform:
        return None  # channels at different rates: read_ecg resamples them whole
    reader = open_reader(path, info)

    def read(a: int, b: int) -> np.ndarray:
        return read_edf_range(reader, info, a, b)

    return _finish(path, info.fs, info.names, info.n_samples, read, options, dict(info.meta), derive=True,
                   close=reader.close, units_source=info.units_source)


def open_lazy(path: str, options: ReadOptions | None = None) -> LazyRecord | None:
    """Open ``path`` for range reads without reading its samples; ``None`` when the format
    (or this file's layout) cannot be read by range -- then read it whole with ``read_ecg``.

    Streamable: ``.npy`` (with ``fs`` and ``leads`` options), WFDB single-segment one-rate
    records (the WFDB reader's range reads), ISHNE, EDF/EDF+/BDF
    whose ECG channels share one rate. Header problems raise the reader's errors.
    """
    from .paths import detect_format, split_key

    options = options or ReadOptions()
    container, key = split_key(path)
    if key is not None:
        return None
    fmt = detect_format(container, options.format)
    opener = {"npy": _lazy_npy, "wfdb": _lazy_wfdb, "ishne": _lazy_ishne, "edf": _lazy_edf}.get(fmt)
    return opener(container, options) if opener else None


def record_bytes(path: str) -> int:
    """Bytes of a record's files, from file sizes only (a WFDB ``.hea`` counts its signal files)."""
    from .paths import split_key

    container, key = split_key(path)
    if key is not None:
        return 0
    try:
        if container.lower().endswith(".hea"):
            stem = container[:-4]
            return sum(os.path.getsize(stem + ext) for ext in (".dat", ".mat") if os.path.exists(stem + ext))
        return os.path.getsize(container)
    except OSError:
        return 0


def should_stream(path: str, min_bytes: int | None = None) -> bool:
    """Whether a record is big enough to stream (a cheap size test; nothing is parsed).

    ``min_bytes`` defaults to :data:`STREAM_MIN_BYTES` (read at call time)."""
    return record_bytes(path) >= (STREAM_MIN_BYTES if min_bytes is None else min_bytes)
