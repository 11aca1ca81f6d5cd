"""HL7 v3 annotated ECG (aECG, ``<AnnotatedECG xmlns="urn:hl7-org:v3">``), the FDA trial format.

The recording is the ``series`` coded ``RHYTHM`` (``component/series``); its
``sequenceSet`` holds one time sequence (``TIME_ABSOLUTE``/``TIME_RELATIVE``,
``head`` + ``increment``: the rate is 1 / increment) and one ``SLIST_PQ``
sequence per lead, coded ``MDC_ECG_LEAD_*``, whose values are
``digits`` x ``scale`` + ``origin`` in the stated units. Representative beats
(``series/derivation/derivedSeries``, ``REPRESENTATIVE_BEAT``) are not the
recording and are never read. Subject name, id and birth time stay out of the
record unless identifiers are requested.
"""

from __future__ import annotations

import math
import re
import warnings
from datetime import date
from typing import Any

import numpy as np

from ..errors import FormatError, SignalError
from .clinical import finish_clinical, norm_age, norm_sex
from .leads import canonical_lead
from .record import Ecg, ReadOptions, mv_per_unit
from .xml_safe import child, children, local, namespace, parse_xml, text

HL7_NS = "urn:hl7-org:v3"
_SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "min": 60.0}
_LEAD_PREFIX = "MDC_ECG_LEAD_"


def _code(elem) -> str:
    c = child(elem, "code")
    return (c.get("code") or "").strip() if c is not None else ""


def _attr(elem, name: str) -> str | None:
    # an Element without children is falsy: always compare with None
    return elem.get(name) if elem is not None else None


def _ts(value: str | None) -> str | None:
    """HL7 TS ``20021122091000.000`` -> ``2002-11-22T09:10:00``."""
    m = re.fullmatch(r"(\d{4})(\d{2})(\d{2})(?:(\d{2})(\d{2})(\d{2})?)?.*", value or "")
    if not m:
        return None
    y, mo, d, h, mi, s = m.groups()
    out = f"{y}-{mo}-{d}"
    return out + f"T{h}:{mi}:{s or '00'}" if h else out


def _quantity(path: str, elem, what: str) -> tuple[float, str]:
    if elem is None:
        raise FormatError(path, f"aECG {what} is missing")
    try:
        value = float(elem.get("value", "nan"))
    except ValueError:
        value = float("nan")
    if not math.isfinite(value):
        raise FormatError(path, f"aECG {what} is {elem.get('value')!r}, not a number")
    return value, (elem.get("unit") or "").strip()


def _digits(path: str, raw: str | None, lead: str) -> np.ndarray:
    if not raw or not raw.strip():
        raise SignalError(path, f"aECG lead {lead} has no digits")
    # digits are integers by the standard; parsing them as such is 6x faster than as floats
    for dtype in (np.int64, np.float64):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy warns (not raises) when text stops parsing
            try:
                return np.fromstring(raw, dtype=dtype, sep=" ")
            except (DeprecationWarning, ValueError):
                continue
    raise FormatError(path, f"aECG lead {lead}: digits are not a list of numbers")


def _rate(path: str, seq_set) -> float:
    for comp in children(seq_set, "component"):
        seq = child(comp, "sequence")
        if seq is not None and _code(seq).startswith("TIME_"):
            inc, unit = _quantity(path, child(seq, "value", "increment"), "time increment")
            scale = _SECONDS.get(unit or "s")
            if scale is None or inc <= 0:
                raise FormatError(path, f"aECG time increment {inc:g} {unit} is not a positive time")
            return 1.0 / (inc * scale)
    raise FormatError(path, "aECG rhythm sequenceSet has no TIME sequence (cannot tell the sampling rate)")


