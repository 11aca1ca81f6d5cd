"""Record -> model input: reorder leads by name, clean bad values, resample, window.

``prepare(ecg, pre)`` turns any :class:`~ecgtext.io.Ecg` into the
``(windows, leads, window)`` float32 mV array the model's
:class:`~ecgtext.config.PreprocessConfig` asks for, with a report of what was
missing, flat or repaired. The order of steps matters:

1. leads are picked **by name** in the model's order (absent ones become zero
   rows and are reported in ``missing_leads``);
2. NaN/inf are repaired *before* resampling (the FIR filter would smear one
   NaN over a whole window): gaps up to ``MAX_INTERP_GAP_S`` are linearly
   interpolated, longer gaps and record edges are set to 0; a lead with no
   finite value counts as missing; a record with none is a SignalError;
3. resample to the model rate (polyphase, anti-aliased);
4. cut into windows: shorter than the window -> one window, zero-padded at
   the end; longer -> consecutive windows every ``stride`` samples plus a last
   window aligned to the end, so the whole record is covered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import PreprocessConfig
from .errors import LeadError, SignalError
from .io.leads import canonical_lead
from .io.record import Ecg, check_fs
from .io.resample import resample, resampled_length

MAX_INTERP_GAP_S = 0.1  # NaN gaps up to 100 ms are interpolated; longer ones are zeroed
FLAT_PTP_MV = 1e-3  # a lead whose values span under 1 µV carries no ECG
# Memory the resampled record plus its windows may take (float32). 4 GiB is a
# 12-lead record of ~23 h at 500 Hz; anything bigger is refused up front, with
# its size, instead of failing deep inside scipy with a MemoryError.
MAX_PREPARE_BYTES = 4 * 2 ** 30


@dataclass
class Prepared:
    """Model-ready windows of one record, plus what had to be done to get them.

    ``windows``: (W, n_model_leads, window) float32 mV in the model's lead order;
    ``starts``: (W,) int64 start sample of each window at the model rate.
    """

    windows: np.ndarray
    starts: np.ndarray
    missing_leads: list[str]
    flat_leads: list[str]
    nan_fraction: float
    source_fs: float
    duration_s: float
    path: str


def window_starts(n: int, window: int, stride: int | None = None) -> np.ndarray:
    """Start samples of windows covering ``n`` samples (see module docstring), int64."""
    stride = window if stride is None else int(stride)
    if stride <= 0:
        raise ValueError(f"stride must be positive, got {stride}")
    if n <= window:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, n - window + 1, stride, dtype=np.int64)
    if starts[-1] + window < n:  # cover the tail with a window ending at the last sample
        starts = np.append(starts, n - window)
    return starts


def _repair(x: np.ndarray, max_gap: int) -> np.ndarray:
    """Fill non-finite runs of one lead: interpolate runs <= max_gap inside, zero the rest."""
    bad = ~np.isfinite(x)
    good = np.flatnonzero(~bad)
    out = x.copy()
    out[bad] = np.interp(np.flatnonzero(bad), good, x[good])
    # find runs of bad samples; zero those that are long or touch an edge
    edges = np.diff(np.concatenate(([0], bad.astype(np.int8), [0])))
    run_starts, run_ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    for s, e in zip(run_starts, run_ends):
        if e - s > max_gap or s == 0 or e == x.size:
            out[s:e] = 0.0
    return out


def model_leads(leads: list[str], pre: PreprocessConfig, path: str) -> tuple[list[str], dict[str, int]]:
    """``(present, position)``: the model's leads the record has, in model order, and each
    canonical lead name's row in the record. Shared by :func:`prepare` and the streaming
    path (:mod:`ecgtext.io.stream`)."""
    position: dict[str, int] = {}
    for i, name in enumerate(leads):
        canon = canonical_lead(name) or name
        if canon in position:
            raise LeadError(path, f"lead {canon} appears twice")
        position[canon] = i
    present = [lead for lead in pre.leads if lead in position]
    if not present:
        raise LeadError(path, f"none of the model's leads ({', '.join(pre.leads)}) is in the "
                              f"record (it has {', '.join(leads)}); map names with a lead map",
                        field="lead names", value=list(leads), option="lead_map")
    return present, position


def prepare(ecg: Ecg, pre: PreprocessConfig, stride: int | None = None,
            min_coverage: float = 0.5, max_bytes: int = MAX_PREPARE_BYTES) -> Prepared:
    """Turn ``ecg`` into model windows for ``pre`` (rate, window, lead order, mV).

    ``stride`` is in samples at the model rate (default: the window, no
    overlap). A record shorter than ``min_coverage`` of one window (e.g. 5 s
    for a 10 s window at 0.5) is a :class:`SignalError` rather than a window
    that is mostly padding; pass 0 to accept any length. The sampling rate is
    validated and the memory the resampled record and its windows need is
    bounded (``max_bytes``) before anything is allocated. The windows are
    always finite.
    """
    sig = np.asarray(ecg.signal)
    if sig.ndim != 2 or sig.shape[1] == 0:
        raise SignalError(ecg.path, f"zero-length signal (shape {sig.shape})")
    fs = check_fs(ecg.fs, ecg.path, "the record")
    n_out = resampled_length(sig.shape[1], fs, pre.sample_rate)
    n_windows = len(window_starts(n_out, pre.window, stride)) if n_out > pre.window else 1
    need = 4 * len(pre.leads) * (2 * n_out + n_windows * pre.window)
    if need > max_bytes:
        raise SignalError(ecg.path, f"record of {sig.shape[1] / fs:.0f} s at {fs:g} Hz needs "
                                    f"{need / 2 ** 30:.1f} GiB to resample to {pre.sample_rate:g} Hz "
                                    f"and window (limit {max_bytes / 2 ** 30:.1f} GiB); split it into "
                                    "shorter records", field="record length", value=sig.shape[1])
    present, position = model_leads(ecg.leads, pre, ecg.path)
    x = sig[[position[lead] for lead in present]].astype(np.float32, copy=True)

    finite = np.isfinite(x)
    nan_fraction = 1.0 - float(finite.mean())
    dead: set[str] = set()
    if nan_fraction > 0:
        max_gap = max(1, int(round(MAX_INTERP_GAP_S * fs)))
        for j, lead in enumerate(present):
            if not finite[j].any():
                dead.add(lead)
                x[j] = 0.0
            elif not finite[j].all():
                x[j] = _repair(x[j], max_gap)
        if len(dead) == len(present):
            raise SignalError(ecg.path, "no finite values: every lead the model uses is all NaN/inf")

    span = x.max(axis=1) - x.min(axis=1)
    flat = [lead for j, lead in enumerate(present) if lead not in dead and span[j] < FLAT_PTP_MV]

    x = resample(x, fs, pre.sample_rate)
    n, w = x.shape[1], pre.window
    if n < min_coverage * w:
        raise SignalError(ecg.path, f"record is {sig.shape[1] / ecg.fs:.2f} s, shorter than "
                                    f"{min_coverage:.0%} of the model's {pre.window_seconds:g} s window")
    starts = window_starts(n, w, stride)
    windows = np.zeros((len(starts), len(pre.leads), w), dtype=np.float32)
    rows = [pre.leads.index(lead) for lead in present]
    for k, s in enumerate(starts):
        seg = x[:, s:s + w]
        windows[k, rows, :seg.shape[1]] = seg
    if not np.isfinite(windows).all():  # e.g. values near float32's limit overflowing in the filter
        raise SignalError(ecg.path, "non-finite values after resampling: the amplitudes are corrupt",
                          field="amplitude")
    missing = [lead for lead in pre.leads if lead not in position or lead in dead]
    return Prepared(windows=windows, starts=starts, missing_leads=missing, flat_leads=flat,
                    nan_fraction=nan_fraction, source_fs=float(ecg.fs),
                    duration_s=sig.shape[1] / float(ecg.fs), path=ecg.path)


def aggregate(features: Any, how: str = "mean") -> Any:
    """Pool per-window features (W, ...) of one record into one (...) vector.

    ``how``: ``"mean"`` or ``"max"``. Works on NumPy arrays and torch tensors.
    """
    if how == "mean":
        return features.mean(0)
    if how == "max":
        out = features.max(0)
        return out.values if hasattr(out, "values") and not isinstance(out, np.ndarray) else out
    raise ValueError(f"unknown aggregation {how!r}; expected 'mean' or 'max'")
