"""Cross-attention fusion layers (BERT layer + cross-attention, as in METER/M3AE).

Names mirror the checkpoint: ``attention.self.query`` ... ``output.LayerNorm``.
Masks here are *additive* (B, 1, 1, L): 0 where attended, a large negative
number at padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LN_EPS = 1e-12  # BertConfig default


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, L) 1 = keep / 0 = pad -> (B, 1, 1, L) additive mask (HF convention)."""
    m = mask[:, None, None, :].to(dtype)
    return (1.0 - m) * torch.finfo(dtype).min


class BertSelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        if hidden % heads:
            raise ValueError("hidden_dim must be divisible by num_heads")
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, lq, e = x.shape
        lk = context.shape[1]
        h = self.heads
        q = self.query(x).view(b, lq, h, e // h).transpose(1, 2)
        k = self.key(context).view(b, lk, h, e // h).transpose(1, 2)
        v = self.value(context).view(b, lk, h, e // h).transpose(1, 2)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=None if mask is None else mask.to(q.dtype),
            dropout_p=self.dropout if self.training else 0.0)
        return y.transpose(1, 2).reshape(b, lq, e)


class BertOutput(nn.Module):
    """dense -> dropout -> LayerNorm(residual + .)"""

    def __init__(self, n_in: int, hidden: int, dropout: float):
        super().__init__()
        self.dense = nn.Linear(n_in, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=LN_EPS)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class BertAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.self = BertSelfAttention(hidden, heads, dropout)
        self.output = BertOutput(hidden, hidden, dropout)

    def forward(self, x, context, mask):
        return self.output(self.self(x, context, mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, hidden: int, inner: int):
        super().__init__()
        self.dense = nn.Linear(hidden, inner)

    def forward(self, x):
        return F.gelu(self.dense(x))


class CrossLayer(nn.Module):
    """Self-attention over one stream, cross-attention to the other, feed-forward.

    x: (B, Lx, H) this stream; y: (B, Ly, H) the other; masks additive.
    """

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.attention = BertAttention(hidden, heads, dropout)
        self.crossattention = BertAttention(hidden, heads, dropout)
        self.intermediate = BertIntermediate(hidden, hidden * 4)
        self.output = BertOutput(hidden * 4, hidden, dropout)

    def forward(self, x, y, x_mask, y_mask):
        x = self.attention(x, x, x_mask)
        x = self.crossattention(x, y, y_mask)
        return self.output(self.intermediate(x), x)


class Pooler(nn.Module):
    """First token -> dense -> tanh."""

    def __init__(self, hidden: int):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(x[:, 0]))
