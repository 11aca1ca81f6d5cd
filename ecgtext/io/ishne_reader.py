"""ISHNE Holter 1.0 files (``ISHNE1.0`` magic): long multi-lead recordings.

Layout (ISHNE standard output format for Holter ECG, 1998): 8-byte magic,
CRC-CCITT of the header, a 512-byte fixed header (little-endian), an optional
variable-length block, then the samples: int16 little-endian, interleaved
lead by lead (sample 0 of every lead, then sample 1, ...). Each lead has its
own resolution in nV per count and a lead-specification code.

The samples are read through :func:`numpy.memmap`, so opening a 24-hour file
costs nothing and :func:`read_ishne_range` reads any sample range without
loading the rest (see :mod:`ecgtext.io.stream`). Names, patient ID and birth
date reach the record only with ``ReadOptions.include_identifiers``.
"""

from __future__ import annotations

import datetime as _dt
import os
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import FormatError, LeadError, SignalError
from .clinical import finish_clinical
from .record import Ecg, ReadOptions
from .scp_reader import crc_ccitt

MAGIC = b"ISHNE1.0"
HEADER_END = 522  # magic (8) + CRC (2) + fixed header (512)

# ISHNE lead-specification codes -> our lead names; other channels (bipolar, Frank,
# Nehb, ...) are "channel N": dropped and listed in meta["dropped_channels"] unless
# the user's lead map names them ("channel 1=II").
ISHNE_LEADS: dict[int, str] = {
    5: "I", 6: "II", 7: "III", 8: "aVR", 9: "aVL", 10: "aVF",
    11: "V1", 12: "V2", 13: "V3", 14: "V4", 15: "V5", 16: "V6",
}
_OTHER = {-9: "absent", 0: "unknown", 1: "generic bipolar", 2: "X bipolar", 3: "Y bipolar",
          4: "Z bipolar", 17: "ES", 18: "AS", 19: "AI", 20: "S", 21: "Frank I", 22: "E", 23: "C",
          24: "A", 25: "M", 26: "F", 27: "H", 28: "I-cal", 29: "II-cal", 30: "III-cal"}


@dataclass
class IshneHeader:
    """What the fixed header says; ``n_samples`` is per lead."""

    n_samples: int
    n_leads: int
    ecg_offset: int
    fs: float
    lead_codes: list[int]
    resolution_nv: list[int]
    meta: dict[str, Any] = field(default_factory=dict)
    identifiers: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """Lead names for 12-lead codes, ``channel N`` (1-based) for the others."""
        return [ISHNE_LEADS.get(c, f"channel {k + 1}") for k, c in enumerate(self.lead_codes)]

    def describe(self, k: int) -> str:
        c = self.lead_codes[k]
        return f"channel {k + 1} (ISHNE code {c}: {_OTHER.get(c, 'unknown code')})"

    def select(self, options: ReadOptions) -> list[int]:
        """Channels to read: 12-lead codes, plus others the user's lead map names (``channel 2=II``)."""
        mapped = {k.casefold() for k in options.lead_map}
        return [k for k, (c, n) in enumerate(zip(self.lead_codes, self.names))
                if c in ISHNE_LEADS or n.casefold() in mapped]


def _text(b: bytes) -> str:
    s = b.split(b"\x00", 1)[0].decode("latin-1").strip()
    return s if s.isprintable() else ""


def _date(d: int, m: int, y: int) -> str | None:
    try:
        return _dt.date(y, m, d).isoformat()
    except ValueError:
        return None  # ISHNE writes -9 for "not known"