def read_aecg(path: str, options: ReadOptions) -> Ecg:
    """Read an HL7 aECG file's rhythm series as :class:`Ecg` (mV)."""
    root = parse_xml(path)
    if local(root.tag) != "AnnotatedECG" or namespace(root.tag) != HL7_NS:
        raise FormatError(path, f"XML root <{local(root.tag)}> is not an HL7 aECG <AnnotatedECG> "
                                f"in namespace {HL7_NS}")
    series = [s for comp in children(root, "component") for s in children(comp, "series")]
    rhythm = [s for s in series if _code(s) == "RHYTHM"]
    if not rhythm:
        found = ", ".join(sorted({_code(s) or "?" for s in series})) or "none"
        raise FormatError(path, f"aECG has no RHYTHM series (found: {found}); representative beats "
                                "are not a recording")
    seq_set = child(rhythm[0], "component", "sequenceSet")
    if seq_set is None:
        raise FormatError(path, "aECG RHYTHM series has no sequenceSet")
    fs = _rate(path, seq_set)
    names, values = [], []
    for comp in children(seq_set, "component"):
        seq = child(comp, "sequence")
        code = _code(seq) if seq is not None else ""
        if not code.startswith(_LEAD_PREFIX):
            continue
        short = code[len(_LEAD_PREFIX):]
        lead = canonical_lead(short) or code
        val = child(seq, "value")
        scale, s_unit = _quantity(path, child(val, "scale"), f"lead {short} scale")
        origin_elem = child(val, "origin")
        origin, o_unit = _quantity(path, origin_elem, f"lead {short} origin") if origin_elem is not None \
            else (0.0, s_unit)
        s_mv, o_mv = mv_per_unit(s_unit or "uV"), mv_per_unit(o_unit or s_unit or "uV")
        if s_mv is None or o_mv is None:
            raise FormatError(path, f"aECG lead {short} is in units {s_unit or o_unit!r}, not V, mV or uV")
        digits = _digits(path, text(val, "digits"), short)
        names.append(lead)
        values.append(digits * (scale * s_mv) + origin * o_mv)
    if not values:
        raise FormatError(path, "aECG rhythm sequenceSet has no MDC_ECG_LEAD_* sequences")
    lengths = {len(v) for v in values}
    if len(lengths) != 1:
        raise SignalError(path, f"aECG leads differ in length ({sorted(lengths)} samples)")
    person = None
    subject = None
    for elem in root.iter("{*}trialSubject"):
        subject = elem
        person = child(elem, "subjectDemographicPerson")
        break
    age = None
    for elem in root.iter("{*}controlVariable"):
        obs = child(elem, "relatedObservation")
        obs = obs if obs is not None else elem
        if _code(obs) == "21612-7":  # LOINC: reported age
            val = child(obs, "value")
            if val is not None:
                age = norm_age(val.get("value"), {"a": "years", "mo": "months"}.get(val.get("unit", "a"), "years"))
            break
    acquired = _ts(_attr(child(rhythm[0], "effectiveTime", "low"), "value")) \
        or _ts(_attr(child(root, "effectiveTime", "center"), "value"))
    birth = _attr(child(person, "birthTime"), "value")
    if age is None and birth and acquired:
        try:
            born, on = date.fromisoformat(_ts(birth)[:10]), date.fromisoformat(acquired[:10])
            age = on.year - born.year - ((on.month, on.day) < (born.month, born.day))
        except (TypeError, ValueError):
            age = None
    device = child(rhythm[0], "author", "seriesAuthor", "manufacturedSeriesDevice")
    maker = text(rhythm[0], "author", "seriesAuthor", "manufacturerOrganization", "name")
    model = text(device, "manufacturerModelName")
    meta: dict[str, Any] = {
        "format": "HL7 aECG",
        "age": age,
        "sex": norm_sex(_attr(child(person, "administrativeGenderCode"), "code")),
        "acquired": acquired,
        "device": " ".join(filter(None, (maker, model))) or None,
    }
    ids = {"name": text(person, "name"), "id": _attr(child(subject, "id"), "extension"),
           "birth_date": _ts(birth) if birth else None}
    return finish_clinical(np.stack(values), fs, names, path, options, meta, ids)
