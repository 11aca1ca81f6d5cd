"""Embedding sets to search: an ``embed`` Parquet file (or shard folder), or an index folder.

``build_index(EMB.parquet, INDEX_DIR)`` writes a folder that search opens
without reading everything into memory:

- ``index.json``: format, size, dimension, modality (``ecg`` or ``text``), the
  index kind and its parameters, and the embedding file's ecgtext metadata
  copied verbatim (model name and weights sha256, provenance block,
  preprocessing): searching with other weights is refused;
- ``features.npy``: the (N, D) float32 features, memory-mapped at search time
  (exact NumPy search in blocks, exact re-scoring of FAISS candidates);
- ``rows.parquet``: every other column of the embedding file, one row per vector
  (``path``, ``window``, ``start_s``, ... or ``row``, ``text`` for reports);
- with FAISS (``pip install 'ecgtext[index]'``): ``raw.faiss`` (inner product of
  the features, what zero-shot scores) and ``cosine.faiss`` (inner product of the
  L2-normalised features), read with ``faiss.IO_FLAG_MMAP``.

Which FAISS index (``kind="auto"``): exact ``IndexFlatIP`` while the set has at
most ``flat_max`` vectors (4 M) and its float32 features fit in
``memory_budget`` (8 GiB); above, a compressed ``IVF{nlist},PQ{m}`` index
(``nlist`` ~ 4 sqrt(N), ``m`` = D/4 sub-quantisers of 8 bits, halved until the
codes fit the budget) whose candidates are re-scored exactly from
``features.npy``. ``kind`` forces ``flat``, ``ivfpq`` or ``numpy`` (no FAISS
files: exact blocked NumPy search). Without FAISS installed, ``auto`` is
``numpy``: exact, bounded memory, slower on millions of vectors.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ecgtext.errors import ConfigError, DataError, ModelError

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

logger = logging.getLogger(__name__)

INDEX_FORMAT = "ecgtext-index"
INDEX_VERSION = 1
META_FILE = "index.json"
FEATURES_FILE = "features.npy"
ROWS_FILE = "rows.parquet"
METRICS = ("raw", "cosine")
KINDS = ("auto", "flat", "ivfpq", "numpy")
EMBEDDING_COLUMNS = ("embedding", "features", "feature")
META_KEY = b"ecgtext"
GIB = 1 << 30


class IndexFileError(DataError):
    """An embedding file or index folder is missing, empty, unreadable or inconsistent."""


class ModelMismatchError(ModelError):
    """The model given for a search is not the one that wrote the embeddings."""


def faiss_available() -> bool:
    """Whether the optional ``faiss`` package (extra ``ecgtext[index]``) can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- options
@dataclass
class IndexOptions:
    """How :func:`build_index` stores an embedding set (see the module docstring)."""

    kind: str = "auto"
    metrics: tuple[str, ...] = METRICS
    memory_budget: int = 8 * GIB  # bytes the searchable vectors may take
    flat_max: int = 4_000_000  # vectors an exact index holds at most (auto)
    nlist: int | None = None  # IVF cells; None: ~4 sqrt(N), a power of two
    pq_m: int | None = None  # PQ sub-quantisers; None: D/4 (a divisor of D), within the budget
    pq_bits: int = 8
    nprobe: int | None = None  # cells visited per query; None: nlist/16 (at least 8)
    rerank: int = 10  # IVF-PQ: candidates re-scored exactly = rerank * k
    train_size: int | None = None  # vectors to train IVF-PQ on; None: min(N, 64 nlist)
    seed: int = 0
    threads: int | None = None  # FAISS (OpenMP) threads while building; None: FAISS's default (all cores)
    overwrite: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"unknown index kind {self.kind!r}; expected one of {', '.join(KINDS)}",
                              field="index kind", value=self.kind, option="kind")
        self.metrics = tuple(dict.fromkeys(self.metrics))
        bad = [m for m in self.metrics if m not in METRICS]
        if bad or not self.metrics:
            raise ConfigError(f"unknown index metric {', '.join(bad) or '(none)'}; expected raw and/or cosine",
                              field="metric", value=bad, option="metric")
        if self.memory_budget <= 0 or self.flat_max < 1 or self.rerank < 1:
            raise ConfigError("memory budget, flat_max and rerank must be positive")
        if self.pq_bits not in (4, 6, 8, 10, 12, 16):
            raise ConfigError(f"PQ code size {self.pq_bits} bits is not one FAISS offers (4-16)")


