"""XLI decoding: the array/zlib paths of ``ecgtext.io.xli`` against the sequential algorithm they replace.

``decode_xli`` decodes all leads at once (LZW turned into a DEFLATE stream for
zlib, second differences of all leads in one int32 pass). Here random streams,
valid and damaged, go through it and through the previous lead-by-lead decoder
(kept below as the reference, constants written out): same int16 counts, or the same error
message. Valid streams are also checked against ``sierraecg``'s own LZW decoder.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecgtext.io import xli
from ecgtext.io.xli import XliError

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---- the reference: the previous ecgtext.io.xli, lead by lead (sierraecg's algorithm, stricter) ----

def _ref_codes(chunk: bytes) -> list[int]:
    n = len(chunk) * 8 // 10
    b = np.frombuffer(chunk + b"\0" * (-len(chunk) % 5), dtype=np.uint8).reshape(-1, 5).astype(np.uint16)
    codes = np.empty((b.shape[0], 4), dtype=np.uint16)
    codes[:, 0] = (b[:, 0] << 2) | (b[:, 1] >> 6)
    codes[:, 1] = ((b[:, 1] & 0x3F) << 4) | (b[:, 2] >> 4)
    codes[:, 2] = ((b[:, 2] & 0x0F) << 6) | (b[:, 3] >> 2)
    codes[:, 3] = ((b[:, 3] & 0x03) << 8) | b[:, 4]
    codes = codes.reshape(-1)[:n]
    end = np.flatnonzero(codes > 1022)
    return codes[: end[0] if end.size else n].tolist()


def _ref_lzw(codes: list[int]) -> bytes:
    if not codes:
        return b""
    if codes[0] >= 256:
        raise XliError(f"LZW stream starts with code {codes[0]}, not a literal")
    table: list[bytes | None] = [bytes((i,)) for i in range(256)] + [None] * 767
    prev = table[codes[0]]
    for entry, code in enumerate(codes[1:768], 256):
        string = table[code]
        if string is None:
            if code != entry:
                raise XliError(f"LZW code {code} at position {entry - 256 + 1} is not defined yet")
            string = prev + prev[:1]
        table[entry] = prev + string[:1]
        prev = string
    return b"".join(map(table.__getitem__, codes))  # type: ignore[arg-type]


def _ref_undo(raw: bytes, start: int) -> np.ndarray:
    data = np.frombuffer(raw + b"\0" * (len(raw) % 2), dtype=np.uint8)
    half = data.size // 2
    if half < 2:
        raise XliError(f"a lead decodes to {half} value(s); at least 2 needed")
    d = ((data[:half].astype(np.uint16) << 8) | data[half:]).view(np.int16).astype(np.int64)
    r = np.empty(half - 2, dtype=np.int64)
    r[:1] = start
    r[1:] = d[2:half - 1] - 64
    diff = (d[1] - d[0]) - np.cumsum(r)
    x = np.empty(half, dtype=np.int64)
    x[:2] = d[:2]
    x[2:] = d[1] + np.cumsum(diff)
    if x.size and (x.min() < -32768 or x.max() > 32767):
        raise XliError("a lead's second differences leave the 16-bit sample range")
    return x.astype(np.int16)


def _ref_decode(payload: bytes, n_leads: int) -> list[np.ndarray]:
    chunks = []
    at = 0
    while at < len(payload):
        if len(payload) - at < 8:
            raise XliError(f"{len(payload) - at} stray byte(s) after lead {len(chunks)}")
        size = int.from_bytes(payload[at:at + 4], "little", signed=True)
        start = int.from_bytes(payload[at + 6:at + 8], "little", signed=True)
        at += 8
        if size < 0 or at + size > len(payload):
            raise XliError(f"lead {len(chunks) + 1} declares {size} compressed bytes, {len(payload) - at} present")
        chunks.append((start, at, size))
        at += size
    if len(chunks) < n_leads:
        raise XliError(f"{len(chunks)} leads stored, {n_leads} labelled")
    leads = [_ref_undo(_ref_lzw(_ref_codes(payload[at:at + size])), start) for start, at, size in chunks[:n_leads]]
    xli.rebuild_limb_leads(leads)
    return leads


# ---- building streams ----

def _encode(data: bytes) -> list[int]:
    """Plain LZW (256 literals, entries 256-1022, then frozen): what an XLI writer produces."""
    table = {bytes((i,)): i for i in range(256)}
    codes, w = [], b""
    for byte in data:
        wc = w + bytes((byte,))
        if wc in table:
            w = wc
            continue
        codes.append(table[w])
        if len(table) <= 1022:
            table[wc] = len(table)
        w = bytes((byte,))
    if w:
        codes.append(table[w])
    return codes


def _pack(codes: list[int], end: bool) -> bytes:
    """10-bit codes, most significant bit first, optionally the end code 1023, zero-padded to bytes."""
    bits = "".join(f"{c:010b}" for c in [*codes, *([1023] if end else [])])
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big") if bits else b""


def _payload(streams: list[bytes], starts: list[int]) -> bytes:
    return b"".join(len(s).to_bytes(4, "little") + b"\0\0" + start.to_bytes(2, "little", signed=True) + s
                    for s, start in zip(streams, starts))


def _lead_bytes(samples: np.ndarray) -> tuple[bytes, int]:
    """The bytes (high half, low half) and start value that XLI stores for int16 ``samples``."""
    x = samples.astype(np.int64)
    r = 2 * x[1:-1] - x[:-2] - x[2:]  # r[i] for i = 2.., as x[i] = 2 x[i-1] - x[i-2] - r[i]
    d = np.zeros(x.size, dtype=np.int64)
    d[:2] = x[:2]
    d[2:-1] = r[1:] + 64
    d16 = d.astype(np.int16).view(np.uint16)
    return bytes((d16 >> 8).astype(np.uint8)) + bytes((d16 & 0xFF).astype(np.uint8)), int(r[0]) if r.size else 0


def _codes_from(choices: list[tuple[int, int]], damaged: bool) -> list[int]:
    """A code stream from hypothesis' draws: literals from a small alphabet, earlier entries, KwKwK."""
    codes = []
    for j, (kind, value) in enumerate(choices):
        top = min(255 + j, 1022)  # the highest code defined at position j
        if kind == 0 or j == 0:
            codes.append(value % 4)
        elif kind == 1:
            codes.append(256 + value % (top - 255))
        elif kind == 2:
            codes.append(top)  # before the dictionary is full: the entry this very code makes
        else:
            codes.append(top + 1 + value % 3 if damaged and top < 1022 else value % 256)
    return codes


