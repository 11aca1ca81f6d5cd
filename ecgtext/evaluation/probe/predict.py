"""Applying a saved head to new records."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ecgtext.errors import ModelError, ProvenanceError

if TYPE_CHECKING:  # pragma: no cover
    pass
from ecgtext.evaluation.probe.head import LinearHead


def _same_model(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool | None:
    """Whether two provenance records name the same weights; ``None`` when unknown."""
    if not a or not b:
        return None
    ha = a.get("weights_sha256") or a.get("model_sha256")
    hb = b.get("weights_sha256") or b.get("model_sha256")
    if ha and hb:
        return ha == hb
    return None


def _trained_on(head: LinearHead, head_dir: str | os.PathLike):
    """The provenance of the features the head was trained on (``None`` for heads saved
    before provenance was recorded); a damaged block is an error."""
    from ecgtext.inference.provenance import Provenance

    block = (head.info.get("model") or {}).get("provenance")
    return None if block is None else Provenance.from_dict(block, str(head_dir))


def predict_records(head_dir: str | os.PathLike, paths: Sequence[str], *, model_source: str | None = None,
                    features: str | os.PathLike | None = None, read_options=None, batch_size: int = 32,
                    num_workers: int = 0, device: str | None = None, precision: str = "auto",
                    force: bool = False) -> tuple[list[dict[str, Any]], list[str], LinearHead]:
    """Apply a saved head to records: per record ``{"path", "labels", "probabilities"}``.

    Features come from ``features`` (an embed Parquet file; ``paths`` then
    filter it, empty = all rows) or from the model the head was trained on
    (``model_source`` overrides). Features of other weights, precision or
    preprocessing than the head was trained on are a
    :class:`~ecgtext.errors.ProvenanceError` unless ``force``.
    Returns (rows, one-line errors for records that failed, the head).
    """
    from ecgtext.evaluation.datasets.features import check_table, model_info, read_feature_parquet
    from ecgtext.inference.provenance import check_features

    head = LinearHead.load(head_dir)
    trained_on = head.info.get("model") or {}
    recorded = _trained_on(head, head_dir)
    errors: list[str] = []
    if features is not None:
        table = read_feature_parquet(features)
        if recorded is not None:
            check_table(table, recorded, force=force)
        elif _same_model(trained_on, table.model) is False and not force:
            raise ProvenanceError(f"{features}: features come from "
                                  f"{table.model.get('id') or table.model.get('name')}, the head was trained on "
                                  f"{trained_on.get('id') or trained_on.get('name')}", path=str(features),
                                  field="weights_sha256", option="force")
        if paths:
            from ecgtext.evaluation.datasets.base import record_path_key

            pos = {record_path_key(k): i for i, k in enumerate(table.keys)}
            idx, keys = [], []
            for p in paths:
                i = pos.get(record_path_key(p))
                if i is None:
                    errors.append(f"{p}: no row in {features}")
                else:
                    idx.append(i)
                    keys.append(table.keys[i])
            X = table.X[idx] if idx else np.zeros((0, table.dim), np.float32)
        else:
            X, keys = table.X, table.keys
    else:
        from ecgtext.inference.engine import embed_paths, load_ecg_model

        source = model_source or trained_on.get("source") or trained_on.get("model_dir")
        if not source:
            raise ModelError(f"{head_dir}: the head does not record its model; name the model",
                             path=str(head_dir), field="model", option="model")
        model = load_ecg_model(source, device=device)
        info = model_info(model, source, device=device, precision=precision)
        if recorded is not None:
            from ecgtext.inference.provenance import Provenance

            now = Provenance.from_dict(info["provenance"], str(source))
            check_features(recorded, now, str(head_dir), force=force)
        elif _same_model(trained_on, info) is False and not force:
            raise ProvenanceError(f"{source}: these weights differ from those the head was trained on "
                                  f"({trained_on.get('id') or trained_on.get('name')})", path=str(source),
                                  field="weights_sha256", option="force")
        X, keys, errs = embed_paths(list(paths), model, read_options, batch_size=batch_size,
                                    num_workers=num_workers, device=device, precision=precision)
        errors.extend(str(e) for e in errs)
    P = head.predict_proba(X) if len(X) else np.zeros((0, len(head.classes)), np.float32)
    decided = head.decide(P)
    rows = [{"path": k, "labels": [c for c, d in zip(head.classes, decided[i]) if d],
             "probabilities": {c: float(P[i, j]) for j, c in enumerate(head.classes)}}
            for i, k in enumerate(keys)]
    return rows, errors, head
