"""Named models and the Hugging Face Hub: registry, download, cache, checkpoint conversion.

A model *source* is

- a registry name (``dbeta-base``): the table in ``presets/registry.json``, plus
  the entries of the JSON file named by ``$ECGTEXT_REGISTRY`` (same format; its
  entries win), or
- ``hf-hub:org/repo[@revision]``: a Hub repo that holds either a ready ecgtext
  model directory (``config.json`` + ``model.safetensors`` + tokenizer files),
  used as is, or a published-format D-BETA checkpoint (``{"model": state_dict}``
  in a ``*.pt``), assembled like ``dbeta-base``.

(Local model directories never get here: ``ecgtext.model.loading`` handles them.)

Files come through ``huggingface_hub`` (its cache, progress bars, ``HF_HOME``,
``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``HF_TOKEN``) and are assembled once into
our own cache, so a cached model loads without touching the network::

    $ECGTEXT_CACHE/models/<name>/<commit>/    config.json (+ "source"), model.safetensors, tokenizer files
    $ECGTEXT_CACHE/models/<name>/refs/<rev>   the commit <rev> resolved to at the last download
    $ECGTEXT_CACHE/models/<name>/latest       the commit of the last download

Neither torch nor huggingface_hub is imported at module level: ``--help`` and
cached runs stay fast.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

from ecgtext.fsutil import atomic_write_text, cache_dir, file_sha256
from ecgtext.config import ModelDirConfig, load_json_resource, load_preset
from ecgtext.errors import ConfigError, EcgTextError, HubError, ModelError
from ecgtext.model.tokenizer import TOKENIZER_FILES

DEFAULT_MODEL = "dbeta-base"
DEFAULT_PRESET = "dbeta-base"  # architecture of a published-format checkpoint that brings no config
DEFAULT_TOKENIZER_REPO = "google/flan-t5-base"
HF_HUB_PREFIX = "hf-hub:"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
# weight-like files that are never the model (trainer state)
NOT_CHECKPOINTS = frozenset({"training_args.bin", "optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth"})
TOKENIZER_EXTRA = ("added_tokens.json",)

_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_DBETA_NAME_RE = re.compile(r"d[-_]?beta", re.IGNORECASE)


# ---------------------------------------------------------------- registry
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


# ---------------------------------------------------------------- sources
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

    ``revision`` (``--revision``) may not contradict an ``@revision`` in the source.
    An ``hf-hub:`` repo that a registry entry names inherits that entry's preset,
    tokenizer and licence (it is the same model at a chosen revision).
    """
    s = str(source).strip()
    if revision is not None and not str(revision).strip():
        raise ConfigError("--revision: empty revision")
    reg = registry()
    if s.startswith(HF_HUB_PREFIX):
        repo, at, rev = s[len(HF_HUB_PREFIX):].partition("@")
        if not _REPO_RE.match(repo):
            raise ConfigError(f"{s}: expected hf-hub:org/repo[@revision]")
        if at and not rev:
            raise ConfigError(f"{s}: empty revision after '@'")
        if at and revision is not None and revision != rev:
            raise ConfigError(f"{s}: two revisions given ({rev!r} in the source, {revision!r} by --revision)")
        # the last entry naming this repo wins ($ECGTEXT_REGISTRY's come after the packaged ones)
        known = next((e for e in reversed(list(reg.values())) if e.repo.lower() == repo.lower()), None)
        entry = dataclasses.replace(known, name="", description="") if known else RegistryEntry(
            name="", repo=repo, tokenizer_repo=None)
        entry = dataclasses.replace(entry, repo=repo)
        name = "hf-hub--" + repo.replace("/", "--")
        rev = rev or revision
    else:
        if s not in reg:
            raise ModelError(f"{s}: not a model directory, a registered model name "
                             f"({', '.join(sorted(reg))}) or hf-hub:org/repo[@revision]")
        entry, name, rev = reg[s], s, revision
    return ModelSpec(source=s, name=name, repo=entry.repo, revision=rev or entry.revision,
                     revision_given=rev is not None, preset=entry.preset, file=file or entry.file,
                     tokenizer_repo=entry.tokenizer_repo, tokenizer_revision=entry.tokenizer_revision,
                     licence=entry.licence, licence_url=entry.licence_url)


