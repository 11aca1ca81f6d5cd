"""SCP-ECG (EN 1064 / ISO 11073-91064) files: a decoder written from the standard.

No maintained Python reader exists, so this module implements the parts a
resting-ECG cart writes:

- the record CRC (CRC-CCITT over bytes 3..end) and every section's CRC;
- section 0, the pointer table (section id, length, 1-based byte index);
- section 1, patient/acquisition fields: only age, sex, acquisition date and
  time and the device reach ``meta``; names, patient ID and birth date only
  with ``ReadOptions.include_identifiers``;
- section 2, Huffman tables (``19999`` = the standard's default table, or
  tables stored in the file), absent = raw little-endian int16;
- section 3, the lead table (SCP lead codes -> standard names; flag bit 0 =
  reference-beat subtraction was used);
- sections 4 and 5, QRS locations and reference beats, added back to the
  residual rhythm where section 3 says they were subtracted;
- section 6, the rhythm data: amplitude value multiplier (AVM, nV per count),
  sample interval (µs), first/second differences, one byte stream per lead.

Bimodal compression (section 6 byte 6 = 1: the rhythm stored at a lower rate
outside the QRS) is rare and not decoded: it is a clear :class:`FormatError`.
"""

from __future__ import annotations

import binascii
import datetime as _dt
import os
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import FormatError, LeadError, SignalError
from .clinical import finish_clinical
from .record import Ecg, ReadOptions

SECTION_HEADER = 16  # CRC(2) id(2) length(4) version(1) protocol(1) reserved(6)
DEFAULT_HUFFMAN = 19999

# SCP-ECG lead identification codes (section 3) -> our lead names. Codes not
# listed (calibration signals, Nehb, pacing, ...) are dropped and listed in
# meta["dropped_channels"].
SCP_LEADS: dict[int, str] = {
    1: "I", 2: "II", 3: "V1", 4: "V2", 5: "V3", 6: "V4", 7: "V5", 8: "V6",
    9: "V7", 11: "V3R", 12: "V4R", 13: "V5R", 14: "V6R",
    16: "vx", 17: "vy", 18: "vz",  # Frank X, Y, Z: known, then ignored like PTB's
    61: "III", 62: "aVR", 63: "aVL", 64: "aVF", 66: "V8", 67: "V9",
}

# The standard's default Huffman table (EN 1064 annex): (bits, code, value);
# value None = escape followed by an 8- or 16-bit two's-complement value.
_DEFAULT_TABLE: list[tuple[int, int, int | None, int]] = [
    (1, 0b0, 0, 0),
    (3, 0b100, 1, 0), (3, 0b101, -1, 0),
    (4, 0b1100, 2, 0), (4, 0b1101, -2, 0),
    (5, 0b11100, 3, 0), (5, 0b11101, -3, 0),
    (6, 0b111100, 4, 0), (6, 0b111101, -4, 0),
    (7, 0b1111100, 5, 0), (7, 0b1111101, -5, 0),
    (8, 0b11111100, 6, 0), (8, 0b11111101, -6, 0),
    (9, 0b111111100, 7, 0), (9, 0b111111101, -7, 0),
    (10, 0b1111111100, 8, 0), (10, 0b1111111101, -8, 0),
    (10, 0b1111111110, None, 8), (10, 0b1111111111, None, 16),
]


def crc_ccitt(data: bytes) -> int:
    """CRC-CCITT (polynomial 0x1021, initial 0xFFFF) as SCP-ECG and ISHNE use it."""
    return binascii.crc_hqx(data, 0xFFFF)


@dataclass
class _Section:
    id: int
    offset: int  # 0-based offset of the section header in the file
    length: int  # including the 16-byte header

    def body(self, data: bytes) -> bytes:
        return data[self.offset + SECTION_HEADER: self.offset + self.length]


@dataclass
class _Code:
    bits: int  # prefix length
    code: int  # prefix, first bit most significant
    value: int | None  # decoded value, None for an escape
    extra: int  # bits of the escaped value (0 for none)
    switch_to: int | None = None  # a table-switch code: index of the next table


# --------------------------------------------------------------------------- low level
def _u16(b: bytes, o: int) -> int:
    return struct.unpack_from("<H", b, o)[0]


