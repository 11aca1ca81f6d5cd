"""Download and assemble model directories: ``download`` and ``resolve_model``.

Files come through ``huggingface_hub`` (its cache, progress bars, ``HF_HOME``,
``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``HF_TOKEN``) and are assembled once into
our own cache (:mod:`ecgtext.hub.cache`), so a cached model loads without
touching the network.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ecgtext.config import ModelDirConfig, load_preset
from ecgtext.errors import ConfigError, HubError
from ecgtext.fsutil import atomic_dir, file_sha256
from ecgtext.hub.cache import _cached, _complete, _model_root, _source_of, _write_refs
from ecgtext.hub.convert import read_verified_checkpoint, save_safetensors
from ecgtext.hub.registry import DEFAULT_MODEL, DEFAULT_PRESET, DEFAULT_TOKENIZER_REPO
from ecgtext.hub.remote import _endpoint, _fetch, _list_files, _offline, _Unreachable
from ecgtext.hub.sources import HF_HUB_PREFIX, ModelSpec, parse_source
from ecgtext.model.tokenizer import TOKENIZER_FILES

logger = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
# weight-like files that are never the model (trainer state)
NOT_CHECKPOINTS = frozenset({"training_args.bin", "optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth"})
_DBETA_NAME_RE = re.compile(r"d[-_]?beta", re.IGNORECASE)


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
        raise HubError(_not_cached(spec, "the Hub is offline (HF_HUB_OFFLINE is set)"), option="model")
    # shown by default: a first run downloads ~1.3 GB, the user should know why it waits
    logger.warning("%s: not in the cache yet; downloading it from %s/%s", spec.source, _endpoint(), spec.repo)
    result = download(spec.source)
    logger.warning("%s", licence_notice(result))
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
            raise HubError(f"{label}: a forced download needs the Hub, but it is offline (HF_HUB_OFFLINE is set)")
        hit = _cached(spec)
        if hit is not None:
            return _deliver(hit, spec, out)
        raise HubError(_not_cached(spec, "the Hub is offline (HF_HUB_OFFLINE is set)"), option="model")

    try:
        commit, files, card_licence = _list_files(spec.repo, spec.revision)
    except _Unreachable as exc:
        if force:
            raise HubError(f"{label}: a forced download needs the Hub, but it ({_endpoint()}) is "
                           f"unreachable ({exc})") from None
        hit = _cached(spec)
        if hit is not None:
            logger.warning("%s: the Hub is unreachable (%s); using the cached model", label, exc)
            return _deliver(hit, spec, out)
        raise HubError(_not_cached(spec, f"the Hub ({_endpoint()}) is unreachable ({exc})"),
                       option="model") from None

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


def _not_cached(spec: ModelSpec, why: str) -> str:
    cmd = f"ecgtext download {spec.source}"
    if spec.revision_given and "@" not in spec.source:
        cmd += f" --revision {spec.revision}"
    return (f"model '{spec.source}' is not in the cache ({_model_root(spec.name)}) and {why}: "
            f"run `{cmd}` with network access, or use a local model directory")


def _check_output(out: Path, spec: ModelSpec, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: the output exists and is not a directory", path=str(out), option="output")
    if force or not out.is_dir() or not any(out.iterdir()):
        return
    src = _source_of(out)
    if src is None or src.get("repo") != spec.repo:
        raise ConfigError(f"{out}: the output is a non-empty directory that is not a download of {spec.repo}; "
                          "choose another directory or force the download to replace it", path=str(out),
                          option="force")


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


def _assemble(target: Path, write: Callable[[Path], None], replace: bool = False) -> None:
    """Run ``write(tmp)`` in a temp dir next to ``target``, then move it into place atomically.

    On any failure the temp dir is removed and ``target`` is untouched (with ``replace``,
    the previous copy is kept until the new one is in place: :func:`ecgtext.fsutil.atomic_dir`).
    If another process assembled the same ``target`` meanwhile, its result is kept.
    """
    with atomic_dir(target, replace=replace, accept_existing=_complete) as tmp:
        write(tmp)


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` (through huggingface_hub's symlinks) to ``dst``; copy across filesystems."""
    real = os.path.realpath(src)
    try:
        os.link(real, dst)
    except OSError:
        shutil.copyfile(real, dst)  # the umask's mode


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
        raise HubError(f"{where}: several candidate checkpoints ({', '.join(cands)}); name the checkpoint file to use",
                       field="file", value=cands, option="file")
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
    wanted = TOKENIZER_FILES
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
