"""Text encoder: the encoder half of (Flan-)T5, from ``transformers``.

Built from a T5 config, so no Hub access is needed to construct it; pretrained
Flan-T5 weights are fetched only on explicit request (``from_pretrained``),
i.e. when pretraining starts from Flan-T5 rather than from a D-BETA checkpoint.
``transformers`` is imported here only, so ECG-only work never pays for it.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import torch
from torch import nn


@contextlib.contextmanager
def quiet_torchao_import():
    """Silence what importing ``torchao`` logs about GPU kernels a CPU build cannot load
    (mxfp8, cutlass, triton). ``transformers`` imports torchao too when it is installed."""
    saved = [(lg, lg.level) for lg in map(logging.getLogger, ("torchao", "torch.utils._pytree"))]
    try:
        for lg, _ in saved:
            lg.setLevel(logging.ERROR)
        yield
    finally:
        for lg, level in saved:
            lg.setLevel(level)


def _import_t5():
    with quiet_torchao_import():  # transformers imports torchao (ecgtext[int8]) when present
        from transformers import T5Config, T5EncoderModel
    return T5Config, T5EncoderModel


def build_t5_encoder(config: dict[str, Any]) -> nn.Module:
    """A randomly initialised ``T5EncoderModel`` from a T5 config dict."""
    T5Config, T5EncoderModel = _import_t5()

    cfg = T5Config(**config)
    return T5EncoderModel(cfg)


def load_pretrained_t5_encoder(name: str = "google/flan-t5-base") -> nn.Module:
    """Pretrained T5 encoder weights from the Hub (initialisation for pretraining)."""
    _, T5EncoderModel = _import_t5()
    return T5EncoderModel.from_pretrained(name)


def run_t5_encoder(encoder: nn.Module, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor | None) -> torch.Tensor:
    """(B, L) ids, (B, L) 0/1 mask -> (B, L, d_model) hidden states.

    Unlike the reference (which calls the encoder without a mask), padding is
    masked here; for unpadded input both are identical.
    """
    return encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
