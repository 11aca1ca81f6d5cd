"""ecgtext's own on-disk cache and atomic file writes.

The cache root is ``$ECGTEXT_CACHE`` or ``~/.cache/ecgtext``. Everything
written there (and every output file a command finalises) goes through
:func:`atomic_path`: data lands in a temporary file in the same directory and
is moved into place with ``os.replace``, so a crash never leaves a half file
under the final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator


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
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=(final.suffix if suffix is None else suffix)
                               + ".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
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
