"""WFDB records (``.hea`` + ``.dat``/``.mat``/...): our header grammar, ``wfdb``'s sample decoders.

One header grammar for every record, whatever its signal format: the header is
parsed here (from the WFDB header specification, ``header(5)``) and validated
before any sample is read, so ``5e2``, ``+500`` and ``.5e3`` are all 500 Hz,
units spelled ``µV`` (UTF-8 or Latin-1 micro sign), ``μV`` (Greek mu), ``uV``,
``nV``, ``mV`` or ``V`` are recognised, a header declaring more signals than it
has lines or more samples than its files hold is rejected, and a header without
a sampling rate needs the ``fs`` option instead of WFDB's 250 Hz default.

Samples are then decoded with only what we validated: format 16 (PTB-XL, CinC
``16x1+24`` MATLAB containers, PTB), the common case, with ``numpy`` (no
``import wfdb``, hence no pandas, on that path); every other format (8, 24, 32,
61, 80, 160, 212, 310, 311, FLAC) by ``wfdb``'s own segment decoder, given our
file names, formats, byte offsets, samples per frame, skews and initial values.
Digital-to-physical conversion (baseline, gain, units) is ours for both, so the
two paths cannot disagree about a number. ``wfdb.rdrecord`` reads only
multi-segment records, and its rate is checked against our record line.

Multi-frequency records (samples per frame > 1) are brought to the highest
channel rate with :func:`ecgtext.io.resample.resample` (the same anti-aliasing
polyphase filter ``prepare`` uses); channels are never averaged down.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import EcgTextError, FormatError, LeadError, MissingFileError, SignalError
from .paths import header_path, os_error
from .record import Ecg, ReadOptions, check_fs, make_ecg, mv_per_unit
from .resample import resample

# bytes per sample of the WFDB storage formats (FLAC formats 508/516/524 are compressed)
_BYTES_PER_SAMPLE = {"8": 1, "16": 2, "24": 3, "32": 4, "61": 2, "80": 1, "160": 2,
                     "212": 1.5, "310": 4 / 3, "311": 4 / 3}
_FLAC = ("508", "516", "524")
_FORMATS = tuple(_BYTES_PER_SAMPLE) + _FLAC
# WFDB's "invalid sample" value per format (format 8 is a difference format: none)
_INVALID = {"80": -128, "508": -128, "310": -512, "311": -512, "212": -2048, "16": -32768,
            "61": -32768, "160": -32768, "516": -32768, "24": -(2 ** 23), "524": -(2 ** 23),
            "32": -(2 ** 31)}
_DEFAULT_GAIN = 200.0  # WFDB: an absent or zero gain means 200 ADC units per physical unit
_MAX_HEADER_BYTES = 16 * 2 ** 20  # far above any real header; a bigger ".hea" is not one


def record_base(path: str) -> str:
    """The WFDB record name (path without extension) for a ``.hea``, signal file or name."""
    if path.lower().endswith(".hea"):
        return path[:-4]
    if os.path.exists(path + ".hea") or os.path.exists(path + ".HEA"):
        return path
    root, _ = os.path.splitext(path)
    return root


@dataclass
class _Signal:
    """One signal line of a header, validated."""

    file_name: str
    fmt: str
    spf: int
    skew: int
    byte_offset: int
    gain: float
    baseline: int
    units: str
    init_value: int
    name: str


@dataclass
class _Header:
    """A parsed WFDB header. ``fs`` and ``sig_len`` are ``None`` when the header omits them."""

    n_sig: int
    fs: float | None
    sig_len: int | None
    signals: list[_Signal]
    comments: list[str] = field(default_factory=list)
    n_seg: int | None = None
    encoding: str = "utf-8"


_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
# record line: name[/segments] signals [fs[/counter_fs[(base_counter)]] [samples [time [date]]]]
_RX_RECORD = re.compile(
    rf"(?P<name>[^\s/]+)(?:/(?P<n_seg>\d+))?\s+(?P<n_sig>\d+)"
    rf"(?:\s+(?P<fs>{_NUM})(?:/(?P<counter_freq>{_NUM})(?:\((?P<base_counter>{_NUM})\))?)?"
    rf"(?:\s+(?P<sig_len>\d+)(?:\s+(?P<base_time>\S+)(?:\s+(?P<base_date>\S+))?)?)?)?")
# signal line: file format[xframe][:skew][+offset] [gain[(baseline)][/units] [resolution
#              [zero [initial [checksum [block_size [description]]]]]]]
_RX_SIGNAL = re.compile(
    r"(?P<file_name>\S+)\s+(?P<fmt>\d+)(?:x(?P<spf>\d+))?(?::(?P<skew>\d+))?"
    r"(?:\+(?P<byte_offset>\d+))?"
    rf"(?:\s+(?P<adc_gain>{_NUM})(?:\((?P<baseline>[-+]?\d+)\))?(?:/(?P<units>\S+))?"
    r"(?:\s+(?P<adc_res>\d+)(?:\s+(?P<adc_zero>[-+]?\d+)(?:\s+(?P<init_value>[-+]?\d+)"
    r"(?:\s+(?P<checksum>[-+]?\d+)(?:\s+(?P<block_size>\d+)(?:\s+(?P<sig_name>.*))?)?)?)?)?)?)?")


def decode_header(data: bytes) -> tuple[str, str]:
    """``(text, encoding)``: UTF-8 (a byte-order mark dropped), else Latin-1, which decodes anything."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def _shown(line: str, limit: int = 60) -> str:
    return repr(line if len(line) <= limit else line[:limit] + "...")


