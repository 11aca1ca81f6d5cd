"""Probe options: head type, subset fractions, seeds, what to do with a class missing from a subset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ecgtext.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    pass


HEADS = ("linear", "sklearn")

MISSING_CLASS = ("error", "redraw", "keep")

HEAD_WEIGHTS = "head.safetensors"

HEAD_CONFIG = "head.json"

_REDRAWS = 1000


@dataclass
class ProbeConfig:
    """Hyper-parameters of one probing run (defaults: the published protocol)."""

    fraction: float = 1.0
    seeds: tuple[int, ...] = (0,)
    head: str = "linear"
    epochs: int = 100
    lr: float = 1e-3
    batch_size: int = 16
    weight_decay: float = 0.0
    missing_class: str = "error"
    C_grid: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)

    def __post_init__(self):
        if not (0.0 < self.fraction <= 1.0):
            raise ConfigError(f"training fraction must be in (0, 1], got {self.fraction}", field="fraction",
                              value=self.fraction, option="fraction")
        if self.head not in HEADS:
            raise ConfigError(f"unknown head {self.head!r}; expected one of {', '.join(HEADS)}")
        if self.missing_class not in MISSING_CLASS:
            raise ConfigError(f"unknown missing-class rule {self.missing_class!r}; expected one of "
                              f"{', '.join(MISSING_CLASS)}", field="missing_class", value=self.missing_class,
                              option="missing_class")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("epochs and batch size must be >= 1 and the learning rate > 0")
        self.seeds = tuple(int(s) for s in self.seeds)
        if not self.seeds:
            raise ConfigError("give at least one seed")

    def as_dict(self) -> dict[str, Any]:
        d = {"type": self.head, "missing_class": self.missing_class}
        if self.head == "linear":
            d.update({"optimizer": "adam", "lr": self.lr, "batch_size": self.batch_size, "epochs": self.epochs,
                      "weight_decay": self.weight_decay, "loss": "bce_with_logits",
                      "selection": "best validation macro AUROC"})
        else:
            d.update({"estimator": "one-vs-rest LogisticRegression (lbfgs)", "C_grid": list(self.C_grid),
                      "selection": "C with the best validation macro AUROC"})
        return d
