"""Lead names: normalise spellings, apply the user's map, decide what to keep.

Leads are always matched by *name*, never by position: the dbeta-base weights
expect aVF before aVL, most files store aVL first.

- The 12 standard leads are recognised in any case (``avr``, ``AVR``, ``aVR``)
  with the aliases ``DI``/``DII``/``DIII`` and ``D1``/``D2``/``D3`` (Brazilian
  and Spanish-language devices, CODE) and an optional ``Lead`` prefix
  (``Lead II``, ``LEAD_V1``).
- Known non-standard leads -- Frank ``vx``/``vy``/``vz`` (PTB), posterior
  ``V7``-``V9`` and right-sided ``V3R``-``V6R`` -- are dropped and listed in
  ``meta["ignored_leads"]``; they are not an error.
- Anything else is unknown and a :class:`LeadError` unless mapped
  (``lead_map``) or dropped (``ignore_unknown_leads``). In particular ``MLII``
  (MIT-BIH's *modified* limb lead II, electrodes on the torso) is not lead II:
  map it yourself (lead map ``MLII=II``) if the approximation is acceptable.
  ``-aVR`` (Cabrera's inverted aVR) is unknown too, rather than silently
  sign-flipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping, Protocol, Sequence

from ..config import STANDARD_LEADS
from ..errors import ConfigError, LeadError


class LeadOptions(Protocol):
    """What :func:`resolve_leads` reads from the options (``ReadOptions`` has both).

    A protocol rather than ``ReadOptions`` itself, so ``leads`` never imports
    ``record`` (which imports ``leads``): the dependency points one way.
    """

    lead_map: Mapping[str, str]
    ignore_unknown_leads: bool

FRANK_LEADS: tuple[str, ...] = ("vx", "vy", "vz")
EXTRA_LEADS: tuple[str, ...] = ("V7", "V8", "V9", "V3R", "V4R", "V5R", "V6R")
IGNORED_LEADS = frozenset(FRANK_LEADS + EXTRA_LEADS)
DROP = "-"  # lead-map target that drops a channel

_ALIASES: dict[str, str] = {name.upper(): name for name in STANDARD_LEADS + EXTRA_LEADS + FRANK_LEADS}
_ALIASES.update({"DI": "I", "DII": "II", "DIII": "III", "D1": "I", "D2": "II", "D3": "III"})
_PREFIX = re.compile(r"^lead[\s_\-]*", re.IGNORECASE)


def canonical_lead(name: str) -> str | None:
    """The canonical spelling of a lead name (``"AVR"`` -> ``"aVR"``), ``None`` if unknown."""
    key = _PREFIX.sub("", str(name).strip()).upper()
    return _ALIASES.get(key)


def parse_lead_list(value: str | Sequence[str]) -> list[str]:
    """``"I,II,V1"`` or ``["I", "II", "V1"]`` -> list; ``"standard"`` -> the 12 standard leads."""
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    items = [v.strip() for v in items]
    if len(items) == 1 and items[0].lower() == "standard":
        return list(STANDARD_LEADS)
    if not items or any(not v for v in items):
        raise ConfigError(f"lead list {value!r} has an empty name; give comma-separated names "
                          "such as I,II,V1 or 'standard'")
    return items


def parse_lead_map(entries: Sequence[str]) -> dict[str, str]:
    """``["ECG 1=I", "MLII=II"]`` -> ``{"ECG 1": "I", "MLII": "II"}`` (``NAME=-`` drops NAME)."""
    out: dict[str, str] = {}
    for entry in entries:
        old, sep, new = str(entry).partition("=")
        if not sep or not old.strip() or not new.strip():
            raise ConfigError(f"lead map entry {entry!r} is not OLD=NEW (e.g. 'MLII=II', 'ECG 1=I', "
                              "or 'Resp=-' to drop a channel)")
        new = new.strip()
        if new != DROP and canonical_lead(new) is None:
            raise ConfigError(f"lead map entry {entry!r}: {new!r} is not a lead name we know "
                              f"({', '.join(STANDARD_LEADS)})")
        out[old.strip()] = new
    return out


@dataclass
class LeadSelection:
    """Which file channels to keep and under which canonical names."""

    keep: list[int] = field(default_factory=list)
    leads: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def resolve_leads(names: Sequence[str], options: LeadOptions, path: str) -> LeadSelection:
    """Map file channel names (after ``options.lead_map``) to canonical lead names.

    Raises :class:`LeadError` for unknown names (unless mapped or
    ``options.ignore_unknown_leads``) and for two channels naming the same lead.
    """
    exact = options.lead_map
    folded = {k.casefold(): v for k, v in exact.items()}
    sel = LeadSelection()
    unknown: list[str] = []
    origin: dict[str, str] = {}
    for i, raw in enumerate(names):
        name = str(raw).strip()
        mapped = exact.get(name, folded.get(name.casefold()))
        if mapped is not None:
            if mapped == DROP:
                sel.ignored.append(name)
                continue
            canon = canonical_lead(mapped)
            if canon is None:
                raise LeadError(path, f"lead map {name}={mapped}: {mapped!r} is not a lead name we know",
                                field="lead map", value=mapped, option="lead_map")
        else:
            canon = canonical_lead(name)
        if canon is None:
            unknown.append(name)
            continue
        if canon in IGNORED_LEADS:
            sel.ignored.append(name)
            continue
        if canon in origin:
            raise LeadError(path, f"lead {canon} appears twice (channels {origin[canon]!r} and {name!r}); "
                                  f"drop one with the lead map '{name}=-'",
                            field="lead names", value=canon, option="lead_map")
        origin[canon] = name
        sel.keep.append(i)
        sel.leads.append(canon)
    if unknown:
        if not options.ignore_unknown_leads:
            shown = ", ".join(repr(u) for u in unknown)
            example = f"{unknown[0]}=II" if unknown[0].upper() == "MLII" else f"{unknown[0]}=<lead>"
            raise LeadError(path, f"unknown lead name(s) {shown}; map them to standard names with a "
                                  f"lead map such as '{example}' (one per lead) or ignore unknown "
                                  "leads (known: I, II, III, aVR, aVL, aVF, V1-V6 "
                                  "and aliases such as DI, AVR, 'Lead II')",
                            field="lead names", value=list(unknown), option="lead_map")
        sel.ignored.extend(unknown)
    if not sel.keep:
        raise LeadError(path, f"no usable leads: all channels ({', '.join(map(str, names))}) were "
                              "ignored or dropped")
    return sel
