"""Frozen ECG features for a dataset's records: read from an ``embed`` Parquet file
or computed on the fly, then aligned row by row with the dataset.

Keys written by ``ecgtext embed`` are the record paths it was given (absolute
or relative, ``.hea`` or record name); a dataset's keys are the paths its
adapter found. They are matched by absolute path without extension first, then
by the record's path relative to the dataset root as a suffix of the key (so
features embedded from another working directory still match).

Features carry their :class:`~ecgtext.inference.provenance.Provenance`; a run
that expects features of given weights, precision and preprocessing refuses
others unless forced, and an unreadable provenance block is an error. Test-split
records without features are an error unless explicitly allowed.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ecgtext.errors import DataError, ProvenanceError
from ecgtext.evaluation.datasets.base import KEY_SEP, LabelledDataset, record_path_key
from ecgtext.inference.provenance import FEATURE_FIELDS, Provenance, check_features, provenance_from_metadata

logger = logging.getLogger(__name__)

if TYPE_CHECKING:  # pragma: no cover
    from ecgtext.io import ReadOptions
    from ecgtext.model.dbeta import DBeta


@dataclass
class FeatureTable:
    """Record keys and their (N, D) float32 unimodal ECG features, with provenance."""

    keys: list[str]
    X: np.ndarray
    model: dict[str, Any] | None = None
    source: str | None = None
    notes: list[str] = field(default_factory=list)
    provenance: Provenance | None = None  # None: features from elsewhere, nothing recorded

    @property
    def dim(self) -> int:
        return int(self.X.shape[1])


def _decode_meta(meta: dict[bytes, bytes] | None) -> dict[str, Any] | None:
    """Model provenance from Parquet key-value metadata, whatever key the writer used."""
    if not meta:
        return None
    out: dict[str, Any] = {}
    for k, v in meta.items():
        key = k.decode("utf-8", "replace")
        if key.startswith(("pandas", "ARROW")):
            continue
        text = v.decode("utf-8", "replace")
        try:
            val = json.loads(text)
        except ValueError:
            if key == "ecgtext":  # our block, damaged: never read past it
                raise ProvenanceError("the ecgtext metadata block is not valid JSON", field="provenance") from None
            val = text
        if isinstance(val, dict) and key == "ecgtext":
            out.update(val)
        else:
            out[key] = val
    # ``ecgtext embed`` writes model (name@hash), model_name, model_sha256
    if isinstance(out.get("model"), str):
        out.setdefault("id", out["model"])
    if "model_name" in out:
        out.setdefault("name", out["model_name"])
    if "model_sha256" in out:
        out.setdefault("weights_sha256", out["model_sha256"])
    return out or None


def read_feature_parquet(path: str | os.PathLike) -> FeatureTable:
    """Read ``path`` / ``embedding`` columns of a Parquet file written by ``ecgtext embed``.

    Several rows for one key (per-window rows) are averaged, as ``embed_paths``
    aggregates windows by their mean.
    """
    p = os.fspath(path)
    if not os.path.exists(p):  # a file, or a folder of shards (a sharded embed)
        raise DataError(f"{p}: features file not found")
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(p)
    except Exception as exc:
        raise DataError(f"{p}: not a Parquet file we can read ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:120] if str(exc) else ''})") from None
    names = table.column_names
    key_col = next((c for c in ("path", "key", "record") if c in names), None)
    emb_col = next((c for c in ("embedding", "features", "feature") if c in names), None)
    if key_col is None or emb_col is None:
        raise DataError(f"{p}: expected columns 'path' and 'embedding' (as written by ecgtext embed), "
                        f"found {', '.join(names[:10])}")
    keys = [str(k) for k in table.column(key_col).to_pylist()]
    col = table.column(emb_col).combine_chunks()
    try:
        if hasattr(col.type, "list_size") and col.null_count == 0:
            X = col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), col.type.list_size)
        else:
            X = np.array(col.to_pylist(), dtype=np.float32)
    except (ValueError, TypeError):
        raise DataError(f"{p}: column {emb_col!r} is not a fixed-length list of numbers") from None
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or len(keys) != X.shape[0]:
        raise DataError(f"{p}: embeddings do not form an (N, D) matrix")
    notes = []
    if len(set(keys)) != len(keys):
        uniq, inverse = np.unique(np.array(keys, dtype=object), return_inverse=True)
        sums = np.zeros((len(uniq), X.shape[1]), np.float64)
        np.add.at(sums, inverse, X)
        counts = np.bincount(inverse, minlength=len(uniq))[:, None]
        X = (sums / counts).astype(np.float32)
        keys = [str(u) for u in uniq]
        notes.append("several rows per record (windows) averaged")
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        notes.append(f"{int(bad.sum())} row(s) with non-finite features ignored")
        keys = [k for k, b in zip(keys, bad) if not b]
        X = X[~bad]
    try:
        model = _decode_meta(table.schema.metadata)
    except ProvenanceError as exc:
        raise ProvenanceError(f"{p}: {exc}", path=p, field=exc.field) from None
    prov = provenance_from_metadata(table.schema.metadata, p)
    return FeatureTable(keys=keys, X=X, model=model, source=p, notes=notes, provenance=prov)


def _tail(key: str) -> str:
    """File name (and container key) of a normalised key: the cheap first filter."""
    container, sep, inner = key.partition(KEY_SEP)
    return os.path.basename(container) + sep + inner


def match_keys(ds: LabelledDataset, keys: Sequence[str]) -> np.ndarray:
    """(N,) index into ``keys`` for each dataset record, -1 where it has no features."""
    norm = [record_path_key(k) for k in keys]
    exact = {k: i for i, k in enumerate(norm)}
    by_tail: dict[str, list[int]] = {}
    for i, k in enumerate(norm):
        by_tail.setdefault(_tail(k), []).append(i)
    root = os.path.abspath(ds.root) if ds.root and os.path.isdir(ds.root) else None
    out = np.full(len(ds), -1, dtype=int)
    for r, key in enumerate(ds.keys):
        nk = record_path_key(key)
        if nk in exact:
            out[r] = exact[nk]
            continue
        cands = by_tail.get(_tail(nk), [])
        if not cands:
            continue
        # the record's path below the dataset root must end the feature key
        container, sep, inner = nk.partition(KEY_SEP)
        rel = os.path.relpath(container, root) if root else os.path.basename(container)
        rel = rel.replace("\\", "/") + sep + inner
        hits = [i for i in cands if norm[i].endswith("/" + rel)]
        if len(hits) == 1:
            out[r] = hits[0]
        elif len(hits) > 1:
            raise DataError(f"{key}: matches several feature rows ({keys[hits[0]]}, {keys[hits[1]]}); "
                            "embed each record once")
    return out


@dataclass
class DatasetFeatures:
    """A dataset restricted to the records that have features, and those features in its order."""

    dataset: LabelledDataset
    X: np.ndarray
    model: dict[str, Any] | None
    source: str
    n_missing: int
    errors: list[str]
    notes: list[str]

    def report(self) -> dict[str, Any]:
        return {"source": self.source, "dim": int(self.X.shape[1]), "n_missing": self.n_missing,
                "errors": self.errors[:20], "notes": self.notes}


def model_info(model: "DBeta", source: str | None = None, *, device: Any = None,
               precision: str = "auto") -> dict[str, Any]:
    """Provenance of features computed with ``model``: name, weights hash, embedding size and
    (for a model loaded from a directory) the full provenance block under ``provenance``.
    A weights file that cannot be hashed is an error, not a blank."""
    info: dict[str, Any] = {"source": None if source is None else str(source),
                            "name": getattr(model.config, "name", None), "embed_dim": int(model.embed_dim)}
    model_dir = getattr(model, "model_dir", None)
    if model_dir is not None:
        from ecgtext.inference.engine import model_identity
        from ecgtext.inference.provenance import provenance_for

        ident = model_identity(model_dir)
        info.update({"name": ident.name, "weights_sha256": ident.weights_sha256,
                     "model_dir": ident.model_dir, "id": ident.short()})
        prov = provenance_for(model, device=device if device is not None else model.device,
                              precision=precision, source=source)
        info["provenance"] = prov.to_dict()
    return info


def check_table(table: FeatureTable, expect: Provenance | None, *, force: bool = False,
                fields: tuple[str, ...] = FEATURE_FIELDS) -> list[str]:
    """Refuse features whose provenance differs from ``expect`` in ``fields`` (or that have
    none), unless ``force``: then the findings come back as notes. See
    :func:`ecgtext.inference.provenance.check_features`."""
    return check_features(table.provenance, expect, table.source or "features", force=force, fields=fields)


def dataset_features(ds: LabelledDataset, *, features: FeatureTable | str | os.PathLike | None = None,
                     model: "DBeta | None" = None, model_source: str | None = None,
                     read_options: "ReadOptions | None" = None, rows: np.ndarray | None = None,
                     batch_size: int = 32, num_workers: int = 0, device: str | None = None,
                     precision: str = "auto", expect: Provenance | None = None,
                     expect_fields: tuple[str, ...] = FEATURE_FIELDS, force: bool = False,
                     allow_missing: bool = False) -> DatasetFeatures:
    """Features for ``ds`` (or its ``rows``): from ``features`` (a table or Parquet path) or by
    running ``model`` over the records.

    Saved features are checked against ``expect`` (the provenance of the run's
    model, in ``expect_fields``): different weights, precision or preprocessing are a
    :class:`~ecgtext.errors.ProvenanceError` unless ``force`` (then a note).
    Records without features are dropped and counted; in the test split that is
    a :class:`DataError` unless ``allow_missing`` (the metrics would describe
    another test set); none at all is always a :class:`DataError`.
    """
    if rows is not None:
        ds = ds.select(np.asarray(rows))
    errors: list[str] = []
    extra_notes: list[str] = []
    if features is not None:
        table = features if isinstance(features, FeatureTable) else read_feature_parquet(features)
        if expect is not None:
            extra_notes = check_table(table, expect, force=force, fields=expect_fields)
        for note in extra_notes:
            logger.warning("%s", note)
        if table.provenance is not None:
            logger.info("features from %s: %s, precision %s, %s", table.source, table.provenance.model_id,
                        table.provenance.precision, table.provenance.device_type)
        idx = match_keys(ds, table.keys)
        source = table.source or "features"
    else:
        if model is None:
            raise DataError("no features: give a features Parquet file or a model", field="features",
                            option="features")
        from ecgtext.inference.engine import embed_paths

        X, ok, errs = embed_paths(ds.keys, model, read_options, batch_size=batch_size,
                                  num_workers=num_workers, device=device, precision=precision)
        errors = [str(e) for e in errs]
        info = model_info(model, model_source, device=device, precision=precision)
        prov = Provenance.from_dict(info["provenance"], "computed") if "provenance" in info else None
        if prov is not None:
            logger.info("features computed with %s on %s, precision %s", prov.model_id, prov.device_type,
                        prov.precision)
        table = FeatureTable(keys=list(ok), X=X, model=info, source="computed", provenance=prov)
        pos = {k: i for i, k in enumerate(ok)}
        idx = np.array([pos.get(k, -1) for k in ds.keys], dtype=int)
        source = f"computed with {table.model.get('id') or table.model.get('name') or model_source}"
    have = idx >= 0
    if not have.any():
        example = ds.keys[0] if len(ds) else "-"
        why = f"; first error: {errors[0]}" if errors else f" (e.g. no row for {example} in {source})"
        raise DataError(f"{ds.root}: no record of the dataset has features{why}")
    missing_test = np.flatnonzero(~have & (ds.split == "test"))
    if len(missing_test) and not allow_missing:
        example = ds.keys[missing_test[0]]
        why = f"; first error: {errors[0]}" if errors else ""
        raise DataError(f"{source}: {len(missing_test)} record(s) of the test split have no features "
                        f"(e.g. {example}){why}; the metrics would be for another test set",
                        path=str(ds.root), field="missing features", value=len(missing_test),
                        option="allow_missing")
    notes = list(table.notes) + extra_notes
    if len(missing_test):
        notes.append(f"{len(missing_test)} test record(s) without features left out (allowed)")
    sub = ds.select(have) if not have.all() else ds
    return DatasetFeatures(dataset=sub, X=table.X[idx[have]], model=table.model, source=source,
                           n_missing=int((~have).sum()), errors=errors, notes=notes)
