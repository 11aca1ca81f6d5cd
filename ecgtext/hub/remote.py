"""Everything that talks to the Hugging Face Hub, through ``huggingface_hub``.

Network trouble becomes :class:`_Unreachable` (callers may fall back to the
cache); other Hub answers become one-line :class:`~ecgtext.errors.HubError` errors.
``huggingface_hub`` is imported only inside functions: ``--help`` stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from ecgtext.errors import EcgTextError, HubError


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
    """One file at a pinned commit through huggingface_hub's cache (resumable). Its progress
    bar is huggingface_hub's, switched by its own setting (``HF_HUB_DISABLE_PROGRESS_BARS``),
    which the CLI turns off in pipes and with ``-q``: the library does not look at the terminal."""
    from huggingface_hub import hf_hub_download

    what = f"{repo}@{commit[:12]}: {filename}"
    try:
        return Path(_call(lambda: hf_hub_download(repo, filename, revision=commit, cache_dir=_hf_cache_dir(),
                                                  endpoint=_endpoint(), library_name="ecgtext",
                                                  library_version=_version()),
                          repo, what))
    except _Unreachable as exc:
        raise HubError(f"{what}: lost the connection to the Hub ({exc}); run the command again "
                       "(finished files are kept)") from None
