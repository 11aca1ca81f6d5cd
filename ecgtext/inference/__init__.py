"""Inference: files -> features -> outputs.

``engine`` reads and prepares records and runs the ECG encoder in batches;
``zeroshot`` scores records against label descriptions; ``embed`` writes
features to Parquet (resumable, shardable; ``engines/ray.py`` for clusters);
``text_embed`` does the same for report texts; ``index`` and ``search`` find
records by words or by example; ``export`` writes ONNX encoders;
``provenance`` says what made an output. Names are re-exported lazily so
``import ecgtext.inference`` stays cheap.
"""

from __future__ import annotations

import importlib

_LAZY = {
    # engine
    "EngineOptions": "engine", "ModelIdentity": "engine", "model_identity": "engine", "resolve_device": "engine",
    "load_ecg_model": "engine", "ReadFailure": "engine",
    "PreparedRecord": "engine", "RecordDataset": "engine", "expand_records": "engine",
    "default_num_workers": "engine", "iter_prepared": "engine", "RecordFeatures": "engine",
    "iter_features": "engine", "embed_paths": "engine", "PRECISIONS": "engine", "AGGREGATES": "engine",
    # zeroshot
    "score": "zeroshot", "label_features": "zeroshot", "label_cache_key": "zeroshot",
    "cached_label_features": "zeroshot", "compute_label_features": "zeroshot",
    "ZeroShotResult": "zeroshot", "run_zeroshot": "zeroshot",
    # embed
    "EmbedSummary": "embed", "run_embed": "embed", "parse_shard": "embed", "shard_slice": "embed",
    "output_layout": "embed", "record_key": "embed",
    # export
    "export_onnx": "export", "ExportResult": "export",
    # search and indexes (the search function itself: ecgtext.inference.search.search)
    "SearchResult": "search", "Hit": "search", "build_index": "index", "open_embeddings": "index",
    "IndexOptions": "index", "EmbeddingSet": "index", "run_embed_texts": "text_embed",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
