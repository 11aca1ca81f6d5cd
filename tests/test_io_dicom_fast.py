"""DICOM reading reads only what it needs, and the samples equal pydicom's ``waveform_array`` bit for bit."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pydicom
import pytest
from clinical_helpers import ptbxl_counts, write_dicom
from conftest import SHARED_DATA

import ecgtext.io.dicom_reader as dicom_reader
from ecgtext.io import ReadOptions, read_ecg

MORTARA = SHARED_DATA / "clinical" / "dicom" / "waveform_ecg.dcm"


def _files(tmp_path):
    files = [write_dicom(tmp_path / "ptbxl.dcm", ptbxl_counts("00001_hr"), 500.0, median_first=True)]
    return files + ([MORTARA] if MORTARA.is_file() else [])


def test_samples_equal_waveform_array(tmp_path):
    for path in _files(tmp_path):
        ds = pydicom.dcmread(path)
        for index, group in enumerate(ds.WaveformSequence):
            got = dicom_reader._samples(str(path), group, int(group.NumberOfWaveformSamples),
                                        int(group.NumberOfWaveformChannels), int(group.WaveformBitsAllocated))
            np.testing.assert_array_equal(got, ds.waveform_array(index).T)


@pytest.mark.parametrize("identifiers", [False, True])
def test_patient_name_and_id_not_even_read_without_opt_in(tmp_path, identifiers):
    path = _files(tmp_path)[0]
    real = pydicom.dcmread
    with mock.patch.object(pydicom, "dcmread", side_effect=real) as spy:
        ecg = read_ecg(path, ReadOptions(include_identifiers=identifiers))
    tags = spy.call_args.kwargs["specific_tags"]
    assert ("PatientName" in tags and "PatientID" in tags) is identifiers
    assert ("patient" in ecg.meta) is identifiers
    assert ecg.meta["age"] == 63 and ecg.meta["sex"] == "F" and ecg.meta["multiplex_group"] == "RHYTHM"
