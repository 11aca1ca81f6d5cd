"""The pretraining configuration: a dataclass loaded from JSON, unknown keys rejected.

Defaults live in ``ecgtext/presets/pretrain-default.json``; a user config file
(``--config FILE``) and then command-line flags override them, key by key.
The optimiser values (Adam(W), lr 5e-5, betas (0.9, 0.98), weight decay 0.01)
are D-BETA's published ones; batch size, budget and warm-up are ours.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import load_json_resource
from ..errors import ConfigError

DATASETS = ("manifest", "ptbxl", "mimic-iv-ecg")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULES = ("cosine", "linear", "constant")
CROPS = ("random", "first")
MLM_STRATEGIES = ("bert", "mask")
N3S_ENCODERS = ("auto", "tfidf", "minilm")
DEFAULT_PRESET = "pretrain-default.json"


@dataclass
class TrainConfig:
    """Everything one pretraining run needs; see docs/cli/pretrain.md for each key."""

    out: str = "runs/pretrain"
    # data
    dataset: str = "manifest"
    manifest: str | None = None
    root: str | None = None
    rate: int = 500
    path_col: str = "path"
    report_col: str = "report"
    id_col: str | None = None
    max_records: int | None = None
    read_options: dict[str, Any] = field(default_factory=dict)
    # model
    init: str = "scratch"
    arch: str = "dbeta-base"
    tokenizer: str | None = None
    device: str | None = None
    precision: str = "auto"
    # budget and optimiser
    batch_size: int = 32
    grad_accum: int = 1
    max_steps: int | None = None
    max_epochs: int | None = 10
    stop_at_step: int | None = None
    lr: float = 5e-5
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    adam_eps: float = 1e-8
    weight_decay: float = 0.01
    warmup_steps: int | None = None
    warmup_ratio: float = 0.05
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0
    clip_grad: float | None = 1.0
    seed: int = 0
    # objectives and augmentation
    crop: str = "random"
    lead_masking: float | None = None
    mlm_prob: float = 0.25
    mlm_strategy: str = "bert"
    mlm_mask_token: str = "<extra_id_0>"
    norm_pix: bool = False
    # ETS logits = ets_scale * <ecg, text> + ets_bias. The reference's 1 / none is the default;
    # SigLIP's 10 / -10 keep short runs from collapsing the ECG features (docs/results.md)
    ets_scale: float = 1.0
    ets_bias: float | None = None
    n3s_fraction: float = 0.5
    n3s_k: int = 64
    n3s_encoder: str = "auto"
    n3s_dim: int = 128
    # bookkeeping
    num_workers: int = 4
    save_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 10
    resume: bool = False

    def __post_init__(self):
        def need(cond: bool, msg: str):
            if not cond:
                raise ValueError(msg)

        need(self.dataset in DATASETS, f"dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}")
        need(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}")
        need(self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}")
        need(self.crop in CROPS, f"crop must be one of {', '.join(CROPS)}")
        need(self.mlm_strategy in MLM_STRATEGIES, f"mlm_strategy must be one of {', '.join(MLM_STRATEGIES)}")
        need(self.n3s_encoder in N3S_ENCODERS, f"n3s_encoder must be one of {', '.join(N3S_ENCODERS)}")
        need(self.rate in (100, 500), f"rate must be 100 or 500 (PTB-XL), got {self.rate}")
        need(self.batch_size >= 1 and self.grad_accum >= 1, "batch_size and grad_accum must be >= 1")
        need(self.max_steps is not None or self.max_epochs is not None,
             "give a budget: max_steps or max_epochs")
        need(self.max_steps is None or self.max_steps >= 1, "max_steps must be >= 1")
        need(self.max_epochs is None or self.max_epochs >= 1, "max_epochs must be >= 1")
        need(self.lr > 0, "lr must be positive")
        need(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas must be two numbers in [0, 1)")
        self.betas = [float(b) for b in self.betas]
        need(self.weight_decay >= 0, "weight_decay must be >= 0")
        need(self.warmup_steps is None or self.warmup_steps >= 0, "warmup_steps must be >= 0")
        need(0 <= self.warmup_ratio < 1, "warmup_ratio must be in [0, 1)")
        need(0 <= self.min_lr_ratio <= 1, "min_lr_ratio must be in [0, 1]")
        need(self.clip_grad is None or self.clip_grad >= 0, "clip_grad must be >= 0 (0 or null = off)")
        need(self.lead_masking is None or 0 <= self.lead_masking < 1, "lead_masking must be in [0, 1)")
        need(0 < self.mlm_prob < 1, "mlm_prob must be in (0, 1)")
        need(math.isfinite(self.ets_scale) and self.ets_scale > 0, "ets_scale must be a positive number")
        need(self.ets_bias is None or math.isfinite(self.ets_bias), "ets_bias must be a number or null")
        need(0 <= self.n3s_fraction <= 1, "n3s_fraction must be in [0, 1]")
        need(self.n3s_k >= 1 and self.n3s_dim >= 2, "n3s_k must be >= 1 and n3s_dim >= 2")
        need(self.num_workers >= 0, "num_workers must be >= 0")
        need(self.save_every >= 1 and self.log_every >= 1, "save_every and log_every must be >= 1")
        need(self.keep_checkpoints >= 1, "keep_checkpoints must be >= 1")
        need(self.max_records is None or self.max_records >= 1, "max_records must be >= 1")
        need(isinstance(self.read_options, dict), "read_options must be an object")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def train_config_from_dict(data: dict[str, Any], where: str = "config") -> TrainConfig:
    """Build a :class:`TrainConfig`; unknown keys or bad values are a :class:`ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object, found {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} "
                          f"(known: see ecgtext/presets/{DEFAULT_PRESET})")
    try:
        return TrainConfig(**data)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_train_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The packaged defaults, then the JSON file ``path`` (if any), then ``overrides``
    (``None`` values in ``overrides`` mean "not given" and are skipped)."""
    data: dict[str, Any] = dict(load_json_resource(DEFAULT_PRESET))
    if path is not None:
        p = Path(path)
        try:
            user = json.loads(p.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{p}: no such config file") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(user, dict):
            raise ConfigError(f"{p}: expected a JSON object")
        unknown = sorted(set(user) - {f.name for f in dataclasses.fields(TrainConfig)})
        if unknown:
            raise ConfigError(f"{p}: unknown key(s) {', '.join(unknown)}")
        data.update(user)
    for k, v in (overrides or {}).items():
        if v is not None:
            data[k] = v
    return train_config_from_dict(data, str(path) if path else "pretrain config")
