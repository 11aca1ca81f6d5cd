"""DICOM waveform objects: 12-Lead, General and Ambulatory ECG Waveform Storage, via ``pydicom``.

A file holds one or more multiplex groups; ``RHYTHM`` is the recording,
``MEDIAN BEAT`` (representative beats) is not and is never read. Values are
``pydicom``'s ``waveform_array``: raw x Channel Sensitivity x Correction Factor
+ Baseline, in the channel's Sensitivity Units (UCUM ``uV``, ``mV``, ``V``).
Leads are identified by their Channel Source code (SCP-ECG ``5.6.3-9-n`` or
MDC ``2:n``, the same lead numbers), never by the free-text code meaning.
Patient name, ID and birth date stay out of the record unless identifiers
are requested; name and ID are not even read from the file without that.

Speed (23-89 records/s/core before): only the tags below are read
(``specific_tags``: other elements of known length are skipped unparsed;
sequences of undefined length, such as the ~80-item annotation sequence of
real carts, must still be parsed by pydicom to find their end); the channel
definitions' codes and decimal strings are read from their raw bytes
(pydicom's per-element conversion of those ~100 elements was most of the time
left: measured 22-24 % faster on a 12-lead file, 10 % on the Mortara file);
the samples are one ``numpy.frombuffer`` of Waveform Data scaled in one
broadcast, in the order ``waveform_array`` uses (raw x sensitivity x
correction + baseline), so the values are bit-identical to it (tested).
pydicom's global configuration is left alone.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np

from ..errors import FormatError, SignalError
from .clinical import finish_clinical, norm_age, norm_sex
from .record import Ecg, ReadOptions, mv_per_unit

ECG_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.9.1.1": "12-Lead ECG Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.9.1.2": "General ECG Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.9.1.3": "Ambulatory ECG Waveform Storage",
}

# SCP-ECG lead numbers (EN 1064 table 14), shared by DICOM's SCPECG and MDC (2:n) codes.
# Non-standard leads get names lead resolution knows to drop (V3R-V6R, V7-V9, Frank).
SCP_LEADS: dict[int, str] = {
    1: "I", 2: "II", 3: "V1", 4: "V2", 5: "V3", 6: "V4", 7: "V5", 8: "V6", 9: "V7",
    10: "V2R", 11: "V3R", 12: "V4R", 13: "V5R", 14: "V6R", 15: "V7R", 16: "vx", 17: "vy", 18: "vz",
    61: "III", 62: "aVR", 63: "aVL", 64: "aVF", 65: "-aVR", 66: "V8", 67: "V9", 68: "V8R", 69: "V9R",
}
_UCUM_MV = {"uv": 1e-3, "mv": 1.0, "v": 1e3, "nv": 1e-6}
# the top-level elements this reader uses; the rest of the file is skipped
_TAGS = ("SOPClassUID", "WaveformSequence", "AcquisitionDateTime", "ContentDate", "StudyDate",
         "PatientAge", "PatientSex", "PatientBirthDate", "Manufacturer", "ManufacturerModelName")
_IDENTIFIER_TAGS = ("PatientName", "PatientID")  # read only with include_identifiers
# (Waveform Bits Allocated, Waveform Sample Interpretation) -> samples, as pydicom's waveform_array
# reads them; mu-law and A-law (MB, AB) would need expanding and are refused
_DTYPES = {(8, "SB"): "int8", (8, "UB"): "uint8", (16, "SS"): "int16", (16, "US"): "uint16",
           (32, "SL"): "int32", (32, "UL"): "uint32", (64, "SV"): "int64", (64, "UV"): "uint64"}


def _text(item, keyword: str, default: str = "") -> str:
    """An element's value as text, read from its raw bytes where pydicom has not converted it yet.

    The channel definitions hold ~100 short elements per file; pydicom's per-element
    conversion of them was most of the reading time. Used for codes and decimal
    strings only (ASCII, one value), where the raw bytes are the value.
    """
    elem = item.get_item(keyword)
    if elem is None or elem.value is None:
        return default
    value = elem.value
    return value.decode("ascii", "replace").strip(" \0") if isinstance(value, bytes) else str(value).strip()


def _lead_name(channel, index: int) -> str:
    """The lead a channel records, from its Channel Source code (not its free-text meaning)."""
    seq = channel.get("ChannelSourceSequence")
    if not seq:
        return f"channel {index + 1}"
    code = _text(seq[0], "CodeValue")
    scheme = _text(seq[0], "CodingSchemeDesignator").upper()
    number = None
    if scheme == "SCPECG" and code.startswith("5.6.3-9-"):
        number = code.rsplit("-", 1)[-1]
    elif scheme == "MDC" and code.startswith("2:"):
        number = code[2:]
    if number is not None and number.isdigit() and int(number) in SCP_LEADS:
        return SCP_LEADS[int(number)]
    return f"{scheme} {code}".strip()


def _units_mv(path: str, channel, name: str) -> float:
    seq = channel.get("ChannelSensitivityUnitsSequence")
    if "ChannelSensitivity" not in channel or not seq:
        raise FormatError(path, f"DICOM channel {name} states no sensitivity and units, so its values "
                                "cannot be turned into voltages")
    unit = _text(seq[0], "CodeValue")
    scale = _UCUM_MV.get(unit.lower()) or mv_per_unit(unit)
    if scale is None:
        raise FormatError(path, f"DICOM channel {name} is in units {unit!r}, not V, mV or uV")
    return scale


def _da(value) -> str | None:
    s = str(value or "").strip()
    return f"{s[:4]}-{s[4:6]}-{s[6:8]}" if len(s) >= 8 and s[:8].isdigit() else None


def _acquired(ds) -> str | None:
    dt = str(ds.get("AcquisitionDateTime", "") or "").strip()
    if len(dt) >= 8 and dt[:8].isdigit():
        out = _da(dt)
        t = dt[8:14]
        return out + (f"T{t[:2]}:{t[2:4]}:{t[4:6] or '00'}" if len(t) >= 4 and t[:4].isdigit() else "")
    return _da(ds.get("ContentDate")) or _da(ds.get("StudyDate"))


def _samples(path: str, group, n_samples: int, n_channels: int, bits: int) -> np.ndarray:
    """(channels, samples) float64 in each channel's sensitivity units: raw x sensitivity x correction
    + baseline, the operations and order of pydicom's ``waveform_array`` (so the same floats)."""
    interpretation = str(group.get("WaveformSampleInterpretation", "") or "").strip()
    dtype = _DTYPES.get((bits, interpretation))
    if dtype is None:
        raise FormatError(path, f"DICOM RHYTHM group stores {bits}-bit samples as {interpretation or '?'}; "
                                "only linear integer samples (SB, UB, SS, US, SL, UL, SV, UV) are read")
    raw = np.frombuffer(group.WaveformData, dtype=dtype, count=n_samples * n_channels)
    channels = list(group.get("ChannelDefinitionSequence") or [])
    if len(channels) != n_channels:
        raise FormatError(path, f"DICOM RHYTHM group defines {len(channels)} channels but holds "
                                f"{n_channels}")
    sens, corr, base = (np.array([float(_text(ch, key) or default) for ch in channels])[:, None]
                        for key, default in (("ChannelSensitivity", 1.0),
                                             ("ChannelSensitivityCorrectionFactor", 1.0),
                                             ("ChannelBaseline", 0.0)))
    return raw.reshape(n_samples, n_channels).T * sens * corr + base