# ---------------------------------------------------------------- results
@dataclass
class DownloadResult:
    """Where a model directory is and what it was built from."""

    path: Path
    name: str
    repo: str
    revision: str  # as requested (branch, tag or commit)
    commit: str  # what it resolved to
    file: str | None  # the weights file taken from the repo
    sha256: str | None  # of that file
    licence: str | None
    licence_url: str | None
    cached: bool  # True: already assembled, nothing downloaded or converted

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["path"] = str(self.path)
        return d


def licence_notice(result: DownloadResult) -> str:
    """One line on the weights' licence (it differs from the code's)."""
    if result.licence:
        url = f"; {result.licence_url}" if result.licence_url else ""
        nc = " (non-commercial use only)" if "NC" in result.licence.replace("-", " ").upper().split() else ""
        return (f"licence: the weights from {result.repo} are licensed {result.licence}{nc}{url}; "
                "ecgtext's code is Apache-2.0")
    return (f"licence: {result.repo} states no licence for its weights; check its model card "
            "before use (ecgtext's code is Apache-2.0)")


# ---------------------------------------------------------------- entry points
def resolve_model(source: str) -> Path:
    """The model directory for a registry name or ``hf-hub:`` id.

    Already assembled in the cache: returned without network access. Otherwise
    it is downloaded and assembled on first use; when the Hub is offline or
    unreachable this fails with one line saying how to fix it.
    """
    spec = parse_source(source)
    hit = _cached(spec)
    if hit is not None:
        return hit
    if _offline():
        raise HubError(_not_cached(spec, "the Hub is offline (HF_HUB_OFFLINE is set)"))
    _say(f"{spec.source}: not in the cache yet; downloading it from {_endpoint()}/{spec.repo}")
    result = download(spec.source)
    _say(licence_notice(result))
    return result.path


def download(source: str = DEFAULT_MODEL, revision: str | None = None, output: str | os.PathLike | None = None,
             file: str | None = None, force: bool = False) -> DownloadResult:
    """Fetch a model's files from the Hub and assemble a model directory (idempotent).

    The directory goes to ``$ECGTEXT_CACHE/models/<name>/<commit>/`` or to
    ``output``. A revision already assembled is a no-op (``cached=True``); so is
    an offline / unreachable Hub when the cache has the model. ``force`` builds
    it again. A published checkpoint is read with ``weights_only``, checked key
    by key against the architecture and written once as safetensors.
    """
    spec = parse_source(source, revision=revision, file=file)
    out = Path(output).expanduser() if output is not None else None
    if out is not None:
        _check_output(out, spec, force)
    if not force:
        hit = _cached(spec, use_refs=False)  # a pinned commit needs no network at all
        if hit is not None:
            return _deliver(hit, spec, out)
    label = f"{spec.repo}@{spec.revision}"
    if _offline():
        if force:
            raise HubError(f"{label}: --force downloads again, but the Hub is offline (HF_HUB_OFFLINE is set)")
        hit = _cached(spec)
        if hit is not None:
            return _deliver(hit, spec, out)
        raise HubError(_not_cached(spec, "the Hub is offline (HF_HUB_OFFLINE is set)"))

    try:
        commit, files, card_licence = _list_files(spec.repo, spec.revision)
    except _Unreachable as exc:
        if force:
            raise HubError(f"{label}: --force downloads again, but the Hub ({_endpoint()}) is "
                           f"unreachable ({exc})") from None
        hit = _cached(spec)
        if hit is not None:
            _say(f"{label}: the Hub is unreachable ({exc}); using the cached model")
            return _deliver(hit, spec, out)
        raise HubError(_not_cached(spec, f"the Hub ({_endpoint()}) is unreachable ({exc})")) from None

    cached_dir = _model_root(spec.name) / commit
    if not force and out is not None and _complete(out) and (_source_of(out) or {}).get("commit") == commit:
        return _result(out, spec, cached=True)
    if not force and _complete(cached_dir):
        _write_refs(spec, commit)
        return _deliver(cached_dir, spec, out)

    if spec.licence is None and card_licence:
        spec = dataclasses.replace(spec, licence=card_licence)
    writer = _prepare(spec, commit, files)  # downloads and verifies; nothing written to our cache yet
    target = out if out is not None else cached_dir
    _assemble(target, writer, replace=force or out is not None)
    if out is None:
        _write_refs(spec, commit)
    return _result(target, spec, cached=False)