def _outcome(fn, *args):
    try:
        return "ok", fn(*args)
    except XliError as err:
        return "error", str(err)


def _assert_same(got, want) -> None:
    assert got[0] == want[0], (got, want)
    if got[0] == "error":
        assert got[1] == want[1]
    else:
        assert len(got[1]) == len(want[1])
        for a, b in zip(got[1], want[1]):
            assert a.dtype == b.dtype == np.int16
            np.testing.assert_array_equal(a, b)


def _expand(streams: list[list[int]]) -> tuple[bytes, list[int]] | str:
    codes = np.array([c for s in streams for c in s], dtype=np.int16)
    counts = [len(s) for s in streams]
    prefix, damaged = xli.lzw_prefixes(codes, counts)
    if damaged is not None:
        return f"damaged at {damaged}"
    return xli.lzw_expand(codes, counts, prefix)


# ---- properties ----

_CHOICES = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2**16)), max_size=1300)


@SETTINGS
@given(st.lists(_CHOICES, min_size=1, max_size=4))
def test_valid_code_streams_expand_as_the_sequential_decoder(draws):
    streams = [_codes_from(d, damaged=False) for d in draws]
    raw, lengths = _expand(streams)
    want = [_ref_lzw(s) for s in streams]
    assert raw == b"".join(want) and lengths == [len(w) for w in want]


@SETTINGS
@given(_CHOICES)
def test_valid_code_streams_match_sierraecg(draw):
    from sierraecg.lzw import LzwDecoder

    codes = _codes_from(draw, damaged=False)
    decoder = LzwDecoder(_pack(codes, end=True), bits=10)
    out = bytearray()
    while (b := decoder.read()) != -1:
        out.append(b)
    assert _expand([codes])[0] == bytes(out)


@SETTINGS
@given(st.lists(_CHOICES, min_size=1, max_size=3), st.data())
def test_damaged_code_streams_found_where_the_sequential_decoder_fails(draws, data):
    streams = [_codes_from(d, damaged=True) for d in draws]
    got = _expand(streams)
    first_bad, at = None, 0
    for s in streams:
        try:
            _ref_lzw(s)
        except XliError:
            bad = next(j for j, c in enumerate(s) if c > 255 + j)
            first_bad = at + bad
            break
        at += len(s)
    if first_bad is None:
        assert not isinstance(got, str)
    else:
        assert got == f"damaged at {first_bad}"


