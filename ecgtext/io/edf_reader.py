"""EDF / EDF+ (and BDF) files through pyEDFlib, the maintained wrapper of EDFlib.

What we add on top of the library:

- the header's record count is checked against the file size first, so a
  file cut short (or a header that lies) is one clear error;
- free-text labels become lead names: ``ECG I``, ``EKG AVR``, ``ECG-V1``,
  ``I``, ``Lead II`` -> I, aVR, V1, I, II. Channels that are not ECG (EEG,
  respiration, SpO2, ``EDF Annotations``, ...) are dropped and listed in
  ``meta["dropped_channels"]``; an ECG channel we cannot name (``ECG``,
  ``ECG1``) needs a lead map, as with every other format;
- physical values converted by each channel's physical dimension
  (``V``, ``mV``, ``uV``/``µV``); a blank dimension is the user's units or
  assumed mV (checked for plausible amplitudes). EDFlib rejects headers with
  non-ASCII bytes (a Latin-1 ``µV`` written by some devices); such a file,
  when its header otherwise checks out, is decoded by the same record layout
  in numpy (``meta["edflib_rejected"]`` says why);
- channels at different rates are resampled to the fastest ECG rate
  (``meta["resampled_from"]`` says which);
- EDF+D (discontinuous) files: the records' start times are read from the
  annotation signal. Records that are back to back read like EDF+C
  (``meta["discontinuous"]`` False); a real gap is a :class:`FormatError`
  naming the gaps (EDFlib does not read such files either, and windows across
  a gap would join unrelated signal).

Patient name, code and birth date (EDF+ patient field) stay out of ``meta``
unless ``ReadOptions.include_identifiers``. :func:`open_edf` +
:func:`read_edf_range` read any sample range without loading the rest
(:mod:`ecgtext.io.stream`).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import FormatError, LeadError, SignalError
from .derived import derive_limb_leads
from .leads import canonical_lead
from .record import Ecg, ReadOptions, make_ecg, mv_per_unit
from .resample import resample

log = logging.getLogger(__name__)

_ECG_PREFIX = re.compile(r"^(ecg|ekg)(?![a-z])[\s_\-:.]*", re.IGNORECASE)
_ANNOTATIONS = ("EDF Annotations", "BDF Annotations")
_TAL_ONSET = re.compile(rb"^([+-]\d+(?:\.\d*)?)\x14\x14")


def edf_lead_name(label: str) -> tuple[str | None, bool]:
    """``(canonical lead or None, looks like ECG)`` for an EDF signal label."""
    raw = label.strip()
    stripped = _ECG_PREFIX.sub("", raw)
    canon = canonical_lead(stripped) if stripped else None
    return canon, bool(canon) or stripped != raw


@dataclass
class EdfInfo:
    """The parsed header plus which channels we read, under which names and scales."""

    path: str
    n_records: int
    record_s: float
    header_bytes: int
    sample_bytes: int  # 2 (EDF) or 3 (BDF)
    labels: list[str]  # all signals, annotation channels included
    spr: list[int]  # samples per record per signal
    kept: list[int]  # signal indices we read (header order)
    names: list[str]  # the names make_ecg resolves, one per kept signal
    mv_scale: list[float]  # physical value -> mV, per kept signal
    units: list[str]
    units_source: str
    lib_index: list[int]  # pyEDFlib channel index of each kept signal (annotations excluded)
    gain: list[float] = field(default_factory=list)  # physical per digital unit, all signals
    offset: list[float] = field(default_factory=list)  # physical = digital * gain + offset
    meta: dict[str, Any] = field(default_factory=dict)
    identifiers: dict[str, Any] = field(default_factory=dict)

    def fs_of(self, k: int) -> float:
        return self.spr[self.kept[k]] / self.record_s

    @property
    def fs(self) -> float:
        """The rate of the record: the fastest kept channel."""
        return max(self.fs_of(k) for k in range(len(self.kept)))

    @property
    def uniform(self) -> bool:
        return len({self.spr[i] for i in self.kept}) == 1

    @property
    def n_samples(self) -> int:
        return self.n_records * max(self.spr[i] for i in self.kept)


def _field(raw: bytes, a: int, n: int) -> str:
    return raw[a: a + n].decode("latin-1").strip()


def _number(raw: bytes, a: int, n: int, path: str, what: str) -> float:
    s = _field(raw, a, n)
    try:
        return float(s)
    except ValueError:
        raise FormatError(path, f"EDF header field '{what}' is {s!r}, not a number", field=what,
                          value=s) from None


def open_edf(path: str, options: ReadOptions) -> EdfInfo:
    """Parse and check an EDF/EDF+/BDF header; decide which channels to read. Reads no samples."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(256)
            if len(head) < 256:
                raise FormatError(path, f"not an EDF file: {len(head)} bytes is too short for its header")
            ns = int(_number(head, 252, 4, path, "number of signals"))
            sig = fh.read(256 * max(ns, 0))
    except OSError as exc:
        raise FormatError(path, f"cannot read file: {exc.strerror or exc}") from None
    bdf = head[:8] == b"\xffBIOSEMI"
    if not (bdf or head[:8] == b"0       "):
        raise FormatError(path, "not an EDF file (its first 8 bytes are not the EDF version '0')")
    if ns < 1 or len(sig) < 256 * ns:
        raise FormatError(path, f"EDF header declares {ns} signals but is too short for them",
                          field="number of signals", value=ns)
    header_bytes = int(_number(head, 184, 8, path, "header bytes"))
    n_records = int(_number(head, 236, 8, path, "number of data records"))
    record_s = _number(head, 244, 8, path, "duration of a data record")
    reserved = _field(head, 192, 44)

    def col(offset: int, width: int) -> list[str]:
        base = offset * ns
        return [_field(sig, base + k * width, width) for k in range(ns)]

    labels = col(0, 16)
    dims = col(16 + 80, 8)
    try:
        pmin, pmax, dmin, dmax = (np.array([float(v) for v in col(16 + 80 + 8 + 8 * k, 8)]) for k in range(4))
    except ValueError:
        raise FormatError(path, "EDF header has a physical or digital minimum/maximum that is not a number",
                          field="physical range") from None
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = (pmax - pmin) / (dmax - dmin)
    offset = pmin - gain * dmin
    spr = [int(float(x or 0)) for x in col(16 + 80 + 8 + 8 * 4 + 80, 8)]
    sample_bytes = 3 if bdf else 2
    record_bytes = sum(spr) * sample_bytes
    if header_bytes != 256 * (ns + 1):
        raise FormatError(path, f"EDF header size field says {header_bytes} bytes, but {ns} signals need "
                                f"{256 * (ns + 1)}", field="header bytes", value=header_bytes)
    if record_bytes <= 0 or record_s <= 0:
        raise FormatError(path, f"EDF data records hold {sum(spr)} samples over {record_s:g} s; "
                                "both must be positive", field="duration of a data record", value=record_s)
    held, rest = divmod(size - header_bytes, record_bytes)
    if n_records != held or rest:
        tail = f" and {rest} stray bytes" if rest else ""
        raise FormatError(path, f"EDF header declares {n_records} data records but the file holds {held}"
                                f"{tail} ({size} bytes, {record_bytes} per record): the file is truncated "
                                "or its header is wrong", field="number of data records", value=n_records)

    lmap = options.lead_map
    folded = {k.casefold() for k in lmap}
    kept, names, dropped, lib_index, units, scales = [], [], [], [], [], []
    stated = True
    lib = 0
    for i, label in enumerate(labels):
        if label in _ANNOTATIONS:
            continue
        this_lib, lib = lib, lib + 1
        canon, ecg_like = edf_lead_name(label)
        if label in lmap or label.casefold() in folded:
            target = lmap.get(label) or next(v for k, v in lmap.items() if k.casefold() == label.casefold())
            # the user's map names it: mapped now so limb leads can be derived; "-" drops it in make_ecg
            name = canonical_lead(target) or label
        elif canon is not None:
            name = canon
        elif ecg_like:
            name = label  # an ECG channel without a lead name: make_ecg asks for a map
        else:
            dropped.append(label)
            continue
        dim = dims[i]
        scale = mv_per_unit(dim) if dim else None
        if scale is None:
            if dim:
                raise FormatError(path, f"EDF signal {label!r} is in {dim!r}, not V, mV or uV",
                                  field="units", value=dim, option="units")
            stated = False
            unit = options.units if options.units and options.units != "adc" else "mV"
            scale = mv_per_unit(unit)
            dim = unit
        kept.append(i)
        names.append(name)
        lib_index.append(this_lib)
        units.append(dim)
        scales.append(float(scale))
    if not kept:
        raise LeadError(path, f"EDF file has no ECG channel (signals: {', '.join(labels)}); name one with "
                              "a lead map", field="leads")
    units_source = "file" if stated else ("option" if options.units and options.units != "adc" else "assumed")
    info = EdfInfo(path=path, n_records=n_records, record_s=record_s, header_bytes=header_bytes,
                   sample_bytes=sample_bytes, labels=labels, spr=spr, kept=kept, names=names,
                   mv_scale=scales, units=units, units_source=units_source, lib_index=lib_index,
                   gain=gain.tolist(), offset=offset.tolist())
    kind = "BDF" if bdf else "EDF"
    if reserved.startswith(("EDF+", "BDF+")):
        kind = reserved[:5]
    info.meta = {"format": kind, "record_duration_s": record_s}
    if dropped:
        info.meta["dropped_channels"] = dropped
    _header_meta(head, kind, info)
    if kind.endswith("+D"):
        gaps = _gaps(path, info)
        if gaps:
            g = gaps[0]
            raise FormatError(path, f"{kind} (discontinuous) recording with {len(gaps)} gap(s), the first "
                                    f"{g['gap_s']:g} s long at {g['at_s']:g} s of stored signal: windows across a "
                                    "gap would join unrelated signal; split the file into continuous parts",
                              field="discontinuities", value=len(gaps))
        info.meta["discontinuous"] = False  # EDF+D whose records happen to be back to back
    return info


