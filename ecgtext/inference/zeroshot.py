"""Zero-shot classification: score ECG features against label descriptions.

As in the paper, a record's score for a label is the raw dot product of its
unimodal ECG feature and the unimodal text feature of the label's
**lower-cased** description (``how="raw"``). ``cosine`` normalises both
features first; ``softmax`` turns the raw scores of a label set into
probabilities, ``softmax(raw / temperature)``. The default temperature 1 is the
scale D-BETA was trained with (its ECG-text loss uses logit scale 1, no bias).

Label text features are cached on disk (``$ECGTEXT_CACHE/text-features/``),
keyed by the model's weights hash, the tokenizer files, the label set and the
lower-casing, so a repeated run never builds the text tower: it loads only the
ECG path of the model and never imports ``transformers``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import torch

from ecgtext.errors import ConfigError, InputError

if TYPE_CHECKING:  # pragma: no cover
    from ecgtext.inference.engine import EngineOptions
    from ecgtext.io import ReadOptions
    from ecgtext.model.dbeta import DBeta

logger = logging.getLogger(__name__)
SCORES = ("raw", "cosine", "softmax")
CACHE_FORMAT = 1  # bump when the cached content or key changes meaning


# --------------------------------------------------------------------------- scoring
def score(ecg_feats: torch.Tensor | np.ndarray, label_feats: torch.Tensor | np.ndarray,
          how: str = "raw", temperature: float = 1.0) -> np.ndarray:
    """(N, D) ECG features x (K, D) label features -> (N, K) float32 scores.

    ``raw``: dot product (the paper); ``cosine``: dot product of L2-normalised
    features, in [-1, 1]; ``softmax``: ``softmax(raw / temperature)`` over the K labels.
    """
    if how not in SCORES:
        raise ConfigError(f"unknown score {how!r}; expected one of {', '.join(SCORES)}")
    if how == "softmax" and not temperature > 0:
        raise ConfigError(f"temperature must be positive, got {temperature}")
    e = torch.as_tensor(np.asarray(ecg_feats) if not isinstance(ecg_feats, torch.Tensor) else ecg_feats,
                        dtype=torch.float64)
    t = torch.as_tensor(np.asarray(label_feats) if not isinstance(label_feats, torch.Tensor) else label_feats,
                        dtype=torch.float64)
    if how == "cosine":
        e = torch.nn.functional.normalize(e, dim=-1)
        t = torch.nn.functional.normalize(t, dim=-1)
    s = e @ t.T
    if how == "softmax":
        s = torch.softmax(s / temperature, dim=-1)
    return s.float().numpy()


# --------------------------------------------------------------------------- text cache
def _tokenizer_digest(model_dir: Path) -> str:
    from ecgtext.fsutil import file_sha256
    from ecgtext.model.tokenizer import TOKENIZER_FILES

    h = hashlib.sha256()
    for name in TOKENIZER_FILES:
        f = model_dir / name
        if f.is_file():
            h.update(f"{name}:{file_sha256(f)}\n".encode())
    return h.hexdigest()


def label_cache_key(model_dir: str | os.PathLike, labels: dict[str, str], lowercase: bool = True) -> str:
    """The cache key of a label set's text features for one model (hex sha256)."""
    from ecgtext.inference.engine import model_identity

    d = Path(model_dir)
    ident = model_identity(d)
    payload = {"format": CACHE_FORMAT, "weights": ident.weights_sha256, "tokenizer": _tokenizer_digest(d),
               "lowercase": bool(lowercase), "labels": [[k, v] for k, v in labels.items()]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _cache_files(key: str) -> tuple[Path, Path]:
    from ecgtext.fsutil import cache_dir

    d = cache_dir("text-features")
    return d / f"{key}.npy", d / f"{key}.json"


def cached_label_features(key: str, labels: dict[str, str]) -> torch.Tensor | None:
    """The cached (K, D) features for ``key``, or ``None`` (missing or unusable entry)."""
    npy, meta = _cache_files(key)
    try:
        info = json.loads(meta.read_text())
        arr = np.load(npy, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if info.get("codes") != list(labels) or arr.ndim != 2 or arr.shape[0] != len(labels):
        return None
    return torch.from_numpy(arr.astype(np.float32, copy=False))


def _store(key: str, labels: dict[str, str], feats: torch.Tensor, info: dict) -> None:
    import io

    from ecgtext.fsutil import atomic_write_bytes, atomic_write_text

    npy, meta = _cache_files(key)
    buf = io.BytesIO()
    np.save(buf, feats.detach().float().cpu().numpy(), allow_pickle=False)
    try:  # the array first: an entry counts only once its .json exists
        atomic_write_bytes(npy, buf.getvalue())
        atomic_write_text(meta, json.dumps({**info, "codes": list(labels), "texts": list(labels.values())},
                                           indent=1))
    except OSError:
        pass  # a read-only cache only costs speed


def compute_label_features(model: "DBeta", labels: dict[str, str], lowercase: bool = True) -> torch.Tensor:
    """(K, D) float32 unimodal text features, one description at a time (no padding,
    exactly as the reference tokenises them)."""
    out = []
    with torch.inference_mode():
        for text in labels.values():
            ids, mask = model.tokenize([text], lowercase=lowercase)
            out.append(model.encode_text(ids.to(model.device), mask.to(model.device)).float().cpu())
    return torch.cat(out)


def label_features(model_or_source: "DBeta | str | os.PathLike", labels: dict[str, str],
                   lowercase: bool = True, use_cache: bool = True) -> torch.Tensor:
    """(K, D) float32 CPU features of the label descriptions, from the disk cache when possible.

    ``model_or_source`` is a loaded full model, or a model directory / registry
    name / ``hf-hub:`` id (the text tower is then loaded only on a cache miss).
    """
    from ecgtext.hub.load import load_model, resolve_source
    from ecgtext.model.dbeta import DBeta

    if not labels:
        raise ConfigError("no labels to score: give a label set (a built-in name or a JSON file) or "
                          "CODE=description labels", field="labels", option="labels")
    model = model_or_source if isinstance(model_or_source, DBeta) else None
    model_dir = model.model_dir if model is not None else resolve_source(model_or_source)
    key = None
    if use_cache and model_dir is not None:
        key = label_cache_key(model_dir, labels, lowercase)
        hit = cached_label_features(key, labels)
        if hit is not None:
            return hit
    if model is None or model.components != "all":
        model = load_model(model_dir if model_dir is not None else model_or_source, components="all")
    feats = compute_label_features(model, labels, lowercase)
    if key is not None:
        from ecgtext.inference.engine import model_identity

        _store(key, labels, feats, {"model": model_identity(model_dir).short(), "lowercase": lowercase})
    return feats


# --------------------------------------------------------------------------- running
@dataclass
class ZeroShotResult:
    """Scores of one record (``window is None``) or of one window of it."""

    path: str
    scores: dict[str, float]  # code -> score, in label-set order
    n_windows: int
    window: int | None = None
    start_s: float | None = None
    source_fs: float | None = None
    duration_s: float | None = None
    missing_leads: list[str] = field(default_factory=list)
    flat_leads: list[str] = field(default_factory=list)
    provenance: dict | None = None  # Provenance.to_dict() of the run (shared by all its results)

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` best (code, score), best first."""
        return sorted(self.scores.items(), key=lambda kv: -kv[1])[:k]

    def to_dict(self, top_k: int = 3) -> dict:
        """JSON-ready result. ``path`` is valid UTF-8 on one line (``display_path``); a name
        that needed escaping also gets ``path_bytes_hex``, its exact bytes."""
        from ecgtext.errors import display_path

        d: dict = {"path": display_path(self.path)}
        if d["path"] != self.path:
            d["path_bytes_hex"] = os.fsencode(self.path).hex()
        if self.window is not None:
            d["window"] = self.window
            d["start_s"] = round(float(self.start_s or 0.0), 6)
        d["scores"] = {k: float(v) for k, v in self.scores.items()}
        d["top"] = [k for k, _ in self.top(top_k)]
        d["windows"] = self.n_windows
        d["fs"] = self.source_fs
        d["missing_leads"] = list(self.missing_leads)
        if self.provenance is not None:
            d["provenance"] = self.provenance
        return d


def mean_over_windows(windows: Sequence[ZeroShotResult]) -> ZeroShotResult:
    """One record-level result from its per-window results: the mean score per class."""
    first = windows[0]
    if len(windows) == 1 and first.window is None:
        return first
    mean = {c: sum(w.scores[c] for w in windows) / len(windows) for c in first.scores}
    return dataclasses.replace(first, scores=mean, window=None, start_s=None)


def _prepare_run(model: "DBeta | str | os.PathLike", labels: dict[str, str], lowercase: bool, use_cache: bool,
                 device) -> tuple["DBeta", torch.Tensor]:
    """The ECG model and label features; on a cache hit only the ECG path is loaded."""
    from ecgtext.hub.load import load_model, resolve_source
    from ecgtext.inference.engine import load_ecg_model
    from ecgtext.model.dbeta import DBeta

    if isinstance(model, DBeta):
        return model, label_features(model, labels, lowercase, use_cache)
    model_dir = resolve_source(model)
    if use_cache:
        hit = cached_label_features(label_cache_key(model_dir, labels, lowercase), labels)
        if hit is not None:
            return load_ecg_model(model_dir, device=device), hit
    full = load_model(model_dir, components="all")
    feats = label_features(full, labels, lowercase, use_cache)
    return full, feats


def run_zeroshot(paths: Sequence[str], model: "DBeta | str | os.PathLike", labels: dict[str, str],
                 read_options: "ReadOptions | None" = None, *, how: str = "raw", temperature: float = 1.0,
                 per_window: bool = False, lowercase: bool = True, use_cache: bool = True,
                 engine: "EngineOptions | None" = None, **options) -> Iterator[ZeroShotResult | InputError]:
    """Stream zero-shot results in input order: one :class:`ZeroShotResult` per record
    (mean of its window scores) or, with ``per_window``, one per window; a record
    that cannot be read yields its :class:`InputError` in place. ``engine`` (or the same
    fields as keywords) says how features are computed: see :class:`~ecgtext.inference.engine.EngineOptions`."""
    from ecgtext.inference.engine import EngineOptions, iter_features, resolve_device

    o = EngineOptions.merge(engine, options, "run_zeroshot")
    device, precision, stride, min_coverage = o.device, o.precision, o.stride, o.min_coverage
    from ecgtext.inference.provenance import provenance_for

    score(np.zeros((1, 1)), np.zeros((1, 1)), how, temperature)  # validate before any loading
    dev = resolve_device(device)
    net, text = _prepare_run(model, labels, lowercase, use_cache, dev)
    if text.shape[1] != net.embed_dim:
        raise ConfigError(f"label features have size {text.shape[1]}, the model's ECG features {net.embed_dim}")
    prov = provenance_for(net, device=dev, precision=precision, stride=stride, min_coverage=min_coverage,
                          source=model if isinstance(model, (str, os.PathLike)) else None)
    logger.info("zero-shot with %s on %s, precision %s, %d labels", prov.model_id, dev, prov.precision,
                len(labels))
    prov_dict = prov.to_dict()
    codes = list(labels)
    for r in iter_features(paths, net, read_options, engine=o, device=dev):
        if isinstance(r, InputError):
            yield r
            continue
        if not np.isfinite(r.features).all():  # never scored: NaN scores would look like results
            yield InputError(r.path, "the model gave non-finite features (NaN or infinity) for this record",
                             field="embedding")
            continue
        s = score(r.features, text, how, temperature)  # (W, K)
        common = dict(path=r.path, n_windows=r.n_windows, source_fs=r.source_fs, duration_s=r.duration_s,
                      missing_leads=r.missing_leads, flat_leads=r.flat_leads, provenance=prov_dict)
        if per_window:
            for w in range(r.n_windows):
                yield ZeroShotResult(scores=dict(zip(codes, map(float, s[w]))), window=w,
                                     start_s=float(r.starts_s[w]), **common)
        else:
            # mean of window scores (for raw scores: the score of the mean feature)
            yield ZeroShotResult(scores=dict(zip(codes, map(float, s.mean(0, dtype=np.float64)))), **common)
