"""Long records in the inference engine: windows streamed a chunk at a time.

A reading worker does not prepare a record whose files exceed
:data:`ecgtext.io.stream.STREAM_MIN_BYTES` (a 45-min 12-lead Holter and up);
it hands back a :class:`StreamedRecord` marker and the engine's main loop
(:func:`ecgtext.inference.engine.iter_features`) opens the file lazily and
feeds its windows to the model as they are prepared, so peak memory stays at
one chunk of windows (:data:`ecgtext.io.stream.CHUNK_WINDOWS`) plus the
per-window features, whatever the recording's length. The features equal
those of the whole-record path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ecgtext.config import PreprocessConfig
    from ecgtext.io import ReadOptions


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
        from ecgtext.io.stream import WindowStream, open_lazy

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