def _header_meta(head: bytes, kind: str, info: EdfInfo) -> None:
    """Start date/time and, in EDF+, sex and equipment into meta; name/code/birth date as identifiers."""
    date, time = _field(head, 168, 8), _field(head, 176, 8)
    m = re.fullmatch(r"(\d\d)\.(\d\d)\.(\d\d)", date)
    t = re.fullmatch(r"(\d\d)\.(\d\d)\.(\d\d)", time)
    if m and t:
        yy = int(m[3])
        year = 1900 + yy if yy >= 85 else 2000 + yy  # the EDF spec's clipping year
        info.meta["acquired"] = f"{year:04d}-{m[2]}-{m[1]}T{t[1]}:{t[2]}:{t[3]}"
    if "+" not in kind:
        return  # plain EDF: the patient field is free text (may hold a name): never read it
    patient = _field(head, 8, 80).split(" ")
    recording = _field(head, 88, 80).split(" ")
    if len(patient) >= 4:
        code, sex, birth, name = patient[:4]
        if sex in ("M", "F"):
            info.meta["sex"] = sex
        info.identifiers = {"id": None if code == "X" else code, "birth_date": None if birth == "X" else birth,
                            "name": None if name == "X" else name.replace("_", " ")}
    if len(recording) >= 5 and recording[0] == "Startdate" and recording[4] != "X":
        info.meta["device"] = recording[4].replace("_", " ")


