"""``ecgtext index``: an embed Parquet file -> a memory-mapped search index folder."""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer


class Kind(str, enum.Enum):
    auto = "auto"
    flat = "flat"
    ivfpq = "ivfpq"
    numpy = "numpy"


def command(
    embeddings: Annotated[Path, typer.Argument(
        help="An 'ecgtext embed' Parquet file or shard folder (ECG or report features).", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The index folder to write.",
                                         show_default=False)] = ...,
    kind: Annotated[Kind, typer.Option(
        "--kind", help="auto: exact FAISS IndexFlatIP up to --flat-max vectors that fit --memory-gb, "
        "IVF-PQ above, exact NumPy without FAISS; or force flat, ivfpq or numpy.")] = Kind.auto,
    metric: Annotated[Optional[list[str]], typer.Option(
        "--metric", help="Scores to build a FAISS index for (repeatable): raw (text -> ECG, zero-shot's "
        "score) and cosine (ECG -> ECG). Default: both.", show_default=False)] = None,
    memory_gb: Annotated[float, typer.Option(
        "--memory-gb", min=0.001, help="Memory budget for the searchable vectors, in GiB.")] = 8.0,
    flat_max: Annotated[int, typer.Option(
        "--flat-max", min=1, help="Most vectors an exact index holds with --kind auto.")] = 4_000_000,
    nlist: Annotated[Optional[int], typer.Option(
        "--nlist", min=1, help="IVF-PQ cells (default ~4 sqrt(N)).", show_default=False)] = None,
    pq_m: Annotated[Optional[int], typer.Option(
        "--pq-m", min=1, help="IVF-PQ sub-quantisers, a divisor of the feature size (default D/4).",
        show_default=False)] = None,
    nprobe: Annotated[Optional[int], typer.Option(
        "--nprobe", min=1, help="IVF-PQ cells searched per query (default nlist/16, at least 8).",
        show_default=False)] = None,
    rerank: Annotated[int, typer.Option(
        "--rerank", min=1, help="IVF-PQ: re-score rerank x k candidates exactly.")] = 10,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing index folder.")] = False,
):
    """Build a search index from an embed Parquet file (see 'ecgtext search').

    The folder holds the features (features.npy, memory-mapped when searching),
    the other columns (rows.parquet), the embeddings' model and provenance
    (index.json) and, with FAISS installed (pip install 'ecgtext[index]'),
    raw.faiss / cosine.faiss. Searching with another model is refused.

    Example: ecgtext index emb.parquet -o emb.index
    """
    from ecgtext.inference.index import GIB, IndexOptions, build_index

    from .logs import STATE

    opts = IndexOptions(kind=kind.value, metrics=tuple(metric or ("raw", "cosine")),
                        memory_budget=int(memory_gb * GIB), flat_max=flat_max, nlist=nlist, pq_m=pq_m,
                        nprobe=nprobe, rerank=rerank, overwrite=overwrite)
    s = build_index(embeddings, output, opts)
    if not STATE.quiet:
        what = ", ".join(f"{k}={v}" for k, v in s.params.items() if k in ("nlist", "m", "nprobe")) or "exact"
        print(f"{s.out}: {s.kind} index of {s.n} x {s.dim} ({what}; {', '.join(s.metrics) or 'no FAISS'}), "
              f"{s.bytes_on_disk / 1e6:.1f} MB", file=sys.stderr)
