"""The part files of a Ray embedding output, and what makes each record land exactly once.

A part is named after a digest of the record keys it holds and written
atomically, so a retried task rewrites the same file instead of adding one;
:func:`scan_output` indexes what is done (leftovers of killed writes removed,
parts of other settings refused) and :func:`remove_duplicates` keeps one copy
of any key found in two parts. Only pyarrow here; Ray is passed in where tasks run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ecgtext.errors import EcgTextError

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa
    import pyarrow.fs as pafs

# the Ray engine's logger: these messages are part of its run
logger = logging.getLogger("ecgtext.inference.engines.ray")


def output_fs(out: str | os.PathLike) -> tuple["pafs.FileSystem", str, bool]:
    """(pyarrow filesystem, root path in it, is local) of a local path or a URI (``s3://``...)."""
    import pyarrow.fs as pafs

    s = os.fspath(out)
    if "://" in s:
        fs, root = pafs.FileSystem.from_uri(s)
        return fs, root.rstrip("/"), isinstance(fs, pafs.LocalFileSystem)
    return pafs.LocalFileSystem(), os.path.abspath(s), True


def errors_location(root: str) -> str:
    """``OUT-stem.errors.jsonl`` beside the output folder (as the local engine names it)."""
    from ecgtext.inference.embed import _stem

    return posixpath.join(posixpath.dirname(root), _stem(Path(posixpath.basename(root))) + ".errors.jsonl")


def key_digests(paths: Sequence[str]) -> np.ndarray:
    """(N,) ``S16`` digests of the record keys of ``paths`` (120-bit blake2b + a non-zero
    byte, so numpy's trailing-NUL stripping never merges two digests)."""
    from ecgtext.inference.embed import record_key

    out = np.empty(len(paths), dtype="S16")
    for i, p in enumerate(paths):
        k = record_key(str(p)).encode("utf-8", "surrogateescape")
        out[i] = hashlib.blake2b(k, digest_size=15).digest() + b"\x01"
    return out


def stored_paths(table: "pa.Table") -> list[str]:
    """The record paths of an embed table, losslessly where the table keeps their bytes."""
    from ecgtext.inference import embed

    shared = getattr(embed, "_stored_paths", None)  # the local engine's reader, when it has one
    return shared(table) if shared is not None else table.column("path").to_pylist()


def _member(digests: np.ndarray, done: np.ndarray) -> np.ndarray:
    """Boolean mask: which ``digests`` are in the sorted array ``done``."""
    if len(done) == 0 or len(digests) == 0:
        return np.zeros(len(digests), dtype=bool)
    idx = np.minimum(np.searchsorted(done, digests), len(done) - 1)
    return done[idx] == digests


def part_name(digests: np.ndarray) -> str:
    """Deterministic part file name for a set of keys: a retried write replaces, never adds."""
    u = np.unique(digests)
    return f"part-{hashlib.blake2b(u.tobytes(), digest_size=10).hexdigest()}.parquet"


def write_part(fs: "pafs.FileSystem", root: str, local: bool, table: "pa.Table") -> str:
    """Write ``table`` as ``root/part-<digest>.parquet``, atomically; returns the name."""
    import pyarrow.parquet as pq

    name = part_name(key_digests(stored_paths(table)))
    target = posixpath.join(root, name)
    if local:
        from ecgtext.fsutil import atomic_path

        with atomic_path(target) as tmp:
            pq.write_table(table, tmp)
    else:  # one object PUT: readers see all of it or nothing
        with fs.open_output_stream(target) as fh:
            pq.write_table(table, fh)
    return name


def _scan_files(fs: "pafs.FileSystem", files: list[str], meta: dict) -> list[tuple[str, Any]]:
    """(file, S16 digests | None when unreadable | the EcgTextError of an incompatible part)."""
    import pyarrow.parquet as pq

    from ecgtext.inference.embed import META_KEY, _compatible

    out: list[tuple[str, Any]] = []
    for f in files:
        try:
            schema = pq.read_schema(f, filesystem=fs)
            md = schema.metadata or {}
            old = json.loads(md[META_KEY]) if META_KEY in md else None
            keys = stored_paths(pq.read_table(f, columns=[c for c in ("path", "path_bytes")
                                                          if c in schema.names], filesystem=fs))
        except Exception:  # noqa: BLE001 - a torn write cannot happen with atomic writes; redo it
            out.append((f, None))
            continue
        try:
            _compatible(old, meta, Path(f))
        except EcgTextError as exc:  # travels back as data, raised by the driver
            out.append((f, exc))
            continue
        out.append((f, key_digests(keys)))
    return out


@dataclass
class OutputIndex:
    """The key digests of the part files under an output folder."""

    files: list[str]
    digests: list[np.ndarray]  # per file, unique, S16

    def done(self) -> np.ndarray:
        """Sorted unique digests of every key present."""
        return np.unique(np.concatenate(self.digests)) if self.digests else np.zeros(0, "S16")


def scan_output(ray, fs: "pafs.FileSystem", root: str, meta: dict, files_per_task: int = 64) -> OutputIndex:
    """Index ``root``'s part files in Ray tasks (``ray``: the imported module); drop leftovers of killed writes and
    unreadable parts (their records are redone); refuse parts of other settings."""
    import pyarrow.fs as pafs

    info = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    files = []
    for fi in info:
        name = posixpath.basename(fi.path)
        if fi.type != pafs.FileType.File:
            continue
        if name.startswith(".") and ".tmp" in name:  # a write killed before its rename
            fs.delete_file(fi.path)
        elif name.startswith("part-") and name.endswith(".parquet"):
            files.append(fi.path)
    files.sort()
    scan = ray.remote(_scan_files).options(max_retries=3)
    refs = [scan.remote(fs, files[i:i + files_per_task], meta) for i in range(0, len(files), files_per_task)]
    index = OutputIndex([], [])
    for chunk in ray.get(refs):
        for f, d in chunk:
            if isinstance(d, EcgTextError):
                raise d
            if d is None:
                logger.warning("%s: unreadable part file removed; its records are embedded again", f)
                fs.delete_file(f)
                continue
            index.files.append(f)
            index.digests.append(np.unique(d))
    return index


def remove_duplicates(fs: "pafs.FileSystem", root: str, local: bool, index: OutputIndex) -> tuple[int, int]:
    """Keep each key in the first part file (by name) that holds it; rewrite the others
    without it. Returns (records, rows) dropped."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if len(index.files) < 2:
        return 0, 0
    allk = np.concatenate(index.digests)
    owner = np.repeat(np.arange(len(index.files)), [len(d) for d in index.digests])
    order = np.argsort(allk, kind="stable")  # equal keys: the earlier file first
    s = allk[order]
    dup = np.flatnonzero(s[1:] == s[:-1]) + 1
    if len(dup) == 0:
        return 0, 0
    records = rows = 0
    for fi in np.unique(owner[order[dup]]):
        f = index.files[fi]
        drop = np.unique(allk[order[dup]][owner[order[dup]] == fi])
        t = pq.read_table(f, filesystem=fs)
        keep = ~_member(key_digests(stored_paths(t)), drop)
        records += len(drop)
        rows += int((~keep).sum())
        kept = t.filter(pa.array(keep))
        if kept.num_rows:
            name = write_part(fs, root, local, kept)
            if posixpath.join(root, name) == f:
                continue
        fs.delete_file(f)
        logger.warning("%s: %d row(s) also present in another part file removed", f, int((~keep).sum()))
    return records, rows
