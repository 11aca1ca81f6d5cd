"""What the clinical-format readers (MUSE, Philips, aECG, DICOM) share: finishing a record
and keeping patient identifiers out of it.

Privacy rule: names, patient IDs and birth dates found in a file never reach
``Ecg.meta`` (hence outputs, logs, error messages) unless the caller opts in with
``ReadOptions.include_identifiers``; then they are under ``meta["patient"]``.
Age, sex, acquisition time and device always may (``meta["age"]``, ``["sex"]``,
``["acquired"]``, ``["device"]``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from .derived import derive_limb_leads
from .record import Ecg, ReadOptions, make_ecg

_SEX = {"m": "M", "male": "M", "f": "F", "female": "F"}


def norm_sex(value: str | None) -> str | None:
    """``"MALE"``/``"Male"``/``"M"`` -> ``"M"``, likewise ``"F"``; other values (``"UNKNOWN"``) -> ``None``."""
    return _SEX.get(value.strip().lower()) if value else None


def norm_age(value: str | float | None, unit: str | None = "years") -> float | int | None:
    """An age in years (``"42"``, DICOM ``"042Y"``, ``"6M"``); ``None`` if absent or not a number."""
    if value is None:
        return None
    s = str(value).strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)", s)
    if not m:
        return None
    num = float(m[1])
    u = (m[2] or unit or "years").lower()
    per_year = {"y": 1, "a": 1, "yr": 1, "years": 1, "year": 1, "m": 12, "mo": 12, "months": 12,
                "month": 12, "w": 52.1775, "wk": 52.1775, "weeks": 52.1775, "d": 365.25,
                "days": 365.25, "day": 365.25}.get(u)
    if per_year is None or num <= 0 and per_year != 1:
        return None
    years = num / per_year
    return int(years) if float(years).is_integer() else round(years, 2)


def finish_clinical(signal_mv: np.ndarray, fs: float, names: Sequence[str], path: str,
                    options: ReadOptions, meta: dict[str, Any],
                    identifiers: dict[str, Any] | None = None) -> Ecg:
    """Build the :class:`Ecg` from ``(leads, samples)`` values in mV the file stated fully.

    Derives III/aVR/aVL/aVF when only I and II are stored (``meta["derived_leads"]``),
    records options the file made moot, and adds ``identifiers`` (name, id, birth
    date, as found) under ``meta["patient"]`` only with ``options.include_identifiers``.
    """
    meta = {k: v for k, v in meta.items() if v is not None}
    stored = list(names)
    sig, all_names, derived = derive_limb_leads(signal_mv, stored)
    meta["derived_leads"] = derived
    ignored = [n for n, v in (("fs", options.fs), ("leads", options.leads), ("units", options.units))
               if v is not None]
    if ignored:
        meta["options_ignored"] = ignored  # the file states rate, lead names and units
    if getattr(options, "include_identifiers", False) and identifiers:
        meta["patient"] = {k: v for k, v in identifiers.items() if v not in (None, "")}
    ecg = make_ecg(np.asarray(sig), fs, all_names, path, options, meta, units="mV", units_source="file")
    ecg.meta["file_leads"] = stored  # as stored; derived ones are in meta["derived_leads"]
    return ecg