@SETTINGS
@given(st.integers(6, 12), st.integers(2, 700), st.integers(0, 2**32 - 1), st.integers(1, 3000), st.booleans())
def test_whole_payloads_decode_as_before(n_leads, n_samples, seed, spread, ragged):
    """Smooth int16 leads written as XLI: of one length (the usual case, all leads in one pass) or not."""
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.integers(-spread, spread + 1, size=(n_leads, n_samples)), axis=1) // 8
    x = np.clip(x, -32768, 32767).astype(np.int16)
    streams, starts = [], []
    for i, lead in enumerate(x):
        if ragged and i >= 6:  # the precordial leads may differ from the limb leads
            lead = lead[:max(2, n_samples - i)]
        raw, start = _lead_bytes(lead)
        if not -32768 <= start <= 32767:
            start = 0
        streams.append(_pack(_encode(raw), end=bool(seed % 2)))
        starts.append(start)
    payload = _payload(streams, starts)
    _assert_same(_outcome(xli.decode_xli, payload, n_leads), _outcome(_ref_decode, payload, n_leads))


@SETTINGS
@given(st.lists(st.binary(max_size=400), min_size=6, max_size=9), st.lists(st.integers(-32768, 32767), min_size=9,
                                                                           max_size=9))
def test_random_bytes_decode_or_fail_as_before(raws, starts):
    """Any bytes as LZW output: out-of-range samples, odd and unequal lengths, too short leads."""
    payload = _payload([_pack(_encode(r), end=False) for r in raws], starts[:len(raws)])
    _assert_same(_outcome(xli.decode_xli, payload, 6), _outcome(_ref_decode, payload, 6))


@SETTINGS
@given(st.lists(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2**16)), max_size=300), min_size=6, max_size=8),
       st.booleans())
def test_damaged_payloads_fail_as_before(draws, end):
    """Random code streams, some not decodable: the same first error as lead by lead, or the same counts."""
    payload = _payload([_pack(_codes_from(d, damaged=True), end) for d in draws], [0] * len(draws))
    _assert_same(_outcome(xli.decode_xli, payload, 6), _outcome(_ref_decode, payload, 6))


@SETTINGS
@given(st.integers(2, 300), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_rows_pass_equals_lead_by_lead(half, n_leads, seed):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 2, size=(n_leads, half)).astype(np.uint8)  # high bytes 0/1: mostly in range
    data = np.concatenate([small, rng.integers(0, 256, size=(n_leads, half), dtype=np.uint8)], axis=1)
    starts = rng.integers(-200, 200, size=n_leads).tolist()
    got = _outcome(xli.undo_differences_rows, data, starts)
    want = _outcome(lambda: np.stack([_ref_undo(bytes(row), s) for row, s in zip(data, starts)]))
    assert got[0] == want[0]
    if got[0] == "ok":
        np.testing.assert_array_equal(got[1], want[1])
    else:
        assert got[1] == want[1]


@pytest.mark.parametrize("case", ["long string", "long lead"])
def test_beyond_deflate_limits_falls_back_to_the_sequential_decoder(case):
    run = [0] + list(range(256, 256 + 300))  # KwKwK chain: strings of 1, 2, ..., 301 bytes of zeros
    if case == "long lead":
        run = [5] + list(range(256, 256 + 200)) + [455] * 300  # ~60 kB: copies over 32 KiB back
    raw, lengths = _expand([[1, 2], run])
    assert raw == _ref_lzw([1, 2]) + _ref_lzw(run) and lengths == [2, len(_ref_lzw(run))]
    assert max(lengths) > 258


def test_damage_messages_come_from_the_first_damaged_lead_in_order():
    good = _pack(_encode(_lead_bytes(np.arange(60, dtype=np.int16) % 7)[0]), end=True)
    bad = _pack([7, 300], end=True)  # code 300 at position 1: not defined yet
    short = _pack([1, 2], end=True)  # 2 bytes: 1 value, too short; it comes before the damaged lead
    assert _outcome(xli.decode_xli, _payload([good] * 6 + [bad], [0] * 7), 7) == (
        "error", "LZW code 300 at position 1 is not defined yet")
    payload = _payload([good, short, bad, good, good, good], [0] * 6)
    assert _outcome(xli.decode_xli, payload, 6) == _outcome(_ref_decode, payload, 6) == (
        "error", "a lead decodes to 1 value(s); at least 2 needed")
    payload = _payload([_pack([300], end=False)] + [good] * 5, [0] * 6)
    assert _outcome(xli.decode_xli, payload, 6) == ("error", "LZW stream starts with code 300, not a literal")


def test_empty_streams_anywhere():
    assert _expand([[], [1, 2, 256], [], [3]]) == (b"\x01\x02\x01\x02\x03", [0, 4, 0, 1])
    assert _expand([[], []]) == (b"", [0, 0])