def parse_header(text: str, display: str) -> _Header:
    """Parse and validate a WFDB header (any signal format); a domain error if it is not one.

    Comment lines (``#``) may appear anywhere; CR, LF and CRLF line ends are all
    accepted. Multi-segment headers return ``n_seg`` and no signals.
    """
    lines: list[str] = []
    comments: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#"):
            comments.append(line.lstrip("#").strip())
        elif line:
            lines.append(line)
    if not lines:
        raise FormatError(display, "the WFDB header has no record line (only comments or blanks)")
    rec = _RX_RECORD.fullmatch(lines[0])
    if rec is None:
        raise FormatError(display, f"the first line of the WFDB header is not a record line "
                                   f"('name signals [rate [samples]]'): {_shown(lines[0])}")
    n_sig = int(rec["n_sig"])
    fs = None
    if rec["fs"] is not None:
        fs = float(rec["fs"])
        if not math.isfinite(fs):
            raise SignalError(display, f"the header's sampling rate {rec['fs']} is not a finite number",
                              field="sampling rate", value=rec["fs"], option="fs")
    sig_len = int(rec["sig_len"]) if rec["sig_len"] is not None else None
    if rec["n_seg"] is not None:
        return _Header(n_sig=n_sig, fs=fs, sig_len=sig_len, signals=[], comments=comments,
                       n_seg=int(rec["n_seg"]))
    if n_sig == 0:
        raise SignalError(display, "the header declares no signals", field="signal count", value=0)
    if len(lines) - 1 != n_sig:
        raise FormatError(display, f"header declares {n_sig} signal{'s' if n_sig != 1 else ''} "
                                   f"but has {len(lines) - 1} signal line{'s' if len(lines) != 2 else ''}",
                          field="signal count", value=n_sig)
    signals = [_parse_signal(line, i + 1, display) for i, line in enumerate(lines[1:])]
    _check_files_contiguous(signals, display)
    return _Header(n_sig=n_sig, fs=fs, sig_len=sig_len, signals=signals, comments=comments)