# --------------------------------------------------------------------------- the set
@dataclass
class EmbeddingSet:
    """Vectors to search, their rows and where they came from.

    ``X``: (N, D) float32, possibly a read-only memory map; ``rows``: a table of
    N rows (every column of the embedding file but the embedding); ``meta``: the
    embedding file's ecgtext metadata (model, provenance); ``kind``: ``parquet``,
    ``numpy``, ``flat`` or ``ivfpq``; ``params``: the FAISS index parameters.
    """

    X: np.ndarray
    rows: "pa.Table"
    meta: dict[str, Any]
    source: str
    kind: str = "parquet"
    params: dict[str, Any] = field(default_factory=dict)
    metrics: tuple[str, ...] = ()
    _faiss: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    @property
    def dim(self) -> int:
        return int(self.X.shape[1])

    @property
    def modality(self) -> str:
        """``ecg`` (ECG features) or ``text`` (report features)."""
        m = self.meta.get("modality")
        if m in ("ecg", "text"):
            return m
        names = self.rows.column_names
        return "text" if "text" in names and "path" not in names else "ecg"

    @property
    def model_sha256(self) -> str | None:
        """The weights hash of the model that wrote the features (``None``: not recorded)."""
        prov = self.meta.get("provenance")
        if isinstance(prov, dict) and prov.get("weights_sha256"):
            return str(prov["weights_sha256"])
        return self.meta.get("model_sha256")

    @property
    def model_label(self) -> str:
        """``name@<12 hex>`` of the model that wrote the features, or ``unknown``."""
        prov = self.meta.get("provenance")
        if isinstance(prov, dict) and prov.get("model_id"):
            return str(prov["model_id"])
        return str(self.meta.get("model") or "unknown")

    @property
    def model_hint(self) -> str | None:
        """Where the model may be loaded from: the recorded folder if it still exists, else its name."""
        prov = self.meta.get("provenance") if isinstance(self.meta.get("provenance"), dict) else {}
        for cand in (self.meta.get("model_dir"), prov.get("model_source")):
            if cand and os.path.isdir(str(cand)):
                return str(cand)
        return prov.get("model_name") or self.meta.get("model_name")

    def faiss_index(self, metric: str):
        """The FAISS index for ``metric`` (memory-mapped), or ``None`` (none was built)."""
        if metric not in self.metrics or self.kind not in ("flat", "ivfpq"):
            return None
        if metric not in self._faiss:
            import faiss

            path = os.path.join(self.source, f"{metric}.faiss")
            try:
                index = faiss.read_index(path, faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
            except RuntimeError as exc:
                raise IndexFileError(f"{path}: cannot read the FAISS index ({_first_line(exc)})",
                                     path=path) from None
            if index.ntotal != self.n or index.d != self.dim:
                raise IndexFileError(f"{path}: holds {index.ntotal} x {index.d} vectors, the index "
                                     f"{self.n} x {self.dim}", path=path)
            if self.kind == "ivfpq":
                faiss.extract_index_ivf(index).nprobe = int(self.params.get("nprobe", 8))
            self._faiss[metric] = index
        return self._faiss[metric]

    def column(self, name: str) -> list | None:
        """A row column as a Python list (``None`` if the set has no such column)."""
        if name not in self.rows.column_names:
            return None
        return self.rows.column(name).to_pylist()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[-1] if text else type(exc).__name__)[:160]


def _decode_meta(raw: dict[bytes, bytes] | None, where: str) -> dict[str, Any]:
    if not raw or META_KEY not in raw:
        return {}
    try:
        meta = json.loads(raw[META_KEY])
    except (ValueError, UnicodeDecodeError):
        raise IndexFileError(f"{where}: the ecgtext metadata is not valid JSON", path=where) from None
    return meta if isinstance(meta, dict) else {}