def _u32(b: bytes, o: int) -> int:
    return struct.unpack_from("<I", b, o)[0]


def _sections(data: bytes, path: str) -> dict[int, _Section]:
    """The pointer table of section 0, each section's id, length and CRC checked."""
    if len(data) < 6 + SECTION_HEADER + 10:
        raise FormatError(path, f"not an SCP-ECG file: {len(data)} bytes is too short for the header")
    stored = _u16(data, 0)
    declared = _u32(data, 2)
    if declared != len(data):
        raise FormatError(path, f"SCP-ECG record length is {declared} bytes in the header but the file "
                                f"has {len(data)} (truncated or padded)", field="record length",
                          value=declared)
    if crc_ccitt(data[2:]) != stored:
        raise FormatError(path, "SCP-ECG record CRC does not match: the file is corrupt",
                          field="record CRC", value=stored)
    s0 = _Section(0, 6, _u32(data, 6 + 4))
    if _u16(data, 6 + 2) != 0 or s0.length < SECTION_HEADER or s0.offset + s0.length > len(data):
        raise FormatError(path, "SCP-ECG section 0 (pointer table) is missing or damaged",
                          field="section table")
    out: dict[int, _Section] = {}
    body = s0.body(data)
    for k in range(len(body) // 10):
        sid, length, index = struct.unpack_from("<HII", body, 10 * k)
        if length == 0:
            continue  # section not present
        sec = _Section(sid, index - 1, length)
        if index < 7 or sec.offset + length > len(data) or length < SECTION_HEADER:
            raise FormatError(path, f"SCP-ECG section table is wrong: section {sid} at byte {index} with "
                                    f"length {length} lies outside the {len(data)}-byte file",
                              field="section table", value=sid)
        found_id, found_len = _u16(data, sec.offset + 2), _u32(data, sec.offset + 4)
        if found_id != sid or found_len != length:
            raise FormatError(path, f"SCP-ECG section table is wrong: it points section {sid} at byte "
                                    f"{index}, where section {found_id} of {found_len} bytes starts",
                              field="section table", value=sid)
        if crc_ccitt(data[sec.offset + 2: sec.offset + length]) != _u16(data, sec.offset):
            raise FormatError(path, f"SCP-ECG section {sid} CRC does not match: the file is corrupt",
                              field="section CRC", value=sid)
        out[sid] = sec
    return out


# --------------------------------------------------------------------------- section 1
def _text(b: bytes) -> str:
    s = b.split(b"\x00", 1)[0].decode("latin-1").strip()
    return s if s.isprintable() else ""


def _patient_fields(body: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """Section 1 tags -> (meta, identifiers). Identifiers (tags 0-3 names/ID, 5 birth date)
    reach the record only on opt-in (see :func:`~ecgtext.io.clinical.finish_clinical`)."""
    meta: dict[str, Any] = {}
    ids: dict[str, Any] = {}
    names: dict[int, str] = {}
    date = time = None
    o = 0
    while o + 3 <= len(body):
        tag, n = body[o], _u16(body, o + 1)
        val = body[o + 3: o + 3 + n]
        o += 3 + n
        if tag == 255:
            break
        try:
            if tag == 4 and n >= 3:  # age: value, unit (1 years, 2 months, 3 weeks, 4 days, 5 hours)
                age, unit = _u16(val, 0), val[2]
                per_year = {0: 1, 1: 1, 2: 12, 3: 52.1775, 4: 365.25, 5: 8766}.get(unit)
                if age and per_year:
                    years = age / per_year
                    meta["age"] = int(years) if float(years).is_integer() else round(years, 2)
            elif tag == 8 and n >= 1:
                meta["sex"] = {1: "M", 2: "F"}.get(val[0])
            elif tag == 25 and n >= 4 and _u16(val, 0):
                date = (_u16(val, 0), val[2], val[3])
            elif tag == 26 and n >= 3:
                time = (val[0], val[1], val[2])
            elif tag == 14 and n > 14:
                # machine ID: ..., model description at bytes 8-13, then after 35 fixed bytes the
                # null-terminated strings, the last of which is the manufacturer's trade name
                model = _text(val[8:14])
                strings = [_text(x) for x in val[36:].split(b"\x00")] if n > 36 else []
                strings = [x for x in strings if x]
                device = " ".join(x for x in (strings[-1] if strings else "", model) if x)
                if device:
                    meta["device"] = device
            elif tag in (0, 1, 2, 3):
                names[tag] = _text(val)
            elif tag == 5 and n >= 4 and _u16(val, 0):
                ids["birth_date"] = f"{_u16(val, 0):04d}-{val[2]:02d}-{val[3]:02d}"
        except (IndexError, struct.error):
            continue  # a damaged optional field never hides the signal
    if date is not None:
        try:
            meta["acquired"] = _dt.datetime(*date, *(time or (0, 0, 0))).isoformat()
        except ValueError:
            pass
    full = " ".join(filter(None, (names.get(1), names.get(0), names.get(3))))
    if full:
        ids["name"] = full
    if names.get(2):
        ids["id"] = names[2]
    return meta, ids


# --------------------------------------------------------------------------- section 2
def _reverse(code: int, bits: int) -> int:
    return int(f"{code:0{bits}b}"[::-1], 2) if bits else 0


def _huffman_tables(body: bytes | None, path: str) -> list[list[_Code]] | None:
    """Tables of section 2 (``None`` = no section 2: raw int16 samples)."""
    if body is None:
        return None
    n_tables = _u16(body, 0)
    if n_tables == DEFAULT_HUFFMAN:
        return [[_Code(b, c, v, x) for b, c, v, x in _DEFAULT_TABLE]]
    tables, o = [], 2
    try:
        for _ in range(n_tables):
            n_codes, o = _u16(body, o), o + 2
            codes = []
            for _ in range(n_codes):
                prefix, total, mode, base, code = struct.unpack_from("<BBBhI", body, o)
                o += 9
                # the standard stores each base code with its first bit in the least significant place
                first_msb = _reverse(code, prefix)
                if mode == 0:
                    codes.append(_Code(prefix, first_msb, None, 0, switch_to=base - 1))
                elif total == prefix:
                    codes.append(_Code(prefix, first_msb, base, 0))
                else:
                    codes.append(_Code(prefix, first_msb, None, total - prefix))
            tables.append(codes)
    except struct.error:
        raise FormatError(path, "SCP-ECG Huffman table (section 2) is truncated") from None
    if not tables or not all(tables):
        raise FormatError(path, "SCP-ECG Huffman table (section 2) defines no codes")
    return tables


_PEEK = 26  # longest code of the default table plus its 16-bit escape


def _lookup(table: list[_Code], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per ``width``-bit prefix value: the index of the matching code and its length (0 = none)."""
    idx = np.full(1 << width, -1, dtype=np.int32)
    for k, c in enumerate(table):
        if c.bits > width:
            continue
        lo = c.code << (width - c.bits)
        idx[lo: lo + (1 << (width - c.bits))] = k
    return idx, np.array([c.bits for c in table], dtype=np.int32)


def _huffman_decode(stream: bytes, n: int, tables: list[list[_Code]], path: str, lead: str) -> np.ndarray:
    """Decode ``n`` values of one lead's bit stream (first bit = most significant bit of byte 0).

    With one table and no table switches (the default table and most carts), every
    bit position's code length and value are computed at once with numpy; only the
    walk from one code to the next is a loop. Table switches take the general loop.
    """
    width = max(c.bits for t in tables for c in t)
    if width > 16:
        raise FormatError(path, f"SCP-ECG Huffman code of {width} bits is longer than the standard allows")
    extra = max(c.extra for t in tables for c in t)
    peek = width + extra
    values, total = _peek_values(stream, peek)
    if len(tables) == 1 and all(c.switch_to is None for c in tables[0]):
        return _decode_one_table(values, total, n, tables[0], width, peek, path, lead)
    return _decode_switching(values.tolist(), total, n, tables, width, peek, path, lead)


def _peek_values(stream: bytes, peek: int) -> tuple[np.ndarray, int]:
    """The value of the ``peek`` bits starting at every bit position (zeros past the end), int64."""
    data = np.frombuffer(stream, dtype=np.uint8).astype(np.int64)
    total = data.size * 8
    nbytes = (peek + 7 + 7) // 8  # bytes covering `peek` bits from any bit offset in a byte
    padded = np.concatenate([data, np.zeros(nbytes, np.int64)])
    word = np.zeros(data.size, dtype=np.int64)
    for b in range(nbytes):  # big-endian word of `nbytes` bytes at every byte offset
        word = (word << 8) | padded[b: b + data.size]
    pos = np.arange(total, dtype=np.int64)
    values = (word[pos >> 3] >> (8 * nbytes - peek - (pos & 7))) & ((1 << peek) - 1)
    return values, total


def _decode_one_table(values: np.ndarray, total: int, n: int, table: list[_Code], width: int, peek: int,
                      path: str, lead: str) -> np.ndarray:
    idx, _ = _lookup(table, width)
    prefix_step = np.array([c.bits + c.extra for c in table] + [1], dtype=np.uint8)[idx]  # idx -1 -> 1
    # one byte per bit position: the length of the code starting there; walking from 0 is the
    # only per-sample Python work (indexing a bytes object is the cheapest lookup there is)
    step = prefix_step[values >> (peek - width)].tobytes()
    walk = [0] * n
    pos = 0
    for i in range(n):
        if pos >= total:
            raise SignalError(path, f"SCP-ECG lead {lead} ends after {i} of {n} samples")
        walk[i] = pos
        pos += step[pos]
    if pos > total:
        raise SignalError(path, f"SCP-ECG lead {lead} ends inside its last code")
    starts = np.asarray(walk, dtype=np.int64)
    v = values[starts]
    ci = idx[v >> (peek - width)]
    if (ci < 0).any():
        raise FormatError(path, f"SCP-ECG lead {lead}: invalid Huffman code at bit {int(starts[np.argmax(ci < 0)])}")
    bits = np.array([c.bits for c in table])[ci]
    ext = np.array([c.extra for c in table])[ci]
    base = np.array([c.value if c.value is not None else 0 for c in table])[ci]
    # escaped values: the `ext` bits after the prefix, two's complement
    safe_ext = np.maximum(ext, 1)
    raw = (v >> (peek - bits - safe_ext)) & ((1 << safe_ext) - 1)
    escaped = np.where(raw >> (safe_ext - 1) == 1, raw - (1 << safe_ext), raw)
    return np.where(ext > 0, escaped, base).astype(np.int64)


def _decode_switching(values: list[int], total: int, n: int, tables: list[list[_Code]], width: int, peek: int,
                      path: str, lead: str) -> np.ndarray:
    lookups = [_lookup(t, width)[0].tolist() for t in tables]
    out = np.empty(n, dtype=np.int64)
    shift, mask = peek - width, (1 << peek) - 1
    codes, idx = tables[0], lookups[0]
    pos = k = 0
    while k < n:
        if pos >= total:
            raise SignalError(path, f"SCP-ECG lead {lead} ends after {k} of {n} samples")
        v = values[pos]
        ci = idx[v >> shift]
        if ci < 0:
            raise FormatError(path, f"SCP-ECG lead {lead}: invalid Huffman code at bit {pos}")
        c = codes[ci]
        pos += c.bits
        if c.switch_to is not None:
            if not 0 <= c.switch_to < len(tables):
                raise FormatError(path, f"SCP-ECG lead {lead}: Huffman code switches to missing table "
                                        f"{c.switch_to + 1}")
            codes, idx = tables[c.switch_to], lookups[c.switch_to]
            continue
        if c.value is not None:
            out[k] = c.value
        else:
            raw = (v << c.bits & mask) >> (peek - c.extra)
            out[k] = raw - (1 << c.extra) if raw >> (c.extra - 1) else raw
            pos += c.extra
        k += 1
    return out


# --------------------------------------------------------------------------- sections 3-6
@dataclass
class _Leads:
    ids: list[int]
    starts: list[int]  # 1-based
    ends: list[int]
    ref_subtracted: bool


def _lead_table(body: bytes, path: str) -> _Leads:
    n, flags = body[0], body[1]
    if n == 0 or len(body) < 2 + 9 * n:
        raise FormatError(path, f"SCP-ECG lead table (section 3) declares {n} leads in {len(body)} bytes")
    ids, starts, ends = [], [], []
    for k in range(n):
        s, e, lid = struct.unpack_from("<IIB", body, 2 + 9 * k)
        starts.append(s)
        ends.append(e)
        ids.append(lid)
    return _Leads(ids, starts, ends, bool(flags & 1))


def _decode_block(body: bytes, n_leads: int, counts: list[int], tables, path: str, names: list[str],
                  what: str) -> tuple[list[np.ndarray], int, int]:
    """Sections 5 and 6 share a layout: AVM, interval, difference mode, ..., lengths, data."""
    avm, interval, diff, bimodal = _u16(body, 0), _u16(body, 2), body[4], body[5]
    if what == "rhythm" and bimodal:
        raise FormatError(path, "SCP-ECG bimodal compression (section 6) is not supported")
    if diff not in (0, 1, 2):
        raise FormatError(path, f"SCP-ECG {what} data: unknown difference mode {diff}")
    lengths = [_u16(body, 6 + 2 * k) for k in range(n_leads)]
    o = 6 + 2 * n_leads
    if o + sum(lengths) > len(body):
        raise FormatError(path, f"SCP-ECG {what} data: the lead lengths ({sum(lengths)} bytes) exceed "
                                f"the section ({len(body) - o} bytes)")
    leads = []
    for k in range(n_leads):
        stream = body[o: o + lengths[k]]
        o += lengths[k]
        if tables is None:
            x = np.frombuffer(stream[: len(stream) // 2 * 2], dtype="<i2").astype(np.int64)
            x = x[: counts[k]]
        else:
            x = _huffman_decode(stream, counts[k], tables, path, names[k])
        if diff == 1:
            x = np.cumsum(x)
        elif diff == 2:
            x = _undo_second_diff(x)
        leads.append(x)
    return leads, avm, interval


def _undo_second_diff(d: np.ndarray) -> np.ndarray:
    """x[0], x[1] stored; then d[n] = x[n] - 2 x[n-1] + x[n-2]. Exact in int64:
    first differences e[n] = x[n] - x[n-1] are e[1] + d[2] + ... + d[n]."""
    if d.size < 3:
        return d.copy()
    e = np.empty(d.size - 1, dtype=np.int64)
    e[0] = d[1] - d[0]
    e[1:] = d[2:]
    np.cumsum(e, out=e)
    x = np.empty_like(d, dtype=np.int64)
    x[0] = d[0]
    np.cumsum(e, out=x[1:])
    x[1:] += d[0]
    return x


def _qrs_zones(body: bytes, path: str) -> tuple[int, list[tuple[int, int, int, int]]]:
    """Section 4: the reference beat's fiducial and each beat's (type, start, fiducial, end), 1-based."""
    fc_ref, n = _u16(body, 2), _u16(body, 4)
    zones = []
    for k in range(n):
        if 6 + 14 * (k + 1) > len(body):
            raise FormatError(path, f"SCP-ECG QRS table (section 4) declares {n} beats but holds {k}")
        zones.append(struct.unpack_from("<HIII", body, 6 + 14 * k))
    return fc_ref, zones


def read_scp(path: str, options: ReadOptions) -> Ecg:
    """Read an SCP-ECG file: the rhythm data of section 6 in mV, (leads, samples) float32.

    ``meta`` holds ``age``, ``sex``, ``acquisition_date``/``acquisition_time``
    and ``device`` when section 1 states them (identifiers only with
    ``options.include_identifiers``), ``scp_sections``, ``avm_nv`` and
    ``dropped_channels`` (non-ECG or unnamed SCP lead codes).
    """
    display = str(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise FormatError(display, f"cannot read file: {exc.strerror or exc}") from None
    secs = _sections(data, display)
    for need in (3, 6):
        if need not in secs:
            raise FormatError(display, f"SCP-ECG file has no section {need} "
                                       f"({'lead table' if need == 3 else 'rhythm data'})")
    leads = _lead_table(secs[3].body(data), display)
    names = [SCP_LEADS.get(i, f"SCP lead {i}") for i in leads.ids]
    counts = [e - s + 1 for s, e in zip(leads.starts, leads.ends)]
    tables = _huffman_tables(secs[2].body(data) if 2 in secs else None, display)
    s6 = secs[6].body(data)
    rhythm, avm, interval = _decode_block(s6, len(names), counts, tables, display, names, "rhythm")
    if avm == 0 or interval == 0:
        raise FormatError(display, f"SCP-ECG rhythm data states AVM {avm} nV and sample interval "
                                   f"{interval} µs; both must be positive", field="sample interval",
                          value=interval)
    n = min(len(x) for x in rhythm)
    if n == 0:
        raise SignalError(display, "SCP-ECG rhythm data holds no samples")
    notes = []
    if any(len(x) != c for x, c in zip(rhythm, counts)):
        notes.append(f"section 3 declares {max(counts)} samples per lead, the data hold {n}")
    sig = np.stack([x[:n] for x in rhythm]).astype(np.float64) * (avm * 1e-6)  # nV -> mV
    if leads.ref_subtracted:
        sig = _add_reference_beats(sig, data, secs, tables, names, avm, interval, display)
    meta: dict[str, Any] = {"format": "SCP-ECG"}
    ids: dict[str, Any] = {}
    if 1 in secs:
        patient, ids = _patient_fields(secs[1].body(data))
        meta.update(patient)
    meta.update({"scp_sections": sorted(secs), "avm_nv": avm, "sample_interval_us": interval,
                 "reference_beat_subtraction": leads.ref_subtracted})
    if notes:
        meta["notes"] = notes
    mapped = {k.casefold() for k in options.lead_map}  # e.g. "SCP lead 20=V5" for a CM5 channel
    keep = [k for k, i in enumerate(leads.ids) if i in SCP_LEADS or names[k].casefold() in mapped]
    dropped = [names[k] for k in range(len(names)) if k not in keep]
    if dropped:
        meta["dropped_channels"] = dropped
    if not keep:
        raise LeadError(display, f"SCP-ECG file holds no 12-lead ECG lead (SCP lead codes "
                                 f"{', '.join(str(i) for i in leads.ids)}); map a channel to the lead it "
                                 f"approximates, e.g. '{names[0]}=II', if that is acceptable",
                        field="leads", value=leads.ids, option="lead_map")
    return finish_clinical(sig[keep], 1e6 / interval, [names[k] for k in keep], display, options, meta, ids)


def _add_reference_beats(sig: np.ndarray, data: bytes, secs: dict[int, _Section], tables, names,
                         avm: int, interval: int, path: str) -> np.ndarray:
    """Add the reference beat (section 5) back inside each type-0 beat's subtraction zone (section 4)."""
    if 4 not in secs or 5 not in secs:
        raise FormatError(path, "SCP-ECG lead table says reference beats were subtracted, but section "
                                f"{4 if 4 not in secs else 5} is missing")
    s5 = secs[5].body(data)
    fc_ref, zones = _qrs_zones(secs[4].body(data), path)
    ref_len_ms = _u16(secs[4].body(data), 0)
    ref_counts = [max(1, int(round(ref_len_ms * 1000 / max(_u16(s5, 2), 1))))] * len(names)
    ref, ref_avm, ref_interval = _decode_block(s5, len(names), ref_counts, tables, path, names, "reference beat")
    if ref_interval != interval:
        raise FormatError(path, f"SCP-ECG reference beats sampled every {ref_interval} µs but the rhythm "
                                f"every {interval} µs; only equal rates are supported")
    out = sig.copy()
    n = sig.shape[1]
    for btype, start, fid, end in zones:
        if btype != 0:
            continue
        # 1-based rhythm sample j matches 1-based reference sample j - fid + fc_ref
        for k, beat in enumerate(ref):
            j0 = max(start, 1, fid - fc_ref + 1)
            j1 = min(end, n, fid - fc_ref + len(beat))
            if j1 >= j0:
                r0 = j0 - fid + fc_ref
                out[k, j0 - 1: j1] += beat[r0 - 1: r0 - 1 + j1 - j0 + 1] * (ref_avm * 1e-6)
    return out


def is_scp(path: str) -> bool:
    """Whether ``path`` looks like SCP-ECG: section 0 header at byte 7 with its "SCPECG" mark."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(6 + SECTION_HEADER)
    except OSError:
        return False
    return (len(head) == 6 + SECTION_HEADER and head[6 + 10: 6 + 16] == b"SCPECG"
            and _u16(head, 8) == 0 and _u32(head, 2) == os.path.getsize(path))