def _gaps(path: str, info: EdfInfo) -> list[dict[str, float]]:
    """Gaps between consecutive data records, from each record's time-keeping annotation."""
    ann = [i for i, lab in enumerate(info.labels) if lab in _ANNOTATIONS]
    if not ann:
        raise FormatError(path, "EDF+D file has no annotation signal, so its record times are unknown")
    a = ann[0]
    start = sum(info.spr[:a]) * info.sample_bytes
    width = info.spr[a] * info.sample_bytes
    record_bytes = sum(info.spr) * info.sample_bytes
    raw = np.memmap(path, dtype=np.uint8, mode="r", offset=info.header_bytes,
                    shape=(info.n_records, record_bytes))
    onsets = np.empty(info.n_records)
    for r in range(info.n_records):
        m = _TAL_ONSET.match(bytes(raw[r, start: start + width]))
        if not m:
            raise FormatError(path, f"EDF+D data record {r} has no time-keeping annotation")
        onsets[r] = float(m[1])
    gaps = []
    expected = onsets[:-1] + info.record_s
    for r in np.flatnonzero(np.abs(onsets[1:] - expected) > 1e-6):
        gaps.append({"at_s": float((r + 1) * info.record_s), "gap_s": float(onsets[r + 1] - expected[r])})
    return gaps


class _RecordReader:
    """Samples of an EDF+D file whose records are back to back, decoded with numpy.

    EDFlib refuses every EDF+D file, even one without a gap; the data-record
    layout is the same as EDF+C, so these few lines read it (digital ->
    physical with the header's ranges, as EDFlib does).
    """

    def __init__(self, info: EdfInfo):
        self.info = info

    def readSignal(self, chn: int, start: int = 0, n: int | None = None) -> np.ndarray:  # noqa: N802 - pyEDFlib's name
        info = self.info
        i = [k for k, lab in enumerate(info.labels) if lab not in _ANNOTATIONS][chn]
        spr, sb = info.spr[i], info.sample_bytes
        total = info.n_records * spr
        n = total - start if n is None else n
        stop = min(total, start + n)
        r0, r1 = start // spr, -(-stop // spr)
        record_bytes = sum(info.spr) * sb
        raw = np.memmap(info.path, dtype=np.uint8, mode="r", offset=info.header_bytes + r0 * record_bytes,
                        shape=(r1 - r0, record_bytes))
        a = sum(info.spr[:i]) * sb
        block = np.array(raw[:, a: a + spr * sb]).reshape(-1)
        del raw
        if sb == 2:
            dig = block.view("<i2").astype(np.float64)
        else:  # BDF: 24-bit little-endian two's complement
            b = block.reshape(-1, 3).astype(np.int32)
            v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
            dig = np.where(v >= 1 << 23, v - (1 << 24), v).astype(np.float64)
        x = dig[start - r0 * spr: stop - r0 * spr]
        return x * info.gain[i] + info.offset[i]

    def close(self) -> None:
        pass


