"""Published checkpoints -> verified state dicts (read safely, checked key by key)."""

from __future__ import annotations

import os
from pathlib import Path

from ecgtext.config import ModelDirConfig
from ecgtext.errors import ModelError

__all__ = ["read_verified_checkpoint", "save_safetensors"]


def save_safetensors(state: dict, path: str | os.PathLike) -> None:
    """:func:`ecgtext.model.loading.save_safetensors` (imported lazily: torch stays unloaded for ``--help``)."""
    from ecgtext.model.loading import save_safetensors as save

    save(state, path)


def read_verified_checkpoint(path: str | os.PathLike, config: ModelDirConfig, where: str | None = None) -> dict:
    """Read a checkpoint safely and check it key by key against ``config``'s architecture.

    Torch files are read with ``weights_only=True`` (no pickled code runs). The
    model is built without random init (one builder for every load path). Returns the state dict to save: ``ecg_encoder.mask_emb`` dropped,
    every tensor contiguous. Raises ``CheckpointMismatchError`` naming the keys.
    """
    from ecgtext.model.dbeta import TOLERATED_EXTRA_KEYS
    from ecgtext.model.loading import build_model, load_state_strict, read_checkpoint

    try:
        sd = read_checkpoint(path)
    except ModelError as exc:
        if where is None:
            raise
        raise ModelError(str(exc).replace(str(Path(path)), where, 1)) from None
    model = build_model(config, "all", random_init=False)
    load_state_strict(model, sd, where=where or str(path))
    del model
    return {k: v for k, v in sd.items() if k not in TOLERATED_EXTRA_KEYS}
