"""Building the model to pretrain: from a preset, a model directory, or Flan-T5 for the text tower."""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import ModelDirConfig, load_config, load_preset
from ..errors import (
    ConfigError,
    HubError,
)
from .config import TrainConfig
from .data import (
    derive_seed,
)


def _arch_config(arch: str) -> ModelDirConfig:
    if arch.startswith("pretrain-"):
        raise ConfigError(f"architecture {arch!r} is a training preset, not an architecture (use dbeta-base, "
                          "dbeta-tiny or a config.json)", field="arch", value=arch, option="arch")
    p = Path(arch)
    if arch.endswith(".json") or p.is_dir():
        return load_config(p)
    return load_preset(arch)


def build_initial_model(cfg: TrainConfig, tokenizer_out: Path, write: bool):
    """The model to start from and a folder with its tokenizer (copied to ``tokenizer_out``).

    ``init``: ``scratch`` (random weights, ``arch``), ``flan-t5`` (random + the
    pretrained Flan-T5 text tower from the Hub cache), or a D-BETA model (dir,
    registry name, ``hf-hub:`` id) for continued pretraining.
    """
    from ..hub.load import load_model
    from ..model.loading import build_model, copy_tokenizer_files

    torch.manual_seed(derive_seed(cfg.seed, 0x1417))  # the same random init on every rank
    if cfg.init in ("scratch", "flan-t5"):
        model = build_model(_arch_config(cfg.arch), components="all")
        tok_src = Path(cfg.tokenizer) if cfg.tokenizer else None
        if cfg.init == "flan-t5":
            _load_flan_t5(model)
            if tok_src is None and write:
                _save_hub_tokenizer(tokenizer_out)
        elif tok_src is None:
            raise ConfigError("initialising from scratch needs a tokenizer folder: a folder with the T5 "
                              "tokenizer files (spiece.model / tokenizer.json), e.g. a D-BETA model directory",
                              field="tokenizer", option="tokenizer")
    else:
        model = load_model(cfg.init, components="all")
        tok_src = Path(cfg.tokenizer) if cfg.tokenizer else model.model_dir
    if tok_src is not None and write:
        if not any((tok_src / f).exists() for f in ("spiece.model", "tokenizer.json")):
            raise ConfigError(f"{tok_src}: no tokenizer files (spiece.model / tokenizer.json)")
        tokenizer_out.mkdir(parents=True, exist_ok=True)
        copy_tokenizer_files(tok_src, tokenizer_out)
    model.model_dir = tokenizer_out
    model._tokenizer = None
    return model


def _load_flan_t5(model) -> None:
    from ..model.text_encoder import load_pretrained_t5_encoder

    try:
        t5 = load_pretrained_t5_encoder("google/flan-t5-base")
    except Exception as exc:  # offline, no cache, gated: transformers raises many types
        raise HubError(f"cannot load google/flan-t5-base ({str(exc).splitlines()[0][:160]}); "
                       "it must be in the Hugging Face cache "
                       "or downloadable, or initialise from scratch or from a D-BETA model",
                       option="init") from None
    try:
        model.language_encoder.load_state_dict(t5.state_dict(), strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"Flan-T5 initialisation: the architecture's text encoder does not match "
                          f"Flan-T5-base ({str(exc).splitlines()[0][:160]})", option="arch") from None


def _save_hub_tokenizer(out: Path) -> None:
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained("google/flan-t5-base")
    except Exception:
        raise HubError("cannot load the google/flan-t5-base tokenizer (not in the Hugging Face cache and "
                       "not downloadable); give a tokenizer folder", option="tokenizer") from None
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(out))
