"""Assembled model directories in ecgtext's cache (no network here).

    $ECGTEXT_CACHE/models/<name>/<commit>/    config.json (+ "source"), model.safetensors, tokenizer files
    $ECGTEXT_CACHE/models/<name>/refs/<rev>   the commit <rev> resolved to at the last download
    $ECGTEXT_CACHE/models/<name>/latest       the commit of the last download
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ecgtext.fsutil import atomic_write_text, cache_dir
from ecgtext.hub.sources import ModelSpec

_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


def _model_root(name: str) -> Path:
    return cache_dir("models", name, create=False)


def _complete(d: Path) -> bool:
    """An assembled model directory (assembly is atomic, so these two files mean complete)."""
    return (d / "config.json").is_file() and (d / "model.safetensors").is_file()


def _ref_file(spec: ModelSpec) -> Path:
    return _model_root(spec.name) / "refs" / quote(spec.revision, safe="")


def _cached(spec: ModelSpec, use_refs: bool = True) -> Path | None:
    """The assembled directory for ``spec`` if the cache has it; no network."""
    root = _model_root(spec.name)
    if _COMMIT_RE.match(spec.revision):
        d = root / spec.revision
        return d if _complete(d) else None
    if not use_refs:
        return None
    pointers = [_ref_file(spec)] + ([] if spec.revision_given else [root / "latest"])
    for ptr in pointers:
        try:
            commit = ptr.read_text().strip()
        except OSError:
            continue
        if _COMMIT_RE.match(commit) and _complete(root / commit):
            return root / commit
    return None


def _write_refs(spec: ModelSpec, commit: str) -> None:
    atomic_write_text(_ref_file(spec), commit)
    atomic_write_text(_model_root(spec.name) / "latest", commit)


def _source_of(d: Path) -> dict[str, Any] | None:
    try:
        src = json.loads((d / "config.json").read_text()).get("source")
    except (OSError, ValueError, AttributeError):
        return None
    return src if isinstance(src, dict) else None