def _parse_signal(line: str, number: int, display: str) -> _Signal:
    m = _RX_SIGNAL.fullmatch(line)
    if m is None:
        raise FormatError(display, f"signal line {number} of the header is not valid WFDB: {_shown(line)}")
    fmt = m["fmt"].lstrip("0") or "0"
    if fmt == "0":
        raise SignalError(display, f"signal {number} is not stored (format 0)", field="format", value=0)
    if fmt not in _FORMATS:
        raise FormatError(display, f"signal {number} has storage format {m['fmt']}, which is not a "
                                   "WFDB signal format", field="format", value=m["fmt"])
    gain = float(m["adc_gain"]) if m["adc_gain"] else 0.0
    if not math.isfinite(gain):
        raise FormatError(display, f"signal {number} has gain {m['adc_gain']}, not a finite number",
                          field="gain", value=m["adc_gain"])
    spf = int(m["spf"]) if m["spf"] else 1
    if spf == 0:
        spf = 1  # the WFDB library reads "x0" as one sample per frame
    zero = int(m["adc_zero"]) if m["adc_zero"] else 0
    return _Signal(file_name=m["file_name"], fmt=fmt, spf=spf, skew=int(m["skew"] or 0),
                   byte_offset=int(m["byte_offset"] or 0), gain=gain if gain != 0 else _DEFAULT_GAIN,
                   baseline=int(m["baseline"]) if m["baseline"] else zero,
                   units=m["units"] or "mV",
                   init_value=int(m["init_value"]) if m["init_value"] else zero,
                   name=(m["sig_name"] or "").strip())


def _check_files_contiguous(signals: list[_Signal], display: str) -> None:
    """WFDB stores a file's signals on consecutive lines, all in one format."""
    seen: dict[str, int] = {}
    last = None
    for i, s in enumerate(signals):
        if s.file_name != last and s.file_name in seen and s.file_name != "~":
            raise FormatError(display, f"signal file {s.file_name} is named on non-consecutive "
                                       "signal lines of the header", field="file name")
        if s.file_name in seen and signals[seen[s.file_name]].fmt != s.fmt:
            raise FormatError(display, f"signal file {s.file_name} is given two storage formats "
                                       f"({signals[seen[s.file_name]].fmt} and {s.fmt})", field="format")
        seen.setdefault(s.file_name, i)
        last = s.file_name


def _read_header(path: str, display: str) -> bytes:
    try:
        size = os.path.getsize(path)
        if size > _MAX_HEADER_BYTES:
            raise FormatError(display, f"the .hea file is {size / 2 ** 20:.0f} MiB, too large to be a "
                                       "WFDB header")
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise MissingFileError(display, f"WFDB header {os.path.basename(path)} not found") from None
    except OSError as exc:
        raise os_error(display, exc, "WFDB header") from None
    if not data.strip():
        raise FormatError(display, "empty WFDB header file")
    if b"\x00" in data:
        raise FormatError(display, "not a WFDB header (binary data in the .hea file)")
    return data


def _file_groups(h: _Header) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(h.signals):
        groups.setdefault(s.file_name, []).append(i)
    return groups