def _dataset(path: str):
    """A pyarrow dataset over a Parquet file or a shard folder; one-line errors."""
    import pyarrow.dataset as pads

    if not os.path.exists(path):
        raise IndexFileError(f"{path}: no such embedding file or index folder", path=path)
    try:
        ds = pads.dataset(path, format="parquet")  # skips _work-* and hidden files of a shard folder
        schema = ds.schema
        files = list(ds.files)
    except Exception as exc:  # noqa: BLE001 - not Parquet, truncated, permissions: one line
        logger.debug("%s: %s", path, exc)
        raise IndexFileError(f"{path}: not a readable Parquet file or index folder", path=path) from None
    if not files:
        raise IndexFileError(f"{path}: holds no Parquet files (an embed output or an index folder "
                             f"with {META_FILE} was expected)", path=path)
    emb = next((c for c in EMBEDDING_COLUMNS if c in schema.names), None)
    if emb is None:
        raise IndexFileError(f"{path}: no embedding column (expected one of {', '.join(EMBEDDING_COLUMNS)}; "
                             f"found {', '.join(schema.names[:10])})", path=path)
    import pyarrow.parquet as pq

    meta = _decode_meta(pq.read_schema(files[0]).metadata, path)
    return ds, emb, meta


def _to_matrix(col, where: str) -> np.ndarray:
    """An Arrow list column -> (n, D) float32."""
    import pyarrow as pa

    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    try:
        if pa.types.is_fixed_size_list(col.type) and col.null_count == 0:
            X = col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), col.type.list_size)
        else:
            X = np.array(col.to_pylist(), dtype=np.float32)
    except (ValueError, TypeError):
        raise IndexFileError(f"{where}: the embedding column is not a fixed-length list of numbers",
                             path=where) from None
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise IndexFileError(f"{where}: the embeddings do not form an (N, D) matrix", path=where)
    return X


def _check_finite(X: np.ndarray, where: str, offset: int = 0) -> None:
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0]) + offset
        raise IndexFileError(f"{where}: row {i} has non-finite features", path=where, field="features")


def read_parquet_set(path: str | os.PathLike) -> EmbeddingSet:
    """An ``embed`` Parquet file or shard folder, read into memory (exact search only)."""
    p = os.fspath(path)
    ds, emb, meta = _dataset(p)
    table = ds.to_table()
    if table.num_rows == 0:
        raise IndexFileError(f"{p}: the embedding file has no rows", path=p)
    X = _to_matrix(table.column(emb), p)
    _check_finite(X, p)
    rows = table.drop_columns([emb])
    return EmbeddingSet(X=X, rows=rows, meta=meta, source=p, kind="parquet", metrics=METRICS)


def open_embeddings(path: str | os.PathLike, mmap: bool = True) -> EmbeddingSet:
    """An index folder (see :func:`build_index`) or an ``embed`` Parquet file / shard folder.

    Index folders are memory-mapped (``mmap``); a Parquet file is read into memory.
    Anything missing, empty or unreadable is an :class:`IndexFileError`.
    """
    p = os.fspath(path)
    if os.path.isdir(p) and os.path.exists(os.path.join(p, META_FILE)):
        return _open_index_dir(p, mmap)
    return read_parquet_set(p)


def _open_index_dir(p: str, mmap: bool) -> EmbeddingSet:
    import pyarrow.parquet as pq

    meta_path = os.path.join(p, META_FILE)
    try:
        info = json.loads(Path(meta_path).read_text())
    except (OSError, ValueError) as exc:
        raise IndexFileError(f"{meta_path}: unreadable ({_first_line(exc)})", path=meta_path) from None
    if not isinstance(info, dict) or info.get("format") != INDEX_FORMAT:
        raise IndexFileError(f"{meta_path}: not an ecgtext index", path=meta_path)
    if info.get("version") != INDEX_VERSION:
        raise IndexFileError(f"{meta_path}: index version {info.get('version')!r}; this ecgtext reads "
                             f"version {INDEX_VERSION} (rebuild the index)", path=meta_path)
    try:
        X = np.load(os.path.join(p, FEATURES_FILE), mmap_mode="r" if mmap else None, allow_pickle=False)
        rows = pq.read_table(os.path.join(p, ROWS_FILE))
    except (OSError, ValueError) as exc:
        raise IndexFileError(f"{p}: index files unreadable ({_first_line(exc)})", path=p) from None
    n, d = int(info.get("n", -1)), int(info.get("dim", -1))
    if X.ndim != 2 or X.shape != (n, d) or rows.num_rows != n or X.dtype != np.float32:
        raise IndexFileError(f"{p}: index files disagree (features {X.shape} {X.dtype}, {rows.num_rows} rows, "
                             f"{META_FILE} says {n} x {d})", path=p)
    if n == 0:
        raise IndexFileError(f"{p}: the index is empty", path=p)
    kind = info.get("kind", "numpy")
    if kind in ("flat", "ivfpq") and not faiss_available():
        logger.warning("%s: FAISS is not installed; searching its features exactly with NumPy instead", p)
        kind = "numpy"
    meta = dict(info.get("embeddings") or {})
    if info.get("modality"):
        meta.setdefault("modality", info["modality"])
    return EmbeddingSet(X=X, rows=rows, meta=meta, source=p, kind=kind, params=dict(info.get("params") or {}),
                        metrics=tuple(info.get("metrics") or ()))


