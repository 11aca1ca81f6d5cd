"""Differential property tests of the WFDB readers against records built from known digital samples.

Each example writes a record from integers we chose: the signal files are
encoded here, from the WFDB format specification (``signal(5)``), in formats
16, 61, 80, 160, 212, 24 and 32, possibly split over two files with byte
offsets and several samples per frame; the header spells every field in one of
its legal ways (rates ``5e2``/``+500``/``.5e3``, gains in exponent form,
baselines given or implied by the ADC zero, units ``mV``/``uV``/``µV``/``μV``/
``nV``/``V`` or absent) and is written in UTF-8 (with or without BOM) or
Latin-1, with LF or CRLF line ends and comment lines anywhere. Both reading
paths (numpy for format 16, wfdb's decoder for everything else, and for format
16 on request) must give exactly ``(digital - baseline) / gain`` in mV at the
right rate -- or, for the corrupted variants, a one-line domain error.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecgtext.config import STANDARD_LEADS
from ecgtext.errors import EcgTextError, FormatError, SignalError
from ecgtext.io import ReadOptions, read_ecg, wfdb_reader

FORMATS = ["16", "61", "80", "160", "212", "24", "32"]
_RANGE = {"80": 127, "212": 2047, "16": 32767, "61": 32767, "160": 32767, "24": 2 ** 23 - 1,
          "32": 2 ** 31 - 1}
_UNITS = [("mV", 1.0), ("uV", 1e-3), ("µV", 1e-3), ("μV", 1e-3), ("nV", 1e-6), ("V", 1e3), (None, 1.0)]
_INVALID = {"80": -128, "212": -2048, "16": -32768, "61": -32768, "160": -32768, "24": -(2 ** 23),
            "32": -(2 ** 31)}
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                    derandomize=True)


def encode(values: np.ndarray, fmt: str) -> bytes:
    """Interleaved digital samples -> the bytes of a WFDB signal file of format ``fmt``."""
    v = np.asarray(values, dtype=np.int64)
    if fmt == "16":
        return v.astype("<i2").tobytes()
    if fmt == "61":
        return v.astype(">i2").tobytes()
    if fmt == "80":
        return (v + 128).astype(np.uint8).tobytes()
    if fmt == "160":
        return (v + 32768).astype("<u2").tobytes()
    if fmt == "32":
        return v.astype("<i4").tobytes()
    if fmt == "24":
        u = v & 0xFFFFFF
        return np.stack([u & 0xFF, (u >> 8) & 0xFF, (u >> 16) & 0xFF], axis=1).astype(np.uint8).tobytes()
    if fmt == "212":
        u = v & 0xFFF
        out = bytearray()
        for i in range(0, len(u) - 1, 2):
            a, b = int(u[i]), int(u[i + 1])
            out += bytes([a & 0xFF, ((a >> 8) & 0x0F) | (((b >> 8) & 0x0F) << 4), b & 0xFF])
        if len(u) % 2:
            a = int(u[-1])
            out += bytes([a & 0xFF, (a >> 8) & 0x0F])
        return bytes(out)
    raise AssertionError(fmt)


@dataclass
class Built:
    hea: str
    expected: np.ndarray  # (leads, samples) float64 mV at the record's final rate
    fs: float
    leads: list[str]
    fast_eligible: bool


def _spell_rate(fs: float, draw) -> str:
    if fs == 500:
        return draw(st.sampled_from(["500", "5e2", "+500", ".5e3", "500.0", "5E+2", "0500"]))
    return draw(st.sampled_from([f"{fs:g}", f"{fs:.1f}", f"{fs:e}"]))


@st.composite
def records(draw, folder: str):
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    n_sig = draw(st.integers(1, 4))
    leads = list(rng.choice(STANDARD_LEADS, n_sig, replace=False))
    fs = float(draw(st.sampled_from([500, 500, 250, 360, 1000])))
    n_frames = draw(st.integers(1, 3)) * int(fs)  # whole seconds, so the low-amplitude bound applies
    two_files = n_sig > 1 and draw(st.booleans())
    split = draw(st.integers(1, n_sig - 1)) if two_files else n_sig
    groups = [list(range(split))] + ([list(range(split, n_sig))] if two_files else [])
    fmts = [draw(st.sampled_from(FORMATS)) for _ in groups]
    multi = draw(st.integers(0, 3)) == 0
    spf = [draw(st.sampled_from([1, 2, 4])) if multi else 1 for _ in range(n_sig)]
    offsets = [draw(st.sampled_from([0, 0, 24, 7, 512])) for _ in groups]
    unit_name, unit_mv = _UNITS[draw(st.integers(0, len(_UNITS) - 1))]
    inject_invalid = not multi and draw(st.booleans())

    digital: list[np.ndarray] = []
    lines_sig: list[str] = []
    phys: list[np.ndarray] = []
    chan_fmt = {c: fmts[g] for g, chans in enumerate(groups) for c in chans}
    for c in range(n_sig):
        fmt = chan_fmt[c]
        lim = _RANGE[fmt]
        n = n_frames * spf[c]
        d_span = int(rng.integers(max(8, lim // 50), lim // 2))
        base = int(rng.integers(-lim // 4, lim // 4))
        t = np.arange(n) / (fs * spf[c])
        d = base + np.round(d_span / 2 * np.sin(2 * np.pi * 1.3 * t + c)
                            + rng.normal(0, d_span / 40, n)).astype(np.int64)
        d = np.clip(d, -lim, lim)
        target_mv = float(rng.uniform(0.5, 5.0))
        gain = float(f"{d_span * unit_mv / target_mv:.6g}")  # written with 6 digits: exact below
        if inject_invalid:
            d[rng.integers(0, n, 3)] = _INVALID[fmt]
        digital.append(d)
        baseline_given = draw(st.booleans())
        zero = base if not baseline_given else int(rng.integers(-lim // 4, lim // 4))
        baseline = base if baseline_given else zero
        gain_text = draw(st.sampled_from([f"{gain:.6g}", f"{gain:.6e}", f"{gain:.6g}".upper()]))
        field = gain_text + (f"({baseline})" if baseline_given else "")
        if unit_name is not None:
            field += f"/{unit_name}"
        name = f"rec_{chan_fmt[c]}_{[g for g, ch in enumerate(groups) if c in ch][0]}.dat"
        g = [g for g, ch in enumerate(groups) if c in ch][0]
        fmt_field = fmt + (f"x{spf[c]}" if spf[c] > 1 or draw(st.integers(0, 4)) == 0 else "") \
            + (f"+{offsets[g]}" if offsets[g] else "")
        bits = {"80": 8, "212": 12, "16": 16, "61": 16, "160": 16, "24": 24, "32": 32}[fmt]
        lines_sig.append(f"{name} {fmt_field} {field} {bits} {zero} {int(d[0])} 0 0 {leads[c]}")
        x = (d.astype(np.float64) - baseline) / gain * unit_mv
        x[d == _INVALID[fmt]] = np.nan
        phys.append(x)

    for g, chans in enumerate(groups):
        frames = []
        for k in range(n_frames):
            for c in chans:
                frames.extend(digital[c][k * spf[c]:(k + 1) * spf[c]])
        data = bytes(rng.integers(0, 256, offsets[g], dtype=np.uint8)) + encode(np.array(frames), fmts[g])
        with open(os.path.join(folder, f"rec_{fmts[g]}_{g}.dat"), "wb") as fh:
            fh.write(data)

    top = max(spf)
    rate = fs * top
    expected = []
    for c in range(n_sig):
        if spf[c] == top:
            expected.append(phys[c])
        else:
            from scipy.signal import resample_poly

            expected.append(resample_poly(phys[c], top // spf[c], 1))
    rec_line = f"rec {n_sig} {_spell_rate(fs, draw)}"
    if draw(st.booleans()):
        rec_line += f"/{fs * 2:g}(0)" if draw(st.booleans()) else ""
    rec_line += f" {n_frames}"
    if draw(st.booleans()):
        rec_line += " 10:11:12 01/02/2003"
    body = [rec_line] + lines_sig
    for _ in range(draw(st.integers(0, 3))):  # comment lines anywhere
        body.insert(draw(st.integers(0, len(body))), f"# Age: {int(rng.integers(1, 99))}  ünïcode")
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    text = eol.join(body) + eol
    enc = draw(st.sampled_from(["utf-8", "utf-8-sig", "latin-1"]))
    try:
        raw = text.encode(enc)
    except UnicodeEncodeError:  # Greek mu has no Latin-1 byte
        raw = text.encode("utf-8")
    hea = os.path.join(folder, "rec.hea")
    with open(hea, "wb") as fh:
        fh.write(raw)
    fast = all(f == "16" for f in fmts) and top == 1
    return Built(hea=hea, expected=np.stack(expected), fs=rate, leads=leads, fast_eligible=fast)


def _read_both(hea: str, fast_eligible: bool):
    """(default path, forced wfdb path) readings; the second only where they differ."""
    first = read_ecg(hea)
    if not fast_eligible:
        return [first]
    wfdb_reader.FAST_FORMAT_16 = False
    try:
        return [first, read_ecg(hea)]
    finally:
        wfdb_reader.FAST_FORMAT_16 = True


@SETTINGS
@given(data=st.data())
def test_both_paths_give_the_known_values(data):
    with tempfile.TemporaryDirectory() as folder:
        built = data.draw(records(folder))
        for ecg in _read_both(built.hea, built.fast_eligible):
            assert ecg.fs == built.fs
            assert ecg.meta["file_leads"] == built.leads
            assert ecg.signal.shape == built.expected.shape
            np.testing.assert_allclose(ecg.signal, built.expected.astype(np.float32),
                                       rtol=2e-6, atol=2e-6 * np.nanmax(np.abs(built.expected)),
                                       equal_nan=True)
        ranged = wfdb_reader.open_wfdb_range(built.hea, ReadOptions())  # bounded-memory reads
        if ranged is not None:
            n = built.expected.shape[1]
            a, b = n // 3, n // 3 + n // 2
            scale = np.array([{"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "nv": 1e-6, "v": 1e3}[u.lower()]
                              for u in ranged.units])[:, None]
            assert ranged.fs == built.fs and ranged.n_samples == n
            np.testing.assert_allclose(ranged.read(a, b) * scale, built.expected[:, a:b], rtol=2e-6,
                                       atol=2e-6 * np.nanmax(np.abs(built.expected)), equal_nan=True)


_CLASS_NAME = re.compile(r"\b\w*(Error|Exception|Traceback)\b")

CORRUPTIONS = ["no rate", "rate 0", "rate 1e9", "extra signal", "missing line", "truncated",
               "unknown unit", "format 999", "huge length", "only record line", "garbage line"]


def _corrupt(hea: str, how: str) -> None:
    raw = open(hea, "rb").read()
    text = raw.decode("utf-8-sig") if raw[:3] == b"\xef\xbb\xbf" else (
        raw.decode("utf-8") if _utf8(raw) else raw.decode("latin-1"))
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    rec = lines[0].split()
    if how == "no rate":
        lines[0] = " ".join(rec[:2])
    elif how == "rate 0":
        lines[0] = " ".join(rec[:2] + ["0"] + rec[3:])
    elif how == "rate 1e9":
        lines[0] = " ".join(rec[:2] + ["1e9"] + rec[3:])
    elif how == "extra signal":
        lines[0] = " ".join([rec[0], str(int(rec[1]) + 1)] + rec[2:])
    elif how == "missing line":
        lines = lines[:-1] if len(lines) > 2 else lines[:1]
    elif how == "truncated":
        name = lines[1].split()[0]
        p = os.path.join(os.path.dirname(hea), name)
        data = open(p, "rb").read()
        open(p, "wb").write(data[: len(data) // 3])
    elif how == "unknown unit":
        parts = lines[1].split()
        parts[2] = parts[2].split("/")[0] + "/furlong"
        lines[1] = " ".join(parts)
    elif how == "format 999":
        parts = lines[1].split()
        parts[1] = "999"
        lines[1] = " ".join(parts)
    elif how == "huge length":
        lines[0] = " ".join(rec[:3] + ["900000000000"])
    elif how == "only record line":
        lines = lines[:1]
    elif how == "garbage line":
        lines[1] = "%%% not a signal line"
    open(hea, "w", encoding="utf-8").write("\n".join(lines) + "\n")


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(data=st.data(), how=st.sampled_from(CORRUPTIONS))
def test_corrupted_headers_give_one_line_domain_errors(data, how):
    with tempfile.TemporaryDirectory() as folder:
        built = data.draw(records(folder))
        _corrupt(built.hea, how)
        for fast in (True, False):
            wfdb_reader.FAST_FORMAT_16 = fast
            try:
                with pytest.raises(EcgTextError) as err:
                    read_ecg(built.hea)
            finally:
                wfdb_reader.FAST_FORMAT_16 = True
            msg = str(err.value)
            assert "\n" not in msg and msg.startswith(built.hea + ": "), msg
            assert not _CLASS_NAME.search(msg), msg
            if how in ("no rate", "rate 0", "rate 1e9"):
                assert isinstance(err.value, SignalError) and err.value.option == "fs", msg
            if how in ("extra signal", "missing line", "only record line"):
                assert re.search(r"header declares \d+ signals? but has \d+ signal lines?", msg), msg
            if how == "unknown unit":
                assert isinstance(err.value, FormatError) and err.value.option == "units", msg
            if how in ("truncated", "huge length"):
                assert "truncated" in msg, msg


def test_missing_rate_uses_the_fs_option():
    # a fixed record, not drawn: PTB-XL's first record without its rate
    from io_helpers import PTBXL

    with tempfile.TemporaryDirectory() as folder:
        lines = (PTBXL / "00001_hr.hea").read_text().splitlines()
        rec = lines[0].split()
        open(os.path.join(folder, "r.hea"), "w").write("\n".join([" ".join(rec[:2])] + lines[1:]) + "\n")
        open(os.path.join(folder, "00001_hr.dat"), "wb").write((PTBXL / "00001_hr.dat").read_bytes())
        with pytest.raises(SignalError, match="does not state a sampling rate") as err:
            read_ecg(os.path.join(folder, "r.hea"))
        assert err.value.option == "fs"
        ecg = read_ecg(os.path.join(folder, "r.hea"), ReadOptions(fs=500))
        assert ecg.fs == 500.0 and ecg.signal.shape == (12, 5000)