def _frames_available(h: _Header, folder: str, display: str) -> int:
    """Check every signal file exists and holds the header's samples; the frame count to read.

    Runs before anything is allocated, so a header declaring 10^12 samples is a
    clear error rather than a memory error. Without a stated length the
    record is as long as its shortest file.
    """
    frames: list[int] = []
    for name, ch in _file_groups(h).items():
        if name == "~":
            raise SignalError(display, "the header's signals are not stored in a file ('~')")
        p = os.path.join(folder, name)
        try:
            size = os.path.getsize(p)
            if os.path.isdir(p):
                raise IsADirectoryError(p)
        except FileNotFoundError:
            raise MissingFileError(display, f"the header names signal file {name}, which does not "
                                            "exist next to it") from None
        except OSError as exc:
            raise os_error(display, exc, f"signal file {name}") from None
        if size == 0:
            raise SignalError(display, f"signal file {name} is empty (0 bytes)")
        fmt = h.signals[ch[0]].fmt
        if fmt in _FLAC:
            continue  # compressed: the decoder judges the length
        offset = h.signals[ch[0]].byte_offset
        per_frame = sum(h.signals[c].spf for c in ch) * _BYTES_PER_SAMPLE[fmt]
        if h.sig_len is not None:
            need = offset + math.ceil(h.sig_len * per_frame)
            if size < need:
                raise SignalError(display, f"signal file {name} is truncated: {size} bytes, the header "
                                           f"needs {need}", field="signal length", value=h.sig_len)
        else:
            frames.append(int(max(0, size - offset) // per_frame))
    if h.sig_len is not None:
        return h.sig_len
    if not frames:
        raise FormatError(display, "the header states no signal length and its files are compressed")
    return min(frames)


def _read_fast(folder: str, h: _Header, n: int) -> np.ndarray:
    """Digital samples ``(channels, samples)`` int16 of an all-format-16 record, via numpy."""
    groups = _file_groups(h)
    out = None if len(groups) == 1 else np.empty((h.n_sig, n), dtype="<i2")
    for name, ch in groups.items():
        raw = np.fromfile(os.path.join(folder, name), dtype="<i2", count=n * len(ch),
                          offset=h.signals[ch[0]].byte_offset)
        # WFDB interleaves a file's channels sample by sample: (samples, channels).
        # This is the one place the fast path turns that into (channels, samples).
        frame = raw.reshape(n, len(ch)).T
        if out is None:
            return frame
        out[ch] = frame
    return out


def _read_wfdb_digital(folder: str, h: _Header, n: int, display: str, start: int = 0,
                       stop: int | None = None) -> list[np.ndarray]:
    """Digital samples per channel (frames ``start:stop`` of ``n``, times samples per frame)
    via wfdb's segment decoder."""
    from wfdb.io import _signal  # wfdb.rdrecord's own decoder, given only our validated fields

    sig = h.signals
    try:
        return _signal._rd_segment(
            file_name=[s.file_name for s in sig], dir_name=folder, pn_dir=None,
            fmt=[s.fmt for s in sig], n_sig=h.n_sig, sig_len=n,
            byte_offset=[s.byte_offset for s in sig], samps_per_frame=[s.spf for s in sig],
            skew=[s.skew for s in sig], init_value=[s.init_value for s in sig],
            sampfrom=start, sampto=n if stop is None else stop, channels=list(range(h.n_sig)),
            ignore_skew=False, return_res=64)
    except EcgTextError:
        raise
    except MemoryError:
        raise
    except OSError as exc:
        raise os_error(display, exc, "signal file") from None
    except Exception:  # wfdb: ValueError on short files, others on inconsistent fields
        fmts = ", ".join(sorted({s.fmt for s in sig}))
        raise SignalError(display, f"the signal files cannot be decoded as WFDB format {fmts} with the "
                                   "header's lengths and offsets", field="format", value=fmts) from None


def _physical(digital: list[np.ndarray] | np.ndarray, h: _Header) -> list[np.ndarray] | np.ndarray:
    """Digital -> physical (header units) per channel; WFDB's invalid sample value -> NaN.

    A 2-D ``(channels, samples)`` array (one rate, one format: the common case) is
    converted in one vectorised step; a list of per-channel arrays one by one.
    """
    fmts = {s.fmt for s in h.signals}
    if isinstance(digital, np.ndarray) and len(fmts) == 1:
        x = digital.astype(np.float64, order="C")  # C order: later per-lead reductions are contiguous
        invalid = _INVALID.get(fmts.pop())
        if invalid is not None:
            bad = digital == invalid
            if bad.any():
                x[bad] = np.nan
        x -= np.array([s.baseline for s in h.signals], dtype=np.float64)[:, None]
        x /= np.array([s.gain for s in h.signals], dtype=np.float64)[:, None]
        return x
    out = []
    for d, s in zip(digital, h.signals):
        x = np.asarray(d, dtype=np.float64)
        invalid = _INVALID.get(s.fmt)
        if invalid is not None:
            bad = np.asarray(d) == invalid
            if bad.any():
                x = np.where(bad, np.nan, x)
        out.append((x - s.baseline) / s.gain)
    return out


def _one_rate(channels: list[np.ndarray] | np.ndarray, h: _Header, fs: float, display: str
              ) -> tuple[np.ndarray, float, dict[str, Any]]:
    """Stack channels; multi-frequency ones are resampled to the highest channel rate."""
    spf = [s.spf for s in h.signals]
    top = max(spf)
    if top == 1:
        return (channels if isinstance(channels, np.ndarray) else np.stack(channels)), fs, {}
    rate = fs * top
    check_fs(rate, display, "the header (frame rate times samples per frame)")
    out = []
    for x, k in zip(channels, spf):
        if k != top:
            bad = ~np.isfinite(x)
            if bad.all():
                x = np.full(x.size * top // k, np.nan)
            else:
                filled = np.interp(np.arange(x.size), np.flatnonzero(~bad), x[~bad]) if bad.any() else x
                y = resample(filled[None, :], fs * k, rate)[0].astype(np.float64)
                if bad.any():  # keep gaps as gaps (NaN) for prepare's NaN policy
                    y[np.repeat(bad, top // k) if top % k == 0 else
                      bad[np.minimum(np.arange(y.size) * k // top, bad.size - 1)]] = np.nan
                x = y
        out.append(x)
    return np.stack(out), rate, {"samples_per_frame": spf, "frame_rate": fs}


def _read_multisegment(base: str, h: _Header, display: str) -> tuple[np.ndarray, Any]:
    import wfdb

    try:
        rec = wfdb.rdrecord(base, physical=True)
    except EcgTextError:
        raise
    except MemoryError:
        raise
    except OSError as exc:
        raise os_error(display, exc, "segment file") from None
    except Exception:
        raise SignalError(display, f"cannot read the multi-segment WFDB record ({h.n_seg} segments): a "
                                   "segment header or signal file is inconsistent") from None
    if rec.p_signal is None or rec.p_signal.ndim != 2:
        raise SignalError(display, "zero-length signal (no samples)")
    if h.fs is not None and not math.isclose(float(rec.fs), h.fs, rel_tol=1e-9):
        raise FormatError(display, f"sampling rate read as {rec.fs} Hz by wfdb but {h.fs:g} Hz by the "
                                   "WFDB header grammar", field="sampling rate", value=h.fs)
    # wfdb returns (samples, channels): transposed here, once, for multi-segment records.
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


# Tests set this to False to send format-16 records through wfdb's decoder too.
FAST_FORMAT_16 = True


def _open(display: str, options: ReadOptions) -> tuple[_Header, str, str, float]:
    """(validated header, its encoding, its folder, the sampling rate to use)."""
    hea = header_path(display)
    text, encoding = decode_header(_read_header(hea, display))
    h = parse_header(text, display)
    for s in h.signals:  # the file name's bytes as written, as the OS spells them
        s.file_name = os.fsdecode(s.file_name.encode(encoding, "surrogateescape"))
    fs_source = "the header"
    fs = h.fs
    if fs is None:
        if options.fs is None:
            raise SignalError(display, "the WFDB header does not state a sampling rate; give it (Hz)",
                              field="sampling rate", option="fs")
        fs, fs_source = options.fs, "the options"
    return h, encoding, hea, check_fs(fs, display, fs_source)


def _names(h: _Header, options: ReadOptions, display: str) -> list[str]:
    names = [s.name for s in h.signals]
    if any(not nm for nm in names):
        if options.leads is not None and len(options.leads) == len(names):
            return list(options.leads)
        missing = ", ".join(str(i + 1) for i, nm in enumerate(names) if not nm)
        raise LeadError(display, f"the header gives no lead name (description) for signal(s) "
                                 f"{missing}; give the lead names in file order",
                        field="lead names", option="leads")
    return names


def _meta(h: _Header, encoding: str, fmt: str, units: list[str], options: ReadOptions) -> dict[str, Any]:
    meta = parse_comments(h.comments)
    meta["format"] = fmt
    meta["header_encoding"] = encoding
    units_known = all(mv_per_unit(u) is not None for u in units)
    ignored = [n for n, v in (("fs", options.fs if h.fs is not None else None),
                              ("leads", options.leads if all(s.name for s in h.signals) else None),
                              ("units", options.units if units_known else None)) if v is not None]
    if ignored:
        meta["options_ignored"] = ignored  # the header states these
    return meta


@dataclass
class WfdbRange:
    """A single-segment, one-rate WFDB record opened for range reads (nothing read yet).

    ``read(start, stop)`` returns ``(channels, stop - start)`` float64 physical
    values in the header's ``units`` (invalid samples NaN), decoded exactly as
    :func:`read_wfdb` decodes them; ``fs`` and the rest come from the same header
    grammar and checks.
    """

    fs: float
    names: list[str]
    units: list[str]
    n_samples: int
    meta: dict[str, Any]
    read: Any  # Callable[[int, int], np.ndarray]


def open_wfdb_range(path: str, options: ReadOptions) -> WfdbRange | None:
    """Open a WFDB record for bounded-memory range reads; ``None`` for multi-segment or
    multi-frequency records (read those whole with :func:`read_wfdb`). Header problems
    raise the same errors as :func:`read_wfdb`."""
    display = str(path)
    h, encoding, hea, fs = _open(display, options)
    if h.n_seg is not None or any(s.spf != 1 for s in h.signals):
        return None
    folder = os.path.dirname(hea)
    n = _frames_available(h, folder, display)
    if n == 0:
        raise SignalError(display, "zero-length signal (the header declares 0 samples)")
    names = _names(h, options, display)
    simple = all(s.fmt == "16" and s.skew == 0 for s in h.signals) and FAST_FORMAT_16
    groups = _file_groups(h)

    def read(start: int, stop: int) -> np.ndarray:
        start, stop = max(0, int(start)), min(n, int(stop))
        count = max(0, stop - start)
        if simple:
            digital = np.empty((h.n_sig, count), dtype="<i2")
            for name, ch in groups.items():
                raw = np.fromfile(os.path.join(folder, name), dtype="<i2", count=count * len(ch),
                                  offset=h.signals[ch[0]].byte_offset + 2 * len(ch) * start)
                digital[ch] = raw.reshape(count, len(ch)).T
        else:
            digital = np.stack(_read_wfdb_digital(folder, h, n, display, start, stop))
        return _physical(digital, h)

    units = [s.units for s in h.signals]
    return WfdbRange(fs=fs, names=names, units=units, n_samples=n,
                     meta=_meta(h, encoding, "wfdb-16" if simple else "wfdb", units, options), read=read)


def read_wfdb(path: str, options: ReadOptions) -> Ecg:
    """Read one WFDB record given its ``.hea``, a signal file, or the record name.

    Values are converted per channel to mV with the header's baseline, gain and
    units; ``meta`` holds the parsed comments (``age``, ``sex``, ``dx`` codes as
    strings) and all raw comment lines. The header states rate, units and lead
    names, so ``options`` contributes ``lead_map`` and ``ignore_unknown_leads``,
    plus ``fs`` when the header has no rate, ``units`` for channels in units we
    do not know, and ``leads`` for channels without a description.
    """
    display = str(path)
    h, encoding, hea, fs = _open(display, options)
    folder = os.path.dirname(hea)
    extra: dict[str, Any] = {}
    if h.n_seg is not None:
        signal, rec = _read_multisegment(hea[:-4], h, display)
        names = list(rec.sig_name)
        units = [u or "mV" for u in (rec.units or ["mV"] * len(names))]
        fmt = "wfdb-multisegment"
    else:
        n = _frames_available(h, folder, display)
        if n == 0:
            raise SignalError(display, "zero-length signal (the header declares 0 samples)")
        simple = all(s.fmt == "16" and s.spf == 1 and s.skew == 0 for s in h.signals)
        if simple and FAST_FORMAT_16:
            digital, fmt = _read_fast(folder, h, n), "wfdb-16"
        else:
            digital, fmt = _read_wfdb_digital(folder, h, n, display), "wfdb"
            if all(s.spf == 1 for s in h.signals):
                digital = np.stack(digital)
        signal, fs, extra = _one_rate(_physical(digital, h), h, float(fs), display)
        names = _names(h, options, display)
        units = [s.units for s in h.signals]
    if signal.shape[1] == 0:
        raise SignalError(display, "zero-length signal (the header declares 0 samples)")
    meta = _meta(h, encoding, fmt, units, options)
    meta.update(extra)
    return make_ecg(signal, fs, names, display, options, meta, units=units, units_source="file")