# --------------------------------------------------------------------------- building
@dataclass
class IndexSummary:
    """What :func:`build_index` wrote."""

    out: Path
    n: int
    dim: int
    kind: str
    metrics: tuple[str, ...]
    params: dict[str, Any]
    bytes_on_disk: int


def choose_kind(n: int, dim: int, opts: IndexOptions, have_faiss: bool) -> str:
    """The index kind for ``n`` vectors of ``dim`` floats under ``opts`` (see the module docstring)."""
    if opts.kind != "auto":
        if opts.kind in ("flat", "ivfpq") and not have_faiss:
            raise ConfigError(f"a {opts.kind} index needs FAISS: pip install 'ecgtext[index]'",
                              field="index kind", value=opts.kind, option="kind")
        return opts.kind
    if not have_faiss:
        return "numpy"
    if n <= opts.flat_max and n * dim * 4 <= opts.memory_budget:
        return "flat"
    return "ivfpq"


def ivfpq_params(n: int, dim: int, opts: IndexOptions) -> dict[str, Any]:
    """``nlist``, ``m``, ``nbits``, ``nprobe``, ``rerank``, ``train_size`` of an IVF-PQ index."""
    nlist = opts.nlist or max(16, min(65536, 2 ** round(math.log2(4 * math.sqrt(max(n, 1))))))
    nlist = int(min(nlist, max(1, n // 39)))  # FAISS wants >= 39 training points per cell
    if opts.pq_m is not None:
        if dim % opts.pq_m:
            raise ConfigError(f"PQ sub-quantisers ({opts.pq_m}) must divide the feature size {dim}",
                              field="pq_m", value=opts.pq_m, option="pq_m")
        m = opts.pq_m
    else:
        m = max(d for d in range(1, max(1, dim // 4) + 1) if dim % d == 0)
        while m > 1 and n * m * opts.pq_bits / 8 > opts.memory_budget:
            m = max(d for d in range(1, m) if dim % d == 0)
    nprobe = opts.nprobe or max(8, nlist // 16)
    train = opts.train_size or min(n, 64 * nlist)
    return {"nlist": nlist, "m": int(m), "nbits": opts.pq_bits, "nprobe": int(min(nprobe, nlist)),
            "rerank": opts.rerank, "train_size": int(train), "seed": opts.seed}


def _iter_batches(ds, emb: str, where: str, batch_rows: int = 16384):
    offset = 0
    for batch in ds.to_batches(columns=[emb], batch_size=batch_rows):
        if batch.num_rows == 0:
            continue
        X = _to_matrix(batch.column(0), where)
        _check_finite(X, where, offset)
        yield offset, X
        offset += batch.num_rows


def build_index(source: str | os.PathLike, out_dir: str | os.PathLike,
                options: IndexOptions | None = None) -> IndexSummary:
    """Write an index folder for the ``embed`` Parquet file / shard folder ``source``.

    Streams the embeddings in batches into ``features.npy`` (memory stays bounded
    by one batch plus, for IVF-PQ, the training sample) and adds them to the FAISS
    indexes. The folder appears atomically; an existing one is refused unless
    ``options.overwrite``.
    """
    from ecgtext import __version__

    opts = options or IndexOptions()
    src = os.fspath(source)
    out = Path(out_dir)
    if os.path.isdir(src) and os.path.exists(os.path.join(src, META_FILE)):
        raise ConfigError(f"{src} is already an index folder; build from the embed Parquet file", path=src)
    if out.exists() and not opts.overwrite:
        raise ConfigError(f"{out} exists; choose another folder or overwrite it", path=str(out),
                          option="overwrite")
    ds, emb, meta = _dataset(src)
    n = ds.count_rows()
    if n == 0:
        raise IndexFileError(f"{src}: the embedding file has no rows", path=src)
    first = next(iter(ds.to_batches(columns=[emb], batch_size=1)), None)
    dim = int(_to_matrix(first.column(0), src).shape[1]) if first is not None else 0
    if dim == 0:
        raise IndexFileError(f"{src}: embeddings have no elements", path=src)
    have_faiss = faiss_available()
    kind = choose_kind(n, dim, opts, have_faiss)
    params: dict[str, Any] = {}
    if kind == "ivfpq":
        params = ivfpq_params(n, dim, opts)
    metrics = opts.metrics if kind != "numpy" else ()

    from ecgtext.fsutil import atomic_dir

    # built next to ``out`` and swapped in: an existing index survives any failure (and the umask applies)
    with atomic_dir(out) as tmp:
        feats = np.lib.format.open_memmap(tmp / FEATURES_FILE, mode="w+", dtype=np.float32, shape=(n, dim))
        for off, X in _iter_batches(ds, emb, src):
            if X.shape[1] != dim:
                raise IndexFileError(f"{src}: rows have {X.shape[1]} and {dim} features", path=src)
            feats[off:off + len(X)] = X
        feats.flush()
        del feats
        X = np.load(tmp / FEATURES_FILE, mmap_mode="r")
        import pyarrow.parquet as pq

        rows = ds.to_table(columns=[c for c in ds.schema.names if c != emb])
        pq.write_table(rows, tmp / ROWS_FILE)
        for metric in metrics:
            _write_faiss(X, tmp / f"{metric}.faiss", kind, metric, params, opts.threads)
        del X
        modality = meta.get("modality") or ("text" if "text" in rows.column_names and "path"
                                            not in rows.column_names else "ecg")
        info = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "ecgtext_version": __version__,
                "n": int(n), "dim": dim, "modality": modality, "kind": kind, "metrics": list(metrics),
                "params": params, "memory_budget": int(opts.memory_budget), "flat_max": int(opts.flat_max),
                "source": os.path.abspath(src), "embedding_column": emb, "embeddings": meta}
        (tmp / META_FILE).write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    logger.info("%s: %s index of %d x %d vectors (%s), %.1f MB", out, kind, n, dim, ",".join(metrics) or "numpy",
                size / 1e6)
    return IndexSummary(out=out, n=int(n), dim=dim, kind=kind, metrics=tuple(metrics), params=params,
                        bytes_on_disk=size)


def normalise_rows(X: np.ndarray) -> np.ndarray:
    """L2-normalised float32 copy of (n, D) ``X`` (zero rows stay zero), as ``score(how="cosine")``."""
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X.astype(np.float64), axis=1, keepdims=True)
    return (X / np.maximum(norms, 1e-12)).astype(np.float32)


def _write_faiss(X: np.ndarray, path: Path, kind: str, metric: str, params: dict[str, Any],
                 threads: int | None = None, block: int = 65536) -> None:
    import faiss

    before = faiss.omp_get_max_threads()
    if threads:  # OpenMP threads spin while they wait: on a busy machine fewer can be much faster
        faiss.omp_set_num_threads(int(threads))
    try:
        _build_faiss(faiss, X, path, kind, metric, params, block)
    finally:
        faiss.omp_set_num_threads(before)


def _build_faiss(faiss, X: np.ndarray, path: Path, kind: str, metric: str, params: dict[str, Any],
                 block: int) -> None:
    n, dim = X.shape
    prep = normalise_rows if metric == "cosine" else (lambda a: np.ascontiguousarray(a, dtype=np.float32))
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    else:
        index = faiss.index_factory(dim, f"IVF{params['nlist']},PQ{params['m']}x{params['nbits']}",
                                    faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.downcast_index(index)
        if hasattr(ivf, "do_polysemous_training"):
            ivf.do_polysemous_training = False  # Hamming-order codes: minutes of annealing, unused here
        rng = np.random.default_rng(params["seed"])
        take = np.sort(rng.choice(n, size=params["train_size"], replace=False))
        index.train(prep(X[take]))
    for i in range(0, n, block):
        index.add(prep(X[i:i + block]))
    faiss.write_index(index, str(path))


def index_info(path: str | os.PathLike) -> dict[str, Any]:
    """The ``index.json`` of an index folder (for ``ecgtext index --info``)."""
    s = open_embeddings(path)
    return {"source": s.source, "kind": s.kind, "n": s.n, "dim": s.dim, "modality": s.modality,
            "metrics": list(s.metrics), "params": s.params, "model": s.model_label}


def options_dict(opts: IndexOptions) -> dict[str, Any]:
    return asdict(opts)
