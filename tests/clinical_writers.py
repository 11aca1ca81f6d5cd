"""Writers the tests (and benchmarks) use to make SCP-ECG, ISHNE and EDF files from real records.

ISHNE and SCP-ECG have no maintained Python writer, so these follow the
standards' layouts directly (independently of our readers' code: field
offsets, CRCs and the default Huffman table are written out here). EDF files
are written with pyEDFlib, the format's reference library.
"""

from __future__ import annotations

import binascii
import struct
from pathlib import Path
from typing import Sequence

import numpy as np

SCP_CODES = {"I": 1, "II": 2, "V1": 3, "V2": 4, "V3": 5, "V4": 6, "V5": 7, "V6": 8,
             "III": 61, "aVR": 62, "aVL": 63, "aVF": 64}
ISHNE_CODES = {"I": 5, "II": 6, "III": 7, "aVR": 8, "aVL": 9, "aVF": 10,
               "V1": 11, "V2": 12, "V3": 13, "V4": 14, "V5": 15, "V6": 16}


def crc(data: bytes) -> int:
    """CRC-CCITT, initial 0xFFFF (SCP-ECG and ISHNE)."""
    return binascii.crc_hqx(data, 0xFFFF)


# --------------------------------------------------------------------------- ISHNE
def ishne_header(n_samples: int, leads: Sequence[str | int], fs: int, resolution_nv: int,
                 name: str = "Jane", surname: str = "Doe", patient_id: str = "PID-42") -> bytes:
    """The 522-byte ISHNE 1.0 header (magic + CRC + fixed header)."""
    h = bytearray(512)

    def put(off: int, fmt: str, *vals):
        struct.pack_into(fmt, h, off - 10, *vals)

    put(10, "<iiii", 0, n_samples, 522, 522)
    put(26, "<h", 1)
    h[28 - 10: 28 - 10 + len(name)] = name.encode()
    h[68 - 10: 68 - 10 + len(surname)] = surname.encode()
    h[108 - 10: 108 - 10 + len(patient_id)] = patient_id.encode()
    put(128, "<hh", 2, 0)  # female
    put(132, "<hhh", 3, 4, 1950)  # birth date (day, month, year)
    put(138, "<hhh", 24, 12, 2019)  # record date
    put(144, "<hhh", 1, 1, 2020)
    put(150, "<hhh", 8, 30, 0)  # start time
    # a lead name, or an ISHNE lead-specification code as an int (1 = generic bipolar, ...)
    codes = [lead if isinstance(lead, int) else ISHNE_CODES[lead] for lead in leads] + [-9] * (12 - len(leads))
    put(156, "<h", len(leads))
    put(158, "<12h", *codes)
    put(182, "<12h", *([0] * 12))
    put(206, "<12h", *([resolution_nv] * len(leads) + [0] * (12 - len(leads))))
    put(230, "<h", 0)
    h[232 - 10: 232 - 10 + 8] = b"TestRec1"
    put(272, "<h", fs)
    return b"ISHNE1.0" + struct.pack("<H", crc(bytes(h))) + bytes(h)


def write_ishne(path: str | Path, counts: np.ndarray, leads: Sequence[str | int], fs: int,
                resolution_nv: int = 1000) -> Path:
    """``counts``: (leads, samples) integer ADC counts; written interleaved int16 LE."""
    path = Path(path)
    counts = np.asarray(counts)
    with open(path, "wb") as fh:
        fh.write(ishne_header(counts.shape[1], leads, fs, resolution_nv))
        fh.write(np.ascontiguousarray(counts.T.astype("<i2")).tobytes())
    return path


def write_long_ishne(path: str | Path, counts_10s: np.ndarray, leads: Sequence[str], fs: int,
                     hours: float, resolution_nv: int = 1000) -> Path:
    """A long ISHNE file made by repeating a real 10-s record, written block by block."""
    path = Path(path)
    n_block = counts_10s.shape[1]
    n = int(round(hours * 3600 * fs))
    block = np.ascontiguousarray(np.asarray(counts_10s).T.astype("<i2")).tobytes()
    with open(path, "wb") as fh:
        fh.write(ishne_header(n, leads, fs, resolution_nv))
        full, rest = divmod(n, n_block)
        for _ in range(full):
            fh.write(block)
        fh.write(block[: rest * 2 * len(leads)])
    return path


# --------------------------------------------------------------------------- SCP-ECG
_DEFAULT = {0: "0"}
for _v in range(1, 9):
    _DEFAULT[_v] = "1" * _v + "0" + "0" if _v < 8 else "1111111100"
    _DEFAULT[-_v] = "1" * _v + "0" + "1" if _v < 8 else "1111111101"


