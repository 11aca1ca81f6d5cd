"""Zero-shot label sets: ordered ``{code: one-sentence clinical description}``.

Built-in sets live next to this file as ``<name>.json`` (the same format as the
reference implementation's prompt file). Codes follow their source exactly:

- ``code15``: the six CODE-15 % abnormalities (1AVB, RBBB, LBBB, SBRAD, AFIB, STACH);
- ``ptbxl-super`` / ``ptbxl-sub`` / ``ptbxl-form`` / ``ptbxl-rhythm``: PTB-XL's
  diagnostic superclasses and subclasses, form and rhythm statements
  (``scp_statements.csv``);
- ``cpsc2018``: the nine CPSC 2018 classes under their CinC 2021 abbreviations
  (the CPSC "PVC" class is SNOMED 164884008, abbreviated ``VEB``);
- ``chapman-rhythm``: the 11 Chapman-Shaoxing rhythms (``AF`` = atrial
  *flutter*, ``AFIB`` = atrial fibrillation, ``SA`` = sinus irregularity).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from ..errors import ConfigError, DataError


def builtin_label_sets() -> list[str]:
    """Names of the label sets shipped with ecgtext, sorted."""
    return sorted(p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".json"))


def parse_label_set(data: object, where: str) -> dict[str, str]:
    """Validate a decoded label file: a non-empty object of non-empty code -> text strings."""
    if not isinstance(data, dict) or not data:
        raise DataError(f"{where}: a label set must be a non-empty JSON object {{\"CODE\": \"description\"}}")
    out: dict[str, str] = {}
    for code, text in data.items():
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: label {code!r} needs a non-empty description string")
        if not str(code).strip():
            raise DataError(f"{where}: empty label code")
        out[str(code)] = " ".join(text.split())
    return out


def load_label_set(name_or_path: str) -> dict[str, str]:
    """A built-in label set by name, or a JSON file ``{code: description}``; order kept."""
    s = str(name_or_path)
    if s in builtin_label_sets():
        text = resources.files(__name__).joinpath(f"{s}.json").read_text(encoding="utf-8")
        return parse_label_set(json.loads(text), f"label set {s}")
    p = Path(s).expanduser()
    if not p.exists():
        if p.suffix.lower() == ".json" or "/" in s:
            raise DataError(f"{s}: label file not found")
        raise ConfigError(f"unknown label set {s!r}; built-in: {', '.join(builtin_label_sets())} "
                          "(or give a JSON file {\"CODE\": \"description\"})")
    if not p.is_file():
        raise DataError(f"{s}: not a file")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise DataError(f"{s}: not a UTF-8 text file") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{s}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    return parse_label_set(data, s)


def build_label_set(names: str | None = None, extra: list[str] | None = None,
                    default: str = "code15") -> dict[str, str]:
    """A label set from a built-in name or JSON file plus inline ``CODE=description`` items.

    Without ``names`` the ``default`` set is used, unless inline items alone are given.
    """
    out: dict[str, str] = {}
    if names is not None or not extra:
        out.update(load_label_set(names or default))
    out.update(parse_inline_labels(extra or []))
    return out


def parse_inline_labels(items: list[str]) -> dict[str, str]:
    """``["CODE=description", ...]`` (from repeated ``--label``) -> ordered dict."""
    out: dict[str, str] = {}
    for item in items:
        code, sep, text = item.partition("=")
        if not sep or not code.strip() or not text.strip():
            raise ConfigError(f"label {item!r}: expected CODE=description", field="label", value=item,
                              option="label")
        out[code.strip()] = " ".join(text.split())
    return out
