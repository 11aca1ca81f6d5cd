"""Long recordings in bounded memory: open lazily, read sample ranges, prepare windows in chunks.

A 24-hour 12-lead Holter at 500 Hz is 43 million samples per lead; reading it
whole (``read_ecg``) and windowing it (``prepare``) holds several copies of it
(~9 GB). Here a recording is opened without reading its samples
(:func:`open_lazy`: ``.npy`` via ``np.load(mmap_mode="r")``, WFDB format 16 and
ISHNE via :class:`numpy.memmap`, other WFDB formats via ``wfdb.rdrecord``'s
``sampfrom``/``sampto``, EDF via pyEDFlib's ``readSignal(start, n)``) and
:class:`WindowStream` produces the model windows a chunk at a time, so peak
memory depends on the chunk (``chunk_windows``), not on the recording.

The windows are those :func:`ecgtext.preprocess.prepare` makes from the whole
record, by the same functions: leads picked by name (``model_leads``), NaN runs
repaired (``_repair``; each chunk is read with a margin longer than the longest
interpolated gap, so a run is treated as it would be in the whole record),
resampled (``resample``; each chunk starts at a multiple of the rate ratio's
denominator and carries the filter's length as margin, so the polyphase filter
sees the same neighbourhood), and cut at :func:`~ecgtext.preprocess.window_starts`.
The flat-lead and NaN reports are accumulated over the chunks and final once
the stream is exhausted.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from ..config import PreprocessConfig
from ..errors import SignalError
from .derived import derive_limb_leads
from .leads import resolve_leads
from .record import ReadOptions, make_ecg, mv_per_unit, orient, unit_scale
from .resample import rate_ratio, resample, resampled_length

log = logging.getLogger(__name__)

# A record whose files hold at least this many bytes is streamed (~45 min of 12-lead
# int16 at 500 Hz); smaller ones are read whole, which is faster.
STREAM_MIN_BYTES = 32 * 2 ** 20
CHUNK_WINDOWS = 64  # windows per chunk: 64 x 12 x 5000 float32 = 15 MB


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
    import wfdb

    from .wfdb_reader import record_base

    base = record_base(path)
    try:
        h = wfdb.rdheader(base)
    except Exception:  # noqa: BLE001 - read_ecg reports a bad header properly
        return None
    if getattr(h, "n_seg", None) is not None or not h.sig_len or not h.fs or not h.n_sig:
        return None
    if any(s not in (None, 1) for s in (h.samps_per_frame or [])):
        return None  # multi-frequency: read_ecg resamples it whole
    units = [u or "mV" for u in (h.units or ["mV"] * h.n_sig)]
    if any(mv_per_unit(u) is None for u in units):
        return None
    scale = np.array([mv_per_unit(u) for u in units])[:, None]
    gain = np.array([g if g else 200.0 for g in h.adc_gain])[:, None]
    baseline = np.array(h.baseline, dtype=np.float64)[:, None]
    folder = os.path.dirname(base)
    fast = (all(str(f) == "16" for f in h.fmt) and len(set(h.file_name)) == 1
            and not any(h.skew or []) and len(set(h.byte_offset or [0])) == 1)
    if fast:
        file = os.path.join(folder, h.file_name[0])
        offset = (h.byte_offset or [0])[0] or 0
        try:
            if os.path.getsize(file) < offset + 2 * h.n_sig * h.sig_len:
                return None  # truncated: read_ecg says so
        except OSError:
            return None

        def read(a: int, b: int) -> np.ndarray:
            # map only this range (see _mapped): (samples, channels), transposed for this chunk
            raw = np.memmap(file, dtype="<i2", mode="r", offset=offset + 2 * h.n_sig * a, shape=(b - a, h.n_sig))
            frame = np.array(raw).T
            del raw
            x = frame.astype(np.float64)
            x[frame == -32768] = np.nan
            return (x - baseline) / gain * scale
    else:
        def read(a: int, b: int) -> np.ndarray:
            rec = wfdb.rdrecord(base, sampfrom=a, sampto=b, physical=False, return_res=64)
            d = rec.d_signal.T.astype(np.float64)
            return (d - baseline) / gain * scale

    return _finish(path, h.fs, list(h.sig_name), h.sig_len, read, options, {"format": "wfdb"})


def _lazy_ishne(path: str, options: ReadOptions) -> LazyRecord | None:
    from .ishne_reader import read_header, read_ishne_range

    h = read_header(path)
    keep = h.keep
    if not keep:
        return None

    def read(a: int, b: int) -> np.ndarray:
        return read_ishne_range(path, h, a, b)

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

    Streamable: ``.npy`` (with ``fs`` and ``leads`` options), WFDB single-segment records
    (format 16 memory-mapped, others through ``wfdb.rdrecord``), ISHNE, EDF/EDF+/BDF
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


# --------------------------------------------------------------------------- windows
@dataclass
class WindowStream:
    """Model windows of a :class:`LazyRecord`, produced ``chunk_windows`` at a time.

    Iterating yields ``(first, windows)``: the index of the chunk's first window
    and ``(k, n_model_leads, window)`` float32 mV in the model's lead order --
    together exactly ``prepare(read_ecg(path), pre, stride).windows``.
    ``starts`` (W,) int64 are known up front; ``flat_leads``, ``nan_fraction``
    and ``missing_leads`` (absent or all-NaN) are final once the iteration ends.
    """

    record: LazyRecord
    pre: PreprocessConfig
    stride: int | None = None
    min_coverage: float = 0.5
    chunk_windows: int = CHUNK_WINDOWS
    starts: np.ndarray = field(init=False)
    present: list[str] = field(init=False)
    missing_leads: list[str] = field(init=False)
    flat_leads: list[str] = field(init=False, default_factory=list)
    nan_fraction: float = field(init=False, default=0.0)

    def __post_init__(self):
        from ..preprocess import model_leads, window_starts

        rec, pre = self.record, self.pre
        self.present, self._position = model_leads(rec.leads, pre, rec.path)
        n_out = resampled_length(rec.n_samples, rec.fs, pre.sample_rate)
        if n_out < self.min_coverage * pre.window:
            raise SignalError(rec.path, f"record is {rec.n_samples / rec.fs:.2f} s, shorter than "
                                        f"{self.min_coverage:.0%} of the model's {pre.window_seconds:g} s window")
        self._n_out = n_out
        self.starts = window_starts(n_out, pre.window, self.stride)
        self.missing_leads = [lead for lead in pre.leads if lead not in self._position]
        if self.chunk_windows < 1:
            raise ValueError(f"chunk_windows must be at least 1, got {self.chunk_windows}")

    @property
    def n_windows(self) -> int:
        return len(self.starts)

    @property
    def source_fs(self) -> float:
        return self.record.fs

    @property
    def duration_s(self) -> float:
        return self.record.duration_s

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        from ..preprocess import FLAT_PTP_MV, MAX_INTERP_GAP_S, _repair

        rec, pre = self.record, self.pre
        fs, n_in, n_out, w = rec.fs, rec.n_samples, self._n_out, pre.window
        up, down = rate_ratio(fs, pre.sample_rate)
        half = 10 * max(up, down) if up != down else 0  # scipy's resample_poly filter half-length
        max_gap = max(1, int(round(MAX_INTERP_GAP_S * fs)))
        margin = max_gap + 1
        rows_in = [self._position[lead] for lead in self.present]
        rows_out = [pre.leads.index(lead) for lead in self.present]
        n_p = len(self.present)
        lo = np.full(n_p, np.inf, dtype=np.float32)
        hi = np.full(n_p, -np.inf, dtype=np.float32)
        alive = np.zeros(n_p, dtype=bool)
        bad = 0
        covered = 0  # input samples [0, covered) are in the reports
        W = len(self.starts)
        for a in range(0, W, self.chunk_windows):
            b = min(W, a + self.chunk_windows)
            o0, o1 = int(self.starts[a]), min(int(self.starts[b - 1]) + w, n_out)
            if up == down:
                s0, s1 = o0, o1
                c1 = n_in if b == W else o1
            else:
                s0 = max(0, ((o0 * down - half) // up - 2) // down * down)  # a multiple of `down`
                s1 = min(n_in, -(-(o1 * down + half) // up) + 2)
                c1 = n_in if b == W else min(n_in, o1 * down // up)
            c0 = covered
            r0 = max(0, min(s0, c0) - margin)
            r1 = min(n_in, max(s1, c1) + margin)
            x = rec.read(r0, r1)
            if rows_in != list(range(x.shape[0])):
                x = x[rows_in]
            finite = np.isfinite(x)
            core = slice(c0 - r0, c1 - r0)
            if not finite.all():
                bad += int((~finite[:, core]).sum())
                for j in range(n_p):
                    if not finite[j].any():
                        x[j] = 0.0
                    elif not finite[j].all():
                        x[j] = _repair(x[j], max_gap)
            if c1 > c0:
                alive |= finite[:, core].any(axis=1)
                lo = np.minimum(lo, x[:, core].min(axis=1))
                hi = np.maximum(hi, x[:, core].max(axis=1))
            covered = max(covered, c1)
            y = resample(x[:, s0 - r0: s1 - r0], fs, pre.sample_rate)
            off = s0 * up // down
            windows = np.zeros((b - a, len(pre.leads), w), dtype=np.float32)
            for k, s in enumerate(self.starts[a:b]):
                seg = y[:, s - off: s - off + w]
                windows[k, rows_out, :seg.shape[1]] = seg
            del x, y
            yield a, windows
        dead = [lead for j, lead in enumerate(self.present) if not alive[j]]
        if len(dead) == n_p:
            raise SignalError(rec.path, "no finite values: every lead the model uses is all NaN/inf")
        self.nan_fraction = bad / float(n_p * n_in)
        self.flat_leads = [lead for j, lead in enumerate(self.present)
                           if alive[j] and hi[j] - lo[j] < FLAT_PTP_MV]
        self.missing_leads = [lead for lead in pre.leads if lead not in self._position or lead in dead]


def iter_windows(path: str, pre: PreprocessConfig, options: ReadOptions | None = None, *,
                 stride: int | None = None, min_coverage: float = 0.5,
                 chunk_windows: int = CHUNK_WINDOWS) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(starts, windows)`` chunks of a recording, streamed when its format allows.

    ``windows`` is ``(k, n_model_leads, window)`` float32 mV and ``starts`` ``(k,)``
    int64 window starts at the model rate; together the chunks equal
    ``prepare(read_ecg(path, options), pre, stride)``. A format that cannot be read
    by range is read whole and cut into the same chunks.
    """
    rec = open_lazy(path, options)
    if rec is None:
        from ..preprocess import prepare
        from . import read_ecg

        p = prepare(read_ecg(path, options), pre, stride=stride, min_coverage=min_coverage)
        for a in range(0, len(p.starts), chunk_windows):
            yield p.starts[a: a + chunk_windows], p.windows[a: a + chunk_windows]
        return
    with rec:
        stream = WindowStream(rec, pre, stride=stride, min_coverage=min_coverage, chunk_windows=chunk_windows)
        for a, windows in stream:
            yield stream.starts[a: a + len(windows)], windows