# The default table as the standard's annex lists it for storing in section 2: prefix bits,
# total bits, mode (1 = a value), base value, base code with the code's first bit in the
# least significant place (1, 5, 3, 11, ... are 100, 101, 1100, 1101, ... reversed).
_ANNEX_DEFAULT = [(1, 1, 1, 0, 0), (3, 3, 1, 1, 1), (3, 3, 1, -1, 5), (4, 4, 1, 2, 3), (4, 4, 1, -2, 11),
                  (5, 5, 1, 3, 7), (5, 5, 1, -3, 23), (6, 6, 1, 4, 15), (6, 6, 1, -4, 47), (7, 7, 1, 5, 31),
                  (7, 7, 1, -5, 95), (8, 8, 1, 6, 63), (8, 8, 1, -6, 191), (9, 9, 1, 7, 127),
                  (9, 9, 1, -7, 383), (10, 10, 1, 8, 255), (10, 10, 1, -8, 767), (10, 18, 1, 0, 511),
                  (10, 26, 1, 0, 1023)]


def _explicit_default_table() -> bytes:
    """Section 2 holding one stored table equal to the default one."""
    return struct.pack("<HH", 1, len(_ANNEX_DEFAULT)) + b"".join(struct.pack("<BBBhI", *c) for c in _ANNEX_DEFAULT)


