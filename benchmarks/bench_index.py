"""Search index benchmark: IVF-PQ recall@10 against exact search, and timings.

A synthetic set of 100k embedding-like vectors (clustered, varied norms) is
written as an ``embed``-shaped Parquet file, indexed three ways (NumPy exact,
FAISS IndexFlatIP, FAISS IVF-PQ with exact re-scoring of its candidates) and
searched with held-out queries by the raw dot product (text -> ECG) and by
cosine (ECG -> ECG). Prints recall@10 of IVF-PQ against exact search (the
acceptance bar is >= 0.9), build and per-query search times, and sizes on disk.

    python benchmarks/bench_index.py [--n 100000] [--dim 128] [--queries 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import cpu_info  # same folder


def synthetic(n: int, dim: int, n_queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Clustered vectors with varied norms (like pooled tanh features), plus held-out queries."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(256, dim))
    sub = rng.normal(size=(256, 8, dim)) * 0.5  # each cluster spans a low-dimensional subspace
    def draw(m):
        c = rng.integers(0, 256, m)
        x = centres[c] + np.einsum("mk,mkd->md", rng.normal(size=(m, 8)), sub[c]) + 0.3 * rng.normal(size=(m, dim))
        return (x * rng.uniform(0.5, 1.5, size=(m, 1))).astype(np.float32)
    return draw(n), draw(n_queries)


def write_parquet(X: np.ndarray, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = {"model": "synthetic@000000000000", "model_name": "synthetic", "model_sha256": "0" * 64,
            "embed_dim": X.shape[1], "modality": "ecg"}
    t = pa.table({"path": [f"rec{i:07d}.hea" for i in range(len(X))],
                  "embedding": pa.FixedSizeListArray.from_arrays(pa.array(X.ravel(), pa.float32()), X.shape[1])})
    pq.write_table(t.replace_schema_metadata({b"ecgtext": json.dumps(meta).encode()}), path, row_group_size=16384)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()

    from ecgtext.inference.index import IndexOptions, build_index, faiss_available, open_embeddings
    from ecgtext.inference.search import search_vectors

    if not faiss_available():
        print("faiss is not installed: pip install 'ecgtext[index]'", file=sys.stderr)
        return 2
    print(f"CPU: {cpu_info()}")
    X, Q = synthetic(args.n, args.dim, args.queries)
    print(f"set: {args.n} x {args.dim} float32 ({X.nbytes / 1e6:.0f} MB), {args.queries} queries, k = {args.k}")
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "emb.parquet"
        write_parquet(X, src)
        for kind in ("numpy", "flat", "ivfpq"):
            t0 = time.perf_counter()
            s = build_index(src, Path(tmp) / kind, IndexOptions(kind=kind))
            build_s = time.perf_counter() - t0
            es = open_embeddings(s.out)
            row = {"build_s": build_s, "disk_mb": s.bytes_on_disk / 1e6, "params": s.params}
            for how in ("raw", "cosine"):
                search_vectors(es, Q[:2], args.k, how)  # warm-up: page in, load the FAISS file
                t0 = time.perf_counter()
                S, I = search_vectors(es, Q, args.k, how)
                row[how] = {"ms_per_query": 1e3 * (time.perf_counter() - t0) / len(Q), "I": I}
            results[kind] = row
    print(f"\n{'index':8} {'build s':>8} {'disk MB':>8} {'raw ms/q':>9} {'cos ms/q':>9} {'recall@10 raw':>14} "
          f"{'recall@10 cos':>14}")
    ok = True
    for kind, row in results.items():
        rec = {}
        for how in ("raw", "cosine"):
            exact = results["numpy"][how]["I"]
            got = row[how]["I"]
            rec[how] = float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(exact, got)]))
        if kind == "ivfpq":
            ok = min(rec.values()) >= 0.9
        print(f"{kind:8} {row['build_s']:8.1f} {row['disk_mb']:8.1f} {row['raw']['ms_per_query']:9.2f} "
              f"{row['cosine']['ms_per_query']:9.2f} {rec['raw']:14.3f} {rec['cosine']:14.3f}")
    p = results["ivfpq"]["params"]
    print(f"\nIVF-PQ: nlist {p['nlist']}, m {p['m']} x {p['nbits']} bits, nprobe {p['nprobe']}, "
          f"{p['rerank']} x k candidates re-scored exactly")
    base = results["numpy"]["raw"]["ms_per_query"]
    print(f"speed-up over exact NumPy (raw): flat {base / results['flat']['raw']['ms_per_query']:.1f}x, "
          f"IVF-PQ {base / results['ivfpq']['raw']['ms_per_query']:.1f}x (one run, same machine)")
    print(f"IVF-PQ recall@10 >= 0.9: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
