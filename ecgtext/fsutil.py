"""ecgtext's own on-disk cache, atomic file writes and atomic folder replacement.

The cache root is ``$ECGTEXT_CACHE`` or ``~/.cache/ecgtext``. Everything
written there (and every output file a command finalises) goes through
:func:`atomic_path`: data lands in a temporary file in the same directory and
is moved into place with ``os.replace``, so a crash never leaves a half file
under the final name. Folders (model directories, Hub downloads) go through
:func:`atomic_dir` / :func:`replace_dir`, which never lose the previous copy.

Files and folders get the modes the process umask allows (``0644`` / ``0755``
under umask 022), like any file ``open()`` creates: results folders and model
caches are shared by teams on one server. ``tempfile.mkstemp``/``mkdtemp``
would give ``0600``/``0700``, which survive the rename, so temporary names are
created here with ``os.open(..., 0o666)`` / ``os.mkdir(..., 0o777)`` instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import Callable, Iterator

logger = logging.getLogger(__name__)


def process_umask() -> int:
    """The process umask, read without changing it (``os.umask`` can only be read by
    setting it, which races with threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: the classic read-by-setting, restored at once
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike) -> None:
    """Give a file the mode ``open()`` would have (``0o666 & ~umask``): for writers that
    create their files private whatever the umask (safetensors writes 0600)."""
    os.chmod(path, 0o666 & ~process_umask())


def _temp_name(final: Path, tag: str, suffix: str = "") -> Path:
    """A hidden, unique sibling name of ``final`` (same folder, so renames stay atomic)."""
    return final.with_name(f".{final.name}.{tag}-{secrets.token_hex(6)}{suffix}")


def _make_temp_file(final: Path, suffix: str) -> Path:
    while True:
        tmp = _temp_name(final, "tmp", suffix)
        try:  # 0o666 & ~umask, exactly as open() would create the final file
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue


def _make_temp_dir(final: Path) -> Path:
    while True:
        tmp = _temp_name(final, "tmp")
        try:  # 0o777 & ~umask, as mkdir would create the final folder
            os.mkdir(tmp, 0o777)
            return tmp
        except FileExistsError:  # pragma: no cover
            continue


def cache_dir(*parts: str, create: bool = True) -> Path:
    """``$ECGTEXT_CACHE/<parts...>`` (default root ``~/.cache/ecgtext``), created on demand."""
    root = os.environ.get("ECGTEXT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "ecgtext")
    p = Path(root).expanduser().joinpath(*parts)
    if create:
        p.mkdir(parents=True, exist_ok=True)
    return p


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    On an exception the temporary file is removed and ``path`` is left as it was.
    ``suffix`` defaults to the final name's suffix (some writers look at it).
    The file is created with the umask's mode (``0644`` under 022); writers that
    open the yielded path for writing keep that mode.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _make_temp_file(final, (final.suffix if suffix is None else suffix) + ".tmp")
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + ``os.replace``)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def replace_dir(new: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Move the folder ``new`` to ``target``, replacing any ``target`` without ever losing it.

    The old ``target`` is renamed aside, ``new`` renamed in, and only then is the
    old copy deleted; if renaming ``new`` in fails, the old copy is renamed back
    and the error raised. Both must be on one filesystem (``new`` is normally
    made by :func:`atomic_dir` next to ``target``).
    """
    new, target = Path(new), Path(target)
    old: Path | None = None
    if target.exists() or target.is_symlink():
        old = _temp_name(target, "old")
        os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        if old is not None:
            with contextlib.suppress(OSError):
                if target.exists() and not target.is_symlink():
                    shutil.rmtree(target)  # cannot happen with rename(2), but never keep a half swap
            os.replace(old, target)
        raise
    if old is not None:
        _remove(old)
    return target


def _remove(p: Path) -> None:
    try:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    except OSError as exc:  # the new copy is in place; a leftover hidden folder only costs space
        logger.warning("could not remove the previous copy %s (%s)", p, exc.strerror or exc)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, replace: bool = True,
               accept_existing: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; on success it becomes ``path``.

    On an exception inside the block the temporary folder is removed and
    ``path`` is untouched. ``replace=True`` swaps out an existing ``path`` with
    :func:`replace_dir` (the previous copy survives any failure). With
    ``replace=False`` an existing ``path`` is an error (``OSError``), unless
    ``accept_existing(path)`` says it is a finished twin written concurrently by
    another process, in which case ours is discarded and theirs kept.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _make_temp_dir(final)
    try:
        yield tmp
        if replace:
            replace_dir(tmp, final)
        else:
            try:
                os.rename(tmp, final)  # fails if final exists and is not an empty folder
            except OSError:
                if accept_existing is None or not accept_existing(final):
                    raise
                _remove(tmp)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        raise


def remove_tree(path: str | os.PathLike) -> None:
    """Delete a folder we own (work folders, stale outputs); a missing one is fine, one
    that cannot be removed is logged (the results are complete without it)."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.warning("could not remove %s (%s)", path, exc.strerror or exc)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes, remembered by (real path, size, mtime).

    Model weights are large; hashing them on every run would cost seconds, so
    the digest is cached in ``$ECGTEXT_CACHE/hashes/`` and recomputed only when
    the file's size or modification time changes.
    """
    p = Path(path).resolve()
    st = p.stat()
    stamp = {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    key = hashlib.sha256(json.dumps(stamp, sort_keys=True).encode()).hexdigest()[:32]
    memo = cache_dir("hashes") / f"{key}.json"
    try:
        saved = json.loads(memo.read_text())
        if {k: saved.get(k) for k in stamp} == stamp and isinstance(saved.get("sha256"), str):
            return saved["sha256"]
    except (OSError, ValueError):
        pass  # no memo yet, or a corrupt one: recompute
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    digest = h.hexdigest()
    with contextlib.suppress(OSError):  # a read-only cache must not fail the run
        atomic_write_text(memo, json.dumps({**stamp, "sha256": digest}))
    return digest