def _huffman(values: np.ndarray) -> bytes:
    """The default Huffman table of EN 1064 (escapes: 8- and 16-bit two's complement)."""
    bits = []
    for v in values.tolist():
        if v in _DEFAULT:
            bits.append(_DEFAULT[v])
        elif -128 <= v <= 127:
            bits.append("1111111110" + format(v & 0xFF, "08b"))
        elif -32768 <= v <= 32767:
            bits.append("1111111111" + format(v & 0xFFFF, "016b"))
        else:
            raise ValueError(f"difference {v} does not fit 16 bits")
    s = "".join(bits)
    s += "0" * (-len(s) % 8)
    return int(s, 2).to_bytes(len(s) // 8, "big") if s else b""


def _second_diff(x: np.ndarray) -> np.ndarray:
    d = x.astype(np.int64).copy()
    d[2:] = x[2:] - 2 * x[1:-1] + x[:-2]
    return d


def _section(sid: int, body: bytes) -> bytes:
    body += b"\x00" * (len(body) % 2)  # sections have an even length
    length = 16 + len(body)
    reserved = b"SCPECG" if sid == 0 else b"\x00" * 6
    rest = struct.pack("<HIBB", sid, length, 20, 20) + reserved + body
    return struct.pack("<H", crc(rest)) + rest


def _tag(tag: int, value: bytes) -> bytes:
    return struct.pack("<BH", tag, len(value)) + value


def write_scp(path: str | Path, counts: np.ndarray, leads: Sequence[str], fs: int, avm_nv: int = 1000,
              huffman: bool = True, ref_beat: dict | None = None, diff: int | None = None) -> Path:
    """An SCP-ECG file of ``counts`` ((leads, samples) ints): default Huffman table and second
    differences (``diff`` 0, 1 or 2 overrides), or raw int16 without differences (``huffman=False``).
    ``huffman="explicit"`` stores the default table in section 2 instead of naming it (19999).

    ``ref_beat``: ``{"beat": (leads, L) counts, "fc": 1-based fiducial in the beat,
    "zones": [(start, fiducial, end), ...] 1-based}``: the beat is subtracted in each
    zone (sections 4 and 5, section 3 flag bit 0), as a cart compressing with
    reference-beat subtraction does.
    """
    counts = np.asarray(counts, dtype=np.int64)
    n_leads, n = counts.shape
    interval = int(round(1e6 / fs))
    s1 = (_tag(0, b"Doe\x00") + _tag(1, b"Jane\x00") + _tag(2, b"PID-42\x00")
          + _tag(4, struct.pack("<HB", 61, 1)) + _tag(5, struct.pack("<HBB", 1950, 4, 3))
          + _tag(8, bytes([2])) + _tag(25, struct.pack("<HBB", 2019, 12, 24)) + _tag(26, bytes([8, 30, 0]))
          + _tag(255, b""))
    sections = {1: s1}
    if huffman == "explicit":
        sections[2] = _explicit_default_table()
    elif huffman:
        sections[2] = struct.pack("<H", 19999)
    flags = (n_leads << 3) | 0b100 | (1 if ref_beat else 0)
    s3 = bytes([n_leads, flags]) + b"".join(struct.pack("<IIB", 1, n, SCP_CODES[lead]) for lead in leads)
    sections[3] = s3
    residual = counts.copy()
    if ref_beat:
        beat = np.asarray(ref_beat["beat"], dtype=np.int64)
        fc, zones = ref_beat["fc"], ref_beat["zones"]
        for start, fid, end in zones:
            for j in range(start, end + 1):
                r = j - fid + fc
                if 1 <= r <= beat.shape[1]:
                    residual[:, j - 1] -= beat[:, r - 1]
        length_ms = int(round(beat.shape[1] * interval / 1000))
        s4 = struct.pack("<HHH", length_ms, fc, len(zones))
        s4 += b"".join(struct.pack("<HIII", 0, s, f, e) for s, f, e in zones)
        s4 += b"".join(struct.pack("<II", s, e) for s, _, e in zones)
        sections[4] = s4
        sections[5] = _block(beat, avm_nv, interval, huffman, diff)
    sections[6] = _block(residual, avm_nv, interval, huffman, diff)
    # section 0 pointer table: ids 0-11, then the sections in order
    ids = list(range(12))
    body_len = 16 + 10 * len(ids)
    pos = 6 + body_len + 1  # 1-based index of the first section after section 0
    built = {sid: _section(sid, sections[sid]) for sid in sorted(sections)}
    table = [struct.pack("<HII", 0, body_len, 7)]
    for sid in ids[1:]:
        if sid in built:
            table.append(struct.pack("<HII", sid, len(built[sid]), pos))
            pos += len(built[sid])
        else:
            table.append(struct.pack("<HII", sid, 0, 0))
    record = _section(0, b"".join(table)) + b"".join(built[sid] for sid in sorted(built))
    total = 6 + len(record)
    head = struct.pack("<I", total) + record
    Path(path).write_bytes(struct.pack("<H", crc(head)) + head)
    return Path(path)


def _block(x: np.ndarray, avm_nv: int, interval: int, huffman: bool, diff: int | None = None) -> bytes:
    mode = (2 if huffman else 0) if diff is None else diff
    streams = []
    for lead in x:
        d = _second_diff(lead) if mode == 2 else np.diff(lead, prepend=0) if mode == 1 else lead
        streams.append(_huffman(d) if huffman else d.astype("<i2").tobytes())
    head = struct.pack("<HHBB", avm_nv, interval, mode, 0)
    return head + b"".join(struct.pack("<H", len(s)) for s in streams) + b"".join(streams)


def resign_scp(data: bytes, sections: bool = True) -> bytes:
    """Recompute the section CRCs (all, or only section 0's) and the record CRC after a
    test edited the bytes."""
    buf = bytearray(data)
    s0_len = struct.unpack_from("<I", buf, 10)[0]
    for k in range((s0_len - 16) // 10 if sections else 0):
        sid, length, index = struct.unpack_from("<HII", buf, 22 + 10 * k)
        if length and index >= 7 and index - 1 + length <= len(buf):
            o = index - 1
            struct.pack_into("<H", buf, o, crc(bytes(buf[o + 2: o + length])))
    struct.pack_into("<H", buf, 6, crc(bytes(buf[8: 6 + s0_len])))
    struct.pack_into("<H", buf, 0, crc(bytes(buf[2:])))
    return bytes(buf)


# --------------------------------------------------------------------------- EDF
def write_edf(path: str | Path, channels: list[dict]) -> Path:
    """EDF+C with pyEDFlib. Each channel: ``label``, ``digital`` (int counts), ``fs``,
    ``dimension``, ``phys_per_count`` (physical units per count), optional ``offset`` and
    ``digital_range`` (the physical range must print in the header's 8 characters)."""
    import pyedflib

    headers, data = [], []
    for ch in channels:
        scale, off = ch["phys_per_count"], ch.get("offset", 0.0)
        dmin, dmax = ch.get("digital_range", (-32768, 32767))
        headers.append({"label": ch["label"], "dimension": ch["dimension"],
                        "sample_frequency": ch["fs"],
                        "physical_min": round(dmin * scale + off, 6), "physical_max": round(dmax * scale + off, 6),
                        "digital_min": dmin, "digital_max": dmax, "transducer": "", "prefilter": ""})
        data.append(np.asarray(ch["digital"], dtype=np.int32))
    w = pyedflib.EdfWriter(str(path), len(channels), file_type=pyedflib.FILETYPE_EDFPLUS)
    try:
        w.setSignalHeaders(headers)
        w.setPatientCode("PID-42")
        w.setPatientName("Jane_Doe")
        w.setSex(0)
        w.setEquipment("ecgtext_test")
        w.writeSamples(data, digital=True)
    finally:
        w.close()
    return Path(path)