# ---------------------------------------------------------------- cache
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


def _not_cached(spec: ModelSpec, why: str) -> str:
    cmd = f"ecgtext download {spec.source}"
    if spec.revision_given and "@" not in spec.source:
        cmd += f" --revision {spec.revision}"
    return (f"model '{spec.source}' is not in the cache ({_model_root(spec.name)}) and {why}: "
            f"run `{cmd}` with network access, or pass --model DIR (a local model directory)")


def _check_output(out: Path, spec: ModelSpec, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: --output exists and is not a directory")
    if force or not out.is_dir() or not any(out.iterdir()):
        return
    src = _source_of(out)
    if src is None or src.get("repo") != spec.repo:
        raise ConfigError(f"{out}: --output is a non-empty directory that is not a download of {spec.repo}; "
                          "choose another directory or pass --force to replace it")


def _source_of(d: Path) -> dict[str, Any] | None:
    try:
        src = json.loads((d / "config.json").read_text()).get("source")
    except (OSError, ValueError, AttributeError):
        return None
    return src if isinstance(src, dict) else None


def _deliver(assembled: Path, spec: ModelSpec, out: Path | None) -> DownloadResult:
    """An assembled cache directory, or a copy of it at ``out``."""
    if out is None:
        return _result(assembled, spec, cached=True)
    src = _source_of(out) if _complete(out) else None
    if src is not None and src.get("commit") == assembled.name:
        return _result(out, spec, cached=True)

    def write(tmp: Path) -> None:
        for f in assembled.iterdir():
            if f.is_file():
                _link_or_copy(f, tmp / f.name)

    _assemble(out, write, replace=True)
    return _result(out, spec, cached=True)


def _result(d: Path, spec: ModelSpec, cached: bool) -> DownloadResult:
    src = _source_of(d) or {}
    return DownloadResult(path=d, name=spec.name, repo=src.get("repo", spec.repo), revision=spec.revision,
                          commit=src.get("commit", d.name), file=src.get("file"), sha256=src.get("sha256"),
                          licence=src.get("licence", spec.licence), licence_url=src.get("licence_url", spec.licence_url),
                          cached=cached)


# ---------------------------------------------------------------- assembly
def _assemble(target: Path, write: Callable[[Path], None], replace: bool = False) -> None:
    """Run ``write(tmp)`` in a temp dir next to ``target``, then move it into place atomically.

    On any failure the temp dir is removed and ``target`` is untouched. If another
    process assembled the same ``target`` meanwhile, its result is kept.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    old: Path | None = None
    try:
        write(tmp)
        if target.exists() and replace:
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except OSError:
            if not _complete(target):  # not a concurrent twin: a real failure
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not target.exists():
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` (through huggingface_hub's symlinks) to ``dst``; copy across filesystems."""
    real = os.path.realpath(src)
    try:
        os.link(real, dst)
    except OSError:
        shutil.copy2(real, dst)


def _prepare(spec: ModelSpec, commit: str, files: list[str]) -> Callable[[Path], None]:
    """Download what ``spec`` needs at ``commit``, verify it, and return the writer of the model dir.

    Everything that can fail (choice of checkpoint, downloads, key check) happens
    here, before anything is written to the target directory.
    """
    label = f"{spec.repo}@{commit[:12]}"
    name = f"{HF_HUB_PREFIX}{spec.repo}" if spec.name.startswith("hf-hub--") else spec.name
    source: dict[str, Any] = {"repo": spec.repo, "revision": spec.revision, "commit": commit}
    ready = _is_ready_dir(files) and spec.file is None
    ckpt_name = "model.safetensors" if ready else _pick_checkpoint(spec, files)
    tokenizer_paths, tokenizer_source = _fetch_tokenizer(spec, commit, files)

    if ready:  # an ecgtext model directory: used as is, provenance added to its config
        cfg_path = _fetch(spec.repo, "config.json", commit)
        try:
            cfg = json.loads(Path(cfg_path).read_text())
        except ValueError as exc:
            raise ConfigError(f"{label}: config.json is not valid JSON ({exc})") from None
        ModelDirConfig.from_dict(cfg, f"{label}: config.json")  # validate before assembling
        cfg.setdefault("name", name)
    else:  # a published checkpoint: converted once, against the preset's (or repo's) architecture
        config = _architecture(spec, files, commit)
    weights = _fetch(spec.repo, ckpt_name, commit)
    source.update(file=ckpt_name, sha256=file_sha256(weights), tokenizer=tokenizer_source)
    source.update({k: getattr(spec, k) for k in ("licence", "licence_url") if getattr(spec, k)})

    if ready:
        cfg["source"] = source

        def write(tmp: Path) -> None:
            _link_or_copy(weights, tmp / "model.safetensors")
            (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
            for p in tokenizer_paths:
                _link_or_copy(p, tmp / p.name)

        return write

    state = read_verified_checkpoint(weights, config, where=f"{spec.repo}/{ckpt_name}@{commit[:12]}")
    config.name, config.source = name, source

    def write(tmp: Path) -> None:
        save_safetensors(state, tmp / "model.safetensors")
        state.clear()  # free the weights as soon as they are on disk
        (tmp / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
        for p in tokenizer_paths:
            _link_or_copy(p, tmp / p.name)

    return write


def _is_ready_dir(files: list[str]) -> bool:
    return ("config.json" in files and "model.safetensors" in files
            and ("spiece.model" in files or "tokenizer.json" in files))


def _pick_checkpoint(spec: ModelSpec, files: list[str]) -> str:
    where = f"{spec.repo}@{spec.revision}"
    if spec.file is not None:
        if spec.file not in files:
            raise HubError(f"{where}: no file {spec.file!r} in the repo (files: {_short(files)})")
        return spec.file
    cands = sorted(f for f in files if f.lower().endswith(CHECKPOINT_SUFFIXES)
                   and f.rsplit("/", 1)[-1] not in NOT_CHECKPOINTS)
    if len(cands) > 1:  # prefer the one named like the model, if exactly one is
        named = [f for f in cands if _DBETA_NAME_RE.search(f.rsplit("/", 1)[-1])]
        cands = named if len(named) == 1 else cands
    if not cands:
        raise HubError(f"{where}: no checkpoint ({'/'.join('*' + s for s in CHECKPOINT_SUFFIXES)}) in the repo "
                       f"(files: {_short(files)})")
    if len(cands) > 1:
        raise HubError(f"{where}: several candidate checkpoints ({', '.join(cands)}); "
                       "pick one with --file NAME")
    return cands[0]


def _architecture(spec: ModelSpec, files: list[str], commit: str) -> ModelDirConfig:
    """The registry's preset, else the repo's ecgtext config.json, else dbeta-base."""
    if spec.preset is not None:
        return load_preset(spec.preset)
    if "config.json" in files:
        p = _fetch(spec.repo, "config.json", commit)
        try:
            return ModelDirConfig.from_dict(json.loads(Path(p).read_text()),
                                            f"{spec.repo}@{commit[:12]}: config.json")
        except ValueError as exc:
            raise ConfigError(f"{spec.repo}@{commit[:12]}: config.json is not valid JSON ({exc})") from None
    return load_preset(DEFAULT_PRESET)


def _fetch_tokenizer(spec: ModelSpec, commit: str, files: list[str]) -> tuple[list[Path], dict[str, Any]]:
    """Tokenizer files: from the registry's tokenizer repo, else the repo's own, else Flan-T5-base."""
    wanted = TOKENIZER_FILES + TOKENIZER_EXTRA
    repo, rev, rev_commit, listing = spec.tokenizer_repo, spec.tokenizer_revision, None, None
    if repo is None:
        if "spiece.model" in files or "tokenizer.json" in files:
            repo, rev, rev_commit, listing = spec.repo, spec.revision, commit, files
        else:
            repo, rev = DEFAULT_TOKENIZER_REPO, "main"
    if listing is None:
        try:
            rev_commit, listing, _ = _list_files(repo, rev)
        except _Unreachable as exc:
            raise HubError(f"{repo}@{rev}: lost the connection to the Hub ({exc}); try again") from None
    names = [f for f in wanted if f in listing]
    if not ({"spiece.model", "tokenizer.json"} & set(names)):
        raise HubError(f"{repo}@{rev}: no tokenizer files (spiece.model or tokenizer.json) in the repo "
                       f"(files: {_short(listing)})")
    paths = [Path(_fetch(repo, f, rev_commit)) for f in names]
    return paths, {"repo": repo, "revision": rev, "commit": rev_commit}


def _short(items: list[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    return (shown + f" (+{len(items) - limit} more)" if len(items) > limit else shown) or "none"


# ---------------------------------------------------------------- checkpoints
def read_verified_checkpoint(path: str | os.PathLike, config: ModelDirConfig, where: str | None = None) -> dict:
    """Read a checkpoint safely and check it key by key against ``config``'s architecture.

    Torch files are read with ``weights_only=True`` (no pickled code runs). The
    model is built on the ``meta`` device, so no second copy of the weights is
    allocated. Returns the state dict to save: ``ecg_encoder.mask_emb`` dropped,
    every tensor contiguous. Raises ``CheckpointMismatchError`` naming the keys.
    """
    import torch

    from ecgtext.model.dbeta import TOLERATED_EXTRA_KEYS, DBeta
    from ecgtext.model.loading import load_state_strict, read_checkpoint

    try:
        sd = read_checkpoint(path)
    except ModelError as exc:
        if where is None:
            raise
        raise ModelError(str(exc).replace(str(Path(path)), where, 1)) from None
    with torch.device("meta"):
        model = DBeta(config, components="all")
    load_state_strict(model, sd, where=where or str(path))
    del model
    return {k: v for k, v in sd.items() if k not in TOLERATED_EXTRA_KEYS}


def save_safetensors(state: dict, path: str | os.PathLike) -> None:
    """Write a state dict as safetensors; tensors that share storage (the tied T5
    embedding appears as ``language_encoder.shared.weight`` and
    ``language_encoder.encoder.embed_tokens.weight``) are cloned so every key is stored."""
    from safetensors.torch import save_file

    seen: set[int] = set()
    out = {}
    for k, v in state.items():
        v = v.detach()
        ptr = v.untyped_storage().data_ptr()
        if ptr and ptr in seen:
            v = v.clone()
        seen.add(ptr)
        out[k] = v.contiguous()
    save_file(out, str(path), metadata={"format": "pt"})


# ---------------------------------------------------------------- huggingface_hub
class _Unreachable(Exception):
    """The Hub cannot be reached (offline mode, no connection, timeout)."""


def _offline() -> bool:
    """``HF_HUB_OFFLINE`` as set now (huggingface_hub reads it once, at import)."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    if value is not None and value.strip():
        return value.strip().upper() in {"1", "ON", "YES", "TRUE"}
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def _endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _hf_cache_dir() -> str:
    """huggingface_hub's cache, from the environment as it is now."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _network_errors() -> tuple[type[BaseException], ...]:
    import importlib

    from huggingface_hub import errors

    found: list[type[BaseException]] = [ConnectionError, TimeoutError, errors.OfflineModeIsEnabled]
    for mod, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)),
                       ("requests", ("ConnectionError", "Timeout"))):
        try:
            m = importlib.import_module(mod)
        except ImportError:
            continue
        for n in names:
            cls = getattr(m, n, None) or getattr(getattr(m, "exceptions", None), n, None)
            if isinstance(cls, type):
                found.append(cls)
    return tuple(found)


def _describe(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0][:160]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _hub_error(exc: BaseException, repo: str, what: str) -> EcgTextError:
    """One line for a huggingface_hub failure, with the fix when there is one."""
    from huggingface_hub import errors

    status = getattr(getattr(exc, "response", None), "status_code", None)
    login = "set HF_TOKEN or run `hf auth login`"
    if isinstance(exc, errors.GatedRepoError):
        return HubError(f"{what}: the repo is gated: accept its conditions at {_endpoint()}/{repo}, "
                        f"then {login}")
    if isinstance(exc, errors.RepositoryNotFoundError):
        return HubError(f"{what}: repository not found on {_endpoint()} (if it is private or gated, {login})")
    if isinstance(exc, errors.RevisionNotFoundError):
        return HubError(f"{what}: no such revision (branch, tag or commit) in {repo}")
    if isinstance(exc, getattr(errors, "RemoteEntryNotFoundError", errors.EntryNotFoundError)):
        return HubError(f"{what}: file not found in {repo}")
    if status in (401, 403):
        return HubError(f"{what}: access denied (HTTP {status}); {login} with a token that can read {repo}")
    if status is not None:
        return HubError(f"{what}: the Hub answered HTTP {status} ({_describe(exc)})")
    return HubError(f"{what}: {_describe(exc)}")


def _call(fn: Callable[[], Any], repo: str, what: str) -> Any:
    """Run a huggingface_hub call; network trouble -> ``_Unreachable``, the rest -> ``HubError``."""
    from huggingface_hub import errors

    try:
        return fn()
    except _network_errors() as exc:
        raise _Unreachable(_describe(exc)) from None
    except errors.HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status is not None and status >= 500:  # Hub down: like no connection (the cache may do)
            raise _Unreachable(f"HTTP {status}") from None
        raise _hub_error(exc, repo, what) from None
    except errors.LocalEntryNotFoundError as exc:  # no connection and nothing in huggingface_hub's cache
        raise _Unreachable(_describe(exc.__cause__ or exc)) from None
    except (errors.EntryNotFoundError, errors.FileMetadataError) as exc:
        raise _hub_error(exc, repo, what) from None


def _api():
    from huggingface_hub import HfApi

    return HfApi(endpoint=_endpoint(), library_name="ecgtext", library_version=_version())


def _version() -> str:
    from ecgtext import __version__

    return __version__


def _list_files(repo: str, revision: str) -> tuple[str, list[str], str | None]:
    """(commit, files, licence from the repo's tags) of ``repo`` at ``revision``."""
    from huggingface_hub import constants

    api = _api()
    info = _call(lambda: api.model_info(repo, revision=revision, timeout=constants.HF_HUB_ETAG_TIMEOUT),
                 repo, f"{repo}@{revision}")
    commit = info.sha
    if not commit:
        raise HubError(f"{repo}@{revision}: the Hub did not say which commit this is")
    if info.siblings is not None:
        files = [s.rfilename for s in info.siblings]
    else:
        files = _call(lambda: api.list_repo_files(repo, revision=commit), repo, f"{repo}@{revision}")
    licence = next((t.split(":", 1)[1] for t in (info.tags or []) if t.startswith("license:")), None)
    return commit, sorted(files), licence


def _fetch(repo: str, filename: str, commit: str) -> Path:
    """One file at a pinned commit through huggingface_hub's cache (resumable, with a progress bar on a TTY)."""
    import inspect

    from huggingface_hub import hf_hub_download

    what = f"{repo}@{commit[:12]}: {filename}"
    extra = {}
    if "tqdm_class" in inspect.signature(hf_hub_download).parameters:  # older huggingface_hub lacks it
        extra["tqdm_class"] = _progress_bar()
    try:
        return Path(_call(lambda: hf_hub_download(repo, filename, revision=commit, cache_dir=_hf_cache_dir(),
                                                  endpoint=_endpoint(), library_name="ecgtext",
                                                  library_version=_version(), **extra),
                          repo, what))
    except _Unreachable as exc:
        raise HubError(f"{what}: lost the connection to the Hub ({exc}); run the command again "
                       "(finished files are kept)") from None


def _progress_bar():
    """huggingface_hub's tqdm, silenced when stderr is not a terminal (logs and pipes stay clean)."""
    from huggingface_hub.utils import tqdm as hf_tqdm

    quiet = not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())

    class _Bar(hf_tqdm):
        def __init__(self, *args, **kwargs):
            if quiet:
                kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return _Bar


def _say(message: str) -> None:
    print(message, file=sys.stderr)
