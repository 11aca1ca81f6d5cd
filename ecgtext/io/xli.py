"""Philips XLI waveform decoding in NumPy: the fast path beside ``sierraecg``.

Why this exists: ``sierraecg`` (the maintained reference, still used for
anything this module does not handle) decodes XLI one byte per Python call,
~0.3 s per 12-lead file — 3.6 records/s/core where a GPU needs hundreds.
This decoder is ~35× faster (measured, same run, the three reference Philips
files: 5.9 ms per 12-lead file against 213 ms for ``sierraecg.xli.xli_decode``
of the same payload; 27× per lead, and it skips the unlabelled extra chunks)
and gives bit-identical counts, which the tests check on every Philips file we
have, damaged streams included.

The format, as ``sierraecg`` 0.4.0 (``xli.py``, ``lzw.py``, ``lib.py``) decodes it:

* the payload is a run of chunks, one per lead: an 8-byte header (int32 LE
  compressed size, 2 bytes unused, int16 LE start value), then the LZW stream;
* LZW with 10-bit codes, most significant bit first, 256 literal codes, the
  dictionary growing from 256 to 1022 and then frozen (no reset), code 1023 or
  the end of the bits ends the stream;
* the bytes are split in two halves, high bytes then low bytes, of int16
  second-difference residuals: x[i] = 2 x[i-1] - x[i-2] - r[i], where
  r[2] = the chunk's start value and r[i] = d[i-1] - 64 after it, the first two
  values stored as they are;
* III, aVR, aVL and aVF are stored as residuals of I and II and rebuilt in
  int16 arithmetic (wrapping, floor halves), in this order.

Decoding stays a Python loop only to build the dictionary (at most 767 codes
per lead, each one look-up and one concatenation); entries never change once
made, so the output is then one look-up per code joined at C speed, and the
bit unpacking, the second differences and the limb leads are array operations.

Where the two differ, it is on damaged data, and this decoder is the stricter:
an LZW code not defined yet, a chunk size beyond the payload or stray bytes
after the last chunk are errors here, where ``sierraecg`` goes on with a
guessed string or a short chunk (and loops forever on a negative size). Damage
confined to the unlabelled extra chunks, which are not decoded, goes unnoticed.
"""

from __future__ import annotations

import numpy as np

CODE_BITS = 10
MAX_CODE = (1 << CODE_BITS) - 2  # 1022: the last dictionary code; 1023 ends the stream
FIRST_ENTRY = 256
HEADER_BYTES = 8


class XliError(ValueError):
    """A damaged XLI stream; the message says what is wrong (no file name: the reader adds it)."""


def _codes(chunk: bytes) -> list[int]:
    """The 10-bit codes of one LZW stream (MSB first), up to the end code 1023 or the last whole code."""
    n = len(chunk) * 8 // CODE_BITS
    # 5 bytes hold exactly 4 codes: unpack them column by column
    b = np.frombuffer(chunk + b"\0" * (-len(chunk) % 5), dtype=np.uint8).reshape(-1, 5).astype(np.uint16)
    codes = np.empty((b.shape[0], 4), dtype=np.uint16)
    codes[:, 0] = (b[:, 0] << 2) | (b[:, 1] >> 6)
    codes[:, 1] = ((b[:, 1] & 0x3F) << 4) | (b[:, 2] >> 4)
    codes[:, 2] = ((b[:, 2] & 0x0F) << 6) | (b[:, 3] >> 2)
    codes[:, 3] = ((b[:, 3] & 0x03) << 8) | b[:, 4]
    codes = codes.reshape(-1)[:n]
    end = np.flatnonzero(codes > MAX_CODE)
    return codes[: end[0] if end.size else n].tolist()


_LITERALS: list[bytes | None] = [bytes((i,)) for i in range(FIRST_ENTRY)]
_TABLE_FULL = MAX_CODE - FIRST_ENTRY + 2  # codes read until the dictionary is frozen (768)