def open_reader(path: str, info: EdfInfo | None = None):
    """A pyEDFlib reader, its errors as :class:`FormatError` (close it when done).

    A gap-free EDF+D file (``info.meta["discontinuous"]`` False) is read by
    :class:`_RecordReader`, since EDFlib rejects all EDF+D files.
    """
    import pyedflib

    if info is not None and info.meta.get("discontinuous") is False:
        return _RecordReader(info)
    try:
        return pyedflib.EdfReader(path)
    except OSError as exc:
        msg = str(exc).replace(path, "").strip(" :")
        if info is not None and "compliant" in msg and _only_text_issues(path, info):
            # EDFlib rejects any non-ASCII header byte (a Latin-1 "µV" from some devices); the
            # header parsed and its sizes check out, so decode the records ourselves
            info.meta["edflib_rejected"] = msg
            return _RecordReader(info)
        raise FormatError(path, f"EDF file rejected by EDFlib: {msg}") from None


def _only_text_issues(path: str, info: EdfInfo) -> bool:
    """Whether the header's only departure from EDF is non-ASCII text (labels, units, ...)."""
    with open(path, "rb") as fh:
        head = fh.read(info.header_bytes)
    return any(b > 126 for b in head) and all(np.isfinite(info.gain)) and all(np.isfinite(info.offset))


def read_edf_range(reader, info: EdfInfo, start: int, stop: int) -> np.ndarray:
    """Samples ``[start, stop)`` of the kept channels, ``(kept, n)`` float64 mV.

    Only for files whose kept channels share one rate (:attr:`EdfInfo.uniform`).
    """
    out = np.empty((len(info.kept), stop - start), dtype=np.float64)
    for k, ch in enumerate(info.lib_index):
        out[k] = reader.readSignal(ch, start, stop - start)
        out[k] *= info.mv_scale[k]
    return out


def read_edf(path: str, options: ReadOptions) -> Ecg:
    """Read an EDF/EDF+/BDF file: the ECG channels in mV, ``(leads, samples)`` float32.

    ``meta``: ``format`` (EDF, EDF+C, EDF+D, BDF, ...), ``acquired``, ``sex`` and
    ``device`` where EDF+ states them, ``dropped_channels``, ``resampled_from``,
    ``derived_leads``, and for EDF+D ``discontinuous`` (False: gaps are an error).
    """
    display = str(path)
    info = open_edf(display, options)
    reader = open_reader(display, info)
    try:
        fs = info.fs
        n = info.n_samples
        rows, resampled = [], {}
        for k, ch in enumerate(info.lib_index):
            x = reader.readSignal(ch) * info.mv_scale[k]
            f = info.fs_of(k)
            if f != fs:
                x = resample(x[None, :], f, fs)[0].astype(np.float64)
                resampled[info.names[k]] = f
                x = x[:n] if x.size >= n else np.pad(x, (0, n - x.size), mode="edge")
            rows.append(x)
    finally:
        reader.close()
    if n == 0:
        raise SignalError(display, "EDF file holds no samples (0 data records)")
    meta = dict(info.meta)
    if resampled:
        meta["resampled_from"] = resampled
    return finish_edf(np.stack(rows), fs, info, options, meta)


def finish_edf(signal_mv: np.ndarray, fs: float, info: EdfInfo, options: ReadOptions,
               meta: dict[str, Any]) -> Ecg:
    """Derive missing limb leads, resolve names, attach identifiers only on opt-in."""
    sig, names, derived = derive_limb_leads(signal_mv, info.names)
    meta["derived_leads"] = derived
    if getattr(options, "include_identifiers", False) and info.identifiers:
        meta["patient"] = {k: v for k, v in info.identifiers.items() if v}
    ecg = make_ecg(sig, fs, names, info.path, options, meta, units="mV", units_source=info.units_source)
    ecg.meta["file_leads"] = [info.labels[i] for i in info.kept]
    ecg.meta["units"] = info.units[0] if len(set(info.units)) == 1 else list(info.units)
    return ecg


def is_edf(path: str) -> bool:
    """Whether ``path`` starts like an EDF/BDF header."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(256)
    except OSError:
        return False
    return len(head) == 256 and (head[:8] in (b"0       ", b"\xffBIOSEMI")) and head[252:256].strip().isdigit()
