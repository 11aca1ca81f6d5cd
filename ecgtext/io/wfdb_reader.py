"""WFDB records (``.hea`` + ``.dat``/``.mat``/...), via ``wfdb`` with a fast path.

``wfdb.rdheader`` spends ~15 ms per header in pandas look-ups, which alone caps
reading at ~70 records/s. Headers of the common single-segment, format-16 kind
(PTB-XL, CinC ``16x1+24`` MATLAB containers, PTB) are therefore parsed with the
header grammar below (from the WFDB header specification; it also keeps
``import wfdb`` -- and with it pandas -- off the common path) and the samples
read with ``numpy``; tests check both give exactly what ``wfdb.rdheader`` /
``wfdb.rdrecord`` give. Anything else (other formats such as MIT-BIH's 212,
multi-segment or multi-frequency records) goes through ``wfdb.rdrecord``.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import EcgTextError, FormatError, MissingFileError, SignalError
from .record import Ecg, ReadOptions, make_ecg, mv_per_unit

# bytes per sample of the WFDB storage formats we can size-check
_BYTES_PER_SAMPLE = {"8": 1, "16": 2, "24": 3, "32": 4, "61": 2, "80": 1, "160": 2,
                     "212": 1.5, "310": 4 / 3, "311": 4 / 3}
_INVALID_16 = -(2 ** 15)  # WFDB's "missing sample" value in format 16
_DEFAULT_GAIN = 200.0  # WFDB: an absent or zero gain means 200 ADC units per physical unit


def record_base(path: str) -> str:
    """The WFDB record name (path without extension) for a ``.hea``, signal file or name."""
    if path.lower().endswith(".hea"):
        return path[:-4]
    if os.path.exists(path + ".hea"):
        return path
    root, _ = os.path.splitext(path)
    return root


@dataclass
class _Header:
    """The subset of a WFDB header the fast path needs (one segment, format 16)."""

    fs: float
    sig_len: int
    file_name: list[str]
    byte_offset: list[int]
    adc_gain: list[float]
    baseline: list[int]
    units: list[str]
    sig_name: list[str]
    comments: list[str] = field(default_factory=list)


_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
# record line: name[/segments] signals [fs[/counter_fs[(base_counter)]] [samples [time [date]]]]
_RX_RECORD = re.compile(
    rf"(?P<name>[-\w]+)(?:/(?P<n_seg>\d+))?\s+(?P<n_sig>\d+)"
    rf"(?:\s+(?P<fs>{_NUM})(?:/(?P<counter_freq>{_NUM})(?:\((?P<base_counter>{_NUM})\))?)?"
    rf"(?:\s+(?P<sig_len>\d+)(?:\s+(?P<base_time>\S+)(?:\s+(?P<base_date>\S+))?)?)?)?")
# signal line: file format[xframe][:skew][+offset] [gain[(baseline)][/units] [resolution
#              [zero [initial [checksum [block_size [description]]]]]]]
_RX_SIGNAL = re.compile(
    r"(?P<file_name>\S+)\s+(?P<fmt>\d+)(?:x(?P<samps_per_frame>\d+))?(?::(?P<skew>\d+))?"
    r"(?:\+(?P<byte_offset>\d+))?"
    rf"(?:\s+(?P<adc_gain>{_NUM})(?:\((?P<baseline>[-+]?\d+)\))?(?:/(?P<units>\S+))?"
    r"(?:\s+(?P<adc_res>\d+)(?:\s+(?P<adc_zero>[-+]?\d+)(?:\s+(?P<init_value>[-+]?\d+)"
    r"(?:\s+(?P<checksum>[-+]?\d+)(?:\s+(?P<block_size>\d+)(?:\s+(?P<sig_name>.*))?)?)?)?)?)?)?")


def _split_header(text: str) -> tuple[list[str], list[str]]:
    """(header lines, comment lines), both stripped; blank lines dropped."""
    lines, comments = [], []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#"):
            comments.append(line)
        elif line:
            lines.append(line)
    return lines, comments


def _parse_fast(text: str) -> _Header | None:
    """Parse a simple header; ``None`` if it needs full wfdb (other formats, segments, ...)."""
    lines, comment_lines = _split_header(text)
    rec = _RX_RECORD.fullmatch(lines[0]) if lines else None
    if rec is None or rec["n_seg"] or not rec["fs"] or not rec["sig_len"]:
        return None
    n_sig = int(rec["n_sig"])
    if n_sig == 0 or len(lines) != n_sig + 1:
        return None
    h = _Header(fs=float(rec["fs"]), sig_len=int(rec["sig_len"]), file_name=[], byte_offset=[],
                adc_gain=[], baseline=[], units=[], sig_name=[],
                comments=[c.strip(" \t#") for c in comment_lines])
    for line in lines[1:]:
        m = _RX_SIGNAL.fullmatch(line)
        if (m is None or m["fmt"] != "16" or (m["samps_per_frame"] or "1") != "1"
                or (m["skew"] or "0") != "0" or not m["file_name"] or not m["sig_name"]):
            return None
        gain = float(m["adc_gain"]) if m["adc_gain"] else 0.0
        if not m["adc_zero"]:
            return None
        h.file_name.append(m["file_name"])
        h.byte_offset.append(int(m["byte_offset"]) if m["byte_offset"] else 0)
        h.adc_gain.append(gain if gain != 0 else _DEFAULT_GAIN)
        h.baseline.append(int(m["baseline"]) if m["baseline"] else int(m["adc_zero"]))
        h.units.append(m["units"] or "mV")
        h.sig_name.append(m["sig_name"].strip())
    return h


def _read_text(path: str, display: str) -> str:
    try:
        data = open(path, "rb").read()
    except FileNotFoundError:
        raise MissingFileError(display, f"WFDB header {os.path.basename(path)} not found") from None
    except OSError as exc:
        raise FormatError(display, f"cannot read header: {exc.strerror or exc}") from None
    if not data.strip():
        raise FormatError(display, "empty WFDB header file")
    if b"\x00" in data:
        raise FormatError(display, "not a WFDB header (binary data in the .hea file)")
    return data.decode("ascii", errors="ignore")


def _check_signal_files(base: str, files: list[str], need: dict[str, float], display: str) -> None:
    """Every signal file the header names exists and holds at least ``need`` bytes."""
    folder = os.path.dirname(base)
    for name in dict.fromkeys(files):
        if name == "~":
            continue  # WFDB: signal not stored
        p = os.path.join(folder, name)
        try:
            size = os.path.getsize(p)
        except OSError:
            raise MissingFileError(display, f"the header names signal file {name}, which does not "
                                            f"exist next to it") from None
        if size == 0:
            raise SignalError(display, f"signal file {name} is empty (0 bytes)")
        if name in need and size < need[name]:
            raise SignalError(display, f"signal file {name} is truncated: {size} bytes, the header "
                                       f"needs {math.ceil(need[name])}")


def _read_fast(base: str, h: _Header, display: str) -> np.ndarray:
    """``(channels, samples)`` float64 physical values of a format-16 record."""
    folder = os.path.dirname(base)
    n = h.sig_len
    by_file: dict[str, list[int]] = {}
    for i, name in enumerate(h.file_name):
        by_file.setdefault(name, []).append(i)
    need = {name: h.byte_offset[ch[0]] + 2 * n * len(ch) for name, ch in by_file.items()}
    _check_signal_files(base, list(by_file), need, display)
    out = np.empty((len(h.file_name), n), dtype=np.float64)
    for name, ch in by_file.items():
        raw = np.fromfile(os.path.join(folder, name), dtype="<i2", count=n * len(ch),
                          offset=h.byte_offset[ch[0]])
        # WFDB interleaves a file's channels sample by sample: (samples, channels).
        # This is the one place the fast path turns that into (channels, samples).
        frame = raw.reshape(n, len(ch)).T
        out[ch] = frame
        invalid = frame == _INVALID_16
        if invalid.any():
            out[ch] = np.where(invalid, np.nan, out[ch])
    out -= np.asarray(h.baseline, dtype=np.float64)[:, None]
    out /= np.asarray(h.adc_gain, dtype=np.float64)[:, None]
    return out


def _rdheader(base: str, display: str):
    import wfdb

    try:
        return wfdb.rdheader(base)
    except EcgTextError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # wfdb raises ValueError/IndexError/AttributeError/... on garbage
        raise FormatError(display, f"not a valid WFDB header ({type(exc).__name__}: {exc})") from None


def _read_wfdb_full(base: str, display: str) -> tuple[np.ndarray, Any]:
    """``(channels, samples)`` physical values via ``wfdb.rdrecord`` (any format)."""
    import wfdb

    hdr = _rdheader(base, display)
    if getattr(hdr, "n_seg", None) is None:  # single segment: size-check its files first
        need: dict[str, float] = {}
        if hdr.sig_len and hdr.n_sig:
            spf = hdr.samps_per_frame or [1] * hdr.n_sig
            offsets = hdr.byte_offset or [0] * hdr.n_sig
            unsized = set()
            for i, name in enumerate(hdr.file_name):
                bps = _BYTES_PER_SAMPLE.get(str(hdr.fmt[i]))
                if bps is None:  # compressed (FLAC) formats: let wfdb judge
                    unsized.add(name)
                    continue
                need.setdefault(name, offsets[i] or 0)
                need[name] += hdr.sig_len * (spf[i] or 1) * bps
            for name in unsized:
                need.pop(name, None)
        if not hdr.n_sig:
            raise SignalError(display, "the header declares no signals")
        _check_signal_files(base, list(hdr.file_name or []), need, display)
    try:
        rec = wfdb.rdrecord(base, physical=True)
    except EcgTextError:
        raise
    except FileNotFoundError as exc:
        raise MissingFileError(display, f"a file the header names is missing "
                                        f"({os.path.basename(str(exc.filename or exc))})") from None
    except MemoryError:
        raise
    except Exception as exc:  # wfdb: ValueError on short files, IndexError/TypeError on odd headers
        raise SignalError(display, f"cannot read the WFDB signal ({type(exc).__name__}: {exc})") from None
    if rec.p_signal is None or rec.p_signal.ndim != 2:
        raise SignalError(display, "zero-length signal (no samples)")
    # wfdb returns (samples, channels): transposed here, once, for the slow path.
    return np.ascontiguousarray(rec.p_signal.T), rec


_KEY_VALUE = re.compile(r"^\s*<?([A-Za-z][\w ]*?)>?\s*:\s*(.*?)\s*$")
_ANGLE_PAIRS = re.compile(r"<([^>]+)>:\s*([^<]*)")
_MIT_AGE_SEX = re.compile(r"^(\d{1,3})\s+([MF])\b")  # MIT-BIH: "69 M 1085 1629 x1"


def parse_comments(comments: list[str]) -> dict[str, Any]:
    """Pull age, sex and diagnosis codes from WFDB header comments.

    Understands CinC (``Age: 78``, ``Sex: Male``, ``Dx: 164889003,59118001``),
    PTB (``age: 81``, ``sex: female``) and MIT's ``<age>: 25  <sex>: M`` lines.
    The comments themselves are always kept under ``"comments"``.
    """
    meta: dict[str, Any] = {"comments": list(comments)}
    pairs: list[tuple[str, str]] = []
    for line in comments:
        angled = _ANGLE_PAIRS.findall(line)
        if angled:
            pairs.extend((k, v) for k, v in angled)
            continue
        m = _KEY_VALUE.match(line)
        if m:
            pairs.append((m[1], m[2]))
            continue
        m = _MIT_AGE_SEX.match(line)
        if m:
            pairs.extend((("age", m[1]), ("sex", m[2])))
    for key, value in pairs:
        key, value = key.strip().lower(), value.strip()
        if key == "age" and "age" not in meta:
            try:
                age = float(value)
            except ValueError:
                continue
            if math.isfinite(age):
                meta["age"] = int(age) if age.is_integer() else age
        elif key in ("sex", "gender") and "sex" not in meta:
            v = value.lower()
            if v in ("m", "male"):
                meta["sex"] = "M"
            elif v in ("f", "female"):
                meta["sex"] = "F"
        elif key == "dx" and "dx" not in meta:
            meta["dx"] = [c.strip() for c in value.split(",") if c.strip()]
    return meta


def read_wfdb(path: str, options: ReadOptions) -> Ecg:
    """Read one WFDB record given its ``.hea``, a signal file, or the record name.

    Values are wfdb's physical units converted per channel to mV; ``meta`` holds
    the parsed comments (``age``, ``sex``, ``dx`` codes as strings) and all raw
    comment lines. The header states rate, units and lead names, so ``options``
    only contributes ``lead_map`` and ``ignore_unknown_leads``.
    """
    display = str(path)
    base = record_base(display)
    text = _read_text(base + ".hea", display)
    h = _parse_fast(text)
    if h is not None:
        signal = _read_fast(base, h, display)
        fs, names, units, comments = h.fs, h.sig_name, h.units, h.comments
        fmt = "wfdb-16"
    else:
        signal, rec = _read_wfdb_full(base, display)
        fs, names, comments = float(rec.fs), list(rec.sig_name), list(rec.comments or [])
        units = [u or "mV" for u in (rec.units or ["mV"] * len(names))]
        fmt = "wfdb"
    if signal.shape[1] == 0:
        raise SignalError(display, "zero-length signal (the header declares 0 samples)")
    meta = parse_comments(comments)
    meta["format"] = fmt
    units_known = all(mv_per_unit(u) is not None for u in units)
    ignored = [n for n, v in (("fs", options.fs), ("leads", options.leads),
                              ("units", options.units if units_known else None)) if v is not None]
    if ignored:
        meta["options_ignored"] = ignored  # the header states these
    return make_ecg(signal, fs, names, display, options, meta, units=units, units_source="file")
