"""The learning-rate schedule (warm-up, then cosine or linear decay)."""

from __future__ import annotations

import math


def lr_multiplier(step: int, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """LR factor at optimiser step ``step`` (0-based): linear warm-up over ``warmup``
    steps, then cosine / linear decay to ``min_ratio`` at ``total`` (or constant)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return min_ratio + (1 - min_ratio) * (1 - progress)
