"""Model sources, explicit (timm's ``parse_model_name`` rule).

- ``hf-hub:org/repo[@revision]``: a Hub repo;
- a path: ``./dbeta-base``, ``/abs/dir``, ``~/dir``, anything containing a path
  separator, or a :class:`os.PathLike`: a local model directory;
- anything else: a registered name (``dbeta-base``), always the registry, even
  when a folder of that name exists in the working directory.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from ecgtext.errors import ConfigError, ModelError
from ecgtext.hub.registry import _REPO_RE, RegistryEntry, registry

HF_HUB_PREFIX = "hf-hub:"


def is_path_source(source: str | os.PathLike) -> bool:
    """Whether ``source`` names a local directory rather than a registered model or Hub repo."""
    if isinstance(source, os.PathLike):
        return True
    s = str(source)
    if s.startswith(HF_HUB_PREFIX):
        return False
    return (s.startswith((".", "~")) or os.path.isabs(s) or "/" in s or os.sep in s
            or (os.altsep is not None and os.altsep in s))


@dataclass(frozen=True)
class ModelSpec:
    """A source resolved against the registry: what to fetch and how to assemble it."""

    source: str  # as the user wrote it
    name: str  # cache key: $ECGTEXT_CACHE/models/<name>
    repo: str
    revision: str
    revision_given: bool  # False: the entry's default revision (then `latest` may stand in offline)
    preset: str | None
    file: str | None
    tokenizer_repo: str | None
    tokenizer_revision: str
    licence: str | None
    licence_url: str | None


def parse_source(source: str, revision: str | None = None, file: str | None = None) -> ModelSpec:
    """``dbeta-base`` or ``hf-hub:org/repo[@revision]`` -> a :class:`ModelSpec`.

    ``revision`` may not contradict an ``@revision`` in the source.
    An ``hf-hub:`` repo that a registry entry names inherits that entry's preset,
    tokenizer and licence (it is the same model at a chosen revision).
    """
    s = str(source).strip()
    if revision is not None and not str(revision).strip():
        raise ConfigError("empty revision", field="revision", option="revision")
    reg = registry()
    if s.startswith(HF_HUB_PREFIX):
        repo, at, rev = s[len(HF_HUB_PREFIX):].partition("@")
        if not _REPO_RE.match(repo):
            raise ConfigError(f"{s}: expected hf-hub:org/repo[@revision]")
        if at and not rev:
            raise ConfigError(f"{s}: empty revision after '@'")
        if at and revision is not None and revision != rev:
            raise ConfigError(f"{s}: two revisions given ({rev!r} in the source, {revision!r} requested)",
                              field="revision", option="revision")
        # the last entry naming this repo wins ($ECGTEXT_REGISTRY's come after the packaged ones)
        known = next((e for e in reversed(list(reg.values())) if e.repo.lower() == repo.lower()), None)
        entry = dataclasses.replace(known, name="", description="") if known else RegistryEntry(
            name="", repo=repo, tokenizer_repo=None)
        entry = dataclasses.replace(entry, repo=repo)
        name = "hf-hub--" + repo.replace("/", "--")
        rev = rev or revision
    else:
        if s not in reg:
            local = Path(s)
            hint = f"; a folder named {s!r} exists here: write ./{s} to load it" if local.is_dir() else ""
            raise ModelError(f"{s}: not a registered model name ({', '.join(sorted(reg))}), "
                             f"a model directory path or hf-hub:org/repo[@revision]{hint}", value=s)
        entry, name, rev = reg[s], s, revision
    return ModelSpec(source=s, name=name, repo=entry.repo, revision=rev or entry.revision,
                     revision_given=rev is not None, preset=entry.preset, file=file or entry.file,
                     tokenizer_repo=entry.tokenizer_repo, tokenizer_revision=entry.tokenizer_revision,
                     licence=entry.licence, licence_url=entry.licence_url)
