"""The linear head: weights, thresholds, save and load (safetensors + JSON)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ecgtext.errors import ConfigError, ModelError

if TYPE_CHECKING:  # pragma: no cover
    pass
from ecgtext.evaluation.probe.config import HEAD_CONFIG, HEAD_WEIGHTS


@dataclass
class LinearHead:
    """``p = sigmoid(x @ weight.T + bias)``, per-class thresholds, and where it came from.

    ``weight``: (C, D) float32; ``bias``: (C,); ``thresholds``: (C,) probability
    cut-offs (NaN: no positive example in validation, 0.5 used to predict).
    """

    weight: np.ndarray
    bias: np.ndarray
    classes: list[str]
    thresholds: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.weight.shape[1])

    def logits(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise ConfigError(f"features have dimension {X.shape[-1]}, the head expects {self.dim} "
                              "(features from a different model?)")
        return X @ self.weight.T + self.bias

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(N, C) probabilities for (N, D) features."""
        z = self.logits(X).astype(np.float64)
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)

    def decide(self, P: np.ndarray) -> np.ndarray:
        """(N, C) bool: probability >= the class's validation threshold (0.5 where it has none)."""
        thr = np.where(np.isnan(self.thresholds), 0.5, self.thresholds)
        return P >= thr[None, :]

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write ``head.safetensors`` (weight, bias) and ``head.json`` (classes, thresholds, provenance)."""
        from safetensors.numpy import save_file

        from ecgtext.fsutil import apply_umask, atomic_path, atomic_write_text

        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        with atomic_path(d / HEAD_WEIGHTS) as tmp:
            save_file({"weight": np.ascontiguousarray(self.weight, np.float32),
                       "bias": np.ascontiguousarray(self.bias, np.float32)}, str(tmp))
            apply_umask(tmp)  # safetensors writes 0600; heads are shared like any result
        cfg = {"format": "ecgtext-linear-head", "version": 1, "classes": self.classes,
               "thresholds": [None if np.isnan(t) else float(t) for t in self.thresholds],
               "feature_dim": self.dim, **self.info}
        atomic_write_text(d / HEAD_CONFIG, json.dumps(cfg, indent=2) + "\n")
        return d

    @classmethod
    def load(cls, head_dir: str | os.PathLike) -> "LinearHead":
        """Read a head saved by :meth:`save`; anything inconsistent is a :class:`ModelError`."""
        from safetensors.numpy import load_file

        d = Path(head_dir)
        cfg_path, w_path = d / HEAD_CONFIG, d / HEAD_WEIGHTS
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise ModelError(f"{p}: not found (a head directory holds {HEAD_CONFIG} and {HEAD_WEIGHTS}, "
                                 "as a probe run saves them)", path=str(p), option="head_dir")
        try:
            cfg = json.loads(cfg_path.read_text())
            t = load_file(str(w_path))
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"{d}: cannot read head ({type(exc).__name__})") from None
        W, b = t.get("weight"), t.get("bias")
        classes = cfg.get("classes")
        if W is None or b is None or not isinstance(classes, list):
            raise ModelError(f"{d}: head files lack weight/bias/classes")
        if W.shape != (len(classes), cfg.get("feature_dim", W.shape[1])) or b.shape != (len(classes),):
            raise ModelError(f"{d}: weight {W.shape} / bias {b.shape} do not match {len(classes)} classes")
        thr = np.array([np.nan if v is None else float(v) for v in cfg.get("thresholds", [None] * len(classes))],
                       dtype=np.float64)
        if thr.shape != (len(classes),):
            raise ModelError(f"{d}: {len(thr)} thresholds for {len(classes)} classes")
        info = {k: v for k, v in cfg.items() if k not in ("classes", "thresholds", "feature_dim", "format", "version")}
        return cls(weight=W.astype(np.float32), bias=b.astype(np.float32), classes=[str(c) for c in classes],
                   thresholds=thr, info=info)
