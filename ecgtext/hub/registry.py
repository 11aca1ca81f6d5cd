"""The named-model registry: ``presets/registry.json`` plus ``$ECGTEXT_REGISTRY`` on top."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecgtext.config import load_json_resource
from ecgtext.errors import ConfigError

DEFAULT_MODEL = "dbeta-base"
DEFAULT_PRESET = "dbeta-base"  # architecture of a published-format checkpoint that brings no config
DEFAULT_TOKENIZER_REPO = "google/flan-t5-base"

_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class RegistryEntry:
    """One named model: where its weights live and how to turn them into a model directory."""

    name: str
    repo: str
    revision: str = "main"
    preset: str | None = None  # architecture + preprocessing; None: the repo's config.json, else dbeta-base
    file: str | None = None  # checkpoint file in the repo; None: the single candidate
    tokenizer_repo: str | None = DEFAULT_TOKENIZER_REPO  # None: the repo's own tokenizer files, else Flan-T5
    tokenizer_revision: str = "main"
    licence: str | None = None
    licence_url: str | None = None
    description: str = ""
    paper: str | None = None


def registry() -> dict[str, RegistryEntry]:
    """The named models: the packaged table, then ``$ECGTEXT_REGISTRY`` (a JSON file) on top."""
    tables: list[tuple[str, Any]] = [("ecgtext/presets/registry.json", load_json_resource("registry.json"))]
    extra = os.environ.get("ECGTEXT_REGISTRY")
    if extra:
        p = Path(extra).expanduser()
        try:
            tables.append((str(p), json.loads(p.read_text())))
        except FileNotFoundError:
            raise ConfigError(f"{p}: no such file (named by ECGTEXT_REGISTRY)") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    out: dict[str, RegistryEntry] = {}
    for where, table in tables:
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected an object mapping model names to entries")
        for name, data in table.items():
            out[name] = _registry_entry(name, data, where)
    return out


def _registry_entry(name: str, data: Any, where: str) -> RegistryEntry:
    if not _NAME_RE.match(name):
        raise ConfigError(f"{where}: bad model name {name!r} (letters, digits, '.', '_', '-')")
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {name}: expected an object")
    allowed = {f.name for f in dataclasses.fields(RegistryEntry)} - {"name"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{where}: {name}: unknown key(s) {', '.join(unknown)}")
    if not isinstance(data.get("repo"), str) or not _REPO_RE.match(data["repo"]):
        raise ConfigError(f"{where}: {name}: 'repo' must be a Hub repo id 'org/name'")
    return RegistryEntry(name=name, **data)
