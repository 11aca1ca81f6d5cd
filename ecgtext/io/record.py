"""The one record type every reader returns, the options a file cannot state, and units.

Every reader ends in :func:`make_ecg`, so lead resolution, unit conversion and the
empty-signal check happen in one place whatever the file format.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..config import STANDARD_LEADS
from ..errors import ConfigError, FormatError, LeadError, SignalError
from .leads import parse_lead_list, resolve_leads

# millivolts per unit; keys are lower-cased (both micro signs map to micro)
_MV_PER_UNIT = {"v": 1000.0, "mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "nv": 1e-6}
UNITS = ("V", "mV", "uV", "µV", "nV", "adc")
LAYOUTS = ("leads-first", "samples-first")
FORMATS = ("wfdb", "mat", "hdf5", "npy", "csv", "muse", "philips", "aecg", "dicom", "scp", "ishne", "edf")

# Plausible ECG sampling rates. Below 50 Hz not even the QRS complex (10-40 Hz)
# is represented; above 20 kHz only pacemaker-spike research hardware records.
# A rate outside is a header or option mistake (0, 0.5 for 500, 5e5), and is
# rejected when the record is read, before resampling allocates anything.
FS_MIN_HZ = 50.0
FS_MAX_HZ = 20000.0

# An ECG in mV has peak-to-peak amplitudes of ~0.1-10 mV (baseline wander up to
# tens). A median lead span outside these bounds means the units are wrong (µV
# data under an mV header is 1000x too large, mV under µV 1000x too small),
# whether the file stated them or not. No ECG front end reaches 10 V (electrode
# offsets stay under ~1 V), so a larger value is corrupt or a fill value.
PLAUSIBLE_SPAN_MV = (0.01, 50.0)
MAX_ABS_MV = 1e4


@dataclass
class Ecg:
    """One ECG recording, as read from a file.

    ``signal`` is ``(leads, samples)`` float32 in millivolts; ``leads`` are the
    canonical names (``I``, ``aVR``, ``V1``, ...) after the user's lead map; the
    names as written in the file are in ``meta["file_leads"]``. ``path`` is the
    source file, or ``"container::key"`` for one record of a multi-record file.
    """

    signal: np.ndarray
    fs: float
    leads: list[str]
    path: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.signal = np.asarray(self.signal, dtype=np.float32)
        self.leads = list(self.leads)
        if self.signal.ndim != 2 or self.signal.shape[0] != len(self.leads):
            raise SignalError(self.path, f"signal of shape {self.signal.shape} does not match "
                                         f"{len(self.leads)} lead name(s); expected (leads, samples)")

    @property
    def duration_s(self) -> float:
        return self.signal.shape[1] / self.fs


@dataclass
class ReadOptions:
    """What a file cannot say about itself; every field is optional.

    ``leads`` may be given as a list or as a comma-separated string; ``"standard"``
    stands for I, II, III, aVR, aVL, aVF, V1-V6. ``units`` is the unit of the
    stored values (``"adc"`` needs ``gain``, ADC units per mV; a ``gain`` alone
    implies ``"adc"``). ``lead_map`` renames channels (``{"ECG 1": "I"}``; a
    target of ``"-"`` drops the channel). ``mat_key`` names the variable (.mat),
    dataset (HDF5) or array (.npz). ``layout`` says which axis holds the leads;
    ``None`` guesses only when the lead count makes it unambiguous.
    ``ignore_unknown_leads`` drops channels with unrecognised names instead of
    failing. ``fs`` must lie in the plausible ECG range ``FS_MIN_HZ``-``FS_MAX_HZ``
    (50-20000 Hz).
    """

    fs: float | None = None
    leads: list[str] | None = None
    units: str | None = None
    gain: float | None = None
    lead_map: dict[str, str] = field(default_factory=dict)
    mat_key: str | None = None
    layout: str | None = None
    format: str | None = None
    ignore_unknown_leads: bool = False
    include_identifiers: bool = False  # patient name/ID/birth date into meta["patient"] (clinical formats)

    def __post_init__(self):
        if self.fs is not None and not (isinstance(self.fs, (int, float, np.number))
                                        and FS_MIN_HZ <= float(self.fs) <= FS_MAX_HZ):
            raise ConfigError(f"sampling rate {self.fs!r} Hz is outside the plausible ECG range "
                              f"{FS_MIN_HZ:g}-{FS_MAX_HZ:g} Hz",
                              field="sampling rate", value=self.fs, option="fs")
        if self.leads is not None:
            self.leads = parse_lead_list(self.leads)
        if self.gain is not None:
            if not (np.isfinite(self.gain) and self.gain > 0):
                raise ConfigError(f"gain must be a positive number of ADC units per mV, got {self.gain!r}")
            if self.units is None:
                self.units = "adc"
        if self.units is not None:
            if self.units.lower() != "adc" and self.units.lower() not in _MV_PER_UNIT:
                raise ConfigError(f"unknown units {self.units!r}; expected one of {', '.join(UNITS)}")
            if self.units.lower() == "adc":
                self.units = "adc"
                if self.gain is None:
                    raise ConfigError("units 'adc' need a gain (ADC units per mV), e.g. 1000",
                                      field="gain", option="gain")
            elif self.gain is not None:
                raise ConfigError(f"a gain only applies to units 'adc', not {self.units!r}")
        if self.layout is not None and self.layout not in LAYOUTS:
            raise ConfigError(f"unknown layout {self.layout!r}; expected one of {', '.join(LAYOUTS)}")
        if self.format is not None:
            self.format = self.format.lower()
            if self.format == "npz":
                self.format = "npy"
            if self.format not in FORMATS:
                raise ConfigError(f"unknown input format {self.format!r}; expected one of {', '.join(FORMATS)}")
        self.lead_map = {str(k).strip(): str(v).strip() for k, v in dict(self.lead_map or {}).items()}


def check_fs(fs: Any, path: str, source: str = "the file") -> float:
    """``fs`` as a float in Hz, or a :class:`SignalError` naming the value (see ``FS_MIN_HZ``)."""
    try:
        rate = float(fs)
    except (TypeError, ValueError):
        raise SignalError(path, f"sampling rate {fs!r} stated by {source} is not a number",
                          field="sampling rate", value=fs, option="fs") from None
    if not (math.isfinite(rate) and FS_MIN_HZ <= rate <= FS_MAX_HZ):
        raise SignalError(path, f"sampling rate {rate:g} Hz stated by {source} is outside the "
                                f"plausible ECG range {FS_MIN_HZ:g}-{FS_MAX_HZ:g} Hz",
                          field="sampling rate", value=rate, option="fs")
    return rate


def mv_per_unit(units: str) -> float | None:
    """Millivolts per unit of ``units`` (``"uV"`` -> 0.001); ``None`` if unknown."""
    return _MV_PER_UNIT.get(units.strip().lower()) if units else None


def unit_scale(units: str, gain: float | None, path: str) -> float:
    """Factor turning stored values into mV (``units`` as stated by the file or the user)."""
    if units == "adc":
        return 1.0 / float(gain)  # ReadOptions guarantees a gain with "adc"
    scale = mv_per_unit(units)
    if scale is None:  # options are validated up front, so this is the file's unit
        raise FormatError(path, f"an ECG channel is in units {units!r}, not V, mV, uV or nV; "
                                "if its values are voltages, state their unit",
                          field="units", value=units, option="units")
    return scale


def orient(array: np.ndarray, n_leads: int | None, layout: str | None, path: str,
           default_layout: str | None = None) -> np.ndarray:
    """Return a 2-D ``(leads, samples)`` view of ``array`` (1-D is one lead).

    The lead axis comes from ``layout`` when given, else from the one axis whose
    length equals ``n_leads``; a square or ambiguous array needs ``layout``.
    """
    a = np.asarray(array)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise SignalError(path, f"expected a 2-D (leads x samples) array, found shape {a.shape}")
    rows, cols = a.shape
    if layout is None:
        if n_leads is not None and rows == n_leads and cols != n_leads:
            layout = "leads-first"
        elif n_leads is not None and cols == n_leads and rows != n_leads:
            layout = "samples-first"
        elif n_leads is not None and rows != n_leads and cols != n_leads:
            raise LeadError(path, f"wrong lead count: {n_leads} lead name(s) given but the array is "
                                  f"{rows} x {cols}", field="lead count", value=n_leads, option="leads")
        elif default_layout is not None:
            layout = default_layout
        else:
            raise SignalError(path, f"cannot tell which axis of the {rows} x {cols} array holds the "
                                    "leads; state the layout (leads-first or samples-first)",
                              field="layout", option="layout")
    out = a if layout == "leads-first" else a.T
    if n_leads is not None and out.shape[0] != n_leads:
        raise LeadError(path, f"wrong lead count: {n_leads} lead name(s) given but the array has "
                              f"{out.shape[0]} leads in layout {layout}",
                        field="lead count", value=n_leads, option="leads")
    return out


def _to_mv(signal: np.ndarray, keep: list[int], units: list[str], gain: float | None,
           path: str) -> tuple[np.ndarray, np.ndarray]:
    """(kept channels in mV as float32, their scales)."""
    scales = np.array([unit_scale(units[i], gain, path) for i in keep])
    sub = signal[keep] if len(keep) != signal.shape[0] else signal
    if np.all(scales == 1.0):
        return np.asarray(sub, dtype=np.float32), scales
    with np.errstate(over="ignore"):  # an overflow becomes inf, which the amplitude check rejects
        return (np.asarray(sub, dtype=np.float64) * scales[:, None]).astype(np.float32), scales


def make_ecg(signal: np.ndarray, fs: float, names: Sequence[str], path: str,
             options: "ReadOptions", meta: dict[str, Any] | None = None,
             units: str | Sequence[str] = "mV", units_source: str = "file") -> Ecg:
    """Finish a record: resolve lead names, convert to mV float32, check it is usable.

    ``signal`` is ``(channels, samples)`` in ``units`` (one unit for all channels
    or one per channel; ``"adc"`` uses ``options.gain``). ``units_source`` is
    ``"file"``, ``"option"`` or ``"assumed"``. Every record is checked for a
    plausible sampling rate and plausible ECG amplitudes in mV (see
    :func:`check_amplitude`), whatever the source of its units. When the units
    a file states give implausible amplitudes and ``options.units`` gives
    plausible ones, the option wins (``meta["units_overridden"]``).
    """
    meta = dict(meta or {})
    fs = check_fs(fs, path, "the file")
    sel = resolve_leads(names, options, path)
    per_channel = [units] * len(names) if isinstance(units, str) else list(units)
    if options.units:  # a unit the file states but we cannot read is one it "cannot say"
        per_channel = [u if u == "adc" or mv_per_unit(u) is not None else options.units
                       for u in per_channel]
    if signal.shape[1] == 0:
        raise SignalError(path, "zero-length signal (no samples)")
    out, scales = _to_mv(signal, sel.keep, per_channel, options.gain, path)
    problem = check_amplitude(out, fs)
    if problem is not None and units_source == "file" and options.units:
        alt_units = [options.units] * len(per_channel)
        alt, alt_scales = _to_mv(signal, sel.keep, alt_units, options.gain, path)
        if check_amplitude(alt, fs) is None:
            meta["units_overridden"] = sorted({per_channel[i] for i in sel.keep})
            out, scales, per_channel, units_source, problem = alt, alt_scales, alt_units, "option", None
    if problem is not None:
        raise _amplitude_error(path, problem, [per_channel[i] for i in sel.keep], scales, units_source)
    meta.setdefault("comments", [])
    meta["file_leads"] = list(names)
    meta["ignored_leads"] = sel.ignored
    kept_units = sorted({per_channel[i] for i in sel.keep})
    meta["units"] = kept_units[0] if len(kept_units) == 1 else kept_units
    meta["units_source"] = units_source
    return Ecg(signal=out, fs=float(fs), leads=sel.leads, path=path, meta=meta)


@dataclass
class AmplitudeProblem:
    """Why a signal in mV is not a plausible ECG: ``kind`` is "absurd", "large" or "small"."""

    kind: str
    value: float  # the largest |value| (absurd) or the median per-lead span, in mV


def check_amplitude(signal_mv: np.ndarray, fs: float) -> AmplitudeProblem | None:
    """``None`` if ``(leads, samples)`` in mV looks like an ECG, else what is wrong.

    - any |value| above ``MAX_ABS_MV`` (10 V) or ±inf: absurd (corrupt data, a
      float fill value such as 3e38, or far-off units);
    - the median over leads of the peak-to-peak span outside
      ``PLAUSIBLE_SPAN_MV`` (0.01-50 mV): wrong units. The low bound needs at
      least 1 s of signal. NaN samples, all-NaN and flat leads are left to
      ``prepare`` (repaired or reported there).
    """
    x = np.asarray(signal_mv)
    if x.size == 0:
        return None
    hi, lo = x.max(axis=1), x.min(axis=1)  # fast; NaN in a lead makes its extremes NaN
    if np.isnan(hi).any() or np.isnan(lo).any():
        with np.errstate(invalid="ignore"):
            hi = np.fmax.reduce(x, axis=1)  # NaN-ignoring (NaN only if the lead is all NaN)
            lo = np.fmin.reduce(x, axis=1)
    peak = np.fmax.reduce(np.concatenate([np.abs(hi), np.abs(lo)]))
    if np.isnan(peak):
        return None  # all NaN: prepare() reports it
    if not peak <= MAX_ABS_MV:
        return AmplitudeProblem("absurd", float(peak))
    span = hi - lo
    span = span[np.isfinite(span) & (span > 0)]
    if span.size == 0:
        return None  # flat leads are reported by prepare()
    med = float(np.median(span))
    low, high = PLAUSIBLE_SPAN_MV
    if med > high:
        return AmplitudeProblem("large", med)
    if med < low and x.shape[1] >= fs:
        return AmplitudeProblem("small", med)
    return None


def _likely_unit(span_mv: float, scale: float) -> str | None:
    """The unit under which the stored values would span a typical ECG (about 1 mV)."""
    raw = span_mv / scale  # the span in the stored numbers
    best = None
    for unit, mv in (("V", 1000.0), ("mV", 1.0), ("µV", 1e-3), ("nV", 1e-6)):
        candidate = raw * mv
        if PLAUSIBLE_SPAN_MV[0] <= candidate <= PLAUSIBLE_SPAN_MV[1]:
            if best is None or abs(math.log10(candidate)) < abs(math.log10(best[1])):
                best = (unit, candidate)
    return None if best is None else best[0]


def _amplitude_error(path: str, problem: AmplitudeProblem, units: list[str], scales: np.ndarray,
                     source: str) -> SignalError:
    low, high = PLAUSIBLE_SPAN_MV
    if problem.kind == "absurd":
        return SignalError(path, f"values reach {problem.value:.3g} mV, beyond any ECG (limit "
                                 f"{MAX_ABS_MV:g} mV): corrupt data, a fill value, or wrong units",
                           field="amplitude", value=problem.value, option="units")
    stated = units[0] if len(set(units)) == 1 else "/".join(sorted(set(units)))
    scale = float(np.median(scales))
    likely = _likely_unit(problem.value, scale)
    size = "too large" if problem.kind == "large" else "too small"
    factor = None
    if likely is not None and stated != "adc" and mv_per_unit(stated) is not None:
        factor = mv_per_unit(stated) / _MV_PER_UNIT[likely.lower()]
    if likely is None:
        guess = "ADC counts (units adc with a gain)" if problem.kind == "large" else "not an ECG"
    elif source == "assumed":
        guess = f"{likely}"
    else:
        guess = f"{likely} data labelled {stated}"
    ratio = ""
    if factor is not None and factor != 1:
        ratio = f", {factor:.0f}x too large" if factor > 1 else f", {1 / factor:.0f}x too small"
    said = {"assumed": "the file does not state its units (mV assumed)",
            "file": f"the file states units {stated}",
            "option": f"units {stated} were given"}[source]
    return SignalError(path, f"{said} but values span {problem.value:.4g} mV per lead (median "
                             f"peak-to-peak), {size} for an ECG ({low:g}-{high:g} mV): they look "
                             f"like {guess}{ratio}; state the real units",
                       field="units", value=problem.value, option="units")


def standard_leads() -> list[str]:
    return list(STANDARD_LEADS)
