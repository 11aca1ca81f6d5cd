"""Philips XLI: our NumPy decoder against the reference, ``sierraecg``, bit for bit.

``ecgtext.io.xli`` exists for speed only; ``sierraecg`` stays the reference. On
every Philips file we have, both must give the same int16 counts and labels
(hence the same ``Ecg``), and on damaged streams both must fail with one line.
"""

from __future__ import annotations

import base64
import contextlib
import logging
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from clinical_helpers import damage_xli, replace_in_first
from conftest import SHARED_DATA

import ecgtext.io.philips_reader as philips
from ecgtext.errors import FormatError
from ecgtext.io import read_ecg

VENDORED = Path(__file__).resolve().parent / "data" / "clinical" / "philips" / "129DYPRG.XML"
SHARED_PHILIPS = SHARED_DATA / "clinical" / "philips"
SHARED_FILES = ["129DYPRG.XML", "3191723_ZZDEMOPTONLY_1-04_orig.xml", "ad4d3d80-d165_1-04_orig.xml"]


def _shared(name: str) -> Path:
    path = SHARED_PHILIPS / name
    if not path.is_file():
        pytest.skip(f"{SHARED_PHILIPS} not present: reference Philips files are not redistributed here")
    return path


def _by_sierraecg():
    """Force the reference decoder for everything read inside the ``with``."""
    return mock.patch.object(philips, "_decode_fast", lambda *args: None)


def _assert_identical(path: Path) -> None:
    import sierraecg

    ref = sierraecg.read_file(str(path))
    fast = read_ecg(path)
    with _by_sierraecg():
        slow = read_ecg(path)
    assert fast.meta.get("compression") == "XLI"
    # the decoder's own output: int16 counts and labels, lead by lead
    from ecgtext.io.xml_safe import child, parse_xml

    root = parse_xml(str(path))
    got = philips._decode_fast(str(path), philips.text(root, "documentinfo", "documenttype"),
                               child(root, "waveforms", "parsedwaveforms"),
                               child(root, "dataacquisition", "signalcharacteristics"))
    assert got is not None
    leads, labels = got
    assert labels == [lead.label for lead in ref.leads]
    for ours, theirs in zip(leads, ref.leads, strict=True):
        assert ours.dtype == theirs.samples.dtype == np.int16
        np.testing.assert_array_equal(ours, theirs.samples)
    # and the whole record
    assert fast.leads == slow.leads and fast.fs == slow.fs and fast.meta == slow.meta
    np.testing.assert_array_equal(fast.signal, slow.signal)


def test_vendored_file_bit_identical_to_sierraecg():
    _assert_identical(VENDORED)


@pytest.mark.shared
@pytest.mark.parametrize("name", SHARED_FILES)
def test_reference_files_bit_identical_to_sierraecg(name):
    _assert_identical(_shared(name))


def _edited(text: str, change) -> str:
    def edit(b64: str) -> str:
        raw = bytearray(base64.b64decode("".join(b64.split())))
        change(raw)
        return base64.b64encode(bytes(raw)).decode()

    return replace_in_first(text, "parsedwaveforms", edit)


def _flip_early(raw: bytearray) -> None:
    raw[20:60] = bytes(x ^ 0xA5 for x in raw[20:60])


def _first_code(raw: bytearray) -> None:
    raw[8] = 0xFF  # the first code is no longer a literal


def _truncate(raw: bytearray) -> None:
    del raw[len(raw) // 2:]


def _oversize(raw: bytearray) -> None:
    raw[0:4] = (10**6).to_bytes(4, "little")  # lead 1 claims more bytes than the payload holds


DAMAGE = {"flipped middle": None, "flipped start": _flip_early, "first code": _first_code,
          "truncated payload": _truncate, "chunk size": _oversize}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_streams_fail_in_both_decoders(tmp_path, case):
    text = VENDORED.read_text(encoding="utf-8")
    text = damage_xli(text) if DAMAGE[case] is None else _edited(text, DAMAGE[case])
    path = tmp_path / "damaged.xml"
    path.write_text(text, encoding="utf-8")
    for reference in (False, True):
        with _by_sierraecg() if reference else contextlib.nullcontext():
            with pytest.raises(FormatError) as err:
                read_ecg(path)
        msg = str(err.value)
        assert "\n" not in msg and str(path) in msg and "damaged" in msg, (case, reference, msg)
        assert not any(word in msg for word in ("Error", "Exception", "int16", "index out of range"))


def test_unhandled_variant_goes_to_sierraecg_with_reason_logged(tmp_path, caplog):
    text = VENDORED.read_text(encoding="utf-8").replace('compressmethod="XLI"', 'compressmethod="XLI2"', 1)
    assert 'compressmethod="XLI2"' in text
    path = tmp_path / "variant.xml"
    path.write_text(text, encoding="utf-8")
    with caplog.at_level(logging.DEBUG, logger="ecgtext.io.philips_reader"):
        with pytest.raises(FormatError, match="not supported by the decoder"):
            read_ecg(path)
    assert any("compression 'XLI2'" in r.getMessage() and "sierraecg" in r.getMessage()
               for r in caplog.records if r.levelno == logging.DEBUG)
