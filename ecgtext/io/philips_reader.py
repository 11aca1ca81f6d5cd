"""Philips Sierra ECG / PageWriter XML (``<restingecgdata>``, versions 1.03, 1.04, 1.04.01).

Waveforms are base64, usually XLI-compressed (LZW + second differences), with
III, aVR, aVL and aVF stored as residuals of I and II. The maintained
``sierraecg`` package is the reference decoder; its pure-Python XLI decoding
takes ~0.2 s per file, so XLI waveforms go through our decoder (``ecgtext.io.xli``,
NumPy and zlib, ~2 ms per file, bit-identical, tested against ``sierraecg``) and
everything else (uncompressed data, unknown document types or encodings) through
``sierraecg`` itself, the reason logged at debug level. Counts are multiplied by the resolution in µV
(``parsedwaveforms@resolution``, else ``signalcharacteristics``). Files come in
UTF-8 or UTF-16 with BOM; the XML parser handles both from the raw bytes.

The stored strip is 11 s: 10 s of ECG, padding, and a 1 mV calibration pulse
near the end in every lead. Only the first 10 s are signal; the rest is dropped
(``meta["calibration_excluded_samples"]``).
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
from datetime import date
from typing import Any

import numpy as np

from ..errors import FormatError, SignalError
from .clinical import finish_clinical, norm_age, norm_sex
from .record import Ecg, ReadOptions
from .xli import XliError, decode_xli
from .xml_safe import child, local, parse_xml, text

logger = logging.getLogger(__name__)

SIGNAL_SECONDS = 10.0  # the strip's ECG part; the calibration pulse follows it
VERSIONS = ("1.03", "1.04", "1.04.01", "1.04.02")
DOC_TYPES = ("SierraECG", "PhilipsECG")  # what sierraecg accepts
STANDARD_12 = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def _float(value: str | None) -> float | None:
    try:
        out = float(value) if value is not None else None
    except ValueError:
        return None
    return out if out is not None and math.isfinite(out) else None


def _age(patient, acquired: str | None) -> float | int | None:
    """Age in years: stated (``<age><years>``), else from the birth date at acquisition.

    The birth date itself is an identifier and never kept without opt-in.
    """
    years = text(patient, "age", "years")
    if years is not None:
        return norm_age(years)
    dob = text(patient, "age", "dateofbirth") or text(patient, "dateofbirth")
    if dob and acquired:
        try:
            born, on = date.fromisoformat(dob[:10]), date.fromisoformat(acquired[:10])
        except ValueError:
            return None
        return on.year - born.year - ((on.month, on.day) < (born.month, born.day))
    return None


def _labels(waves, signal_chars) -> list[str]:
    """Lead labels as ``sierraecg`` gives them (``leadlabels``, else from the acquisition type)."""
    labels = waves.get("leadlabels", "")
    if labels:
        return labels.split(" ")[:int(waves.get("numberofleads"))]
    count = int(text(signal_chars, "numberchannelsallocated"))
    standard = text(signal_chars, "acquisitiontype") in ("STD-12", "10-WIRE")
    return [STANDARD_12[i] if standard and i < 12 else f"Channel {i + 1}" for i in range(count)]


def _decode_fast(path: str, doc_type: str, waves, signal_chars) -> tuple[list[np.ndarray], list[str]] | None:
    """Lead counts from our XLI decoder; ``None`` (reason logged) where ``sierraecg`` must decide."""
    compression = waves.get("compressmethod") or waves.get("compression") or "Uncompressed"
    reason = None
    if doc_type not in DOC_TYPES:
        reason = f"document type {doc_type!r}"
    elif waves.get("dataencoding") != "Base64":
        reason = f"data encoding {waves.get('dataencoding')!r}"
    elif compression != "XLI":
        reason = f"compression {compression!r}"
    elif len(waves):
        reason = "parsedwaveforms has child elements"
    labels: list[str] = []
    if reason is None:
        try:
            labels = _labels(waves, signal_chars)
        except (TypeError, ValueError):
            reason = "lead labels or count not stated as sierraecg reads them"
    if reason is not None:
        logger.debug("%s: Philips waveforms with %s are decoded by sierraecg", path, reason)
        return None
    try:
        return decode_xli(base64.b64decode(waves.text or ""), len(labels)), labels
    except binascii.Error:
        raise FormatError(path, "Philips waveform data are not valid base64") from None
    except XliError as err:
        raise FormatError(path, f"Philips waveform data are damaged: the XLI-compressed stream "
                                f"does not decode ({err})") from None


def _decode_sierraecg(path: str) -> tuple[list[np.ndarray], list[str]]:
    """Lead samples (int16 counts) as ``sierraecg`` decodes and reconstructs them (the reference)."""
    import sierraecg

    try:
        parsed = sierraecg.read_file(path)
    except sierraecg.UnsupportedXmlFileError as err:
        raise FormatError(path, f"Philips XML not supported by the decoder: {err}") from None
    except (sierraecg.MissingXmlElementError, sierraecg.MissingXmlAttributeError) as err:
        raise FormatError(path, f"Philips XML lacks the element or attribute {err}") from None
    except (binascii.Error, ValueError, IndexError, OverflowError, KeyError, TypeError):
        # a damaged LZW stream surfaces as overflow or indexing errors deep in the decoder
        raise FormatError(path, "Philips waveform data are damaged: the XLI-compressed stream "
                                "does not decode") from None
    return [np.asarray(lead.samples) for lead in parsed.leads], [lead.label for lead in parsed.leads]


def read_philips(path: str, options: ReadOptions) -> Ecg:
    """Read a Philips Sierra/PageWriter XML file as :class:`Ecg` (mV, first 10 s, 12 leads)."""
    root = parse_xml(path)
    if local(root.tag) != "restingecgdata":
        raise FormatError(path, f"XML root <{local(root.tag)}> is not a Philips <restingecgdata>")
    doc_type = text(root, "documentinfo", "documenttype") or "?"
    version = text(root, "documentinfo", "documentversion") or "?"
    if version not in VERSIONS:
        raise FormatError(path, f"Philips {doc_type} XML version {version} is not supported "
                                f"(supported: {', '.join(VERSIONS)})")
    waves = child(root, "waveforms", "parsedwaveforms")
    if waves is None:
        raise FormatError(path, "Philips XML has no parsedwaveforms (rhythm data); representative "
                                "beats alone are not a recording")
    signal_chars = child(root, "dataacquisition", "signalcharacteristics")
    fs = _float(text(signal_chars, "samplingrate")) or _float(waves.get("samplespersecond"))
    resolution_uv = (_float(waves.get("resolution")) or _float(text(signal_chars, "resolution"))
                     or _float(text(signal_chars, "signalresolution")))
    if not fs or fs <= 0:
        raise FormatError(path, "Philips XML states no sampling rate (signalcharacteristics/samplingrate)")
    if not resolution_uv or resolution_uv <= 0:
        raise FormatError(path, "Philips XML states no amplitude resolution (µV per count)")
    duration_ms = _float(waves.get("durationperchannel"))
    leads, names = _decode_fast(path, doc_type, waves, signal_chars) or _decode_sierraecg(path)
    expected = round(duration_ms * fs / 1000) if duration_ms else None
    lengths = {len(x) for x in leads}
    if not leads or len(lengths) != 1 or (expected is not None and lengths != {expected}):
        found = ", ".join(str(n) for n in sorted(lengths)) or "no"
        raise SignalError(path, f"Philips waveform data are damaged: {found} samples per lead decoded, "
                                f"{expected} expected ({duration_ms:g} ms at {fs:g} Hz)")
    counts = np.stack(leads)
    n_signal = round(SIGNAL_SECONDS * fs)
    excluded = max(0, counts.shape[1] - n_signal)
    mv = counts[:, :n_signal] * (resolution_uv * 1e-3)
    acq = child(root, "dataacquisition")
    acquired = None
    if acq is not None and acq.get("date"):
        acquired = f"{acq.get('date')}T{acq.get('time') or '00:00:00'}"
    patient = child(root, "patient", "generalpatientdata")
    machine = child(acq, "machine")
    meta: dict[str, Any] = {
        "format": f"Philips {doc_type} XML {version}",
        "age": _age(patient, acquired),
        "sex": norm_sex(text(patient, "sex")),
        "acquired": acquired,
        "device": machine.text.strip() if machine is not None and machine.text else None,
        "compression": waves.get("compressmethod") or waves.get("compression") or "none",
        "calibration_excluded_samples": excluded,
    }
    name = child(patient, "name")
    ids = {"name": " ".join(filter(None, (text(name, "firstname"), text(name, "lastname")))),
           "id": text(patient, "patientid"),
           "birth_date": text(patient, "age", "dateofbirth") or text(patient, "dateofbirth")}
    return finish_clinical(mv, fs, names, path, options, meta, ids)
