"""Writers and damagers for the clinical-format tests (DICOM, aECG from real PTB-XL records).

The writers follow the formats' specifications closely enough for independent
readers (``pydicom``'s own ``waveform_array``; the HL7 aECG layout of the FDA
example); they are test fixtures, not a product feature.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PTBXL = REPO / "tests" / "data" / "ptbxl"
STANDARD = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
# SCP-ECG lead numbers (DICOM SCPECG "5.6.3-9-n" / MDC "2:n")
SCP_NUMBER = {"I": 1, "II": 2, "V1": 3, "V2": 4, "V3": 5, "V4": 6, "V5": 7, "V6": 8,
              "III": 61, "aVR": 62, "aVL": 63, "aVF": 64}


def ptbxl_counts(record: str = "00001_hr") -> np.ndarray:
    """A PTB-XL record's stored samples, ``(12, 5000)`` int16 counts of 1 µV (gain 1000/mV, baseline 0)."""
    raw = np.fromfile(PTBXL / f"{record}.dat", dtype="<i2")
    return raw.reshape(-1, 12).T.copy()


def write_dicom(path: Path, counts: np.ndarray, fs: float, leads=STANDARD, *, sensitivity_uv: float = 1.0,
                scheme: str = "SCPECG", median_first: bool = False, patient: bool = True) -> Path:
    """Write 12-Lead ECG Waveform Storage with one RHYTHM group (+ optional MEDIAN BEAT group before it)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    def group(data: np.ndarray, label: str) -> Dataset:
        g = Dataset()
        g.MultiplexGroupTimeOffset = 0.0
        g.WaveformOriginality = "ORIGINAL" if label == "RHYTHM" else "DERIVED"
        g.NumberOfWaveformChannels = data.shape[0]
        g.NumberOfWaveformSamples = data.shape[1]
        g.SamplingFrequency = fs
        g.MultiplexGroupLabel = label
        channels = []
        for name in leads:
            ch = Dataset()
            src = Dataset()
            n = SCP_NUMBER[name]
            src.CodeValue = f"5.6.3-9-{n}" if scheme == "SCPECG" else f"2:{n}"
            src.CodingSchemeDesignator = scheme
            src.CodeMeaning = "free text that must not be used"
            ch.ChannelSourceSequence = Sequence([src])
            ch.ChannelSensitivity = sensitivity_uv
            unit = Dataset()
            unit.CodeValue, unit.CodingSchemeDesignator, unit.CodeMeaning = "uV", "UCUM", "microvolt"
            ch.ChannelSensitivityUnitsSequence = Sequence([unit])
            ch.ChannelSensitivityCorrectionFactor = 1
            ch.ChannelBaseline = 0
            ch.WaveformBitsStored = 16
            channels.append(ch)
        g.ChannelDefinitionSequence = Sequence(channels)
        g.WaveformBitsAllocated = 16
        g.WaveformSampleInterpretation = "SS"
        g.WaveformData = np.ascontiguousarray(data.T.astype("<i2")).tobytes()
        return g

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.9.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "ECG"
    if patient:
        ds.PatientName = "Doe^Jane"
        ds.PatientID = "PID-778899"
        ds.PatientBirthDate = "19600229"
        ds.PatientSex = "F"
    ds.AcquisitionDateTime = "20240102030405"
    ds.Manufacturer = "ecgtext tests"
    groups = [group(counts, "RHYTHM")]
    if median_first:  # one "beat": the first 600 samples, doubled, so taking it would be obvious
        groups.insert(0, group((counts[:, :600] * 2).astype(np.int16), "MEDIAN BEAT"))
    ds.WaveformSequence = Sequence(groups)
    ds.preamble = b"\0" * 128
    try:
        ds.save_as(path, enforce_file_format=True)  # pydicom >= 3
    except TypeError:
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)  # pydicom 2.x
    return path


def write_aecg(path: Path, counts: np.ndarray, fs: float, leads=STANDARD, *, scale_uv: float = 1.0,
               origin_uv: float = 0.0, with_median: bool = True) -> Path:
    """Write a minimal HL7 aECG (RHYTHM series; optional REPRESENTATIVE_BEAT derivedSeries)."""

    def seq_set(data: np.ndarray) -> str:
        parts = [f"""<component><sequence><code code="TIME_ABSOLUTE" codeSystem="2.16.840.1.113883.5.4"/>
<value xsi:type="GLIST_TS"><head value="20240102030405.000"/><increment value="{1 / fs:g}" unit="s"/></value>
</sequence></component>"""]
        for name, row in zip(leads, data):
            digits = "\n".join(" ".join(map(str, row[i:i + 20])) for i in range(0, len(row), 20))
            parts.append(f"""<component><sequence>
<code code="MDC_ECG_LEAD_{name.upper()}" codeSystem="2.16.840.1.113883.6.24" codeSystemName="MDC"/>
<value xsi:type="SLIST_PQ"><origin value="{origin_uv:g}" unit="uV"/><scale value="{scale_uv:g}" unit="uV"/>
<digits>{digits}</digits></value></sequence></component>""")
        return "<sequenceSet>" + "\n".join(parts) + "</sequenceSet>"

    median = ""
    if with_median:
        median = f"""<derivation><derivedSeries>
<code code="REPRESENTATIVE_BEAT" codeSystem="2.16.840.1.113883.5.4"/>
<component>{seq_set(counts[:, :600] * 2)}</component></derivedSeries></derivation>"""
    xml = f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- written by ecgtext's tests from a PTB-XL record -->
<AnnotatedECG xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<id root="2.25.1"/><code code="93000" codeSystem="2.16.840.1.113883.6.12"/>
<effectiveTime><center value="20240102030405"/></effectiveTime>
<componentOf><timepointEvent><componentOf><subjectAssignment><subject><trialSubject>
<id root="2.25.2" extension="SUBJ-4242"/>
<subjectDemographicPerson><name>Roe</name><administrativeGenderCode code="F"/>
<birthTime value="19600229"/></subjectDemographicPerson>
</trialSubject></subject></subjectAssignment></componentOf></timepointEvent></componentOf>
<component><series><code code="RHYTHM" codeSystem="2.16.840.1.113883.5.4"/>
<effectiveTime><low value="20240102030405"/><high value="20240102030415"/></effectiveTime>
<component>{seq_set(counts)}</component>{median}</series></component>
</AnnotatedECG>
"""
    Path(path).write_text(xml, encoding="utf-8")
    return path


def replace_in_first(text: str, tag: str, fn) -> str:
    """Apply ``fn`` to the text content of the first ``<tag>...</tag>`` in ``text``."""
    m = re.search(rf"(<{tag}[^>]*>)(.*?)(</{tag}>)", text, re.DOTALL)
    assert m, tag
    return text[:m.start(2)] + fn(m[2]) + text[m.end(2):]


def damage_xli(text: str) -> str:
    """Flip 400 bytes in the middle of a Philips file's XLI stream (base64 kept valid)."""

    def flip(b64: str) -> str:
        raw = bytearray(base64.b64decode("".join(b64.split())))
        mid = len(raw) // 4
        raw[mid:mid + 400] = bytes(x ^ 0x5A for x in raw[mid:mid + 400])
        return base64.b64encode(bytes(raw)).decode()

    return replace_in_first(text, "parsedwaveforms", flip)
