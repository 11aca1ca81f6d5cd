"""SNOMED-CT codes of the PhysioNet/CinC Challenge 2020/2021 and their abbreviations.

The two mapping tables ship in ``snomed/`` (BSD-2-Clause, see the LICENSE
there). The Challenge scores some pairs of codes as one class
(``weights.csv`` header ``733534002|164909002`` ...); the first code of each
pair names the class, as in the Challenge's ``evaluate_model.py``.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from importlib import resources

# (representative, equivalent): as listed in the Challenge's weights.csv header
EQUIVALENT_CODES: tuple[tuple[str, str], ...] = (
    ("713427006", "59118001"),   # complete RBBB == RBBB
    ("284470004", "63593006"),   # PAC == supraventricular premature beats
    ("427172004", "17338001"),   # PVC == ventricular premature beats
    ("733534002", "164909002"),  # complete LBBB == LBBB
)


@dataclass(frozen=True)
class Dx:
    code: str
    name: str
    abbreviation: str
    scored: bool


@functools.lru_cache(maxsize=1)
def dx_table() -> dict[str, Dx]:
    """SNOMED code -> :class:`Dx` for every code in the two Challenge tables."""
    out: dict[str, Dx] = {}
    pkg = resources.files("ecgtext.evaluation.datasets").joinpath("snomed")
    for fname, scored in (("dx_mapping_scored.csv", True), ("dx_mapping_unscored.csv", False)):
        with pkg.joinpath(fname).open(encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                code = row["SNOMEDCTCode"].strip()
                out[code] = Dx(code, row["Dx"].strip(), row["Abbreviation"].strip(), scored)
    return out


def equivalents(code: str) -> tuple[str, ...]:
    """All codes scored as the same class as ``code`` (itself first if it represents it)."""
    for a, b in EQUIVALENT_CODES:
        if code in (a, b):
            return (a, b)
    return (code,)


def representative(code: str) -> str:
    return equivalents(code)[0]


def class_name(code: str) -> str:
    """Readable class name: ``"AF"``; ``"CRBBB|RBBB"`` for an equivalence pair; the code if unknown."""
    table = dx_table()
    names = [table[c].abbreviation if c in table else c for c in equivalents(code)]
    return "|".join(names)


def scored_classes() -> list[str]:
    """The Challenge's scored classes as representative codes (26 for 2021), table order."""
    seen: list[str] = []
    for code, dx in dx_table().items():
        if dx.scored and representative(code) not in seen:
            seen.append(representative(code))
    return seen


def codes_for_abbreviation(abbreviation: str) -> tuple[str, ...] | None:
    """Codes (with equivalents) whose Challenge abbreviation is ``abbreviation``; ``None`` if unknown.

    ``"RBBB"`` -> ``("713427006", "59118001")``; also accepts ``"CRBBB|RBBB"``.
    """
    wanted = abbreviation.split("|")
    for code, dx in dx_table().items():
        if dx.abbreviation in wanted:
            return equivalents(code)
    return None
