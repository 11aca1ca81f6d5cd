"""Long records in bounded memory: model windows prepared a chunk at a time.

:class:`WindowStream` turns a lazily opened recording
(:func:`ecgtext.io.stream.open_lazy`) into the model windows
:func:`ecgtext.preprocess.prepare` would make from the whole record, a chunk
(``chunk_windows``) at a time, by the same functions: leads picked by name
(``model_leads``), NaN runs repaired (``_repair``; each chunk is read with a
margin longer than the longest interpolated gap, so a run is treated as in the
whole record), resampled (``resample``; each chunk starts at a multiple of the
rate ratio's denominator and carries the polyphase filter's length as margin,
so the filter sees the same neighbourhood), cut at ``window_starts``. The
windows are bit-identical to ``prepare``'s; the flat-lead and NaN reports are
accumulated and final once the stream is exhausted.

In the engine, a reading worker does not prepare a record whose files exceed
:data:`ecgtext.io.stream.STREAM_MIN_BYTES` (a 45-min 12-lead Holter and up);
it hands back a :class:`StreamedRecord` marker and the model loop
(:func:`ecgtext.inference.engine.iter_features`) feeds its windows to the model
as they are prepared, so peak memory stays at one chunk of windows plus the
per-window features, whatever the recording's length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from ecgtext.config import PreprocessConfig
from ecgtext.errors import SignalError
from ecgtext.io import ReadOptions
from ecgtext.io.resample import rate_ratio, resample, resampled_length
from ecgtext.io.stream import CHUNK_WINDOWS, LazyRecord, open_lazy


@dataclass
class StreamedRecord:
    """A record whose windows are streamed (same report fields as ``PreparedRecord``).

    ``n_windows``, ``starts_s``, ``source_fs`` and ``duration_s`` are set by
    :meth:`open`; ``missing_leads``, ``flat_leads`` and ``nan_fraction`` are
    final once :meth:`iter_windows` is exhausted.
    """

    path: str
    pre: "PreprocessConfig | None" = None
    read_options: "ReadOptions | None" = None
    stride: int | None = None
    min_coverage: float = 0.5
    n_windows: int = 0
    starts_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    source_fs: float = 0.0
    duration_s: float = 0.0
    missing_leads: list[str] = field(default_factory=list)
    flat_leads: list[str] = field(default_factory=list)
    nan_fraction: float = 0.0
    _stream: Any = field(default=None, repr=False)

    def open(self) -> bool:
        """Open the file lazily; ``False`` when its format cannot be read by range."""
        pre = self.pre
        rec = open_lazy(self.path, self.read_options)
        if rec is None:
            return False
        try:
            self._stream = WindowStream(rec, pre, stride=self.stride, min_coverage=self.min_coverage)
        except BaseException:
            rec.close()
            raise
        s = self._stream
        self.n_windows = s.n_windows
        self.starts_s = s.starts.astype(np.float64) / float(pre.sample_rate)
        self.source_fs, self.duration_s = float(rec.fs), float(rec.duration_s)
        self.missing_leads = list(s.missing_leads)
        return True

    def iter_windows(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(window index, (leads, window) float32)`` in order; closes the file at the end."""
        s = self._stream
        try:
            for first, windows in s:
                for k in range(len(windows)):
                    yield first + k, windows[k]
        finally:
            s.record.close()
        self.missing_leads = list(s.missing_leads)
        self.flat_leads = list(s.flat_leads)
        self.nan_fraction = float(s.nan_fraction)
        self._stream = None


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
        from ecgtext.preprocess import model_leads, window_starts

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
        from ecgtext.preprocess import FLAT_PTP_MV, MAX_INTERP_GAP_S, _repair

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
        from ecgtext.io import read_ecg
        from ecgtext.preprocess import prepare

        p = prepare(read_ecg(path, options), pre, stride=stride, min_coverage=min_coverage)
        for a in range(0, len(p.starts), chunk_windows):
            yield p.starts[a: a + chunk_windows], p.windows[a: a + chunk_windows]
        return
    with rec:
        stream = WindowStream(rec, pre, stride=stride, min_coverage=min_coverage, chunk_windows=chunk_windows)
        for a, windows in stream:
            yield stream.starts[a: a + len(windows)], windows
