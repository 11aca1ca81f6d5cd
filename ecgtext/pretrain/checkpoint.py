"""Training checkpoints: the files, their format, RNG state and a parameter digest for exact resume."""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import (
    ModelError,
)

CHECKPOINT_FORMAT = 1

_CKPT_RE = re.compile(r"^step-(\d+)\.pt$")
# settings a resumed run must share with the run it continues (else the data order differs)


def rng_state() -> dict[str, Any]:
    """Every global RNG state as tensors / plain lists (loadable with weights_only=True)."""
    py = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    out = {"python": [int(py[0]), [int(v) for v in py[1]], py[2]],
           "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                     "has_gauss": int(has_gauss), "cached": float(cached)},
           "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def param_hash(model: nn.Module) -> str:
    """sha256 over every parameter and buffer (name order): equal iff bit-identical."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def list_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of ``step-NNNNNN.pt`` files, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _CKPT_RE.match(p.name))]
    return sorted(found)


def read_training_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint, read with ``weights_only=True`` (no pickled code runs)."""
    try:
        ck = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"{path}: cannot read the training checkpoint ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:160]})") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{path}: not an ecgtext training checkpoint (format {CHECKPOINT_FORMAT})")
    return ck
