"""Retrieval over an embedding set: text -> ECGs, ECG -> ECGs, ECG -> reports.

Scores are those of ``zeroshot`` (:func:`ecgtext.inference.zeroshot.score`):

- across modalities (text queries against ECG features, ECG queries against
  report features): ``raw`` dot product of the unimodal features (default, the
  paper's zero-shot score), ``cosine``, or ``softmax`` of the raw scores over the
  queries of one call divided by the temperature (a record's probabilities over
  the queries, as zero-shot's over its label set; with one query every score is 1);
- within a modality (ECG -> ECGs, text -> reports): cosine of the features.

Query texts are lower-cased and encoded one at a time, exactly like zero-shot
label descriptions (and cached the same way). Results are the top ``k`` rows,
best first; equal scores keep the row order of the embedding set. ``k`` above
the set's size is clamped to it (logged).

Exact search (``numpy`` sets, Parquet files, and every ``softmax`` search) scans
the features in blocks of ``block_size`` rows, so memory stays at about
``block_size x (D + queries)`` float64 values whatever the set's size. FAISS
indexes supply candidates (``k`` plus a margin for a flat index, ``rerank x k``
for IVF-PQ) that are re-scored exactly from the stored features, so reported
scores always equal zero-shot's.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from ecgtext.errors import ConfigError, InputError
from ecgtext.inference.index import EmbeddingSet, ModelMismatchError, open_embeddings

if TYPE_CHECKING:  # pragma: no cover
    from ecgtext.io import ReadOptions
    from ecgtext.model.dbeta import DBeta

logger = logging.getLogger(__name__)

DEFAULT_BLOCK = 65536
FLAT_MARGIN = 8  # extra flat-index candidates: float32 near-ties re-sorted in float64


class QueryError(ConfigError):
    """No usable query was given (empty query file, no text, no readable ECG)."""


@dataclass
class SearchOptions:
    """How to score and how many results (see the module docstring)."""

    k: int = 10
    how: str = "raw"  # cross-modal score: raw, cosine or softmax
    temperature: float = 1.0
    block_size: int = DEFAULT_BLOCK
    lowercase: bool = True
    use_cache: bool = True
    exact: bool = False  # ignore FAISS indexes, scan the features

    def __post_init__(self):
        from ecgtext.inference.zeroshot import SCORES

        if self.k < 1:
            raise ConfigError(f"k must be at least 1, got {self.k}", field="k", value=self.k, option="top_k")
        if self.how not in SCORES:
            raise ConfigError(f"unknown score {self.how!r}; expected one of {', '.join(SCORES)}",
                              field="score", value=self.how, option="score")
        if self.block_size < 1:
            raise ConfigError(f"block size must be at least 1, got {self.block_size}", option="block_size")


@dataclass
class Hit:
    """One result row: the ``rank``-th best row of the set for ``query``."""

    query: str
    rank: int  # 1-based
    row: int  # row of the embedding set
    score: float
    score_name: str
    path: str | None = None  # ECG sets
    window: int | None = None
    start_s: float | None = None
    text: str | None = None  # report sets
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"query": self.query, "rank": self.rank}
        if self.path is not None:
            d["path"] = self.path
        if self.window is not None:
            d["window"] = self.window
            d["start_s"] = self.start_s
        if self.text is not None:
            d["text"] = self.text
        d["score"] = self.score
        d["score_name"] = self.score_name
        d["row"] = self.row
        d.update(self.extra)
        return d


# --------------------------------------------------------------------------- core
def _merge_topk(best_s: np.ndarray, best_i: np.ndarray, s: np.ndarray, i: np.ndarray, k: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Per query (row), the k best of the union, best first; equal scores: smaller row first."""
    S = np.concatenate([best_s, s], axis=1)
    I = np.concatenate([best_i, i], axis=1)
    if S.shape[1] > k:  # argpartition first: linear in the block, then sort only the few kept
        kth = -np.partition(-S, k - 1, axis=1)[:, k - 1:k]
    else:
        kth = np.full((S.shape[0], 1), -np.inf, dtype=S.dtype)
    out_s = np.empty((S.shape[0], min(k, S.shape[1])), S.dtype)
    out_i = np.empty(out_s.shape, np.int64)
    for q in range(S.shape[0]):
        keep = S[q] >= kth[q, 0]  # ties with the k-th stay in the running
        ss, ii = S[q, keep], I[q, keep]
        o = np.lexsort((ii, -ss))[:k]
        out_s[q], out_i[q] = ss[o], ii[o]
    return out_s, out_i


