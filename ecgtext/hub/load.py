"""Load a model from any source: a registered name, ``hf-hub:org/repo`` or a local directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ecgtext.errors import ModelError
from ecgtext.hub.sources import HF_HUB_PREFIX, is_path_source

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ecgtext.model.dbeta import Components, DBeta


def resolve_source(source: str | os.PathLike) -> Path:
    """The model directory for ``source`` (see :mod:`ecgtext.hub.sources` for the rules).

    A path must be an existing directory; a registry name or ``hf-hub:`` id is
    taken from the cache, downloaded on first use.
    """
    if is_path_source(source):
        p = Path(source).expanduser()
        if not p.is_dir():
            raise ModelError(f"{source}: no such model directory", path=str(source))
        return p
    from ecgtext.hub.download import resolve_model

    return resolve_model(str(source))


def load_model(source: "str | os.PathLike" = "dbeta-base", device: "str | torch.device | None" = None,
               components: "Components" = "all", dtype: "torch.dtype | None" = None) -> "DBeta":
    """Load a ready model (eval mode) from a registry name, ``hf-hub:`` id or model directory.

    ``components="ecg"`` loads only the ECG feature path (enough for
    ``encode_ecg``). Weights must match the architecture exactly.
    """
    from ecgtext.model.loading import load_model_dir

    return load_model_dir(resolve_source(source), device=device, components=components, dtype=dtype)


__all__ = ["resolve_source", "load_model", "HF_HUB_PREFIX"]