def read_dicom(path: str, options: ReadOptions) -> Ecg:
    """Read the RHYTHM group of a DICOM ECG waveform file as :class:`Ecg` (mV)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        tags = _TAGS + (_IDENTIFIER_TAGS if options.include_identifiers else ())
        ds = pydicom.dcmread(path, specific_tags=list(tags))
    except InvalidDicomError:
        raise FormatError(path, "not a DICOM file (no 'DICM' marker)") from None
    except (EOFError, OSError, ValueError, KeyError, TypeError, AttributeError):
        raise FormatError(path, "DICOM file is damaged or truncated (its data elements do not parse)") from None
    sop = str(ds.get("SOPClassUID", ""))
    if sop not in ECG_SOP_CLASSES:
        what = getattr(ds.get("SOPClassUID"), "name", None) or sop or "no SOP class"
        raise FormatError(path, f"DICOM object is {what}, not an ECG waveform (12-Lead, General or "
                                "Ambulatory ECG Waveform Storage)")
    groups = list(ds.get("WaveformSequence") or [])
    labels = [str(g.get("MultiplexGroupLabel", "") or "").strip().upper() for g in groups]
    pick = [i for i, lab in enumerate(labels) if lab == "RHYTHM"] or \
           [i for i, lab in enumerate(labels) if "MEDIAN" not in lab and "BEAT" not in lab]
    if not pick:
        found = ", ".join(lab or "unlabelled" for lab in labels) or "none"
        raise FormatError(path, f"DICOM file has no RHYTHM waveform group (found: {found}); median "
                                "beats are not a recording")
    index = pick[0]
    group = groups[index]
    try:
        n_samples, n_channels = int(group.NumberOfWaveformSamples), int(group.NumberOfWaveformChannels)
        bits = int(group.WaveformBitsAllocated)
        have = len(group.WaveformData)
    except (AttributeError, TypeError, ValueError):
        raise FormatError(path, "DICOM RHYTHM group lacks its sample count, channel count, bits "
                                "allocated or waveform data") from None
    n_bytes = n_samples * n_channels * bits // 8
    if have < n_bytes:
        raise SignalError(path, f"DICOM waveform data are truncated: {have} of {n_bytes} bytes")
    try:
        values = _samples(path, group, n_samples, n_channels, bits)
    except (ValueError, TypeError):
        raise FormatError(path, "DICOM RHYTHM group cannot be decoded (inconsistent sample count, "
                                "sensitivity, correction or baseline)") from None
    channels = list(group.get("ChannelDefinitionSequence") or [])
    names = [_lead_name(ch, i) for i, ch in enumerate(channels)]
    scales = np.array([_units_mv(path, ch, n) for ch, n in zip(channels, names)])
    fs = float(group.get("SamplingFrequency") or 0)
    if not fs > 0:
        raise FormatError(path, "DICOM RHYTHM group states no sampling frequency")
    acquired = _acquired(ds)
    age = norm_age(str(ds.get("PatientAge", "") or "") or None)
    birth = _da(ds.get("PatientBirthDate"))
    if age is None and birth and acquired:
        b, a = date.fromisoformat(birth), date.fromisoformat(acquired[:10])
        age = a.year - b.year - ((a.month, a.day) < (b.month, b.day))
    maker = str(ds.get("Manufacturer", "") or "").strip()
    model = str(ds.get("ManufacturerModelName", "") or "").strip()
    meta: dict[str, Any] = {
        "format": f"DICOM {ECG_SOP_CLASSES[sop]}",
        "age": age,
        "sex": norm_sex(str(ds.get("PatientSex", "") or "")),
        "acquired": acquired,
        "device": " ".join(filter(None, (maker, model))) or None,
        "multiplex_group": labels[index] or None,
    }
    ids = {"name": str(ds.get("PatientName", "") or ""), "id": str(ds.get("PatientID", "") or ""),
           "birth_date": birth} if options.include_identifiers else {}
    return finish_clinical(values * scales[:, None], fs, names, path, options, meta, ids)