def exact_search(X: np.ndarray, Q: np.ndarray, k: int, how: str = "raw", temperature: float = 1.0,
                 block_size: int = DEFAULT_BLOCK, rows: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` rows of (N, D) ``X`` for each of the (M, D) queries ``Q`` by ``score(X, Q, how)``.

    Reads ``X`` ``block_size`` rows at a time (a memory map stays on disk);
    ``rows`` restricts the scan to those row indices. Returns (scores (M, k')
    float32, rows (M, k') int64), best first, ``k' = min(k, N)``.
    """
    from ecgtext.inference.zeroshot import score

    Q = np.asarray(Q, dtype=np.float32)
    n = X.shape[0] if rows is None else len(rows)
    k = min(k, n)
    M = Q.shape[0]
    best_s = np.empty((M, 0), np.float32)
    best_i = np.empty((M, 0), np.int64)
    for start in range(0, n, block_size):
        if rows is None:
            idx = np.arange(start, min(n, start + block_size), dtype=np.int64)
            block = np.array(X[start:start + block_size], dtype=np.float32)  # a copy: memmaps are read-only
        else:
            idx = np.asarray(rows[start:start + block_size], dtype=np.int64)
            block = np.array(X[np.sort(idx)], dtype=np.float32)
            idx = np.sort(idx)
        s = score(block, Q, how, temperature).T  # (M, b): a record's softmax is over the queries
        best_s, best_i = _merge_topk(best_s, best_i, s, np.broadcast_to(idx, s.shape), k)
    return best_s, best_i


def search_vectors(es: EmbeddingSet, Q: np.ndarray, k: int, how: str = "raw", temperature: float = 1.0,
                   block_size: int = DEFAULT_BLOCK, exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` rows of the set for each (M, D) query; FAISS candidates re-scored exactly
    (see the module docstring). Returns (scores (M, k'), rows (M, k'))."""
    Q = np.asarray(Q, dtype=np.float32)
    if Q.ndim != 2 or Q.shape[1] != es.dim:
        raise ConfigError(f"{es.source}: queries have {Q.shape[-1]} features, the set {es.dim} "
                          "(features from a different model?)", path=es.source, field="feature size")
    k_eff = min(k, es.n)
    if k > es.n:
        logger.info("%s holds %d rows: returning %d results per query instead of %d", es.source, es.n, es.n, k)
    index = None if (exact or how == "softmax") else es.faiss_index(how)
    if index is None:
        return exact_search(es.X, Q, k_eff, how, temperature, block_size)
    return _faiss_search(es, index, Q, k_eff, how, temperature, block_size)


def _faiss_search(es: EmbeddingSet, index, Q: np.ndarray, k: int, how: str, temperature: float,
                  block_size: int) -> tuple[np.ndarray, np.ndarray]:
    from ecgtext.inference.index import normalise_rows

    want = k * int(es.params.get("rerank", 10)) if es.kind == "ivfpq" else k + FLAT_MARGIN
    want = min(want, es.n)
    q = normalise_rows(Q) if how == "cosine" else np.ascontiguousarray(Q)
    _, cand = index.search(q, want)
    out_s, out_i = [], []
    for m in range(Q.shape[0]):
        c = np.unique(cand[m][cand[m] >= 0])
        if len(c) < k:  # the probed cells held too few vectors: scan everything for this query
            s, i = exact_search(es.X, Q[m:m + 1], k, how, temperature, block_size)
        else:
            s, i = exact_search(es.X, Q[m:m + 1], k, how, temperature, block_size=len(c), rows=c)
        out_s.append(s[0])
        out_i.append(i[0])
    return np.stack(out_s), np.stack(out_i)


# --------------------------------------------------------------------------- queries and models
def read_query_file(path: str | os.PathLike) -> list[str]:
    """Queries from a text file, one per line; blank lines and ``#`` comments skipped."""
    p = os.fspath(path)
    try:
        with open(p, encoding="utf-8") as fh:
            lines = [line.strip() for line in fh]
    except OSError as exc:
        raise QueryError(f"{p}: cannot read the query file ({exc.strerror})", path=p) from None
    except UnicodeDecodeError:
        raise QueryError(f"{p}: the query file is not UTF-8 text", path=p) from None
    queries = [q for q in lines if q and not q.startswith("#")]
    if not queries:
        raise QueryError(f"{p}: the query file holds no queries (one per line expected)", path=p)
    return queries


def check_model(es: EmbeddingSet, model_dir: str | os.PathLike):
    """Refuse (:class:`ModelMismatchError`) a model whose weights differ from those that wrote
    the set; returns the model's identity. A set without a recorded model is searched with a warning."""
    from ecgtext.inference.engine import model_identity

    ident = model_identity(model_dir)
    recorded = es.model_sha256
    if recorded is None:
        logger.warning("%s records no model, so the model cannot be checked; searching with %s",
                       es.source, ident.short())
    elif recorded != ident.weights_sha256:
        raise ModelMismatchError(
            f"{es.source}: the embeddings were written by {es.model_label}, the model given is {ident.short()}; "
            "search with the model that wrote them", path=es.source, field="model",
            value=(es.model_label, ident.short()), option="model")
    return ident


def resolve_search_model(es: EmbeddingSet, model: "str | os.PathLike | DBeta | None"):
    """The model directory to embed queries with: ``model``, else the one the set records; checked."""
    from ecgtext.hub.load import resolve_source
    from ecgtext.model.dbeta import DBeta

    if isinstance(model, DBeta):
        if model.model_dir is None:
            raise ConfigError("the model has no directory, so its weights cannot be checked; load it with "
                              "ecgtext.load_model(...)", field="model")
        check_model(es, model.model_dir)
        return model
    source = model if model is not None else es.model_hint
    if source is None:
        raise ConfigError(f"{es.source} does not record its model; name the model to embed the queries with",
                          path=es.source, field="model", option="model")
    d = resolve_source(source)
    check_model(es, d)
    return d


def text_features(model: "str | os.PathLike | DBeta", texts: Sequence[str], lowercase: bool = True,
                  use_cache: bool = True) -> np.ndarray:
    """(M, D) unimodal text features of ``texts``, exactly as zero-shot encodes label descriptions."""
    from ecgtext.inference.zeroshot import label_features

    unique = list(dict.fromkeys(texts))
    feats = label_features(model, {t: t for t in unique}, lowercase, use_cache).numpy()
    pos = {t: i for i, t in enumerate(unique)}
    return feats[[pos[t] for t in texts]]


def ecg_features(model: "str | os.PathLike | DBeta", paths: Sequence[str], read_options: "ReadOptions | None" = None,
                 *, aggregate: str = "mean", batch_size: int = 32, num_workers: int | None = None, device=None,
                 precision: str = "auto") -> tuple[list[str], np.ndarray, list[InputError]]:
    """(record keys, (M, D) record features, errors) for ECG query files."""
    from ecgtext.inference.engine import embed_paths, load_ecg_model
    from ecgtext.model.dbeta import DBeta

    net = model if isinstance(model, DBeta) else load_ecg_model(model, device=device)
    X, keys, errs = embed_paths(paths, net, read_options, batch_size=batch_size, num_workers=num_workers or 0,
                                device=device, precision=precision, aggregate=aggregate)
    return keys, X, errs


# --------------------------------------------------------------------------- search
@dataclass
class SearchResult:
    """Hits of every query (query order, best first), and ECG query files that failed."""

    hits: list[Hit]
    errors: list[InputError]
    score_name: str
    modality: str  # of the searched set
    n: int  # rows searched


def _hits(es: EmbeddingSet, queries: Sequence[str], S: np.ndarray, I: np.ndarray, score_name: str,
          columns: Sequence[str] = ()) -> list[Hit]:
    names = es.rows.column_names
    want = [c for c in (names if "all" in columns else columns)
            if c not in ("path", "window", "start_s", "text")]
    missing = [c for c in want if c not in names]
    if missing:
        raise ConfigError(f"{es.source} has no column(s) {', '.join(missing)} (it has {', '.join(names)})",
                          path=es.source, field="columns", value=missing, option="columns")
    flat = np.unique(I.ravel())
    sub = es.rows.take(flat)
    pos = {int(r): j for j, r in enumerate(flat)}
    cols = {c: sub.column(c).to_pylist() for c in {"path", "window", "start_s", "text", *want} if c in names}
    out = []
    for qi, q in enumerate(queries):
        for rank, (s, r) in enumerate(zip(S[qi], I[qi]), start=1):
            j = pos[int(r)]
            at = {c: v[j] for c, v in cols.items()}
            out.append(Hit(query=q, rank=rank, row=int(r), score=float(s), score_name=score_name,
                           path=at.get("path"), window=at.get("window"), start_s=at.get("start_s"),
                           text=at.get("text"), extra={c: at[c] for c in want}))
    return out


def search(index: "EmbeddingSet | str | os.PathLike", *, texts: Sequence[str] = (), ecgs: Sequence[str] = (),
           model: "str | os.PathLike | DBeta | None" = None, options: SearchOptions | None = None,
           read_options: "ReadOptions | None" = None, columns: Sequence[str] = (), batch_size: int = 32,
           num_workers: int | None = None, device=None, precision: str = "auto") -> SearchResult:
    """Search ``index`` (an :class:`EmbeddingSet`, index folder or ``embed`` Parquet file)
    with text queries (``texts``) or ECG files (``ecgs``), not both.

    Text queries need an ECG set (report sets: text -> reports by cosine); ECG
    queries search ECG sets by cosine and report sets by the cross-modal score.
    The query model must be the one that wrote the set (checked by weights
    hash; default: the model the set records).
    """
    opts = options or SearchOptions()
    if bool(texts) == bool(ecgs):
        raise QueryError("give text queries or ECG files to search with, not both" if texts else
                         "no queries: give query texts or ECG files")
    es = index if isinstance(index, EmbeddingSet) else open_embeddings(index)
    query_modality = "text" if texts else "ecg"
    same = query_modality == es.modality
    how = "cosine" if same else opts.how
    model_ref = resolve_search_model(es, model)
    errors: list[InputError] = []
    if texts:
        queries = [str(t) for t in texts]
        if any(not q.strip() for q in queries):
            raise QueryError("a query text is empty", field="query")
        Q = text_features(model_ref, queries, opts.lowercase, opts.use_cache)
    else:
        agg = es.meta.get("aggregate") or "mean"
        queries, Q, errors = ecg_features(model_ref, list(ecgs), read_options, aggregate=agg,
                                          batch_size=batch_size, num_workers=num_workers, device=device,
                                          precision=precision)
        if not queries:
            first = f": {errors[0]}" if errors else ""
            raise QueryError(f"no ECG query could be read{first}", field="query")
    S, I = search_vectors(es, Q, opts.k, how, opts.temperature, opts.block_size, opts.exact)
    return SearchResult(hits=_hits(es, queries, S, I, how, columns), errors=errors, score_name=how,
                        modality=es.modality, n=es.n)


def iter_plots(result: SearchResult, out_dir: str | os.PathLike, read_options: "ReadOptions | None" = None,
               model_label: str | None = None) -> Iterator[tuple[Hit, "str | InputError"]]:
    """Draw each retrieved ECG (12-lead layout) to ``out_dir/q<NN>-r<NN>-<record>.png`` with the
    query, rank and score in its title; yields (hit, written path or the record's error)."""
    from ecgtext.errors import EcgTextError
    from ecgtext.io import read_ecg
    from ecgtext.plot import plot_ecg, plot_name

    os.makedirs(out_dir, exist_ok=True)
    order: dict[str, int] = {}
    for h in result.hits:
        if h.path is None:
            continue
        qn = order.setdefault(h.query, len(order) + 1)
        target = os.path.join(os.fspath(out_dir), f"q{qn:02d}-r{h.rank:02d}-{plot_name(h.path)}")
        where = f" window {h.window} @ {h.start_s:g} s" if h.window is not None else ""
        title = f"\u201c{h.query}\u201d  #{h.rank}  {h.score_name} {h.score:.4g}{where}  \u00b7  {h.path}"
        try:
            plot_ecg(read_ecg(h.path, read_options), target, title=title,
                     model=model_label)
        except EcgTextError as exc:
            yield h, exc if isinstance(exc, InputError) else InputError(h.path, str(exc))
            continue
        yield h, target
