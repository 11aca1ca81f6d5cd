"""PhysioNet/CinC Challenge 2020/2021 layout: WFDB ``.hea`` + ``.mat``, SNOMED-CT ``# Dx:``.

Covers CPSC 2018, Georgia, Chapman-Shaoxing, Ningbo (and PTB-XL, St Petersburg)
as the Challenge distributes them, and the PhysioNet Chapman-Shaoxing-Ningbo
release (``WFDBRecords/``), whose headers carry the same ``#Dx:`` line.

Classes (``classes=``):

- ``"scored"`` (default): the Challenge's scored classes; equivalent codes
  (``weights.csv``: 713427006 = 59118001, 284470004 = 63593006,
  427172004 = 17338001, 733534002 = 164909002) are one class named
  ``"CRBBB|RBBB"`` etc.;
- ``"all"``: every code found (scored ones merged as above);
- a label set (``"cpsc2018"``, a JSON file) or a list of Challenge
  abbreviations: each abbreviation is mapped to its SNOMED code(s) through the
  Challenge tables, so classes are named like the label set.

Only classes with at least one positive record are kept. Records without any
of the chosen classes stay as all-negative examples (the Challenge scores them
too). Split: seeded label-stratified 70 / 10 / 20 unless a split file is given.
"""

from __future__ import annotations

import os
import re
from typing import Sequence

import numpy as np

from ecgtext.errors import DataError
from ecgtext.evaluation.datasets.base import LabelledDataset, require_dir
from ecgtext.evaluation.datasets.snomed import (
    class_name,
    codes_for_abbreviation,
    dx_table,
    representative,
    scored_classes,
)
from ecgtext.evaluation.datasets.splits import DEFAULT_FRACTIONS, stratified_split

_DX = re.compile(r"^#\s*Dx\s*:\s*(.*)$", re.IGNORECASE)


def read_dx(header_path: str) -> list[str] | None:
    """SNOMED codes on a header's ``# Dx:`` line; ``None`` when the header has none."""
    try:
        with open(header_path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                m = _DX.match(line.strip())
                if m:
                    return [c.strip() for c in m.group(1).split(",") if c.strip()]
    except OSError as exc:
        raise DataError(f"{header_path}: cannot read ({exc.strerror})") from None
    return None


def find_headers(root: str) -> list[str]:
    """Every ``.hea`` under ``root``, sorted (hidden folders skipped)."""
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        out.extend(os.path.join(d, f) for f in sorted(files) if f.endswith(".hea") and not f.startswith("."))
    return out


def _class_codes(classes, found_codes: set[str]) -> tuple[list[str], list[tuple[str, ...]], str]:
    """(class names, codes per class, description of the choice)."""
    if isinstance(classes, str) and classes == "scored":
        reps = scored_classes()
        return [class_name(c) for c in reps], [_group(c) for c in reps], "Challenge scored classes"
    if isinstance(classes, str) and classes == "all":
        reps: list[str] = []
        for c in sorted(found_codes, key=lambda x: (class_name(x), x)):
            r = representative(c)
            if r not in reps:
                reps.append(r)
        return [class_name(c) for c in reps], [_group(c) for c in reps], "every code present"
    if isinstance(classes, str):
        from ecgtext.labels import load_label_set

        names = list(load_label_set(classes))
        where = f"label set {classes}"
    else:
        names = [str(c) for c in classes]
        where = "class list"
    groups, unknown = [], []
    for n in names:
        g = codes_for_abbreviation(n)
        if g is None:
            unknown.append(n)
        groups.append(g)
    if unknown:
        raise DataError(f"{where}: {', '.join(unknown)} not CinC 2021 abbreviation(s) "
                        "(dx_mapping_scored.csv / dx_mapping_unscored.csv); use the classes 'scored' or 'all'",
                        path=str(where), field="classes", value=unknown, option="classes")
    return names, groups, f"{where} mapped by Challenge abbreviation"


def _group(code: str) -> tuple[str, ...]:
    from ecgtext.evaluation.datasets.snomed import equivalents

    return equivalents(code)


def load_cinc(root: str, task: str | None = None, classes: str | Sequence[str] = "scored", seed: int = 0,
              fractions: Sequence[float] = DEFAULT_FRACTIONS, **_ignored) -> LabelledDataset:
    """Challenge-layout folder ``root`` (searched recursively for ``.hea``) -> dataset.

    ``task`` only names the result (default: the ``classes`` choice).
    """
    root = require_dir(root, "CinC dataset folder")
    if task is None:
        task = os.path.splitext(os.path.basename(classes))[0] if isinstance(classes, str) else "custom"
    headers = find_headers(root)
    if not headers:
        raise DataError(f"{root}: no WFDB headers (.hea) found; expected the PhysioNet/CinC layout "
                        "(.hea + .mat with '# Dx:' lines)")
    keys, dx, no_dx = [], [], []
    for h in headers:
        codes = read_dx(h)
        if codes is None:
            no_dx.append(h)
            continue
        keys.append(h)
        dx.append(codes)
    if not keys:
        raise DataError(f"{root}: no header has a '# Dx:' label line (e.g. {headers[0]}); "
                        "not a labelled CinC dataset")
    found = {c for codes in dx for c in codes}
    names, groups, how = _class_codes(classes, found)
    code_to_cols: dict[str, list[int]] = {}
    for j, g in enumerate(groups):
        for c in g:
            code_to_cols.setdefault(c, []).append(j)
    Y = np.zeros((len(keys), len(names)), dtype=np.uint8)
    for i, codes in enumerate(dx):
        for c in codes:
            for j in code_to_cols.get(c, ()):
                Y[i, j] = 1
    split = stratified_split(Y, seed, fractions)
    table = dx_table()
    ds = LabelledDataset(name="cinc", task=task, root=root, keys=keys, Y=Y, classes=names, split=split)
    ds = ds.drop_empty_classes()
    groups = [groups[names.index(c)] for c in ds.classes]
    names = ds.classes
    ds.meta.update({
        "label_convention": f"SNOMED-CT '# Dx:' codes; classes: {how}; equivalent codes merged as the "
                            "Challenge scores them; classes without positives dropped",
        "class_codes": {n: list(g) for n, g in zip(names, groups)},
        "class_names": {n: table[g[0]].name if g[0] in table else n for n, g in zip(names, groups)},
        "split_convention": f"seeded label-stratified split {list(fractions)} (seed {seed})",
        "seed": seed,
        "records_without_dx": len(no_dx),
        "records_without_class": int((ds.Y.sum(axis=1) == 0).sum()),
    })
    return ds
