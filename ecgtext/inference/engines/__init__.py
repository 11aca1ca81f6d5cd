"""Engines of ``ecgtext embed`` and what they share.

- ``local``: one process (or one per ``torchrun`` rank, ``--shard``), in
  :mod:`ecgtext.inference.embed`; writes one file, or one part file per shard.
- ``ray``: a Ray Data pipeline across a machine or a cluster, in
  :mod:`ecgtext.inference.engines.ray` (``pip install "ecgtext[ray]"``); writes
  a folder of part files.

Both write the same rows, schema and provenance metadata; :func:`merge_parts`
turns either kind of part-file folder into one file.
"""

from __future__ import annotations

import os
from pathlib import Path

ENGINES = ("local", "ray")


def part_files(folder: str | os.PathLike) -> list[Path]:
    """The part files of an embed output folder, sorted (hidden work files skipped)."""
    d = Path(folder)
    return sorted(p for p in d.glob("part-*.parquet") if p.is_file())


def merge_parts(folder: str | os.PathLike, out: str | os.PathLike) -> int:
    """Merge the part files of ``folder`` (a Ray or ``torchrun`` output) into the Parquet file
    ``out``; returns the number of rows written.

    Every part must carry the same settings and provenance as the first (weights,
    precision, preprocessing, per-window or aggregate, ...), else a
    :class:`~ecgtext.errors.ProvenanceError` / :class:`~ecgtext.errors.ConfigError`
    names the part and the first difference. A key present in several parts (or
    already in ``out``, which is appended to when it exists and agrees) is written once.
    """
    import pyarrow.parquet as pq

    from ecgtext.errors import ConfigError
    from ecgtext.inference.embed import _compatible, _merge, _read_meta

    d, final = Path(folder), Path(out)
    if not d.is_dir():
        raise ConfigError(f"{d}: not a folder of part files", path=str(d))
    parts = part_files(d)
    if not parts:
        raise ConfigError(f"{d}: no part-*.parquet files to merge", path=str(d))
    if final.resolve().parent == d.resolve():
        raise ConfigError(f"{final}: the merged file must be outside the folder of parts", path=str(final))
    ref = _read_meta(parts[0])
    for p in [*parts[1:], *([final] if final.exists() else [])]:
        _compatible(_read_meta(p), ref, p)
    if ref is None:
        raise ConfigError(f"{parts[0]}: not an ecgtext embedding file", path=str(parts[0]))
    return _merge(final, parts, pq.read_schema(parts[0]))