def lzw_decode(codes: list[int]) -> bytes:
    """The bytes an XLI LZW stream (its codes, from :func:`_codes`) decodes to."""
    if not codes:
        return b""
    if codes[0] >= FIRST_ENTRY:
        raise XliError(f"LZW stream starts with code {codes[0]}, not a literal")
    table = _LITERALS + [None] * (MAX_CODE + 1 - FIRST_ENTRY)
    prev = table[codes[0]]
    # the one sequential part: code j (j >= 1) defines entry 255 + j, until the dictionary is full;
    # entries never change afterwards, so the output is one look-up per code, joined at C speed
    for entry, code in enumerate(codes[1:_TABLE_FULL], FIRST_ENTRY):
        string = table[code]
        if string is None:
            if code != entry:
                raise XliError(f"LZW code {code} at position {entry - FIRST_ENTRY + 1} is not defined yet")
            string = prev + prev[:1]  # the entry this very code defines (KwKwK)
        table[entry] = prev + string[:1]
        prev = string
    return b"".join(map(table.__getitem__, codes))  # type: ignore[arg-type]


def undo_differences(raw: bytes, start: int) -> np.ndarray:
    """int16 samples from the decoded bytes of one lead (high-byte half, low-byte half; second differences)."""
    data = np.frombuffer(raw + b"\0" * (len(raw) % 2), dtype=np.uint8)
    half = data.size // 2
    if half < 2:
        raise XliError(f"a lead decodes to {half} value(s); at least 2 needed")
    d = ((data[:half].astype(np.uint16) << 8) | data[half:]).view(np.int16).astype(np.int64)
    # x[i] - x[i-1] = (x[i-1] - x[i-2]) - r[i]: first differences are a cumulative sum of -r
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


def decode_xli(payload: bytes, n_leads: int) -> list[np.ndarray]:
    """The first ``n_leads`` leads (int16 counts, limb leads rebuilt) of an XLI payload.

    Every chunk header is checked; only the leads asked for are decoded (files
    often carry more chunks than labelled leads, which ``sierraecg`` decodes and
    drops). Raises :class:`XliError` for a damaged stream.
    """
    chunks: list[tuple[int, int, int]] = []  # (start value, offset, size)
    at = 0
    while at < len(payload):
        if len(payload) - at < HEADER_BYTES:
            raise XliError(f"{len(payload) - at} stray byte(s) after lead {len(chunks)}")
        size = int.from_bytes(payload[at:at + 4], "little", signed=True)
        start = int.from_bytes(payload[at + 6:at + 8], "little", signed=True)
        at += HEADER_BYTES
        if size < 0 or at + size > len(payload):
            raise XliError(f"lead {len(chunks) + 1} declares {size} compressed bytes, "
                           f"{len(payload) - at} present")
        chunks.append((start, at, size))
        at += size
    if len(chunks) < n_leads:
        raise XliError(f"{len(chunks)} leads stored, {n_leads} labelled")
    leads = [undo_differences(lzw_decode(_codes(payload[at:at + size])), start)
             for start, at, size in chunks[:n_leads]]
    rebuild_limb_leads(leads)
    return leads


def rebuild_limb_leads(leads: list[np.ndarray]) -> None:
    """III, aVR, aVL, aVF (positions 2-5) from their stored residuals, in place, as sierraecg does."""
    if len(leads) < 6:
        raise XliError(f"{len(leads)} leads decoded; the limb leads need at least 6")
    i, ii, iii, avr, avl, avf = leads[:6]
    if len({x.size for x in leads[:6]}) != 1:
        raise XliError("the limb leads decode to different lengths")
    with np.errstate(over="ignore"):
        iii[:] = ii - i - iii
        avr[:] = -avr - ((i + ii) >> 1)
        avl[:] = ((i - iii) >> 1) - avl
        avf[:] = ((ii + iii) >> 1) - avf
