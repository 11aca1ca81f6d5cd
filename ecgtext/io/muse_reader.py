"""GE MUSE XML (``<RestingECG>``) exports.

A MUSE file holds two ``<Waveform>`` groups: ``Median`` (one representative
beat, ~1.2 s) and ``Rhythm`` (the 10-s recording); only ``Rhythm`` is signal.
Each ``<LeadData>`` carries base64 little-endian int16 samples, the amplitude
per count (``LeadAmplitudeUnitsPerBit``, typically 4.88) in ``LeadAmplitudeUnits``
(``MICROVOLTS``) and a CRC32 of the decoded bytes (0 = not filled in). The rate
is ``SampleBase`` x 10^``SampleExponent``. MUSE stores I, II and V1-V6; III, aVR,
aVL and aVF are derived (:mod:`ecgtext.io.derived`).
"""

from __future__ import annotations

import binascii
import zlib
from datetime import datetime
from typing import Any

import numpy as np

from ..errors import FormatError, SignalError
from .clinical import finish_clinical, norm_age, norm_sex
from .record import Ecg, ReadOptions
from .xml_safe import child, children, local, parse_xml, text

_MV_PER = {"MICROVOLTS": 1e-3, "MICROVOLT": 1e-3, "UV": 1e-3, "MILLIVOLTS": 1.0, "MILLIVOLT": 1.0,
           "MV": 1.0, "NANOVOLTS": 1e-6, "VOLTS": 1e3}


def _number(path: str, value: str | None, what: str) -> float:
    try:
        out = float(value) if value is not None else float("nan")
    except ValueError:
        out = float("nan")
    if not np.isfinite(out):
        raise FormatError(path, f"MUSE {what} is {value!r}, not a number")
    return out


def _maybe_int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _acquired(date: str | None, time: str | None) -> str | None:
    """MUSE ``MM-DD-YYYY`` + ``HH:MM:SS`` -> ISO 8601 (local time, as stored)."""
    if not date:
        return None
    try:
        stamp = datetime.strptime(f"{date} {time or '00:00:00'}", "%m-%d-%Y %H:%M:%S")
    except ValueError:
        return None
    return stamp.isoformat()


def _lead(path: str, ld, index: int) -> tuple[str, np.ndarray]:
    """One ``<LeadData>`` -> (lead id, values in mV as float64)."""
    name = text(ld, "LeadID") or f"lead {index + 1}"
    raw_text = text(ld, "WaveFormData")
    if raw_text is None:
        raise FormatError(path, f"MUSE lead {name} has no WaveFormData")
    try:
        raw = binascii.a2b_base64("".join(raw_text.split()), strict_mode=True)
    except (binascii.Error, ValueError):
        raise FormatError(path, f"MUSE lead {name}: waveform data are not valid base64") from None
    size = int(_number(path, text(ld, "LeadSampleSize") or "2", f"lead {name} sample size"))
    if size != 2:
        raise FormatError(path, f"MUSE lead {name} has {size}-byte samples; only 2-byte samples are defined")
    count = text(ld, "LeadSampleCountTotal")
    if count is not None and len(raw) != 2 * int(_number(path, count, f"lead {name} sample count")):
        raise SignalError(path, f"MUSE lead {name}: {len(raw) // 2} samples decoded but "
                                f"LeadSampleCountTotal says {count} (damaged waveform data)")
    crc = text(ld, "LeadDataCRC32")
    if crc and crc != "0" and zlib.crc32(raw) != int(_number(path, crc, f"lead {name} CRC32")) & 0xFFFFFFFF:
        raise SignalError(path, f"MUSE lead {name}: waveform data fail their CRC32 check (damaged file)")
    units = (text(ld, "LeadAmplitudeUnits") or "MICROVOLTS").upper()
    if units not in _MV_PER:
        raise FormatError(path, f"MUSE lead {name} is in units {units!r}, not MICROVOLTS or MILLIVOLTS")
    per_bit = _number(path, text(ld, "LeadAmplitudeUnitsPerBit"), f"lead {name} amplitude per bit")
    counts = np.frombuffer(raw, dtype="<i2")
    return name, counts * (per_bit * _MV_PER[units])


def read_muse(path: str, options: ReadOptions) -> Ecg:
    """Read a GE MUSE XML file's Rhythm waveform as :class:`Ecg` (mV, 12 leads with derived limb leads)."""
    root = parse_xml(path)
    if local(root.tag) != "RestingECG":
        raise FormatError(path, f"XML root <{local(root.tag)}> is not a GE MUSE <RestingECG>")
    groups = list(children(root, "Waveform"))
    rhythm = [w for w in groups if (text(w, "WaveformType") or "").lower() == "rhythm"]
    if not rhythm:
        kinds = ", ".join(sorted({text(w, "WaveformType") or "?" for w in groups})) or "none"
        raise FormatError(path, f"MUSE file has no Rhythm waveform (found: {kinds}); median beats "
                                "are not a recording")
    wave = rhythm[0]
    fs = _number(path, text(wave, "SampleBase"), "SampleBase") * \
        10.0 ** int(_number(path, text(wave, "SampleExponent") or "0", "SampleExponent"))
    names, values = [], []
    for i, ld in enumerate(children(wave, "LeadData")):
        name, mv = _lead(path, ld, i)
        names.append(name)
        values.append(mv)
    if not values:
        raise FormatError(path, "MUSE Rhythm waveform has no LeadData")
    lengths = {len(v) for v in values}
    if len(lengths) != 1:
        raise SignalError(path, f"MUSE Rhythm leads differ in length ({sorted(lengths)} samples)")
    demo, test = child(root, "PatientDemographics"), child(root, "TestDemographics")
    hp = text(wave, "HighPassFilter")
    meta: dict[str, Any] = {
        "format": f"GE MUSE XML {text(root, 'MuseInfo', 'MuseVersion') or ''}".strip(),
        "age": norm_age(text(demo, "PatientAge"), text(demo, "AgeUnits")),
        "sex": norm_sex(text(demo, "Gender")),
        "acquired": _acquired(text(test, "AcquisitionDate"), text(test, "AcquisitionTime")),
        "device": text(test, "AcquisitionDevice"),
        # MUSE states the high-pass corner in 0.01 Hz (56 = 0.56 Hz)
        "high_pass_hz": int(hp) / 100 if hp and hp.isdigit() else None,
        "low_pass_hz": _maybe_int(text(wave, "LowPassFilter")),
        "mains_hz": _maybe_int(text(wave, "ACFilter")),
    }
    ids = {"name": " ".join(filter(None, (text(demo, "PatientFirstName"), text(demo, "PatientLastName")))),
           "id": text(demo, "PatientID"), "birth_date": text(demo, "DateofBirth")}
    return finish_clinical(np.stack(values), fs, names, path, options, meta, ids)
