"""DICOM: the fast path (``ecgtext.io.dicom_fast``) and the pure ``pydicom`` path give the same record.

Files are PTB-XL records written by ``pydicom`` (``clinical_helpers.write_dicom``),
re-encoded or extended here: implicit VR, big endian and deflated (read by
pydicom), undefined-length sequences, a cart-like annotation sequence with
nested sequences and private data before the waveforms, truncated and damaged
copies; and the Mortara ELI 250 file of ``../shared``.
"""

from __future__ import annotations

import random
from pathlib import Path
from unittest import mock

import numpy as np
import pydicom
import pytest
from clinical_helpers import ptbxl_counts, write_dicom
from conftest import SHARED_DATA
from pydicom import uid
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

import ecgtext.io.dicom_reader as dicom_reader
from ecgtext.errors import InputError
from ecgtext.io import ReadOptions, dicom_fast, read_ecg

MORTARA = SHARED_DATA / "clinical" / "dicom" / "waveform_ecg.dcm"


def _code(item: Dataset, keyword: str, value: str, scheme: str, meaning: str, undefined: bool) -> None:
    """``item.<keyword>``: a one-item code sequence, of undefined length (and item) if asked."""
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, scheme, meaning
    code.is_undefined_length_sequence_item = undefined
    setattr(item, keyword, Sequence([code]))
    item[keyword].is_undefined_length = undefined


def _undefined_lengths(ds: Dataset) -> None:
    """Every sequence and item of ``ds`` written with undefined length (delimiters), as many carts do."""
    for elem in ds:
        if elem.VR == "SQ":
            elem.is_undefined_length = True
            for item in elem.value:
                item.is_undefined_length_sequence_item = True
                _undefined_lengths(item)


def _annotate(ds: Dataset, n: int = 80) -> None:
    """A cart-like Waveform Annotation Sequence of undefined length (nested code sequences, texts,
    measurements), private elements and a private sequence: what the reader must skip."""
    items = []
    for i in range(n):
        item = Dataset()
        item.is_undefined_length_sequence_item = True
        if i % 3 == 0:
            item.UnformattedTextValue = f"Sinus rhythm, statement {i}"
        else:
            _code(item, "ConceptNameCodeSequence", f"5.10.3-{i}", "SCPECG", "QRS duration", True)
            item.NumericValue = [f"{90 + i}"]
            _code(item, "MeasurementUnitsCodeSequence", "ms", "UCUM", "millisecond", i % 2 == 0)
        item.ReferencedWaveformChannels = [1, 0]
        item.AnnotationGroupNumber = i % 4
        items.append(item)
    ds.WaveformAnnotationSequence = Sequence(items)
    ds["WaveformAnnotationSequence"].is_undefined_length = True
    block = ds.private_block(0x1455, "ecgtext tests", create=True)
    block.add_new(0x00, "OB", bytes(range(256)) * 8)
    block.add_new(0x01, "LO", "private text")
    inner = Dataset()
    inner.is_undefined_length_sequence_item = True
    inner.add_new(0x14551010, "LO", "nested private")
    _code(inner, "ConceptNameCodeSequence", "X", "99PRIV", "private", True)
    block.add_new(0x02, "SQ", Sequence([inner]))
    ds[block.get_tag(0x02)].is_undefined_length = True


def _write(tmp_path: Path, kind: str) -> Path:
    """A PTB-XL record as DICOM in one of the encodings the tests cover."""
    src = write_dicom(tmp_path / "plain.dcm", ptbxl_counts("00001_hr"), 500.0, median_first=True)
    if kind == "explicit":
        return src
    ds = pydicom.dcmread(src)
    if kind in ("annotated", "implicit annotated", "undefined lengths"):
        _annotate(ds)
    if kind == "undefined lengths":
        _undefined_lengths(ds)
    if kind.endswith("texts"):  # text the character set decides (pydicom decodes it on both paths)
        ds.SpecificCharacterSet = "ISO_IR 100" if kind.startswith("latin") else "ISO_IR 192"
        ds.Manufacturer, ds.ManufacturerModelName = "Müller Medizintechnik", "Ç-250"
        ds.PatientName = "Müller^Jürgen"
    out = tmp_path / f"{kind.replace(' ', '_')}.dcm"
    syntax = {"implicit": uid.ImplicitVRLittleEndian, "implicit annotated": uid.ImplicitVRLittleEndian,
              "big endian": uid.ExplicitVRBigEndian, "deflated": uid.DeflatedExplicitVRLittleEndian
              }.get(kind, uid.ExplicitVRLittleEndian)
    ds.file_meta.TransferSyntaxUID = syntax
    implicit, little = syntax == uid.ImplicitVRLittleEndian, syntax != uid.ExplicitVRBigEndian
    try:
        pydicom.dcmwrite(out, ds, implicit_vr=implicit, little_endian=little, force_encoding=True)
    except TypeError:  # pydicom 2.x
        ds.is_implicit_VR, ds.is_little_endian = implicit, little
        ds.save_as(out, write_like_original=False)
    return out


