"""Pretraining (or continued pretraining) of D-BETA on ECG-report pairs.

``pretrain(cfg)`` runs one training job -- on a CPU, a GPU, or under
``torchrun`` on many GPUs and machines -- and returns the final model
directory (``OUT/model``, loadable with :func:`ecgtext.load_model`).
See docs/cli/pretrain.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .config import TrainConfig, load_train_config

__all__ = ["TrainConfig", "load_train_config", "pretrain"]


def pretrain(cfg: TrainConfig, progress: "Callable[[int, int, dict], None] | None" = None) -> Path:
    """Run pretraining as ``cfg`` says; returns ``OUT/model`` (or ``OUT/checkpoints``
    when the run paused at ``stop_at_step``). Raises :class:`ecgtext.errors.EcgTextError`
    subclasses for bad data, config or a diverging loss. ``progress(step, total, record)``
    is called on rank 0 after every logged step (``record``: that step's metrics)."""
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # we tokenise in one process
    from .distributed import Dist
    from .trainer import Trainer

    dist_info = Dist.from_env(cfg.device)
    try:
        trainer = Trainer(cfg, dist_info)
        trainer.progress = progress
        return trainer.run()
    finally:
        dist_info.close()
