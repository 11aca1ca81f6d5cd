"""Sampling-rate conversion with an anti-aliasing polyphase filter."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

# 1000 keeps every common ECG rate exact (100, 250, 257, 360, 400, 500, 1000 Hz,
# 128, 300, ...) while bounding the polyphase filter length.
MAX_DENOMINATOR = 1000


def rate_ratio(fs_in: float, fs_out: float) -> tuple[int, int]:
    """``(up, down)`` with ``fs_in * up / down ~= fs_out``, both as small as possible."""
    frac = Fraction(float(fs_out) / float(fs_in)).limit_denominator(MAX_DENOMINATOR)
    return frac.numerator, frac.denominator


def resampled_length(n: int, fs_in: float, fs_out: float) -> int:
    """Samples after :func:`resample` of ``n`` samples."""
    up, down = rate_ratio(fs_in, fs_out)
    return -(-n * up // down)


def resample(signal: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Resample ``(leads, samples)`` from ``fs_in`` to ``fs_out`` Hz along the last axis.

    Uses :func:`scipy.signal.resample_poly` (Kaiser-windowed FIR low-pass at the
    lower Nyquist rate, so downsampling does not alias). Output is float32 with
    ``ceil(samples * up / down)`` samples. Input must be finite.
    """
    up, down = rate_ratio(fs_in, fs_out)
    x = np.asarray(signal, dtype=np.float32)
    if up == down:
        return x
    from scipy.signal import resample_poly  # scipy.signal takes ~0.2 s to import

    return resample_poly(x, up, down, axis=-1).astype(np.float32, copy=False)
