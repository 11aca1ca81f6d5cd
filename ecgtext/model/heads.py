"""Pretraining heads: masked language modelling, masked ECG reconstruction (MAE
decoder), ECG-text matching. Names mirror the checkpoint (``mlm_head``,
``mim_head``, ``itm_head``)."""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .fusion import LN_EPS


class MLMHead(nn.Module):
    """(B, L, H) -> (B, L, vocab) logits."""

    def __init__(self, hidden: int, vocab: int):
        super().__init__()
        self.transform = nn.Module()
        self.transform.dense = nn.Linear(hidden, hidden)
        self.transform.LayerNorm = nn.LayerNorm(hidden, eps=LN_EPS)
        self.decoder = nn.Linear(hidden, vocab, bias=False)
        self.bias = nn.Parameter(torch.zeros(vocab))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.transform.LayerNorm(F.gelu(self.transform.dense(x)))
        return self.decoder(x) + self.bias


class SinusoidalPositions(nn.Module):
    def __init__(self, dim: int, max_len: int = 512):
        super().__init__()
        pos = torch.arange(max_len).unsqueeze(1)
        div = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
        pe = torch.zeros(1, max_len, dim)
        pe[0, :, 0::2] = torch.sin(pos * div)
        pe[0, :, 1::2] = torch.cos(pos * div)
        self.register_buffer("pe", pe)  # persistent: it is in the published state dict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[:, : x.size(1)]


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-norm CLIP block (names ``attn``, ``ln_1``, ``mlp.c_fc``, ``mlp.c_proj``, ``ln_2``)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln_1 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(dim, dim * 4)), ("gelu", QuickGELU()), ("c_proj", nn.Linear(dim * 4, dim))]))
        self.ln_2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class MEMHead(nn.Module):
    """MAE-style decoder: kept tokens + mask tokens -> per-token signal patches.

    forward(x (B, 1 + K, H) kept tokens with class token, ids_restore (B, T))
    -> (B, T, in_d, patch) reconstruction, patch = samples per token.
    """

    def __init__(self, hidden: int, dec_dim: int, dec_layers: int, dec_heads: int,
                 in_d: int, patch: int):
        super().__init__()
        self.in_d, self.patch = in_d, patch
        self.decoder_embed = nn.Linear(hidden, dec_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec_dim))
        nn.init.normal_(self.mask_token, std=0.02)
        self.decoder_pos_embed = SinusoidalPositions(dec_dim, 512)
        self.decoder = nn.Module()
        # the reference builds Transformer(layers + 1) which creates (layers + 1) - 1 blocks
        self.decoder.resblocks = nn.Sequential(*[ResidualAttentionBlock(dec_dim, dec_heads)
                                                 for _ in range(dec_layers)])
        self.decoder_norm = nn.LayerNorm(dec_dim)
        self.decoder_pred = nn.Linear(dec_dim, patch * in_d)

    def forward(self, x: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        x = self.decoder_embed(x)
        b, t = ids_restore.shape
        mask_tokens = self.mask_token.expand(b, t + 1 - x.shape[1], -1)
        body = torch.cat([x[:, 1:], mask_tokens], dim=1)
        body = torch.gather(body, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[2]))
        x = self.decoder_pos_embed(torch.cat([x[:, :1], body], dim=1))
        x = self.decoder.resblocks(x)
        x = self.decoder_pred(self.decoder_norm(x))[:, 1:]
        return x.reshape(b, t, self.in_d, self.patch)


class ETMHead(nn.Module):
    """(B, 2H) concatenated pooled text/ECG features -> (B, 2) match logits."""

    def __init__(self, hidden2: int):
        super().__init__()
        self.fc = nn.Linear(hidden2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)