def read_header(path: str) -> IshneHeader:
    """Parse and check the header: magic, CRC, lead count, rate, and the file's length."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(HEADER_END)
            size = os.fstat(fh.fileno()).st_size
            if len(head) == HEADER_END:
                var_len, _, _, ecg_offset = struct.unpack_from("<iiii", head, 10)
                if 0 <= var_len <= size:
                    head += fh.read(max(0, var_len))
    except OSError as exc:
        raise FormatError(path, f"cannot read file: {exc.strerror or exc}") from None
    if head[:8] != MAGIC:
        raise FormatError(path, "not an ISHNE Holter file (no 'ISHNE1.0' mark at its start)")
    if len(head) < HEADER_END:
        raise FormatError(path, f"ISHNE header is truncated: {len(head)} of {HEADER_END} bytes")
    var_len, n, var_offset, ecg_offset = struct.unpack_from("<iiii", head, 10)
    if crc_ccitt(head[10: HEADER_END + max(0, var_len)]) != struct.unpack_from("<H", head, 8)[0]:
        raise FormatError(path, "ISHNE header CRC does not match: the header is corrupt", field="header CRC")
    sex, race = struct.unpack_from("<hh", head, 128)
    birth = struct.unpack_from("<hhh", head, 132)
    record = struct.unpack_from("<hhh", head, 138)
    start = struct.unpack_from("<hhh", head, 150)
    n_leads = struct.unpack_from("<h", head, 156)[0]
    codes = list(struct.unpack_from("<12h", head, 158))
    resolution = list(struct.unpack_from("<12h", head, 206))
    fs = struct.unpack_from("<h", head, 272)[0]
    if not 1 <= n_leads <= 12:
        raise FormatError(path, f"ISHNE header declares {n_leads} leads; expected 1-12", field="lead count",
                          value=n_leads)
    if fs <= 0:
        raise FormatError(path, f"ISHNE header states sampling rate {fs} Hz", field="sampling rate", value=fs)
    if n <= 0:
        raise SignalError(path, f"ISHNE header declares {n} samples per lead")
    if ecg_offset < HEADER_END:
        raise FormatError(path, f"ISHNE header puts the ECG data at byte {ecg_offset}, inside the header",
                          field="ECG offset", value=ecg_offset)
    have = (size - ecg_offset) // (2 * n_leads) if size > ecg_offset else 0
    if have != n:
        what = "truncated" if have < n else "longer than declared"
        raise FormatError(path, f"ISHNE header declares {n} samples per lead but the file holds {have} "
                                f"({what}; {size} bytes for {n_leads} leads from byte {ecg_offset})",
                          field="sample count", value=n)
    res = resolution[:n_leads]
    if any(r <= 0 for r in res):
        raise FormatError(path, f"ISHNE header states lead resolutions {res} nV; each must be positive",
                          field="resolution", value=res)
    meta: dict[str, Any] = {"format": "ISHNE Holter 1.0", "sex": {1: "M", 2: "F"}.get(sex)}
    rec_date = _date(*record)
    if rec_date:
        h, m, s = start
        meta["acquired"] = (f"{rec_date}T{h:02d}:{m:02d}:{s:02d}" if 0 <= h < 24 and 0 <= m < 60 and 0 <= s < 61
                            else rec_date)
    recorder = _text(head[232:272])
    if recorder:
        meta["device"] = recorder
    pace = struct.unpack_from("<h", head, 230)[0]
    meta["pacemaker"] = pace != 0
    ids = {"name": " ".join(filter(None, (_text(head[28:68]), _text(head[68:108])))),
           "id": _text(head[108:128]), "birth_date": _date(*birth)}
    return IshneHeader(n_samples=n, n_leads=n_leads, ecg_offset=ecg_offset, fs=float(fs),
                       lead_codes=codes[:n_leads], resolution_nv=res, meta=meta, identifiers=ids)


def read_ishne_range(path: str, h: IshneHeader, start: int, stop: int, keep: list[int]) -> np.ndarray:
    """Samples ``[start, stop)`` of channels ``keep`` as ``(len(keep), n)`` float64 mV.

    Only that range is mapped, and unmapped on return: a map kept open over a
    24-hour file would count every page read so far in the process's memory.
    """
    start, stop = max(0, start), min(h.n_samples, stop)
    scale = np.asarray([h.resolution_nv[k] for k in keep], dtype=np.float64)[:, None] * 1e-6  # nV -> mV
    if stop <= start:
        return np.zeros((len(keep), 0))
    raw = np.memmap(path, dtype="<i2", mode="r", offset=h.ecg_offset + 2 * h.n_leads * start,
                    shape=(stop - start, h.n_leads))
    try:
        # the one place this format's (samples, leads) interleaving becomes (leads, samples)
        x = (raw if len(keep) == h.n_leads else raw[:, keep]).T.astype(np.float64)
        x *= scale
        return x
    finally:
        del raw


def read_ishne(path: str, options: ReadOptions) -> Ecg:
    """Read an ISHNE Holter file as mV ``(leads, samples)`` float32.

    ``meta`` holds ``sex``, ``acquired`` (record date and start time),
    ``device`` (recorder), ``pacemaker``, ``resolution_nv`` and
    ``dropped_channels`` (leads whose ISHNE code is not a 12-lead code).
    """
    display = str(path)
    h = read_header(display)
    keep = ishne_channels(display, h, options)
    meta = dict(h.meta)
    meta["resolution_nv"] = [h.resolution_nv[k] for k in keep]
    dropped = [h.describe(k) for k in range(h.n_leads) if k not in keep]
    if dropped:
        meta["dropped_channels"] = dropped
    sig = read_ishne_range(display, h, 0, h.n_samples, keep)
    return finish_clinical(sig, h.fs, [h.names[k] for k in keep], display, options, meta, h.identifiers)


def ishne_channels(path: str, h: IshneHeader, options: ReadOptions) -> list[int]:
    """The channels to read, or a :class:`LeadError` saying how to name one."""
    keep = h.select(options)
    if not keep:
        shown = ", ".join(h.describe(k) for k in range(h.n_leads))
        raise LeadError(path, f"ISHNE file holds no 12-lead ECG lead ({shown}); map a channel to the lead "
                              f"it approximates, e.g. 'channel 1=II', if that is acceptable",
                        field="leads", value=h.lead_codes, option="lead_map")
    return keep


def is_ishne(path: str) -> bool:
    """Whether ``path`` starts with the ISHNE magic."""
    try:
        with open(path, "rb") as fh:
            return fh.read(8) == MAGIC
    except OSError:
        return False