def _pydicom_only(path, options: ReadOptions):
    """The record as the pure pydicom path reads it (the fast path switched off)."""
    with mock.patch.object(dicom_reader, "_read_scanned", side_effect=dicom_fast.Unsupported("test")):
        return _outcome(path, options)


def _outcome(path, options: ReadOptions):
    try:
        ecg = read_ecg(path, options)
    except Exception as exc:  # noqa: BLE001 - the point is that both paths fail the same way
        return type(exc), str(exc)
    return ecg.signal, ecg.fs, ecg.leads, ecg.meta


def _assert_same(fast, slow):
    assert type(fast) is type(slow)
    if isinstance(fast[0], np.ndarray):
        np.testing.assert_array_equal(fast[0], slow[0])
        assert fast[0].dtype == slow[0].dtype and fast[1:] == slow[1:]
    else:
        assert fast == slow


def _read(path, identifiers: bool = False):
    """read_ecg, noting whether pydicom.dcmread ran (it does only when the fast path gave up)."""
    real = pydicom.dcmread
    with mock.patch.object(pydicom, "dcmread", side_effect=real) as spy:
        got = _outcome(path, ReadOptions(include_identifiers=identifiers))
    return got, spy.called


FAST = ["explicit", "implicit", "annotated", "implicit annotated", "undefined lengths", "latin-1 texts",
        "utf-8 texts"]
FALLBACK = ["big endian", "deflated"]


@pytest.mark.parametrize("kind", FAST + FALLBACK)
@pytest.mark.parametrize("identifiers", [False, True])
def test_fast_and_pydicom_paths_agree(tmp_path, kind, identifiers):
    path = _write(tmp_path, kind)
    got, used_pydicom = _read(path, identifiers)
    assert used_pydicom is (kind in FALLBACK)
    _assert_same(got, _pydicom_only(path, ReadOptions(include_identifiers=identifiers)))
    signal, fs, leads, meta = got
    assert signal.shape == (12, 5000) and fs == 500.0 and meta["multiplex_group"] == "RHYTHM"
    assert ("patient" in meta) is identifiers
    if kind.endswith("texts"):
        assert meta["device"] == "Müller Medizintechnik Ç-250"
        assert not identifiers or meta["patient"]["name"] == "Müller^Jürgen"
    # and the same as the PTB-XL record: 1 µV counts, so mV = counts / 1000 (float32)
    order = [dicom_reader.SCP_LEADS[n] for n in (1, 2, 61, 62, 63, 64, 3, 4, 5, 6, 7, 8)]
    expected = ptbxl_counts("00001_hr") * np.float64(1e-3)
    np.testing.assert_array_equal(signal[[leads.index(n) for n in order]], expected.astype(np.float32))


@pytest.mark.shared
@pytest.mark.parametrize("identifiers", [False, True])
def test_mortara_fast_and_pydicom_paths_agree(identifiers):
    if not MORTARA.is_file():
        pytest.skip(f"{MORTARA} not present")
    got, used_pydicom = _read(MORTARA, identifiers)
    assert not used_pydicom  # its 77-item annotation sequence of undefined length is skipped
    _assert_same(got, _pydicom_only(MORTARA, ReadOptions(include_identifiers=identifiers)))
    assert got[0].shape == (12, 10000) and got[1] == 1000.0 and got[3]["device"] == "Mortara Instrument, Inc. el250"


