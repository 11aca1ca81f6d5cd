"""Report texts -> a Parquet file of unimodal text features (text embeddings as data).

``run_embed_texts(REPORTS.csv, model, reports.parquet, text_column="report")``
writes one row per non-empty text: ``source_row`` (0-based row of the source table),
``text`` (as given), the ``id_column`` and ``keep_columns`` if asked,
``model`` and ``embedding`` (fixed_size_list<float32>[D]). The file's
``ecgtext`` metadata has the same model fields as an ECG ``embed`` file
(``model``, ``model_name``, ``model_sha256``, ``embed_dim``, the provenance
block when :mod:`ecgtext.inference.provenance` is available) plus
``modality: "text"``, so report corpora can be indexed and searched
(ECG -> reports) with the check that the same model wrote both sides.

Texts are lower-cased (as zero-shot descriptions and the reference
pretraining do) and encoded in padded batches of ``batch_size``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ecgtext.errors import ConfigError, DataError

if TYPE_CHECKING:  # pragma: no cover
    from ecgtext.model.dbeta import DBeta

logger = logging.getLogger(__name__)

TEXT_FEATURE = "unimodal text feature (T5 encoder -> multi_modal_language_proj -> unimodal_language_pooler)"


@dataclass
class TextEmbedSummary:
    """What one :func:`run_embed_texts` call wrote."""

    output: Path
    rows: int
    skipped_empty: int


def read_text_table(path: str | os.PathLike, text_column: str, extra: Sequence[str] = ()):
    """A CSV / TSV / Parquet / JSON-lines table with ``text_column`` (and ``extra`` columns)."""
    import pandas as pd

    p = os.fspath(path)
    if not os.path.isfile(p):
        raise DataError(f"{p}: no such report table", path=p)
    low = p.lower()
    try:
        if low.endswith((".parquet", ".pq")):
            df = pd.read_parquet(p)
        elif low.endswith((".jsonl", ".ndjson")):
            df = pd.read_json(p, lines=True)
        else:
            df = pd.read_csv(p, sep="\t" if low.endswith(".tsv") else ",", dtype=str, keep_default_na=False)
    except Exception as exc:  # noqa: BLE001 - any parser failure is one line about this file
        raise DataError(f"{p}: cannot read the report table ({type(exc).__name__})", path=p) from None
    missing = [c for c in (text_column, *extra) if c not in df.columns]
    if missing:
        raise DataError(f"{p}: no column {', '.join(missing)} (columns: {', '.join(map(str, df.columns[:12]))})",
                        path=p, field="column", value=missing[0], option="text_column")
    return df


def _metadata(model: "DBeta", text_column: str, lowercase: bool, device) -> dict:
    from ecgtext import __version__
    from ecgtext.inference.engine import model_identity

    ident = model_identity(model.model_dir)
    meta = {"ecgtext_version": __version__, "model": ident.short(), "model_name": ident.name,
            "model_sha256": ident.weights_sha256, "model_dir": str(model.model_dir), "embed_dim": model.embed_dim,
            "modality": "text", "feature": TEXT_FEATURE, "lowercase": bool(lowercase),
            "text_column": text_column}
    try:  # the shared provenance block, where this ecgtext has it
        from ecgtext.inference.provenance import provenance_for
    except ImportError:  # pragma: no cover - older tree
        return meta
    meta["provenance"] = provenance_for(model, device=device, precision="fp32").to_dict()
    return meta


def run_embed_texts(table: str | os.PathLike, model: "DBeta | str | os.PathLike", out: str | os.PathLike, *,
                    text_column: str = "report", id_column: str | None = None, keep_columns: Sequence[str] = (),
                    lowercase: bool = True, batch_size: int = 64, device=None,
                    overwrite: bool = False) -> TextEmbedSummary:
    """Embed the texts of ``table[text_column]`` with ``model``'s text tower into ``out`` (Parquet)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from ecgtext.fsutil import atomic_path
    from ecgtext.hub.load import load_model
    from ecgtext.inference.embed import META_KEY
    from ecgtext.inference.engine import resolve_device
    from ecgtext.model.dbeta import DBeta

    out = Path(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} exists; choose another output or overwrite it", path=str(out), option="overwrite")
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}", option="batch_size")
    extra = [c for c in dict.fromkeys([*([id_column] if id_column else []), *keep_columns])
             if c != text_column]
    df = read_text_table(table, text_column, extra)
    texts = df[text_column].astype(str).where(df[text_column].notna(), "")
    keep = texts.str.strip() != ""
    skipped = int((~keep).sum())
    if not keep.any():
        raise DataError(f"{table}: column {text_column} holds no text", path=str(table), field="column",
                        value=text_column)
    dev = resolve_device(device)
    net = model if isinstance(model, DBeta) else load_model(model, device=dev, components="all")
    if net.components != "all":
        raise ConfigError("text embeddings need the full model (with its text tower)", field="model")
    if net.model_dir is None:
        raise ConfigError("the model has no directory, so its identity cannot be recorded; load it with "
                          "ecgtext.load_model(...)", field="model")
    meta = _metadata(net, text_column, lowercase, net.device)
    idx = np.flatnonzero(keep.to_numpy())
    chosen = texts.iloc[idx].tolist()
    net.eval()
    feats = []
    with torch.inference_mode():
        for i in range(0, len(chosen), batch_size):
            feats.append(net.encode_texts(chosen[i:i + batch_size], lowercase=lowercase,
                                          batch_size=batch_size).float().cpu().numpy())
    X = np.concatenate(feats).astype(np.float32)
    dim = X.shape[1]
    cols = {"source_row": pa.array(idx.astype(np.int64)), "text": pa.array(chosen, pa.string())}
    for c in extra:
        cols[c] = pa.array(df[c].iloc[idx].astype(str).tolist(), pa.string())
    cols["model"] = pa.array([meta["model"]] * len(idx), pa.string())
    cols["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(X.ravel(), pa.float32()), dim)
    t = pa.table(cols).replace_schema_metadata({META_KEY: json.dumps(meta, sort_keys=True).encode()})
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        pq.write_table(t, tmp)
    if skipped:
        logger.info("%s: %d empty text(s) skipped", table, skipped)
    return TextEmbedSummary(output=out, rows=len(idx), skipped_empty=skipped)