def test_samples_equal_waveform_array(tmp_path):
    """The values before the unit scale are pydicom's ``waveform_array``, bit for bit, on both paths."""
    files = [_write(tmp_path, "undefined lengths"), _write(tmp_path, "implicit")]
    for path in files + ([MORTARA] if MORTARA.is_file() else []):
        ds = pydicom.dcmread(path)
        scanned, _ = dicom_fast.scan(Path(path).read_bytes(), dicom_reader._schema(False))
        fast_groups = scanned[0x54000100]
        assert len(fast_groups) == len(ds.WaveformSequence) == 2
        for index, group in enumerate(ds.WaveformSequence):
            for item in (dicom_reader._DatasetItem(group), dicom_reader._ScannedItem(fast_groups[index])):
                got = dicom_reader._samples(str(path), item, int(group.NumberOfWaveformSamples),
                                            int(group.NumberOfWaveformChannels),
                                            int(group.WaveformBitsAllocated))
                np.testing.assert_array_equal(got, ds.waveform_array(index).T)


def test_damaged_files_fail_alike_on_both_paths(tmp_path):
    """Truncated anywhere (annotations, channel definitions, samples) or bytes overwritten: the
    fast path gives up and pydicom's path answers, or both give the same record."""
    good = _write(tmp_path, "annotated").read_bytes()
    waveforms = good.index(b"\x00\x54\x00\x01")  # (5400,0100) Waveform Sequence
    rng = random.Random(11)
    cases = [len(good) // 3, waveforms + 40, waveforms + 900, len(good) - 5000, len(good) - 1]
    for i, cut in enumerate(cases):
        p = tmp_path / f"cut_{i}.dcm"
        p.write_bytes(good[:cut])
        got, _ = _read(p)
        _assert_same(got, _pydicom_only(p, ReadOptions()))
        assert got[0] in (dicom_reader.FormatError, dicom_reader.SignalError), got
        assert "\n" not in got[1] and str(p) in got[1]
    for i in range(12):
        data = bytearray(good)
        at = rng.randrange(132, waveforms + 3000)
        data[at:at + 4] = rng.randbytes(4)
        p = tmp_path / f"flip_{i}.dcm"
        p.write_bytes(bytes(data))
        _assert_same(_read(p)[0], _pydicom_only(p, ReadOptions()))


def test_truncated_message_names_the_file(tmp_path):
    data = _write(tmp_path, "undefined lengths").read_bytes()
    p = tmp_path / "truncated.dcm"
    p.write_bytes(data[: len(data) * 3 // 5])
    with pytest.raises(InputError, match="truncated") as err:
        read_ecg(p)
    assert "\n" not in str(err.value) and str(p) in str(err.value)


def test_unsupported_encodings_are_refused_by_the_scanner(tmp_path):
    for kind in FALLBACK:
        with pytest.raises(dicom_fast.Unsupported, match="transfer syntax"):
            dicom_fast.scan(_write(tmp_path, kind).read_bytes(), dicom_reader._schema(False))
    with pytest.raises(dicom_fast.Unsupported, match="DICM"):
        dicom_fast.scan(b"\0" * 400, dicom_reader._schema(False))


@pytest.mark.parametrize("identifiers", [False, True])
def test_patient_name_and_id_not_even_read_without_opt_in(tmp_path, identifiers):
    path = _write(tmp_path, "annotated")
    real_scan = dicom_fast.scan
    with mock.patch.object(dicom_fast, "scan", side_effect=real_scan) as spy:
        ecg = read_ecg(path, ReadOptions(include_identifiers=identifiers))
    top, _ = real_scan(*spy.call_args.args)
    kept = {0x00100010, 0x00100020} & set(top)
    assert bool(kept) is identifiers and ("patient" in ecg.meta) is identifiers
    assert ecg.meta["age"] == 63 and ecg.meta["sex"] == "F" and ecg.meta["multiplex_group"] == "RHYTHM"
    # the pydicom path (other encodings) asks pydicom for them only on request too
    real = pydicom.dcmread
    with mock.patch.object(pydicom, "dcmread", side_effect=real) as spy:
        ecg = read_ecg(_write(tmp_path, "deflated"), ReadOptions(include_identifiers=identifiers))
    tags = spy.call_args.kwargs["specific_tags"]
    assert ("PatientName" in tags and "PatientID" in tags) is identifiers
    assert ("patient" in ecg.meta) is identifiers
